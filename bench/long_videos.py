"""Peak memory of `vidsearch index` on long videos, every channel on: it must not grow with duration
beyond the vectors themselves.

Renders 10 min, 1 h and 2 h videos (160x120, 5 fps, a caption that changes every 5 minutes, a quiet
tone), indexes each with the shipped `tiny` model (audio tower, speech and OCR on) in a fresh index, and
samples the resident memory of the indexer and of its decoder processes every 0.2 s. Beside each
figure: what the vectors themselves take, and what holding the decoded video whole would take (frames
at the encoder's size, frames at OCR size, the 16 kHz waveform), the way the indexer worked before it
streamed chunks.

`--picture moving` renders a 480x360 testsrc2 at 25 fps instead (a picture that changes everywhere,
with a running clock: what a screen recording or a broadcast gives OCR), and `--baseline REF` indexes
each video with vidsearch as of that commit too, in the same run.

    python bench/long_videos.py [--minutes 10 60 120] [--picture still|moving] [--baseline GIT_REF] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # api_load's baseline builder

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def render(path: Path, minutes: float, picture: str = "still") -> Path:
    seconds = int(minutes * 60)
    if picture == "moving":
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y",
             "-f", "lavfi", "-i", f"testsrc2=size=480x360:rate=25:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency=220:duration={seconds}",
             "-af", "volume=0.05", "-c:v", "libx264", "-preset", "ultrafast", "-g", "250", "-c:a", "aac", "-b:a", "32k", str(path)],
            check=True,
        )  # fmt: skip
        return path
    text = r"part %{eif\:t/300\:d}"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"color=c=navy:size=160x120:rate=5:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=220:duration={seconds}",
         "-vf", f"drawtext=fontfile={FONT}:text='{text}':fontsize=20:fontcolor=white:x=10:y=40",
         "-af", "volume=0.05", "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-c:a", "aac", "-b:a", "32k", str(path)],
        check=True,
    )  # fmt: skip
    return path


def _rss_kib(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(stat.parent.name))
    return out


def measure(video: Path, db: Path, python: str = sys.executable) -> dict:
    cmd = [python, "-m", "vidsearch.cli", "index", str(video), "--db", str(db), "--model", "tiny", "--json"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(db.parent))
    peak = {"indexer": 0, "decoder": 0, "tree": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            main = _rss_kib(proc.pid)
            kids = [_rss_kib(c) for c in _children(proc.pid)]
            peak["indexer"] = max(peak["indexer"], main)
            peak["decoder"] = max([peak["decoder"], *kids])
            peak["tree"] = max(peak["tree"], main + sum(kids))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"index failed: {err[-2000:]}")
    summary = json.loads(out.splitlines()[-1])
    return {"seconds": round(time.monotonic() - t0, 1), "summary": summary, **{f"peak_{k}_mb": round(v / 1024, 1) for k, v in peak.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[10, 60, 120])
    ap.add_argument("--picture", choices=("still", "moving"), default="still")
    ap.add_argument("--baseline", metavar="GIT_REF", help="also index each video with vidsearch as of this commit")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        builds = [("this tree", sys.executable)]
        if args.baseline:
            from api_load import baseline_python  # the same installed-from-git-archive baseline

            builds.insert(0, (f"baseline {args.baseline}", baseline_python(args.baseline, Path(tmp), lambda m: print(m, file=sys.stderr))))
        for minutes in args.minutes:
            video = render(Path(tmp) / f"long_{int(minutes)}min.mp4", minutes, args.picture)
            h, w = (360, 480) if args.picture == "moving" else (120, 160)
            for name, python in builds:
                db = Path(tmp) / f"run_{len(rows)}" / "db"
                db.parent.mkdir()
                r = measure(video, db, python)
                s = r["summary"]
                units, seconds = s["units"], minutes * 60
                vectors_mb = units * 256 * 4 / 2**20  # tiny: 256-d float32 unit vectors (audio tokens add ~4x units)
                whole_mb = (seconds * (112 * 112 * 3 + w * h * 3) + seconds * 16000 * 4) / 2**20
                rows.append({"build": name, "minutes": minutes, "picture": args.picture, "index_seconds": r["seconds"], "units": units,
                             "failed": s["failed"], "warnings": len(s["warnings"]), "peak_indexer_mb": r["peak_indexer_mb"],
                             "peak_decoder_mb": r["peak_decoder_mb"], "peak_tree_mb": r["peak_tree_mb"],
                             "unit_vectors_mb": round(vectors_mb, 1), "whole_video_in_memory_mb": round(whole_mb, 1)})  # fmt: skip
            os.remove(video)
    if args.json:
        print(json.dumps({"rows": rows}))
        return
    print(f"{'build':>20} {'video':>8} {'index s':>8} {'units':>6} {'indexer MB':>11} {'decoder MB':>11} {'all MB':>8} {'vectors MB':>11} {'whole video MB':>15}")
    for r in rows:
        print(f"{r['build']:>20} {r['minutes']:>6.0f} m {r['index_seconds']:>8.1f} {r['units']:>6} {r['peak_indexer_mb']:>11.1f} {r['peak_decoder_mb']:>11.1f} "
              f"{r['peak_tree_mb']:>8.1f} {r['unit_vectors_mb']:>11.1f} {r['whole_video_in_memory_mb']:>15.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
