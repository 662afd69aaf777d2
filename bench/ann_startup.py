"""How fast `vidsearch serve` is ready on a big index: rebuilding the coarse index from the store at
start (the baseline; what every start paid before the index was saved) against loading the index
saved beside the store (search/saved_coarse.py), in one run, on the same index.

The index is synthetic: `--segments` random unit vectors of the tiny model's width in a real store
(videos of `--per-video` segments each, a few unit vectors per video), written once with the store's
own commit and kept in `--dir` to be reused. Printed: the rebuild (read the vectors back, build the
index; timed in-process: the baseline server's ready time is that plus its start-up), then seconds
from `vidsearch serve` to the first 200 of /readyz with the saved index, the server's resident
memory once ready, and the saved index's size per million segments.

With `--baseline GIT_REF` that commit's server is started too, on the same saved index, alternating
with this one `--starts` times (medians): how much the start itself got faster.

    python bench/ann_startup.py [--segments 1000000] [--dir /tmp/ann-bench] [--baseline REF] [--starts N]
                                [--reuse-saved] [--json]
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
from api_load import Server, baseline_python  # noqa: E402

from vidsearch.config import Settings  # noqa: E402
from vidsearch.encoders import load_backbone  # noqa: E402
from vidsearch.encoders.backbone import WEIGHTS_DIR  # noqa: E402
from vidsearch.search.saved_coarse import ANN_DIR, save_coarse  # noqa: E402
from vidsearch.search.snapshot import build_snapshot  # noqa: E402
from vidsearch.store import EncodedVideo, Store  # noqa: E402


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


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


def _serve(db: Path, args, python: str, log_path: Path) -> dict:
    """One `vidsearch serve` start on the saved index: seconds to the first 200 of /readyz, memory.
    Every server loads this tree's `tiny` weights, which the store was written with (a baseline
    commit may ship other weights: it would refuse the index as another model's)."""
    env = {"VIDSEARCH_CHECKPOINT": str(WEIGHTS_DIR / "tiny.pt")}
    with Server(db, log_path, ready_timeout=args.timeout, python=python, env=env) as server:
        return {"ready_s": round(server.ready_seconds, 2), "rss_mb": round(server.rss_mb(), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segments", type=int, default=1_000_000)
    ap.add_argument("--per-video", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/vidsearch-ann-bench"))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds a server may take to be ready")
    ap.add_argument("--baseline", metavar="GIT_REF", default=None,
                    help="also start that commit's server on the same saved index, alternating with this one")  # fmt: skip
    ap.add_argument("--starts", type=int, default=1, help="starts of each server (the medians are reported)")
    ap.add_argument("--reuse-saved", action="store_true",
                    help="keep an index saved by an earlier run and skip the rebuild (its time is then not measured)")  # fmt: skip
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    db = args.dir / f"db-{args.segments}"
    if not (db / "videos.lance").exists():
        shutil.rmtree(db, ignore_errors=True)
        log(f"writing a store of {args.segments:,} segments to {db}")
        build_store(db, args.segments, args.per_video, log)
    runs: dict[str, dict] = {}
    if not (args.reuse_saved and (db / ANN_DIR / "CURRENT").exists()):
        shutil.rmtree(db / ANN_DIR, ignore_errors=True)
        # the baseline: what every start paid before, the coarse index rebuilt from the store (timed here
        # in-process, so it is a lower bound of that server's ready time: imports and model load come on top)
        settings = Settings(db=db, model="tiny", ann_saved=False)
        store = Store.open(db)
        store.use_fingerprint(store.stored_fingerprint())
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        snapshot = build_snapshot(store, settings)
        rebuild_s = time.perf_counter() - t0
        log(f"rebuild from the store (baseline): {rebuild_s:.1f} s, +{_rss_mb() - rss0:.0f} MB resident")
        save_coarse(db, snapshot.coarse)
        del snapshot
        runs["rebuild at start (baseline, in-process build only)"] = {"ready_s": round(rebuild_s, 2)}
    servers = {"vidsearch serve, loading the saved index": sys.executable}
    if args.baseline:
        servers = {f"{args.baseline}'s vidsearch serve, loading the saved index": baseline_python(args.baseline, args.dir, log), **servers}
    starts: dict[str, list[dict]] = {name: [] for name in servers}
    for i in range(args.starts):  # alternating, so both see the same machine
        for name, python in servers.items():
            starts[name].append(_serve(db, args, python, args.dir / "serve.log"))
            log(f"  start {i + 1}: {name}: ready in {starts[name][-1]['ready_s']:.1f} s, {starts[name][-1]['rss_mb']:.0f} MB resident")
    for name, rows in starts.items():
        runs[name] = {"ready_s": float(np.median([r["ready_s"] for r in rows])), "rss_mb": float(np.median([r["rss_mb"] for r in rows])),
                      "ready_s_each": [r["ready_s"] for r in rows]}  # fmt: skip
    current = db / ANN_DIR / (db / ANN_DIR / "CURRENT").read_text().strip()
    manifest = json.loads((current / "manifest.json").read_text())
    saved_bytes = sum(f.stat().st_size for f in current.iterdir())
    per_million = saved_bytes / manifest["ntotal"] * 1e6 / 2**20
    result = {"segments": manifest["ntotal"], "dim": manifest["dim"], "kind": manifest["kind"], "runs": runs,
              "saved_mb_per_million_segments": round(per_million, 1)}  # fmt: skip
    names = list(runs)
    new = names[-1]
    result["speedup"] = {base: round(runs[base]["ready_s"] / runs[new]["ready_s"], 2) for base in names[:-1]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['segments']:,} segments x {result['dim']} ({result['kind']}); saved index {per_million:.0f} MB per million segments")
        for name, run in runs.items():
            print(f"  {name}: ready in {run['ready_s']:.1f} s" + (f" (median of {len(run['ready_s_each'])})" if "ready_s_each" in run else ""))
        for base, ratio in result["speedup"].items():
            print(f"  {new}: {ratio}x faster than {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
