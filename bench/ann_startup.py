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

With `--compare-storage` the same vectors are also built into an HNSW index that keeps them as
float32 (`ann_storage = "flat"`, the storage before float16) and saved beside the float16 one; this
tree's server then starts on each in turn (alternating, `--starts` times), and both indexes are asked
the same queries (stored vectors with noise, cosine ~0.9 to them) against exact search: recall@10 at
the default efSearch and of the 500 segments a search fetches, and the latency of each.

    python bench/ann_startup.py [--segments 1000000] [--dir /tmp/ann-bench] [--baseline REF] [--starts N]
                                [--reuse-saved] [--compare-storage] [--json]
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
from vidsearch.search.snapshot import _segments_of, build_snapshot  # noqa: E402
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
    ap.add_argument("--compare-storage", action="store_true",
                    help="also build the index with float32 vectors and compare ready time, memory, recall and latency")  # fmt: skip
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.baseline and args.compare_storage:
        ap.error("--compare-storage starts this tree's server on each storage; run --baseline separately")

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
    if args.compare_storage:
        return compare_storage(db, args, log)
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


def _saved_as(db: Path, settings: Settings) -> tuple[str, object]:
    """Build the coarse index from the store with these settings, save it, and return its saved name."""
    store = Store.open(db)
    store.use_fingerprint(store.stored_fingerprint())
    coarse = build_snapshot(store, settings).coarse
    path = save_coarse(db, coarse)
    return path.name, coarse


def _recall_and_latency(index, queries: np.ndarray, truth10: np.ndarray) -> tuple[dict, dict]:
    """Per way of asking (top 10 at the default efSearch; the 500 segments a search fetches), the
    share of exact search's top 10 found, and the latency (ms, p50 / p99) of one query at a time;
    and each way's top-10 ids per query (to compare two indexes' answers with each other)."""
    out, top = {}, {}
    for label, k in (("top10", 10), ("fetch500", 500)):
        lat, recall, ids = [], [], []
        for q, truth in zip(queries, truth10):
            t = time.perf_counter()
            hits = index.search(q[None, :], k=k)
            lat.append(1000 * (time.perf_counter() - t))
            recall.append(len(set(hits.ids[0].tolist()) & set(truth.tolist())) / 10)
            ids.append(hits.ids[0][:10].tolist())
        out[label] = {"recall@10": round(float(np.mean(recall)), 4), "p50_ms": round(float(np.percentile(lat, 50)), 2),
                      "p99_ms": round(float(np.percentile(lat, 99)), 2)}  # fmt: skip
        top[label] = ids
    return out, top


def _agreement(a: list[list[int]], b: list[list[int]]) -> dict:
    """How alike two indexes' top-10 answers to the same queries are: the mean share of ids in
    common, and the share of queries with the same first id. On random vectors, whose exact
    neighbours are near-ties, this says what float16 changes where recall against exact search
    cannot (both miss the same chance neighbours)."""
    common = [len(set(x) & set(y)) / max(len(x), 1) for x, y in zip(a, b)]
    first = [bool(x) and bool(y) and x[0] == y[0] for x, y in zip(a, b)]
    return {"top10_in_common": round(float(np.mean(common)), 4), "same_first": round(float(np.mean(first)), 4)}


def compare_storage(db: Path, args, log) -> int:
    """float16 vs float32 vectors in the saved HNSW index: size, server ready time and memory, recall."""
    import faiss

    from vidsearch.search.saved_coarse import _CURRENT

    names, indexes = {}, {}
    for storage in ("flat", "fp16"):
        t0 = time.perf_counter()
        names[storage], indexes[storage] = _saved_as(db, Settings(db=db, model="tiny", ann_saved=False, ann="hnsw", ann_storage=storage))
        log(f"built and saved the {storage} HNSW index in {time.perf_counter() - t0:.0f} s")
    root = db / ANN_DIR
    sizes = {s: sum(f.stat().st_size for f in (root / n).iterdir()) for s, n in names.items()}
    n = indexes["fp16"].ntotal
    rng = np.random.default_rng(1)
    vectors, seg_ids, _ = _segments_of(Store.open(db), None)  # the stored float32 vectors: exact search's truth
    raw = vectors[rng.integers(0, n, 200)]
    queries = raw + 0.03 * rng.standard_normal(raw.shape, dtype=np.float32)  # cosine ~0.9 to a stored vector
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, rows = exact.search(queries, 10)
    truth10 = seg_ids[rows]
    del exact, vectors
    measured = {s: _recall_and_latency(ix, queries, truth10) for s, ix in indexes.items()}
    quality = {s: m[0] for s, m in measured.items()}
    agree = {label: _agreement(measured["fp16"][1][label], measured["flat"][1][label]) for label in ("top10", "fetch500")}
    del indexes
    starts: dict[str, list[dict]] = {s: [] for s in names}
    for i in range(args.starts):  # alternating, so both see the same machine
        for storage, name in names.items():
            (root / _CURRENT).write_text(name)
            starts[storage].append(_serve(db, args, sys.executable, args.dir / "serve.log"))
            log(f"  start {i + 1}: {storage}: ready in {starts[storage][-1]['ready_s']:.1f} s, {starts[storage][-1]['rss_mb']:.0f} MB resident")
    result = {"segments": n, "storage": {}, "fp16_vs_float32_answers": agree}
    for storage in names:
        rows = starts[storage]
        result["storage"][storage] = {
            "saved_mb_per_million_segments": round(sizes[storage] / n * 1e6 / 2**20, 1),
            "ready_s": float(np.median([r["ready_s"] for r in rows])), "ready_s_each": [r["ready_s"] for r in rows],
            "rss_mb": float(np.median([r["rss_mb"] for r in rows])), **quality[storage],
        }  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{n:,} segments: HNSW vectors as float32 vs float16 (medians of {args.starts} starts)")
        for storage, r in result["storage"].items():
            print(f"  {storage:5s}: saved {r['saved_mb_per_million_segments']:.0f} MB per million, ready in {r['ready_s']:.1f} s, "
                  f"{r['rss_mb']:.0f} MB resident; recall@10 {r['top10']['recall@10']:.4f} (efSearch default), "
                  f"{r['fetch500']['recall@10']:.4f} (500 fetched); search p50/p99 {r['top10']['p50_ms']}/{r['top10']['p99_ms']} ms, "
                  f"500 fetched {r['fetch500']['p50_ms']}/{r['fetch500']['p99_ms']} ms")
        for label, a in agree.items():
            print(f"  float16's top 10 against float32's ({label}): {100 * a['top10_in_common']:.1f}% in common, "
                  f"same first result {100 * a['same_first']:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
