"""What the OCR reader's two reuses cost in correctness and save in work: reading a frame again only
when it changed (frame level, `encoders/ocr.py`) and recognising a text box again only when its glyphs
changed (box level, `encoders/ocr_rapid.py`). The previous tests (a 64-cell-wide grey thumbnail per
frame; a 12 x 48 grey picture per box, compared on average and by column) against the current ones
(2 px cells counted; stroke maps compared window by window), and a reader that reuses nothing (every
frame detected, every box recognised), which is the truth the other two are held to.

Media (made here, 640x360): testsrc2 with its running timecode and frame counter and a boxed caption;
a 10 px clock on a still, grainy H.264 shot; a slide with a moving presenter inset and a clock; a clock over Conway's life; a scoreboard whose digits
change over SMPTE bars; a price line with one changed digit over a cellular automaton; a caption on a
shaking camera; a caption over a Mandelbrot zoom; Conway's life without text. Printed per
configuration: frames detected, of which in regions, frames not detected (between two without text),
boxes recognised, boxes reused, frames with stale text (a text of 4+ letters and digits the fresh reader
did not read in that frame but read in an earlier one: a reading kept too long; shorter ones recur
legitimately, e.g. a timecode's ".467" read as a box of its own), frames whose text differs from the fresh
reading at all (letters and digits compared, case and spacing ignored; this also counts readings
that differ without being wrong: a region detects a little differently from the whole frame, and a
box cut otherwise can read otherwise, e.g. a 10 px clock a region reads whole where the whole frame
drops a digit) and CPU
seconds; and, for the current reader, with and without detecting only the regions of a frame that
changed (`ocr.changed_regions`), then skipping the detection of a sample between two without text
(`ocr.skip_between`; the default).

    python bench/ocr_reuse.py [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

from vidsearch.encoders import ocr, ocr_rapid

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
SCORES = [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (8, 2), (8, 3)]
PRICES = ["NEW LOW PRICE 1499 EUR TODAY", "NEW LOW PRICE 1459 EUR TODAY", "NEW LOW PRICE 1459 USD TODAY"]


def _text(text: str, size: int, x: int, y: int, extra: str = "", when: str = "") -> str:
    enable = f":enable='{when}'" if when else ""
    return f"drawtext=fontfile={FONT}:text='{text}':fontsize={size}:x={x}:y={y}{extra}{enable}"


CLOCK = "%{pts\\:hms}"
GRAIN = "noise=alls={}:allf=t:all_seed=7,"
LIFE = "life=s=640x360:rate=30:seed=7:mold=10:ratio=0.5:death_color=#203020:life_color=#a0c070"
SCOREBOARD = ",".join(
    _text(f"HOME {h} - {a} AWAY", 24, 200, 30, ":fontcolor=white:box=1:boxcolor=black@0.6", f"between(t,{4 * k},{4 * k + 4})")
    for k, (h, a) in enumerate(SCORES)
)
PRICE = ",".join(_text(p, 18, 40, 320, ":fontcolor=yellow:borderw=1", f"between(t,{5 * k},{5 * k + 5})") for k, p in enumerate(PRICES))
SHAKE = ",crop=640:360:'20+8*sin(n/3)':'20+6*cos(n/5)'"
VIDEOS = {  # name: (lavfi source, filters, seconds, frames read per second, through H.264 first)
    "testsrc2 + timecode + caption": (
        "testsrc2=s=640x360:rate=30", _text("MEETING STARTS AT NOON", 22, 20, 300, ":box=1:boxcolor=white"), 30, 1, False),
    "still shot, 10 px clock": (
        "color=c=0x203040:s=640x360:rate=30", GRAIN.format(8) + _text(CLOCK, 10, 560, 12, ":fontcolor=0xc0c0c0"), 20, 1, True),
    "clock over life": (LIFE, _text(CLOCK, 20, 480, 20, ":fontcolor=white:borderw=1"), 20, 2, False),
    "scoreboard over bars": ("smptehdbars=s=640x360:rate=30", GRAIN.format(20) + SCOREBOARD, 32, 1, False),
    "price over cellular automaton": ("cellauto=s=640x360:rate=30:rule=110:seed=7", GRAIN.format(20) + PRICE, 15, 2, False),
    "shaking camera": (
        "color=c=0x4060a0:s=700x400:rate=30",
        GRAIN.format(15) + _text("PLATFORM 9 DEPARTURES", 26, 100, 150, ":box=1:boxcolor=white") + SHAKE, 15, 2, False),
    "slide, presenter inset, clock": (
        "color=c=0xf0f0f0:s=640x360:rate=30[bg];testsrc2=s=160x90:rate=30[in];[bg][in]overlay=460:250",
        _text("QUARTERLY RESULTS", 34, 40, 40, ":fontcolor=0x202060") + "," + _text("Revenue grew by ten percent", 20, 40, 120, ":fontcolor=black")
        + "," + _text("Costs fell in every region", 20, 40, 160, ":fontcolor=black") + "," + _text(CLOCK, 12, 530, 12, ":fontcolor=0x404040"),
        30, 1, True),
    "caption over mandelbrot": (
        "mandelbrot=s=640x360:rate=30", GRAIN.format(20) + _text("MEETING STARTS AT NOON", 22, 20, 300, ":fontcolor=white:borderw=2"), 12, 1, False),
    "no text: moving life": (LIFE, GRAIN.format(10) + "null", 30, 1, False),
}  # fmt: skip


def frames_of(source: str, filters: str, seconds: int, fps: float, h264: bool, work: Path) -> np.ndarray:
    read = ["-f", "lavfi", "-i", source]
    if h264:
        clip = work / "clip.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *read, "-t", str(seconds), "-vf", filters, "-c:v", "libx264",
                        "-crf", "30", "-pix_fmt", "yuv420p", str(clip)], check=True)  # fmt: skip
        read, filters = ["-i", str(clip)], "null"
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *read, "-t", str(seconds), "-vf", f"{filters},fps={fps}",
                          "-pix_fmt", "rgb24", "-f", "rawvideo", "-"], check=True, capture_output=True).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, 360, 640, 3)


# ------------------------------------------------------------------ the previous tests (the baseline)


def _previous_thumbnail(frame: np.ndarray, width: int = 64) -> np.ndarray:
    grey = ocr._grey(np.asarray(frame))
    cell = max(1, grey.shape[1] // width)
    rows, cols = grey.shape[0] // cell, grey.shape[1] // cell
    return grey[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell).mean(axis=(1, 3))


def _previous_frame_changed(a, b, level=12.0, cells=None) -> bool:
    return a.shape != b.shape or bool((np.abs(a - b) > 12.0).mean() > 0.001)


def _previous_signature(crop: np.ndarray) -> np.ndarray:
    from PIL import Image

    padded = ocr_rapid._with_margin(crop, ocr_rapid.MARGIN)  # it was taken of the padded crop
    grey = Image.fromarray(np.ascontiguousarray(padded[..., :3])).convert("L")
    return np.asarray(grey.resize((48, 12), Image.BILINEAR), np.float32)


def _previous_same_text(a: np.ndarray, b: np.ndarray) -> bool:
    diff = np.abs(a - b)
    return float(diff.mean()) < 10.0 and float(diff.mean(axis=0).max()) < 30.0


DETECT_ALL = {"skip_between": lambda *a, **k: False}  # every sample read whole is detected
WHOLE_FRAMES = {"changed_regions": lambda *a, **k: None, **DETECT_ALL}
CONFIGS = {
    "fresh: no reuse (the truth)": {"frame_changed": lambda *a, **k: True, "same_text": lambda a, b: False, **WHOLE_FRAMES},
    "previous: 64-cell thumbnail, 12x48 grey box": {
        "thumbnail": _previous_thumbnail, "frame_changed": _previous_frame_changed,
        "glyph_signature": _previous_signature, "same_text": _previous_same_text, "MIN_REUSE_HEIGHT": 0, **WHOLE_FRAMES,
    },  # fmt: skip
    "now, whole frames: 2 px cells, stroke maps": WHOLE_FRAMES,
    "now: + only the changed region detected": DETECT_ALL,
    "now: + textless gaps: every other detection": {},
}


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def _norm(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def read_video(frames: np.ndarray, fps: float, patches: dict) -> dict:
    with ExitStack() as stack:
        for name, fn in patches.items():
            module = ocr if name in ("thumbnail", "frame_changed", "changed_regions", "skip_between") else ocr_rapid
            stack.enter_context(mock.patch.object(module, name, fn))
        reader = ocr.OcrReader(engine="rapidocr")
        t0 = _cpu()
        reader.add(frames, np.arange(len(frames)) / fps)
        cpu = _cpu() - t0
    texts = [{_norm(line.text) for line in f.lines} - {""} for f in reader.frames]
    return {"texts": texts, "detected": reader.reads - reader.skipped_detections, "regional": reader.regional,
            "skipped": reader.skipped_detections,
            "recognised": reader._rapid.recognised,
            "reused": reader._rapid.reused, "cpu_s": cpu}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ocr_rapid.RapidTextReader()  # load the ONNX sessions outside the timings
    counts = ("detected", "regional", "skipped", "recognised", "reused")
    totals = ("frames", *counts, "frames_stale", "frames_wrong", "cpu_s")
    rows: dict[str, dict] = {name: {"videos": {}} for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for video, (source, filters, seconds, fps, h264) in VIDEOS.items():
            frames = frames_of(source, filters, seconds, fps, h264, Path(tmp))
            truth = None
            for name, patches in CONFIGS.items():
                got = read_video(frames, fps, patches)
                truth = truth or got["texts"]
                wrong = sum(a != b for a, b in zip(got["texts"], truth))
                seen: set[str] = set()  # what fresh readings of the earlier frames said
                stale = 0
                for mine, fresh in zip(got["texts"], truth):
                    stale += any(len(text) >= 4 for text in (mine - fresh) & seen)
                    seen |= fresh
                rows[name]["videos"][video] = {"frames": len(frames), **{k: got[k] for k in counts}, "frames_stale": stale,
                                               "frames_wrong": wrong, "cpu_s": got["cpu_s"]}  # fmt: skip
    for row in rows.values():  # totals over the videos
        for key in totals:
            row[key] = sum(v[key] for v in row["videos"].values())
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'configuration':44s} {'frames':>6s} {'detected':>8s} {'a region':>8s} {'skipped':>8s} {'recognised':>10s} {'reused':>6s} "
          f"{'stale':>5s} {'differ':>6s} {'CPU s':>6s}")  # fmt: skip
    for name, row in rows.items():
        print(f"{name:44s} {row['frames']:6d} {row['detected']:8d} {row['regional']:8d} {row['skipped']:8d} {row['recognised']:10d} "
              f"{row['reused']:6d} {row['frames_stale']:5d} {row['frames_wrong']:6d} {row['cpu_s']:6.1f}")  # fmt: skip
    print("\nby video: frames with stale text / frames whose text differs from a fresh reading / frames, CPU s")
    for video in VIDEOS:
        cells = [rows[n]["videos"][video] for n in CONFIGS]
        print(f"  {video:30s} " + "  ".join(f"{c['frames_stale']:2d}/{c['frames_wrong']:2d}/{c['frames']} {c['cpu_s']:5.1f}" for c in cells))


if __name__ == "__main__":
    main()
