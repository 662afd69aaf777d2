"""Speech channel quality: R@1 for paraphrased queries and the transcripts' word error rate.

Renders N videos, each saying one sentence (flite, three voices) at a random offset over a plain
background, indexes them with speech on (no OCR), then asks for each video with a paraphrase that
shares few words with what was said. Prints R@1/R@5 (speech channel alone, and all channels fused),
the share of top hits whose moment overlaps the spoken interval, and the WER of the transcripts.

    python bench/speech_channel.py [--videos 40] [--engine whisper|pocketsphinx] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from media import make_spoken_clip, speech_seconds  # noqa: E402

from vidsearch.api_models import SearchRequest  # noqa: E402
from vidsearch.config import load_settings  # noqa: E402
from vidsearch.encoders.backbone import load_backbone  # noqa: E402
from vidsearch.encoders.speech import wer  # noqa: E402
from vidsearch.indexer.pipeline import IndexRun, open_store_for  # noqa: E402
from vidsearch.search import SearchEngine  # noqa: E402
from vidsearch.search import TextChannels  # noqa: E402
from vidsearch.server import search_response  # noqa: E402

PAIRS = [
    ("the quarterly revenue grew by ten percent", "sales went up ten percent this quarter"),
    ("please remember to water the plants on friday", "don't forget the plants need watering at the end of the week"),
    ("our next meeting is on the third floor", "where is the upcoming meeting held"),
    ("the train to the airport leaves every hour", "hourly rail service to the airport"),
    ("turn left at the bakery and walk two blocks", "directions past the bread shop"),
    ("the museum opens at nine in the morning", "what time does the gallery open"),
    ("my favourite food is spicy noodle soup", "she likes hot ramen best"),
    ("the children built a sandcastle at the beach", "kids making sand castles by the sea"),
    ("we need to replace the battery in the smoke alarm", "change the smoke detector battery"),
    ("the football match was cancelled because of rain", "soccer game called off due to the weather"),
    ("he forgot his umbrella at the restaurant", "left his umbrella behind at dinner"),
    ("the new library has thousands of books", "a recently opened library with many books"),
    ("the doctor said to drink more water", "physician recommends staying hydrated"),
    ("our flight was delayed by three hours", "the plane left three hours late"),
    ("the cat is sleeping on the warm windowsill", "a kitten napping by the window"),
    ("the price of coffee has doubled this year", "coffee costs twice as much now"),
    ("she plays the violin in the city orchestra", "a violinist in the symphony"),
    ("the bridge will be closed for repairs next week", "bridge shut for maintenance soon"),
    ("i planted tomatoes and peppers in the garden", "growing vegetables in the backyard"),
    ("the students are studying for their final exams", "pupils preparing for end of term tests"),
    ("the bakery sells fresh bread every morning", "warm loaves available daily at dawn"),
    ("the mountain trail is steep and rocky", "a difficult hiking path up the hill"),
    ("the company hired twenty new engineers", "the firm recruited more developers"),
    ("turn off the lights when you leave the room", "switch the lamps off on your way out"),
    ("the ship arrived at the harbour at midnight", "the boat docked late at night"),
    ("my grandmother knits warm scarves for winter", "granny makes woollen scarves"),
    ("the concert tickets sold out in ten minutes", "the show was fully booked almost instantly"),
    ("wash your hands before eating dinner", "clean hands before the evening meal"),
    ("the river flooded the farmland after the storm", "water covered the fields after heavy weather"),
    ("the phone battery lasts for two days", "the mobile charge holds for forty eight hours"),
    ("the chef added too much salt to the soup", "the broth was oversalted by the cook"),
    ("the volcano erupted and covered the town in ash", "an eruption left the village under ash"),
    ("the elevator is out of order today", "the lift is broken"),
    ("the dog barked at the postman all morning", "the puppy kept barking at the mail carrier"),
    ("the bank closes early on saturdays", "weekend banking hours are short"),
    ("the painting was sold for a million dollars", "artwork auctioned for a huge sum"),
    ("the printer on the second floor is out of paper", "no paper left in the upstairs printer"),
    ("the marathon runners crossed the finish line", "athletes completing the long distance race"),
    ("the snow made the roads very slippery", "icy streets after the snowfall"),
    ("the team celebrated their victory with pizza", "the winners had a pizza party"),
]
VOICES = ["awb", "rms", "slt"]
COLOURS = ["navy", "darkgreen", "maroon", "gray", "purple", "teal", "olive", "black"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=40)
    ap.add_argument("--engine", default="whisper", choices=["whisper", "pocketsphinx"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vidsearch-speech-"))
    lib = work / f"lib{args.videos}"
    truth = {}
    for i in range(args.videos):
        said, asked = PAIRS[i % len(PAIRS)]
        voice, at = VOICES[i % len(VOICES)], round(rng.uniform(1.0, 5.0), 2)
        path = lib / f"talk_{i:03d}.mp4"
        if not path.exists():
            make_spoken_clip(path, said, at=at, seconds=12.0, colour=COLOURS[i % len(COLOURS)], voice=voice)
        truth[path.stem] = {"said": said, "asked": asked, "interval": (at, at + speech_seconds(said, voice))}
    db = work / f"db-{args.engine}-{args.videos}"
    shutil.rmtree(db, ignore_errors=True)
    settings = load_settings(None, db=db, model="tiny", pretrained="none", speech=True, ocr=False, speech_engine=args.engine)
    backbone = load_backbone("tiny", pretrained="none")
    t0 = time.perf_counter()
    summary = IndexRun(open_store_for(settings, backbone), backbone, settings).run([lib])
    index_seconds = time.perf_counter() - t0
    store = open_store_for(settings, backbone)
    engine = SearchEngine(store, backbone, settings, text_channels=TextChannels.for_store(store))
    title_of = {r["video_id"]: r["title"] for r in store.videos().to_pylist()}
    spans = store.table("spans").to_arrow().to_pylist()
    hyp = {}
    for s in sorted(spans, key=lambda s: s["start"]):
        if s["source"] == "speech":
            hyp.setdefault(title_of[s["video_id"]], []).append(s["text"])
    wers = [wer(t["said"], " ".join(hyp.get(name, []))) for name, t in truth.items()]
    ranks = {"speech": [], "all": []}
    moment_hits = 0
    for name, t in truth.items():
        for mode, channels in (("speech", {"speech": 1.0}), ("all", None)):
            res = search_response(engine, SearchRequest(query=t["asked"], top_k=10, channels=channels)).results
            titles = [r.video.title for r in res]
            ranks[mode].append(titles.index(name) if name in titles else 99)
            if mode == "all" and titles and titles[0] == name and res[0].moments:
                m = res[0].moments[0]
                moment_hits += min(m.end, t["interval"][1]) > max(m.start, t["interval"][0])
    n = len(truth)
    report = {
        "benchmark": "speech_channel",
        "engine": args.engine,
        "videos": n,
        "index_seconds": round(index_seconds, 1),
        "speech_real_time": round(summary.video_seconds / index_seconds, 2),
        "wer_mean": round(sum(wers) / n, 4),
        "wer_median": round(sorted(wers)[n // 2], 4),
        "speech_R@1": round(100 * sum(r == 0 for r in ranks["speech"]) / n, 1),
        "speech_R@5": round(100 * sum(r < 5 for r in ranks["speech"]) / n, 1),
        "fused_R@1": round(100 * sum(r == 0 for r in ranks["all"]) / n, 1),
        "fused_R@5": round(100 * sum(r < 5 for r in ranks["all"]) / n, 1),
        "top1_moment_overlaps_speech": round(100 * moment_hits / max(1, sum(r == 0 for r in ranks["all"])), 1),
    }
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"speech channel, {n} generated videos (flite voices {', '.join(VOICES)}), engine {args.engine}")
        for k, v in report.items():
            if k not in ("benchmark", "engine", "videos"):
                print(f"  {k:30} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
