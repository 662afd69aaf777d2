"""A library of many small files: how long discovery and a "nothing changed" run take.

Builds N files (default 10,000) in 100 folders: copies of 20 distinct short clips (so the first run
decodes 20 videos and links the rest by content hash), then times, in one run:
- discovery alone (walk + stat + sniff), in process;
- the first `vidsearch index` (hash every file, decode 20, link the rest);
- the second `vidsearch index` over the unchanged library (the baseline it must beat: the first run),
  both as wall time of the whole command and as the run's own `elapsed` (without start-up).

    python bench/many_files.py [--files 10000] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vidsearch.indexer.discover import discover

CMD = [sys.executable, "-m", "vidsearch.cli", "index"]
TINY = ["--model", "tiny", "--no-speech", "--no-ocr", "--json"]


def build(root: Path, n: int, distinct: int = 20) -> None:
    clips = []
    for i in range(distinct):
        clip = root / f"seed_{i}.mp4"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=5:duration={1 + i % 3}",
                        "-vf", f"hue=h={i * 17}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip)], check=True)  # fmt: skip
        clips.append(clip)
    lib = root / "library"
    for i in range(n):
        folder = lib / f"folder_{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clips[i % distinct], folder / f"clip_{i:05d}.mp4")


def timed_index(lib: Path, db: Path) -> tuple[float, dict]:
    t0 = time.monotonic()
    proc = subprocess.run([*CMD, str(lib), "--db", str(db), *TINY], capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return time.monotonic() - t0, json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        build(root, args.files)
        build_s = time.monotonic() - t0
        lib = root / "library"
        t0 = time.monotonic()
        sources, problems = discover([lib])
        discover_s = time.monotonic() - t0
        first_s, first = timed_index(lib, root / "db")
        again_s, again = timed_index(lib, root / "db")
    result = {
        "files": args.files, "found": len(sources), "problems": len(problems), "build_seconds": round(build_s, 1),
        "discovery_seconds": round(discover_s, 3),
        "first_run": {"wall_seconds": round(first_s, 1), "elapsed": first["elapsed"], "indexed": first["indexed"], "linked": first["linked"], "failed": first["failed"]},
        "unchanged_run": {"wall_seconds": round(again_s, 1), "elapsed": again["elapsed"], "skipped": again["skipped"], "indexed": again["indexed"]},
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.files} files ({len(sources)} found) in 100 folders, 20 distinct clips")
    print(f"  discovery (walk, stat, sniff):          {discover_s:8.2f} s")
    print(f"  first index (hash all, decode 20):       {first_s:8.1f} s wall, {first['elapsed']:.1f} s in the run "
          f"(indexed {first['indexed']}, linked {first['linked']}, failed {first['failed']})")
    print(f"  unchanged re-run:                        {again_s:8.1f} s wall, {again['elapsed']:.1f} s in the run "
          f"(skipped {again['skipped']}, indexed {again['indexed']})  -> {first_s / again_s:.1f}x faster than the first run")


if __name__ == "__main__":
    main()
