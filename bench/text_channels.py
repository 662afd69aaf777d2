"""What the speech and on-screen-text channels cost per minute of video, and what they read, before
and after: the sequential Whisper decoder + Tesseract reading every sample (the baseline), batched
Whisper transcribing after the frames + PP-OCRv4 reading every other sample and glancing at the
frames between (the previous default), and, transcribing beside the frames (`speech_beside_frames`),
the same without the glance and the default, in one run on the same media. An untimed
run first pays the process's imports and first calls (~3 s here), which would otherwise land on the
first visual-only run and be subtracted from every configuration; each run's decoder processes still
start and load their models (~0.4 and ~0.5 CPU s for Whisper and OCR), as every index run does.

Media (made here): talking videos, speech all the way through (flite, sentences whose words are known)
over a busy moving background (testsrc2, with its running timecode) and a caption that changes every
5 s; and the synthetic demo library (`vidsearch synth`, seed 11), whose on-screen words sit on plain
and textured backdrops. Quality, printed beside the speed:
- speech: WER of the transcript against the sentences spoken;
- OCR, talking videos: character accuracy of the best reading of each caption while it is on screen,
  and the share of caption words read; demo: the share of on-screen words read during their event;
  1 s captions: of ten captions each on screen for one second over testsrc2 (between two reads every
  2 s; five where there was no text, five in place of a standing caption), how many are read.

Busy backgrounds (the PP-OCRv4 reader alone, before and after in one run): a caption drawn over five
generated backgrounds with grain (testsrc2, a cellular automaton, Conway's life, a Mandelbrot zoom,
SMPTE bars) in three styles (22 px white with an outline, 14 px yellow with a thin outline, 30 px
plain white), 12 frames each, plus 12 px white text over testsrc2: the share of caption words read
as words (what a search can match: a dropped space loses two), the share of frames with the small
text read exactly, and the reader's wall time per frame; before (detection at the frame's full
size, tight crops) and now (detection at `DET_SIDE`, crops padded by `MARGIN`).

One decode for frames and OCR (`indexer/prepare.py`): a 1080p H.264 clip (30 s, testsrc2 with a
caption) prepared with OCR on, once with the encoder and OCR sharing one decode (now) and once as
before: the encoder's own decode, then a second decode of whole frames for OCR.

    python bench/text_channels.py [--videos 2 --seconds 90] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
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
CORES = len(os.sched_getaffinity(0))
CONFIGS = {  # the baseline's Whisper had a thread per core, as the code did then (now half the cores); it read every sample
    "baseline (sequential whisper + tesseract)": {"speech_batch": 1, "ocr_engine": "tesseract", "speech_threads": CORES, "ocr_fps": 1.0,
                                                  "speech_beside_frames": False},
    "previous default (speech after the frames)": {"speech_batch": 8, "ocr_engine": "rapidocr", "speech_beside_frames": False},
    "every 2 s, no glance": {"speech_batch": 8, "ocr_engine": "rapidocr", "ocr_glance": False},
    "default (every 2 s + glance, speech beside)": {"speech_batch": 8, "ocr_engine": "rapidocr"},
}
FLASHES = ["FLASH SALE", "GATE SEVEN", "LAST CALL", "ROOM TWELVE", "BLUE HORIZON", "NIGHT TRAIN", "OPEN STUDIO", "RIVER WALK", "SILVER MOON", "QUIET HOURS"]


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


def make_flashes(path: Path) -> Path:
    """40 s of testsrc2 (moving, with its running clock) showing each of `FLASHES` for one second,
    [4k + 1, 4k + 2): text on screen for less than two seconds, between reads every 2 s. The first
    five appear where there was no text; the last five replace a standing caption ("NOW SHOWING",
    shown from 20 s on) in place, as subtitles do."""
    draw = ",".join(f"drawtext=fontfile={FONT}:text='{w}':fontsize=22:fontcolor=white:borderw=2:x=40:y=200:enable='between(t,{4 * k + 1},{4 * k + 2})'"
                    for k, w in enumerate(FLASHES))  # fmt: skip
    draw += (f",drawtext=fontfile={FONT}:text='NOW SHOWING':fontsize=22:fontcolor=white:borderw=2:x=40:y=200:"
             "enable='between(t,20,40)*not(between(mod(t,4),0.95,2.05))'")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=40", "-vf", draw,
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)], check=True)  # fmt: skip
    return path


def flashes_read(spans: dict) -> int:
    ocr = [_norm(s["text"]) for rows in spans.values() for s in rows if s["source"] == "ocr"]
    return sum(any(w in text for text in ocr) for w in FLASHES)


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


BACKGROUNDS = {
    "testsrc2": "testsrc2=s=640x360:rate=30",
    "cellular automaton": "cellauto=s=640x360:rate=30:rule=110",
    "life": "life=s=640x360:rate=30:mold=10:ratio=0.5:death_color=#203020:life_color=#a0c070",
    "mandelbrot": "mandelbrot=s=640x360:rate=30",
    "smpte bars": "smptehdbars=s=640x360:rate=30",
}
STYLES = ("fontsize=22:fontcolor=white:borderw=2", "fontsize=14:fontcolor=yellow:borderw=1", "fontsize=30:fontcolor=white")
BUSY_CAPTION = "MEETING STARTS AT NOON"
SMALL_TEXT = "ROOM FOUR"


def _pattern(source: str, draw: str) -> "np.ndarray":
    import numpy as np

    vf = f"format=yuv420p,noise=alls=20:allf=t,{draw},fps=1"
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", source, "-t", "12", "-vf", vf,
                          "-pix_fmt", "rgb24", "-f", "rawvideo", "-"], check=True, capture_output=True).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, 360, 640, 3)


def busy_backgrounds() -> list[dict]:
    """Caption words read over busy backgrounds by the previous reader and the current one."""
    from vidsearch.encoders.ocr_rapid import DET_SIDE, MARGIN, RapidTextReader

    sets = [_pattern(source, f"drawtext=fontfile={FONT}:text='{BUSY_CAPTION}':x=20:y=300:{style}")
            for source in BACKGROUNDS.values() for style in STYLES]  # fmt: skip
    small = _pattern(BACKGROUNDS["testsrc2"], f"drawtext=fontfile={FONT}:text='{SMALL_TEXT}':fontsize=12:x=30:y=20:fontcolor=white:borderw=1")
    truth = BUSY_CAPTION.split()
    rows = []
    for name, side, margin in (("before: full-size detection, tight crops", 360, 0.0), ("now", DET_SIDE, MARGIN)):
        RapidTextReader(det_side=side, margin=margin).read(sets[0][0])  # load the sessions
        words = frames = 0
        t0 = time.perf_counter()
        for frames_of_set in sets:
            reader = RapidTextReader(det_side=side, margin=margin)  # a fresh reading cache per video, as in indexing
            for frame in frames_of_set:
                read = set(" ".join(_norm(text) for text, _, _ in reader.read(frame)).split())
                words += sum(w in read for w in truth)
                frames += 1
        seconds = time.perf_counter() - t0
        reader = RapidTextReader(det_side=side, margin=margin)
        exact = sum(any(text == SMALL_TEXT for text, _, _ in reader.read(f)) for f in small)
        rows.append({"reader": name, "det_side": side, "margin": margin, "frames": frames, "caption_words_read": words / (frames * len(truth)),
                     "small_text_exact": exact / len(small), "ms_per_frame": 1000 * seconds / frames})  # fmt: skip
    return rows


def shared_decode(work: Path, repeats: int) -> dict:
    """Wall and CPU seconds per minute of 1080p video to prepare frames + OCR: one shared decode (now)
    against two decodes (before), medians of `repeats`, interleaved."""
    from vidsearch.indexer import prepare as prep
    from vidsearch.indexer.decode import plan_samples
    from vidsearch.indexer.probe import probe

    clip, seconds = work / "hd.mp4", 30
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
                    "-vf", f"drawtext=fontfile={FONT}:text='{BUSY_CAPTION}':fontsize=64:x=60:y=900:box=1:boxcolor=white",
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(clip)], check=True)  # fmt: skip
    job = prep.DecodeJob(str(clip), 1.0, 224, ocr=True)

    def now() -> int:
        return len(prep.prepare(job).spans)

    def before() -> int:
        prep.prepare(prep.DecodeJob(str(clip), 1.0, 224))
        info, spans = probe(clip), []
        for _ in prep._ocr_steps(job, info, plan_samples(info.duration, 1.0), prep.Working(""), spans):
            pass
        return len(spans)

    timed: dict[str, list[tuple[float, float]]] = {"before": [], "now": []}
    spans = {}
    for _ in range(repeats):
        for name, run in (("before", before), ("now", now)):
            t0, c0 = time.perf_counter(), _cpu()
            spans[name] = run()
            timed[name].append((time.perf_counter() - t0, _cpu() - c0))
    per_min = 60 / seconds
    return {name: {"wall_s_per_min": round(statistics.median(w for w, _ in runs) * per_min, 2),
                   "cpu_s_per_min": round(statistics.median(c for _, c in runs) * per_min, 2), "ocr_spans": spans[name]}
            for name, runs in timed.items()}  # fmt: skip


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
        flashes = make_flashes(work / "flashes.mp4")
        minutes = len(paths) * args.seconds / 60
        runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        index(paths[:1], work / "db_warm", backbone, speech=True, ocr=True)  # untimed: imports, the sentence encoder, first calls
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
                    _, _, flash_store = index([flashes], work / f"db_{tag}_f", backbone, speech=False, ocr=True, **cfg)
                    run.update(speech_wer=speech_wer(talks, spans_of(store)), caption_char_accuracy=char_acc,
                               caption_word_recall=word_recall, demo_words_read=hits, demo_words=total,
                               flashes_read=flashes_read(spans_of(flash_store)), flashes=len(FLASHES))  # fmt: skip
                runs[name].append(run)
        for name, cfg in CONFIGS.items():
            med = {key: round(statistics.median(r[key] for r in runs[name]), 2) for key in runs[name][0] if key.endswith("per_min")}
            quality = {key: round(v, 4) if isinstance(v, float) else v for key, v in runs[name][0].items() if not key.endswith("per_min")}
            rows.append({"config": name, **cfg, **med, **quality})
    busy = busy_backgrounds()
    with tempfile.TemporaryDirectory() as tmp:
        decode = shared_decode(Path(tmp), args.repeats)
    result = {"videos": args.videos, "seconds": args.seconds, "repeats": args.repeats, "rows": rows, "busy_backgrounds": busy,
              "shared_decode_1080p": decode}  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.videos} talking videos x {args.seconds} s, medians of {args.repeats}; extra seconds per minute of video "
          "over the visual-only index (wall; CPU for both channels):")
    print(f"{'config':44} {'speech':>7} {'ocr':>7} {'both':>7} {'both CPU':>8} {'OCR CPU':>7} {'WER':>6} {'caption chars':>13} {'caption words':>13} {'demo words':>10} {'1 s captions':>12}")
    for r in rows:
        print(f"{r['config']:44} {r['speech_s_per_min']:>7} {r['ocr_s_per_min']:>7} {r['both_s_per_min']:>7} {r['both_cpu_s_per_min']:>8} {r['ocr_cpu_s_per_min']:>7} "
              f"{r['speech_wer']:>6.3f} {r['caption_char_accuracy']:>13.3f} {r['caption_word_recall']:>13.3f} {r['demo_words_read']:>4}/{r['demo_words']:<5} "
              f"{r['flashes_read']:>6}/{r['flashes']:<5}")  # fmt: skip
    for key, what in (("both_s_per_min", "wall"), ("both_cpu_s_per_min", "CPU")):
        base = rows[0][key]
        print(f"speech + OCR, {what}, s per minute of video: baseline {base:.2f}; "
              + "; ".join(f"{r['config']} {r[key]:.2f} ({base / max(r[key], 1e-9):.1f}x less)" for r in rows[1:]))
    print(f"busy backgrounds ({busy[0]['frames']} frames: 5 backgrounds x 3 caption styles), PP-OCRv4 reader alone:")
    for b in busy:
        print(f"  {b['reader']:42} (detector side {b['det_side']}, margin {b['margin']}): caption words read {100 * b['caption_words_read']:.1f}%, "
              f"12 px text exact {100 * b['small_text_exact']:.0f}% of frames, {b['ms_per_frame']:.0f} ms per frame")
    print("frames + OCR of a 1080p clip, per minute of video (wall / CPU s):")
    for name, d in decode.items():
        print(f"  {name:6} ({'two decodes' if name == 'before' else 'one shared decode'}): {d['wall_s_per_min']} / {d['cpu_s_per_min']}, {d['ocr_spans']} OCR spans")


if __name__ == "__main__":
    main()
