"""How fast `vidsearch serve` is ready on a big index: rebuilding the coarse index from the store at
start (the baseline; what every start paid before the index was saved) against loading the index
saved beside the store (search/saved_coarse.py), in one run, on the same index.

The index is synthetic: `--segments` random unit vectors of the tiny model's width in a real store
(videos of `--per-video` segments each, a few unit vectors per video), written once with the store's
own commit and kept in `--dir` to be reused. Printed: seconds from `vidsearch serve` to the first
200 of /readyz, the server's resident memory once ready, and the saved index's size per million
segments. The first serve builds and then saves in the background; the bench waits for the save.

    python bench/ann_startup.py [--segments 1000000] [--dir /tmp/ann-bench] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from api_load import Server  # noqa: E402

from vidsearch.encoders import load_backbone  # noqa: E402
from vidsearch.search.saved_coarse import ANN_DIR, saved_version  # noqa: E402
from vidsearch.store import EncodedVideo, Store  # noqa: E402


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_store(db: Path, segments: int, per_video: int, log) -> None:
    """A store of synthetic videos with the tiny model's fingerprint, committed in batches."""
    backbone = load_backbone("tiny")
    store = Store.open(db, backbone.fingerprint, create=True)
    d, rng = backbone.dim, np.random.default_rng(0)
    n_videos = segments // per_video
    t0 = time.perf_counter()
    for start in range(0, n_videos, 1000):
        batch = []
        for i in range(start, min(start + 1000, n_videos)):
            vid = f"{i:016x}"
            units = 4
            batch.append(EncodedVideo(
                video={"video_id": vid, "path": f"/synthetic/{vid}.mp4", "title": None, "metadata": "{}",
                       "duration": float(per_video), "fps": 25.0, "width": 640, "height": 360, "size_bytes": 1,
                       "has_audio": False, "n_units": units, "decoder": "synthetic"},
                unit_start=np.arange(units, dtype=np.float32), unit_end=np.arange(1, units + 1, dtype=np.float32),
                unit_vectors=_unit(rng, units, d), seg_kind=np.array(["window"] * per_video),
                seg_start=np.arange(per_video, dtype=np.float64), seg_end=np.arange(1, per_video + 1, dtype=np.float64),
                seg_vectors=_unit(rng, per_video, d),
            ))  # fmt: skip
        store.commit(batch)
        log(f"  {min(start + 1000, n_videos) * per_video:,} segments written ({time.perf_counter() - t0:.0f} s)")
    store.optimize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=1_000_000)
    ap.add_argument("--per-video", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/vidsearch-ann-bench"))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds a server may take to be ready")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    db = args.dir / f"db-{args.segments}"
    if not (db / "videos.lance").exists():
        shutil.rmtree(db, ignore_errors=True)
        log(f"writing a store of {args.segments:,} segments to {db}")
        build_store(db, args.segments, args.per_video, log)
    shutil.rmtree(db / ANN_DIR, ignore_errors=True)
    runs = {}
    for name in ("rebuild at start (baseline)", "load the saved index"):
        with Server(db, args.dir / "serve.log", ready_timeout=args.timeout) as server:
            runs[name] = {"ready_s": round(server.ready_seconds, 2), "rss_mb": round(server.rss_mb(), 1)}
            log(f"{name}: ready in {server.ready_seconds:.1f} s, {server.rss_mb():.0f} MB resident")
            deadline = time.monotonic() + args.timeout
            while saved_version(db) is None and time.monotonic() < deadline:  # the first start saves
                time.sleep(0.5)
    current = db / ANN_DIR / (db / ANN_DIR / "CURRENT").read_text().strip()
    manifest = json.loads((current / "manifest.json").read_text())
    saved_bytes = sum(f.stat().st_size for f in current.iterdir())
    per_million = saved_bytes / manifest["ntotal"] * 1e6 / 2**20
    base, new = (r["ready_s"] for r in runs.values())
    result = {"segments": manifest["ntotal"], "dim": manifest["dim"], "kind": manifest["kind"], "runs": runs,
              "speedup": round(base / new, 1), "saved_mb_per_million_segments": round(per_million, 1)}  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['segments']:,} segments x {result['dim']} ({result['kind']}): ready in {base:.1f} s rebuilding, "
              f"{new:.1f} s loading ({result['speedup']}x); saved index {per_million:.0f} MB per million segments")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
