"""What the sound channel's cues cost a model without an audio tower, with speech on: read from the
decoder's speech stream (now) against a second decode of the soundtrack by the indexer (before), in
one run on the same media.

A model with an audio tower reads the cues from the stream its tower reads; one without (ViT-B-32
and any open_clip model, here the `tiny` architecture with random weights, which has none) had the
indexer decode every soundtrack once more for them alone, although the decoder already streams it
for Whisper when speech is on. Media (made here): N clips of a moving test picture with a soundtrack
(a steady tone, another per clip; Whisper's voice-activity filter finds no speech in it, so what
remains of the speech channel is mostly the decode itself, and the difference shows). Printed per configuration: CPU
seconds (this process and the decoder processes) and wall seconds per minute of audio, medians of
`--repeats`, and whether both stored the same cue rows.

    python bench/sound_cue_decode.py [--clips 12 --seconds 20 --repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from vidsearch.config import load_settings
from vidsearch.encoders.backbone import load_backbone
from vidsearch.indexer import pipeline
from vidsearch.indexer.prepare import decode_job
from vidsearch.search.features import FeatureCache


def make_clips(root: Path, n: int, seconds: int) -> Path:
    lib = root / "lib"
    lib.mkdir()
    for i in range(n):
        audio = f"sine=frequency={300 + 97 * i}:sample_rate=44100:duration={seconds}"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=10:duration={seconds}",
                        "-f", "lavfi", "-i", audio, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-shortest", str(lib / f"clip_{i:02d}.mp4")], check=True)  # fmt: skip
    return lib


def cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def index_once(lib: Path, db: Path, backbone, shared: bool) -> tuple[float, float, dict]:
    settings = load_settings(None, db=db, model="tiny", pretrained="none", speech=True, ocr=False)
    run = pipeline.IndexRun(pipeline.open_store_for(settings, backbone), backbone, settings)
    if not shared:  # before: the decoder is not asked for the cues, so the indexer decodes the soundtrack for them
        run._job = lambda src: decode_job(settings, pipeline.media_location(src), backbone.image_size)
    c0, t0 = cpu(), time.perf_counter()
    run.run([lib])
    wall, used = time.perf_counter() - t0, cpu() - c0
    store = run.store
    ids = [v for v in store.files()["video_id"].to_pylist() if v]
    return used, wall, {v: f.sound for v, f in FeatureCache(store).get_many(ids).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    backbone = load_backbone("tiny", pretrained="none")
    assert getattr(backbone, "audio_tower", None) is None
    minutes = args.clips * args.seconds / 60
    out: dict = {"clips": args.clips, "seconds_each": args.seconds, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lib = make_clips(root, args.clips, args.seconds)
        runs: dict[str, list[tuple[float, float]]] = {"before: the indexer decodes again": [], "now: read from the speech stream": []}
        rows = {}
        for r in range(args.repeats):  # alternated, so a slow spell of the machine hits both
            for name, shared in (("before: the indexer decodes again", False), ("now: read from the speech stream", True)):
                used, wall, rows[name] = index_once(lib, root / f"db_{shared}_{r}", backbone, shared)
                runs[name].append((used, wall))
        now_rows = rows["now: read from the speech stream"]
        same = all(a.shape == now_rows[v].shape and np.allclose(a, now_rows[v], atol=1e-3) for v, a in rows["before: the indexer decodes again"].items())
        for name, vals in runs.items():
            out[name] = {"cpu_s_per_min": round(statistics.median(u for u, _ in vals) / minutes, 3),
                         "wall_s_per_min": round(statistics.median(w for _, w in vals) / minutes, 3)}  # fmt: skip
        out["same_rows"] = bool(same)
    before, now = out["before: the indexer decodes again"], out["now: read from the speech stream"]
    out["cpu_saved_s_per_min"] = round(before["cpu_s_per_min"] - now["cpu_s_per_min"], 3)
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.clips} clips x {args.seconds} s, speech on, a model without an audio tower; medians of {args.repeats}")
    print(f"{'configuration':40s} {'CPU s / min of audio':>22s} {'wall s / min':>14s}")
    for name in runs:
        print(f"{name:40s} {out[name]['cpu_s_per_min']:22.3f} {out[name]['wall_s_per_min']:14.3f}")
    print(f"saved: {out['cpu_saved_s_per_min']:.3f} CPU s per minute of audio; same cue rows: {out['same_rows']}")


if __name__ == "__main__":
    main()
