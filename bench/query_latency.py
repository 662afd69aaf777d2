"""Query latency: the coarse stage alone and the whole search, at 10k, 100k and 1M segments.

Sizes no real library here reaches use synthetic vectors shaped like CLIP's, so recall means
something: topics around a shared direction (CLIP's embeddings are far from isotropic), videos around
a topic, 2-5 scenes per video, and 30-60 timed units (frames or merged frames, 1-2 s) per video around
its scenes. Each video has 10 segments, as the indexer makes them: the whole video plus 9 windows
(each the normalised mean of its units). A query is a noisy copy of one scene of one video (cosine ~0.6
to it), so the "right" video is known and the full search's hit rate is a sanity check, not a claim.

What is timed (no text encoding in either; query vectors are passed in):
- coarse: what the candidate pool (`search/ranking.py`) does first: `CoarseIndex.search(q, k=coarse_segments)` (1000
  segments, so HNSW runs at efSearch = 1000) and `per_video_best` over the hits; beside it the same
  call on an exact index (IndexFlatIP over the very same vectors, no copy), and a plain top-10 ANN
  query at the default efSearch for reference;
- full: `search_response(engine, request, query_vector=q)` (what the API answers): coarse + fusion + X-Pool re-rank of 100
  candidate videos from their stored units and their best event windows + moments and the response
  objects of the first page; beside it, the same without the event window (its cost);
  The engine is built from an in-memory snapshot and pre-seeded feature cache
  (`SearchEngine.from_snapshot`), so no store is read at query time.
Text encoding is timed on its own (`ClipBackbone.encode_text`, one query at a time, no cache).

Recall@10 is the overlap of the ANN's top-10 segments with exact search's, averaged over queries;
"cand@100" is the overlap of the 100 candidate videos handed to the re-ranker (ANN vs exact).
Figures are medians over --repeats passes of p50/p99 over --queries queries each, after a warm-up.

The built index is cached under --workdir (CoarseIndex.save/load): at 1M segments the HNSW build
takes minutes on 2 cores, and the corpus is regenerated from its seed (checked against the cache).
Memory at 1M: ~9 GB of unit vectors (4.5M x 512 float32) + ~1.3 GB of index with float16 vectors (~2.3 GB
with `--ann-storage flat`), + 2 GB during a build and for exact search's float32 copy.

    python bench/query_latency.py [--sizes 10k 100k 1M] [--queries 300] [--repeats 3] [--ann-storage fp16|flat]
                                  [--workdir DIR] [--text-models tiny ViT-B-32] [--no-text] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LANCE_LOG", "error")

import vidsearch.search  # noqa: E402,F401 - imported first, as the server does (import order sets OpenMP knobs)
import faiss  # noqa: E402
import numpy as np  # noqa: E402

from vidsearch.api_models import SearchRequest  # noqa: E402
from vidsearch.config import Settings  # noqa: E402
from vidsearch.search.coarse import CoarseIndex  # noqa: E402
from vidsearch.search import SearchEngine, Snapshot, per_video_best, ranking  # noqa: E402
from vidsearch.server import search_response  # noqa: E402
from vidsearch.search.features import VideoFeatures  # noqa: E402

DATA_VERSION = 1  # bump when the generator changes, so cached indexes are rebuilt
SEGMENTS_PER_VIDEO = 10  # the whole video + 9 windows
WINDOWS = SEGMENTS_PER_VIDEO - 1
TARGETS = {"coarse_p99_ms": 5.0, "recall_at_10": 0.95, "full_p50_ms": 30.0, "full_p99_ms": 100.0}
TARGET_SIZE = 1_000_000

PHRASES = [
    "a dog catches a red frisbee", "where she says the revenue grew", "a man rides a bicycle down a hill",
    "sunset over the ocean with waves", "children playing football in a park", "a cat sleeping on a sofa",
    "close-up of hands typing on a keyboard", "a car driving through a city at night", "people dancing at a wedding",
    "a chef chopping onions in a kitchen", "snow falling on a quiet street", "an aeroplane taking off",
    "a crowd cheering in a stadium", "a woman giving a presentation with slides", "a horse running in a field",
    "fireworks over a river", "a person skiing down a slope", "a train arriving at a station",
    "a baby laughing", "rain drops on a window", "a drone shot of mountains", "a birthday cake with candles",
    "two people shaking hands", "a lecture about machine learning", "a goal in the last minute",
    "a bird landing on a branch", "traffic lights turning red", "someone pouring coffee into a cup",
    "a rocket launch", "a skateboarder doing a trick", "the chart shows quarterly sales",
    "a boat sailing on a lake", "a dog barking at the door", "a man playing guitar on stage",
    "a timelapse of clouds", "a surgeon in an operating room", "kids building a sandcastle",
    "a cyclist crossing the finish line", "an interview in an office", "a close-up of a flower blooming",
    "a busy market with fruit stalls", "a person jogging in the morning", "a tennis serve in slow motion",
    "a bus stopping at a bus stop", "a cat chasing a laser pointer", "a wave crashing on rocks",
    "a speaker says thank you for watching", "a map with a route drawn on it", "a basketball dunk",
    "a forest path in autumn",
]


# --------------------------------------------------------------------------------------------------
# the synthetic corpus


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def _noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Gaussian noise whose rows have norm ~scale (so scale 1 against a unit vector is cosine ~0.71)."""
    g = rng.standard_normal(shape, dtype=np.float32)
    g *= np.float32(scale / np.sqrt(shape[-1]))
    return g


class Corpus:
    """Videos with units (for the fine stage) and segments (for the coarse stage), and queries."""

    def __init__(self, n_segments: int, dim: int = 512, seed: int = 0, units=(30, 60), n_queries: int = 330,
                 block: int = 4096):
        if n_segments < SEGMENTS_PER_VIDEO:
            raise ValueError(f"need at least {SEGMENTS_PER_VIDEO} segments")
        rng = np.random.default_rng(seed)
        nv = n_segments // SEGMENTS_PER_VIDEO
        self.n_videos, self.dim = nv, dim
        self.video_ids = np.array([f"v{i:07d}" for i in range(nv)])
        counts = rng.integers(units[0], units[1] + 1, nv)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n_units = int(self.offsets[-1])
        self.n_scenes = rng.integers(2, 6, nv)
        # unit times: 1 s frames, some merged into 2 s units (token merging)
        dur = np.where(rng.random(n_units) < 0.3, 2.0, 1.0).astype(np.float32)
        ends = np.cumsum(dur)
        video_start = np.repeat(np.concatenate([[0.0], ends[self.offsets[1:-1] - 1]]), counts).astype(np.float32)
        self.unit_end = (ends - video_start).astype(np.float32)
        self.unit_start = (self.unit_end - dur).astype(np.float32)
        self.durations = self.unit_end[self.offsets[1:] - 1].astype(np.float64)

        common = _unit_rows(rng.standard_normal((1, dim), dtype=np.float32))
        n_topics = max(10, nv // 20)
        topics = _unit_rows(0.6 * common + _noise(rng, (n_topics, dim), 1.0))
        topic_of = rng.integers(0, n_topics, nv)

        self.units = np.empty((n_units, dim), dtype=np.float32)
        self.segments = np.empty((nv * SEGMENTS_PER_VIDEO, dim), dtype=np.float32)
        for v0 in range(0, nv, block):
            v1 = min(nv, v0 + block)
            b = v1 - v0
            centres = _unit_rows(topics[topic_of[v0:v1]] + _noise(rng, (b, dim), 0.7))
            scenes = _unit_rows(centres[:, None, :] + _noise(rng, (b, 5, dim), 0.5))  # up to 5 scenes
            a, z = self.offsets[v0], self.offsets[v1]
            cnt = counts[v0:v1]
            local = np.arange(z - a) - np.repeat(self.offsets[v0:v1] - a, cnt)  # unit index inside its video
            scene_of = local * np.repeat(self.n_scenes[v0:v1], cnt) // np.repeat(cnt, cnt)
            u = scenes[np.repeat(np.arange(b), cnt), scene_of]
            u += _noise(rng, u.shape, 0.4)
            self.units[a:z] = _unit_rows(u)
            del u, scenes, centres
            # segments: whole video, then 9 contiguous windows of units
            seg = self.segments[v0 * SEGMENTS_PER_VIDEO : v1 * SEGMENTS_PER_VIDEO].reshape(b, SEGMENTS_PER_VIDEO, dim)
            seg[:, 0] = np.add.reduceat(self.units[a:z], self.offsets[v0:v1] - a, axis=0)
            w = (np.arange(WINDOWS)[None, :] * cnt[:, None]) // WINDOWS + (self.offsets[v0:v1] - a)[:, None]
            seg[:, 1:] = np.add.reduceat(self.units[a:z], w.reshape(-1), axis=0).reshape(b, WINDOWS, dim)
            _unit_rows(seg)
        self.tag = f"synthetic/v{DATA_VERSION}/n{nv * SEGMENTS_PER_VIDEO}/d{dim}/s{seed}/u{units[0]}-{units[1]}/" + \
            hashlib.sha256(self.segments[:: max(1, len(self.segments) // 64)].tobytes()).hexdigest()[:12]

        # queries: a noisy copy of one scene (mean of its units) of a random video
        qv = rng.integers(0, nv, n_queries)
        qs = rng.integers(0, 1 << 30, n_queries) % self.n_scenes[qv]
        q = np.empty((n_queries, dim), dtype=np.float32)
        for i, (v, s) in enumerate(zip(qv, qs)):
            c, ns = counts[v], self.n_scenes[v]
            lo = self.offsets[v] + -(-s * c // ns)  # first unit with unit * ns // c == s
            hi = self.offsets[v] + -(-(s + 1) * c // ns)
            q[i] = self.units[lo:hi].mean(axis=0)
        self.queries = _unit_rows(_unit_rows(q) + _noise(rng, q.shape, 1.2))
        self.query_video = self.video_ids[qv]

    # -- ids of the segments (for building the index) -------------------------------------------
    @property
    def n_segments(self) -> int:
        return self.n_videos * SEGMENTS_PER_VIDEO

    @property
    def seg_video(self) -> np.ndarray:
        return np.repeat(self.video_ids, SEGMENTS_PER_VIDEO)

    @property
    def seg_ids(self) -> np.ndarray:
        return np.char.add(np.char.add(self.seg_video, ":"), np.tile(np.arange(SEGMENTS_PER_VIDEO).astype(str), self.n_videos))

    # -- a disk cache: generating 1M segments' units takes minutes, reading them back seconds -----
    ARRAYS = ("video_ids", "offsets", "n_scenes", "unit_start", "unit_end", "durations", "units", "queries",
              "query_video", "segments")  # fmt: skip

    @staticmethod
    def cache_dir(workdir: Path, n_segments: int, dim: int, seed: int, units, n_queries: int) -> Path:
        return workdir / f"corpus-v{DATA_VERSION}-n{n_segments}-d{dim}-s{seed}-u{units[0]}-{units[1]}-q{n_queries}"

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        for name in self.ARRAYS:
            with open(path / f".{name}.tmp", "wb") as fh:
                np.save(fh, getattr(self, name), allow_pickle=False)
            os.replace(path / f".{name}.tmp", path / f"{name}.npy")
        (path / "meta.json").write_text(json.dumps({"tag": self.tag, "dim": self.dim, "n_videos": self.n_videos}))

    @classmethod
    def load(cls, path: Path) -> Corpus:
        meta = json.loads((path / "meta.json").read_text())
        self = cls.__new__(cls)
        self.tag, self.dim, self.n_videos = meta["tag"], meta["dim"], meta["n_videos"]
        for name in cls.ARRAYS:  # segments stay on disk (mapped) until an index build needs them
            setattr(self, name, np.load(path / f"{name}.npy", mmap_mode="r" if name == "segments" else None))
        return self

    def features(self) -> dict[str, VideoFeatures]:
        """Views into the big arrays: seeding the cache copies nothing."""
        o = self.offsets
        return {
            vid: VideoFeatures(self.unit_start[o[i] : o[i + 1]], self.unit_end[o[i] : o[i + 1]], self.units[o[i] : o[i + 1]])
            for i, vid in enumerate(self.video_ids)
        }

    def snapshot(self, coarse: CoarseIndex) -> Snapshot:
        videos = {
            vid: {"video_id": vid, "title": f"synthetic video {i}", "path": f"/synthetic/{vid}.mp4",
                  "duration": float(self.durations[i]), "width": 640, "height": 360, "has_audio": False,
                  "metadata": {}}
            for i, vid in enumerate(self.video_ids)
        }  # fmt: skip
        return Snapshot(version=self.tag, videos=videos, ids=self.video_ids.copy(), durations=self.durations.copy(),
                        coarse=coarse)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# indexes


def coarse_index(corpus: Corpus, workdir: Path | None, kind: str, log, storage: str = "fp16") -> tuple[CoarseIndex, dict]:
    """The engine's coarse index over the corpus's segments, from the cache when it matches."""
    n = corpus.n_segments
    path = workdir / f"coarse-{kind}-{storage}-{n}-d{corpus.dim}" if workdir else None
    if path is not None and (path / "manifest.json").is_file():
        try:
            if CoarseIndex.read_manifest(path).get("source_version") == corpus.tag:
                t0 = time.perf_counter()
                idx = CoarseIndex.load(path)
                info = {"cached": True, "load_s": round(time.perf_counter() - t0, 1),
                        "build_s": (idx.build_params or {}).get("build_seconds")}  # fmt: skip
                log(f"  loaded cached {idx.kind} index ({info['load_s']} s; built in {info['build_s']} s)")
                return idx, info
        except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt
            log(f"  cached index unusable ({exc}); rebuilding")
    log(f"  building the {kind} coarse index over {n:,} x {corpus.dim} ...")
    t0 = time.perf_counter()
    idx = CoarseIndex.build(np.ascontiguousarray(corpus.segments), corpus.seg_ids, corpus.seg_video, kind=kind, hnsw_storage=storage,
                            source_version=corpus.tag)  # fmt: skip
    info = {"cached": False, "build_s": round(time.perf_counter() - t0, 1)}
    log(f"  built {idx.kind} in {info['build_s']} s")
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)
        idx.save(path)
    return idx, info


def exact_view(idx: CoarseIndex, vectors: np.ndarray | None) -> CoarseIndex:
    """An exact (flat) CoarseIndex over the float32 vectors `idx` was built from: the very memory
    `idx` holds where it keeps them as float32, else (an HNSW with float16 vectors) a flat copy."""
    raw = idx._index  # noqa: SLF001 - a benchmark looks inside
    flat = raw if idx.kind == "flat" else faiss.downcast_index(raw.storage)
    if not isinstance(flat, faiss.IndexFlat):
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(np.ascontiguousarray(vectors, np.float32))
    exact = CoarseIndex(flat, "flat", idx._ids, idx._video_codes, idx._video_names)  # noqa: SLF001
    exact._owner = idx  # keep the HNSW index (which owns the storage) alive as long as the view
    return exact


def stored_vectors(exact: CoarseIndex) -> np.ndarray:
    """The float32 vectors of an exact view, without a copy."""
    flat = exact._index  # noqa: SLF001
    return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)


# --------------------------------------------------------------------------------------------------
# timing


def _pct(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def timed(fn, items, warm, repeats: int) -> dict:
    """p50/p99 per pass over `items` after one call per item of `warm`; the median of the passes."""
    for x in warm:
        fn(x)
    passes = []
    for _ in range(repeats):
        ms = []
        for x in items:
            t0 = time.perf_counter()
            fn(x)
            ms.append((time.perf_counter() - t0) * 1000)
        passes.append(_pct(ms))
    out = {k: round(statistics.median(p[k] for p in passes), 3) for k in passes[0]}
    out["passes"] = [{k: round(v, 3) for k, v in p.items()} for p in passes]
    out["n"] = len(items)
    return out


class _NoTextEncoder:
    """The latency runs pass query vectors; the pooler only needs the dimension."""

    def __init__(self, dim: int):
        self.dim = dim

    def encode_text(self, texts):  # pragma: no cover - never called with query vectors
        raise RuntimeError("query_latency passes query vectors; text encoding is timed separately")


@contextlib.contextmanager
def _without_event_window():
    """The fine stage as it was before each candidate's best event window was added (zero weight)."""
    saved = ranking.best_windows
    ranking.best_windows = lambda q, feats, *a, **k: np.zeros(len(feats), np.float32)
    try:
        yield
    finally:
        ranking.best_windows = saved


def bench_size(n: int, args, log) -> dict:
    t0 = time.perf_counter()
    params = dict(n_segments=n, dim=args.dim, seed=args.seed, units=tuple(args.units), n_queries=max(1000, args.queries + args.warmup))
    cdir = Corpus.cache_dir(args.workdir, **params)
    if (cdir / "meta.json").is_file():
        corpus, how = Corpus.load(cdir), "read from the cache"
    else:
        corpus, how = Corpus(**params), "generated"
        if args.cache_corpus:
            corpus.save(cdir)
    gen_s = time.perf_counter() - t0
    log(f"  corpus: {corpus.n_videos:,} videos, {corpus.n_segments:,} segments, {len(corpus.units):,} units "
        f"({corpus.units.nbytes / 2**30:.1f} GiB) {how} in {gen_s:.0f} s")  # fmt: skip
    idx, build = coarse_index(corpus, args.workdir, args.kind, log, args.ann_storage)
    # exact search's truth: the float32 vectors, which the index holds itself unless it keeps float16
    float32 = None if idx.kind != "hnsw" or args.ann_storage == "flat" else corpus.segments
    corpus.segments = None  # otherwise the index holds its own copy
    gc.collect()
    settings = Settings(db=Path("/nonexistent"), pooling="param_free",
                        **({"coarse_segments": args.coarse_segments} if args.coarse_segments else {}))
    k = min(settings.coarse_segments, idx.n_live)
    exact = exact_view(idx, float32)
    queries = np.ascontiguousarray(corpus.queries[: args.warmup + args.queries])
    qs = [queries[i] for i in range(len(queries))]
    warm_q, timed_q = qs[: args.warmup], qs[args.warmup :]

    # ground truth and recall (batched exact search on the index's own vectors)
    xb = stored_vectors(exact)  # the float32 vectors the index was built from
    _, gt = faiss.knn(queries[args.warmup :], xb, k, metric=faiss.METRIC_INNER_PRODUCT)
    ann = idx.search(queries[args.warmup :], k=k)
    recall10 = float(np.mean([len(np.intersect1d(a[:10], g[:10])) / 10 for a, g in zip(ann.positions, gt)]))
    ann10 = idx.search(queries[args.warmup :], k=10)
    recall10_k10 = float(np.mean([len(np.intersect1d(a, g[:10])) / 10 for a, g in zip(ann10.positions, gt)]))
    names = idx._video_names[idx._video_codes]  # noqa: SLF001
    cand = []
    for a, g in zip(ann.video_ids, gt):
        va = per_video_best(a, np.arange(len(a), 0, -1, dtype=np.float64))[0][: settings.candidates]
        vg = per_video_best(names[g], np.arange(len(g), 0, -1, dtype=np.float64))[0][: settings.candidates]
        cand.append(len(np.intersect1d(va, vg)) / max(1, len(vg)))
    del xb

    def coarse_stage(q, index=idx):
        hits = index.search(q[None, :], k=k)
        return per_video_best(hits.video_ids[0], hits.scores[0])

    log(f"  timing the coarse stage ({idx.kind}, k={k}) ...")
    coarse = timed(coarse_stage, timed_q, warm_q, args.repeats)
    plain = timed(lambda q: idx.search(q[None, :], k=10), timed_q, warm_q, args.repeats)
    nx = min(len(timed_q), args.exact_queries)
    log(f"  timing exact search on {nx} queries ...")
    exact_t = coarse if idx.kind == "flat" else timed(lambda q: coarse_stage(q, exact), timed_q[:nx], warm_q[:2], 1)

    log("  seeding the engine's feature cache ...")
    engine = SearchEngine.from_snapshot(corpus.snapshot(idx), _NoTextEncoder(args.dim), settings, corpus.features())
    reqs = [(SearchRequest(query=PHRASES[i % len(PHRASES)]), q) for i, q in enumerate(qs)]
    log("  timing the full search ...")
    full = timed(lambda rq: search_response(engine, rq[0], query_vector=rq[1]), reqs[args.warmup :], reqs[: args.warmup], args.repeats)
    log("  timing the full search without the best event window (the fine stage before it) ...")
    with _without_event_window():
        full_no_window = timed(lambda rq: search_response(engine, rq[0], query_vector=rq[1]), reqs[args.warmup :], reqs[: args.warmup], args.repeats)
    hit1 = hit10 = 0
    for (rq, q), want in zip(reqs[args.warmup :], corpus.query_video[args.warmup :]):
        got = [r.video.id for r in search_response(engine, rq, query_vector=q).results]
        hit1 += bool(got) and got[0] == want
        hit10 += want in got
    nt = len(timed_q)
    result = {
        "segments": len(idx._ids),  # noqa: SLF001
        "videos": corpus.n_videos,
        "units": int(len(corpus.units)),
        "kind": idx.kind,
        "coarse_k": k,
        "ef_search": idx.ef_search if idx.kind == "hnsw" else None,
        "corpus_s": round(gen_s, 1),
        "corpus": how,
        "index": build,
        "coarse": coarse,
        "exact_coarse": exact_t,
        "ann_top10": plain,
        "recall_at_10": round(recall10, 4),
        "recall_at_10_plain_k10": round(recall10_k10, 4),
        "candidate_recall_at_100": round(float(np.mean(cand)), 4),
        "full": full,
        "full_without_event_window": full_no_window,
        "full_hit_at_1": round(hit1 / nt, 3),
        "full_hit_at_10": round(hit10 / nt, 3),
    }
    del engine, exact, idx, corpus
    gc.collect()
    return result


# --------------------------------------------------------------------------------------------------
# text encoding


def bench_text(models: list[str], n: int, log) -> list[dict]:
    import torch

    from vidsearch.encoders.backbone import load_backbone

    out = []
    for name in models:
        precision = "bf16" if name != "tiny" else "auto"
        try:
            bb = load_backbone(name, pretrained="none", precision=precision, device="cpu")
        except Exception as exc:  # noqa: BLE001 - report, do not lose the other figures
            out.append({"model": name, "error": f"{type(exc).__name__}: {exc}"})
            continue
        phrases = [PHRASES[i % len(PHRASES)] + ("" if i < len(PHRASES) else f" again {i}") for i in range(n)]
        text_tower = getattr(bb.model, "text", None) or getattr(bb.model, "transformer", None) or bb.model
        row = {"model": name, "visual_dtype": str(bb.visual_dtype).removeprefix("torch."),
               "text_dtype": str(next(text_tower.parameters()).dtype).removeprefix("torch."), "dim": bb.dim,
               "torch_threads": torch.get_num_threads()}  # fmt: skip
        log(f"  text encoding with {name} ...")
        row.update(timed(lambda t: bb.encode_text([t]), phrases, phrases[:10], 1))
        row.pop("passes")
        if name != "tiny":
            def autocast(t):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return bb.encode_text([t])
            try:
                row["bf16_autocast"] = {k: v for k, v in timed(autocast, phrases, phrases[:10], 1).items() if k != "passes"}
            except Exception as exc:  # noqa: BLE001
                row["bf16_autocast"] = {"error": f"{type(exc).__name__}: {exc}"}
        out.append(row)
        del bb
    return out


# --------------------------------------------------------------------------------------------------


def parse_size(s: str) -> int:
    s = s.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "km" else s) * mult)


def _fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_report(report: dict) -> None:
    env = report["env"]
    print(f"query latency: {report['dim']}-d vectors, {report['queries']} queries x {report['repeats']} passes "
          f"(median of per-pass p50/p99), {env['cpus']} CPUs, load before/after {env['load_before']} / {env['load_after']}")  # fmt: skip
    print(f"targets at {TARGET_SIZE:,} segments: coarse p99 <= {TARGETS['coarse_p99_ms']} ms with recall@10 >= "
          f"{TARGETS['recall_at_10']}; full search (no text encoding) p50 <= {TARGETS['full_p50_ms']} ms, "
          f"p99 <= {TARGETS['full_p99_ms']} ms")  # fmt: skip
    head = f"{'segments':>9} {'index':6} {'stage':34} {'p50 ms':>8} {'p99 ms':>8} {'target':>16} {'recall@10':>9} {'ok':>4}"
    print(head)
    print("-" * len(head))
    for r in report["sizes"]:
        at_target = r["segments"] >= TARGET_SIZE
        c, f, x, p = r["coarse"], r["full"], r["exact_coarse"], r["ann_top10"]
        ok_c = c["p99_ms"] <= TARGETS["coarse_p99_ms"] and r["recall_at_10"] >= TARGETS["recall_at_10"]
        ok_f = f["p50_ms"] <= TARGETS["full_p50_ms"] and f["p99_ms"] <= TARGETS["full_p99_ms"]
        mark = lambda ok: ("yes" if ok else "NO") if at_target else ""  # noqa: E731
        ef = f", ef {max(r['ef_search'], r['coarse_k'])}" if r["ef_search"] else ""
        seg = f"{r['segments']:,}"
        print(f"{seg:>9} {r['kind']:6} {'coarse: top-' + str(r['coarse_k']) + ' segments' + ef:34} {c['p50_ms']:8.2f} "
              f"{c['p99_ms']:8.2f} {'p99 <= 5':>16} {r['recall_at_10']:9.3f} {mark(ok_c):>4}")  # fmt: skip
        print(f"{'':9} {'flat':6} {'  exact baseline (same call, n=' + str(x['n']) + ')':34} {x['p50_ms']:8.2f} "
              f"{x['p99_ms']:8.2f} {'':>16} {1.0:9.3f}")  # fmt: skip
        if r["kind"] != "flat":
            print(f"{'':9} {r['kind']:6} {'  plain top-10 (ef ' + str(r['ef_search']) + ')':34} {p['p50_ms']:8.2f} "
                  f"{p['p99_ms']:8.2f} {'':>16} {r['recall_at_10_plain_k10']:9.3f}")  # fmt: skip
        print(f"{'':9} {'':6} {'full search (100 cand., moments)':34} {f['p50_ms']:8.2f} {f['p99_ms']:8.2f} "
              f"{'p50<=30 p99<=100':>16} {'':>9} {mark(ok_f):>4}")  # fmt: skip
        if "full_without_event_window" in r:
            w = r["full_without_event_window"]
            print(f"{'':9} {'':6} {'  baseline: without the event window':34} {w['p50_ms']:8.2f} {w['p99_ms']:8.2f}")
        idx = r["index"]
        how = f"loaded from cache in {idx['load_s']} s" if idx.get("cached") else "built now"
        print(f"{'':9} {'':6} candidate recall@100 {r['candidate_recall_at_100']:.3f}; full search finds the query's "
              f"video at rank 1 in {r['full_hit_at_1']:.0%}, top 10 in {r['full_hit_at_10']:.0%}; "
              f"index build {_fmt(idx.get('build_s'), '.0f')} s ({how})")  # fmt: skip
    if report.get("text"):
        print()
        print(f"{'query text encoding (1 query, no cache)':46} {'weights':8} {'p50 ms':>8} {'p99 ms':>8}")
        for t in report["text"]:
            if "error" in t:
                print(f"{t['model']:46} error: {t['error']}")
                continue
            label = f"{t['model']} (visual {t['visual_dtype']}, text {t['text_dtype']})"
            print(f"{label:46} {'random':8} {t['p50_ms']:8.2f} {t['p99_ms']:8.2f}")
            if "bf16_autocast" in t and "error" not in t["bf16_autocast"]:
                a = t["bf16_autocast"]
                print(f"{'  same, text tower under bf16 autocast':46} {'random':8} {a['p50_ms']:8.2f} {a['p99_ms']:8.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["10k", "100k", "1M"], help="segment counts (10k, 100k, 1M, ...)")
    ap.add_argument("--queries", type=int, default=300, help="timed queries per pass")
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3, help="passes; figures are medians over passes")
    ap.add_argument("--exact-queries", type=int, default=30, help="queries timed on the exact baseline (slow at 1M)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--units", type=int, nargs=2, default=[30, 60], metavar=("MIN", "MAX"), help="units per video")
    ap.add_argument("--kind", default="auto", choices=["auto", "flat", "hnsw", "ivfpq"], help="coarse index kind")
    ap.add_argument("--ann-storage", default="fp16", choices=["fp16", "flat"], help="an HNSW index's vectors: float16 or float32")
    ap.add_argument("--coarse-segments", type=int, default=None,
                    help="segments the coarse stage fetches (default: the server's setting, 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None, help="cache built indexes here (reruns are fast)")
    ap.add_argument("--no-cache-corpus", dest="cache_corpus", action="store_false",
                    help="do not keep the generated vectors under --workdir (1M segments: ~11 GB of disk)")
    ap.add_argument("--text-models", nargs="*", default=["tiny", "ViT-B-32"])
    ap.add_argument("--text-queries", type=int, default=100)
    ap.add_argument("--no-text", action="store_true", help="skip the text-encoding timings")
    ap.add_argument("--json", action="store_true", help="print exactly one JSON object (progress goes to stderr)")
    args = ap.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr if args.json else sys.stdout, flush=True)

    tmp = None
    if args.workdir is None:
        tmp = Path(tempfile.mkdtemp(prefix="vidsearch-qlat-"))
        args.workdir = tmp
    args.workdir.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "query_latency", "dim": args.dim, "queries": args.queries, "warmup": args.warmup,
              "repeats": args.repeats, "targets": TARGETS, "target_segments": TARGET_SIZE,
              "env": {"cpus": os.cpu_count(), "faiss": faiss.__version__, "load_before": _load()}, "sizes": []}  # fmt: skip
    try:
        for s in args.sizes:
            n = parse_size(s)
            log(f"{n:,} segments")
            report["sizes"].append(bench_size(n, args, log))
        if not args.no_text and args.text_models:
            report["text"] = bench_text(args.text_models, args.text_queries, log)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    report["env"]["load_after"] = _load()
    if args.json:
        print(json.dumps(report))
    else:
        print()
        print_report(report)
    return 0


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover
        return "?"


if __name__ == "__main__":
    sys.exit(main())
