"""What the speech and on-screen-text channels cost per minute of video, and what they read, before
and after: the sequential Whisper decoder + Tesseract (the baseline) against batched Whisper +
PP-OCRv4 with a recognition cache (the defaults), in one run on the same media.

Media (made here): talking videos, speech all the way through (flite, sentences whose words are known)
over a busy moving background (testsrc2, with its running timecode) and a caption that changes every
5 s; and the synthetic demo library (`vidsearch synth`, seed 11), whose on-screen words sit on plain
and textured backdrops. Quality, printed beside the speed:
- speech: WER of the transcript against the sentences spoken;
- OCR, talking videos: character accuracy of the best reading of each caption while it is on screen,
  and the share of caption words read; demo: the share of on-screen words read during their event.

    python bench/text_channels.py [--videos 2 --seconds 90] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from difflib import SequenceMatcher
from pathlib import Path

from vidsearch.config import Settings
from vidsearch.encoders import load_backbone
from vidsearch.encoders.speech import normalize_words, wer
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from index_throughput import SENTENCES  # noqa: E402

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CONFIGS = {
    "baseline (sequential whisper + tesseract)": {"speech_batch": 1, "ocr_engine": "tesseract"},
    "default (batched whisper + PP-OCRv4)": {"speech_batch": 8, "ocr_engine": "rapidocr"},
    "default, OCR at 0.5 fps": {"speech_batch": 8, "ocr_engine": "rapidocr", "ocr_fps": 0.5},
}


def _flite(text: str, path: Path) -> float:
    subprocess.run(["flite", "-voice", "awb", "-t", text, "-o", str(path)], check=True)
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def make_talks(root: Path, n: int, seconds: int) -> list[dict]:
    """Videos with known speech (as many sentences as fit) and captions changing every 5 s."""
    root.mkdir(parents=True, exist_ok=True)
    talks = []
    for i in range(n):
        path, wav = root / f"talk_{i}.mp4", root / f"talk_{i}.wav"
        spoken: list[str] = []
        for j in range(len(SENTENCES) * 4):
            trial = spoken + [SENTENCES[(i + j) % len(SENTENCES)]]
            if _flite(". ".join(trial), wav) > seconds - 1.5:
                break
            spoken = trial
        _flite(". ".join(spoken), wav)
        captions = [SENTENCES[(i + 3 + k) % len(SENTENCES)].upper() for k in range(seconds // 5)]
        draw = ",".join(
            f"drawtext=fontfile={FONT}:text='{c}':fontsize=22:x=20:y=300:box=1:boxcolor=white:enable='between(t,{5 * k},{5 * k + 5})'"
            for k, c in enumerate(captions)
        )
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={seconds}",
             "-i", str(wav), "-vf", draw, "-af", "apad,aresample=44100", "-t", str(seconds), "-c:v", "libx264",
             "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)], check=True,
        )  # fmt: skip
        wav.unlink()
        talks.append({"path": path, "spoken": ". ".join(spoken), "captions": captions})
    return talks


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the decoder processes): on a shared,
    noisy machine a steadier measure of cost than wall time."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def index(paths: list[Path], db: Path, backbone, **overrides) -> tuple[float, float, Store]:
    """(wall seconds, CPU seconds, the store) of one index run."""
    settings = Settings(db=db, model="tiny", **overrides)
    t0, c0 = time.perf_counter(), _cpu()
    summary = IndexRun(open_store_for(settings, backbone), backbone, settings).run(paths)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    store = Store.open(db)
    if summary.failed:
        failed = [r for r in store.files().to_pylist() if r["status"] == "failed"]
        raise RuntimeError(f"{summary.failed} file(s) failed under {overrides}: {[(r['path'], r['error']) for r in failed]}")
    return wall, cpu, store


def spans_of(store: Store) -> dict[str, list[dict]]:
    paths = {r["video_id"]: r["path"] for r in store.videos(["video_id", "path"]).to_pylist()}
    out: dict[str, list[dict]] = {}
    for r in store.table("spans").to_arrow().select(["video_id", "source", "start", "end", "text"]).to_pylist():
        out.setdefault(paths[r["video_id"]], []).append(r)
    return out


def _norm(text: str) -> str:
    return " ".join("".join(ch for ch in text.upper() if ch.isalnum() or ch == " ").split())


def speech_wer(talks: list[dict], spans: dict) -> float:
    scores = []
    for t in talks:
        said = " ".join(s["text"] for s in sorted(spans.get(str(t["path"]), []), key=lambda s: s["start"]) if s["source"] == "speech")
        scores.append(wer(t["spoken"], said))
    return sum(scores) / len(scores)


def caption_quality(talks: list[dict], spans: dict) -> tuple[float, float]:
    """(character accuracy of the best reading per caption, share of caption words read)."""
    acc, found, total = [], 0, 0
    for t in talks:
        ocr = [s for s in spans.get(str(t["path"]), []) if s["source"] == "ocr"]
        for k, caption in enumerate(t["captions"]):
            a, b = 5 * k, 5 * k + 5
            texts = [_norm(s["text"]) for s in ocr if s["start"] < b and s["end"] > a]
            truth = _norm(caption)
            acc.append(max((SequenceMatcher(None, truth, x).ratio() for x in texts), default=0.0))
            words = set(" ".join(texts).split())
            found += sum(w in words for w in truth.split())
            total += len(truth.split())
    return sum(acc) / len(acc), found / total


def demo_recall(demo: Path, spans: dict) -> tuple[int, int]:
    events = [json.loads(line) for line in open(demo / "events.jsonl", encoding="utf-8")]
    hits = total = 0
    for e in events:
        if not e.get("onscreen"):
            continue
        total += 1
        ocr = [s for s in spans.get(str((demo / e["video"]).absolute()), []) if s["source"] == "ocr" and s["start"] < e["end"] and s["end"] > e["start"]]
        hits += any(e["onscreen"].upper() in _norm(s["text"]).split() for s in ocr)
    return hits, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=90)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (medians printed)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    backbone = load_backbone("tiny")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        talks = make_talks(work / "talk", args.videos, args.seconds)
        paths = [t["path"] for t in talks]
        subprocess.run([sys.executable, "-m", "vidsearch.cli", "synth", str(work / "demo"), "--videos", "8", "--seed", "11"],
                       check=True, capture_output=True)  # fmt: skip
        demo_videos = sorted((work / "demo" / "videos").glob("*.mp4"))
        minutes = len(paths) * args.seconds / 60
        runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        for rep in range(args.repeats):  # configurations interleaved, so load drifts hit them alike
            visual, visual_cpu, _ = index(paths, work / f"db_visual_{rep}", backbone, speech=False, ocr=False)
            for k, (name, cfg) in enumerate(CONFIGS.items()):
                tag = f"{k}_{rep}"
                speech_s, speech_c, store = index(paths, work / f"db_{tag}_s", backbone, speech=True, ocr=False, **cfg)
                ocr_s, ocr_c, ocr_store = index(paths, work / f"db_{tag}_o", backbone, speech=False, ocr=True, **cfg)
                both_s, both_c, _ = index(paths, work / f"db_{tag}_b", backbone, speech=True, ocr=True, **cfg)
                run = {
                    "speech_s_per_min": (speech_s - visual) / minutes, "ocr_s_per_min": (ocr_s - visual) / minutes,
                    "both_s_per_min": (both_s - visual) / minutes, "both_cpu_s_per_min": (both_c - visual_cpu) / minutes,
                    "speech_cpu_s_per_min": (speech_c - visual_cpu) / minutes, "ocr_cpu_s_per_min": (ocr_c - visual_cpu) / minutes,
                }  # fmt: skip
                if rep == 0:  # quality does not change between repeats
                    _, _, demo_store = index(demo_videos, work / f"db_{tag}_d", backbone, speech=False, ocr=True, **cfg)
                    char_acc, word_recall = caption_quality(talks, spans_of(ocr_store))
                    hits, total = demo_recall(work / "demo", spans_of(demo_store))
                    run.update(speech_wer=speech_wer(talks, spans_of(store)), caption_char_accuracy=char_acc,
                               caption_word_recall=word_recall, demo_words_read=hits, demo_words=total)  # fmt: skip
                runs[name].append(run)
        for name, cfg in CONFIGS.items():
            med = {key: round(statistics.median(r[key] for r in runs[name]), 2) for key in runs[name][0] if key.endswith("per_min")}
            quality = {key: round(v, 4) if isinstance(v, float) else v for key, v in runs[name][0].items() if not key.endswith("per_min")}
            rows.append({"config": name, **cfg, **med, **quality})
    result = {"videos": args.videos, "seconds": args.seconds, "repeats": args.repeats, "rows": rows}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.videos} talking videos x {args.seconds} s, medians of {args.repeats}; extra seconds per minute of video "
          "over the visual-only index (wall; CPU for both channels):")
    print(f"{'config':44} {'speech':>7} {'ocr':>7} {'both':>7} {'both CPU':>8} {'WER':>6} {'caption chars':>13} {'caption words':>13} {'demo words':>10}")
    for r in rows:
        print(f"{r['config']:44} {r['speech_s_per_min']:>7} {r['ocr_s_per_min']:>7} {r['both_s_per_min']:>7} {r['both_cpu_s_per_min']:>8} {r['speech_wer']:>6.3f} "
              f"{r['caption_char_accuracy']:>13.3f} {r['caption_word_recall']:>13.3f} {r['demo_words_read']:>4}/{r['demo_words']:<5}")  # fmt: skip
    for key, what in (("both_s_per_min", "wall"), ("both_cpu_s_per_min", "CPU")):
        base, new = rows[0][key], rows[1][key]
        print(f"speech + OCR, {what}: {base:.2f} -> {new:.2f} s per minute of video ({base / max(new, 1e-9):.1f}x less)")


if __name__ == "__main__":
    main()
