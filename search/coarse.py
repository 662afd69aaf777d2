"""The coarse stage: approximate nearest neighbours over pooled segment vectors (FAISS).

The coarse stage only has to put the right videos among a few hundred candidates cheaply; the fine
stage (X-Pool re-ranking, moment localization) then looks at those closely. So the index is chosen
by size and memory, not by taste:

- fewer than `flat_max` vectors (50k): exact search (IndexFlatIP). It is fast enough at that size,
  needs no tuning, and is the recall reference for everything else.
- more: HNSW (M=32), recall@10 >= 0.95 at the default efSearch on clustered, CLIP-like data. Its
  vectors are kept as float16 (IndexHNSWSQ, `hnsw_storage="fp16"`): they are most of its memory (a
  256-d float32 vector is 1 KB, its level-0 links 256 B): half the bytes to hold and to read at a
  server's start, for unit vectors whose 16-bit rounding (~1e-3) moves no ranking a search can
  see (`bench/ann_startup.py --compare-storage` measures recall and speed against float32).
- when a memory budget is given and HNSW would not fit: IVF-PQ with exact re-ranking of the PQ
  candidates (IndexRefineFlat; PQ alone caps recall near 0.6 on this kind of data).

With a GPU (faiss-gpu installed and `faiss.get_num_gpus() > 0`), exact search runs on the GPU up to
`gpu_flat_max` vectors (brute force there beats a CPU graph), and IVF training runs there; HNSW has
no GPU implementation in FAISS and stays on the CPU.

Vectors are float32 and unit-norm (the encoders normalise), so inner product is cosine. FAISS keys are
int64 positions in insertion order; the index owns the position -> segment id and -> video id maps.

Deletions are tombstones, not FAISS removals: removing from HNSW is not supported and removing from a
flat index renumbers positions. A removed video is masked at query time with an ID selector on the
CPU (exact filtering inside the search), or by over-fetching and filtering on the GPU, and results
are always post-filtered, so a removed video is never returned. When many rows are dead, rebuild
from the store (`dead_fraction` says when).

The manifest written by `save` records the caller's source version (e.g. the LanceDB table version
the vectors were read from) and the model fingerprint, so a server can tell a stale index from a
current one and never ranks vectors of another model.

Concurrency: searches may run in parallel; `add` and `remove_videos` must not overlap searches on
the same instance (HNSW insertion is not read-safe). A server mutates a copy or rebuilds, then swaps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np

from vidsearch.cores import usable_cores

# FAISS's OpenMP threads busy-wait between parallel regions by default. On a machine whose cores are
# shared (encoders, the web server, other jobs) that spinning starves the thread doing the work: IVF-PQ
# training measured 1.6-4.7 s with 2 threads under load vs 0.1 s with passive waiting. The setting is
# read once, when FAISS's OpenMP runtime loads, so it must precede the import; an operator's own
# value wins.
if "faiss" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # faiss is a hard dependency; the guard only improves the message on a broken install.
    import faiss
except ImportError as exc:  # pragma: no cover
    raise ImportError("vidsearch.search.coarse needs faiss (faiss-cpu or faiss-gpu-cu12)") from exc

__all__ = ["CoarseIndex", "CoarseHits", "configure_faiss", "INDEX_KINDS"]

log = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "flat", "hnsw", "ivfpq")
MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# Defaults measured on 100k x 256 clustered synthetic vectors, 2 shared cores, M=32, efConstruction 80:
# efSearch 64 gives recall@10 0.996-1.000 across cluster counts/spreads at ~0.1 ms/query batched
# (~0.3 ms single); 32 gives 0.963-0.999. Near-random data (top-1 cosine ~0.33) caps near 0.93 at any
# efSearch with efConstruction 80; raise both for such data. IVF-PQ with exact refinement: 0.996 at
# nprobe 8-64 (SQ8 refinement 0.981, PQ alone 0.47).
DEFAULT_FLAT_MAX = 50_000
DEFAULT_GPU_FLAT_MAX = 5_000_000
DEFAULT_HNSW_M = 32
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 64
HNSW_STORAGE = ("fp16", "flat")  # how an HNSW index keeps its vectors: float16 (default) or float32
VECTOR_BYTES = {"fp16": 2, "flat": 4}
DEFAULT_NPROBE = 32
DEFAULT_K_FACTOR = 8
BLAS_THRESHOLD = 20
GPU_MAX_K = 2048  # FAISS GPU k-selection limit


def _cpu_count() -> int:
    return usable_cores()


_configured = False


def configure_faiss(threads: int | None = None, blas_threshold: int = BLAS_THRESHOLD) -> None:
    """Set FAISS's process-wide knobs once.

    FAISS switches from its own distance loop to BLAS only for query batches of at least
    `distance_compute_blas_threshold` (default 20 in old versions, far higher now); batches below it
    run ~10x slower than they should on these machines. OpenMP should use the cores this process may
    run on (the affinity mask, not the host's count, inside containers).
    """
    global _configured
    faiss.cvar.distance_compute_blas_threshold = int(blas_threshold)
    faiss.omp_set_num_threads(int(threads) if threads else _cpu_count())
    _configured = True


def _ensure_configured() -> None:
    if not _configured:
        configure_faiss()


def _gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get else 0
    except Exception:  # pragma: no cover - CPU build quirks
        return 0


class CoarseHits(NamedTuple):
    """Search results, (Q, k) each, best first; slots with no result have score -inf, position -1 and
    empty ids (fewer live vectors than k, or everything else masked)."""

    scores: np.ndarray  # float32
    ids: np.ndarray  # segment ids (str)
    video_ids: np.ndarray  # video ids (str)
    positions: np.ndarray  # int64 positions in the index

    @property
    def valid(self) -> np.ndarray:
        return self.positions >= 0


def _as_matrix(vectors: Any, dim: int | None = None) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"vectors have dimension {x.shape[1]}, the index has {dim}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinite values")
    return x


def _as_str_array(ids: Iterable[Any], n: int, what: str) -> np.ndarray:
    arr = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    arr = arr.astype(str).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{arr.shape[0]} {what} for {n} vectors")
    return arr


def _save_npy(path: str, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object, so np.save does not append ".npy" to the temp name
        np.save(fh, np.asarray(arr), allow_pickle=False)


def _pq_m(dim: int) -> int:
    """Sub-quantizers for PQ: ~8 dimensions each, a divisor of dim, and a size the GPU supports."""
    allowed = (64, 56, 48, 40, 32, 28, 24, 20, 16, 12, 8, 4, 2, 1)
    target = max(1, dim // 8)
    for m in allowed:
        if m <= target and dim % m == 0:
            return m
    return 1


def _nlist(n: int) -> int:
    """IVF lists: ~4 sqrt(n), and at least 39 training points per list so k-means is meaningful."""
    return int(max(1, min(4 * math.sqrt(n), n // 39, 65536)))


class CoarseIndex:
    """ANN over segment vectors with string ids, video ids, tombstones and a versioned manifest."""

    def __init__(
        self,
        index: Any,
        kind: str,
        ids: np.ndarray,
        video_codes: np.ndarray,
        video_names: np.ndarray,
        *,
        dead: np.ndarray | None = None,
        source_version: Any = None,
        fingerprint: Any = None,
        ef_search: int = DEFAULT_EF_SEARCH,
        nprobe: int = DEFAULT_NPROBE,
        k_factor: int = DEFAULT_K_FACTOR,
        gpu_resources: Any = None,
        build_params: dict[str, Any] | None = None,
    ) -> None:
        """Use `build` or `load`; this wires already-consistent parts together."""
        _ensure_configured()
        self._index = index
        self.kind = kind
        self.dim = int(index.d)
        self._ids = ids
        self._video_codes = video_codes.astype(np.int32, copy=False)
        self._video_names = video_names
        self._dead = np.zeros(ids.shape[0], dtype=bool) if dead is None else dead.astype(bool, copy=False)
        self.source_version = source_version
        self.fingerprint = fingerprint
        self.ef_search = int(ef_search)
        self.nprobe = int(nprobe)
        self.k_factor = int(k_factor)
        self._gpu_res = gpu_resources
        self.on_gpu = gpu_resources is not None
        # GPU indexes take no ID selector: removals are then filtered by over-fetching.
        self.use_selector = not self.on_gpu
        self.build_params = dict(build_params or {})
        self._lock = threading.Lock()
        self._state: tuple[np.ndarray, int, np.ndarray | None] | None = None
        if int(index.ntotal) != ids.shape[0]:
            raise ValueError(f"index holds {index.ntotal} vectors but {ids.shape[0]} ids were given")

    # ------------------------------------------------------------------------------------------
    # building

    @classmethod
    def build(
        cls,
        vectors: Any,
        ids: Iterable[Any],
        video_ids: Iterable[Any] | None = None,
        kind: str = "auto",
        *,
        source_version: Any = None,
        fingerprint: Any = None,
        memory_budget: int | None = None,
        use_gpu: bool | None = None,
        flat_max: int = DEFAULT_FLAT_MAX,
        gpu_flat_max: int = DEFAULT_GPU_FLAT_MAX,
        hnsw_m: int = DEFAULT_HNSW_M,
        hnsw_storage: str = "fp16",
        ef_construction: int = DEFAULT_EF_CONSTRUCTION,
        ef_search: int = DEFAULT_EF_SEARCH,
        nlist: int | None = None,
        pq_m: int | None = None,
        nprobe: int = DEFAULT_NPROBE,
        k_factor: int = DEFAULT_K_FACTOR,
        refine: str = "flat",
        seed: int = 1234,
    ) -> "CoarseIndex":
        """Build an index over (N, D) float32 unit-norm vectors.

        ids: N segment ids. video_ids: N video ids (None: each id is its own video, for an index of
        video-level vectors). kind: "auto" chooses by size, memory budget (bytes) and GPU presence
        (module docstring). hnsw_storage: "fp16" (default) or "flat" (float32) vectors in an HNSW index.
        refine ("flat", "sq8", "none") re-ranks IVF-PQ candidates: "flat" is exact
        but keeps the raw vectors; "sq8" keeps a quarter of that at recall ~0.99; "auto" falls back to
        "sq8" by itself when a memory budget cannot hold the raw vectors.
        """
        _ensure_configured()
        x = _as_matrix(vectors)
        n, d = x.shape
        seg_ids = _as_str_array(ids, n, "ids")
        vid = seg_ids if video_ids is None else _as_str_array(video_ids, n, "video ids")
        names, codes = np.unique(vid, return_inverse=True)
        if kind not in INDEX_KINDS:
            raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
        gpu = _gpu_count() > 0 if use_gpu is None else bool(use_gpu)
        if gpu and _gpu_count() == 0:
            raise RuntimeError("use_gpu=True but FAISS sees no GPU (is faiss-gpu installed?)")

        if hnsw_storage not in HNSW_STORAGE:
            raise ValueError(f"hnsw_storage must be one of {HNSW_STORAGE}, got {hnsw_storage!r}")
        if kind == "auto":
            kind, refine = cls._choose_kind(n, d, memory_budget, gpu, flat_max, gpu_flat_max, hnsw_m, refine, VECTOR_BYTES[hnsw_storage])
        params: dict[str, Any] = {"requested_refine": refine}
        t0 = time.perf_counter()
        gpu_res = None
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
            if gpu:
                index, gpu_res = cls._to_gpu(index)
            index.add(x)
        elif kind == "hnsw":
            if hnsw_storage == "fp16":
                index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
                index.train(x)  # nothing to learn for float16: sets up the codec
            else:
                index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(ef_construction)
            index.hnsw.efSearch = int(ef_search)
            index.add(x)
            params.update(M=int(hnsw_m), ef_construction=int(ef_construction), storage=hnsw_storage)
        else:  # ivfpq
            nl = int(nlist or _nlist(n))
            m = int(pq_m or _pq_m(d))
            if d % m:
                raise ValueError(f"pq_m={m} must divide the dimension {d}")
            # "np": no polysemous training. We never use Hamming filtering, and that annealing step
            # dominates training time (seconds at 4k vectors, minutes at 1M).
            base = faiss.index_factory(d, f"IVF{nl},PQ{m}x8np", faiss.METRIC_INNER_PRODUCT)
            cls._train_ivf(base, x, gpu, seed)
            refine = "flat" if refine == "auto" else refine
            if refine == "flat":
                index = faiss.IndexRefineFlat(base)
            elif refine == "sq8":
                sq = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
                sq.train(x)
                index = faiss.IndexRefine(base, sq)
            elif refine == "none":
                index = base
            else:
                raise ValueError(f"refine must be flat, sq8 or none, got {refine!r}")
            index.add(x)
            params.update(nlist=nl, pq_m=m, refine=refine)
        params["build_seconds"] = round(time.perf_counter() - t0, 3)
        log.info("built %s index over %d x %d in %.1fs (gpu=%s)", kind, n, d, params["build_seconds"],
                 gpu_res is not None)
        return cls(
            index, kind, seg_ids, codes.astype(np.int32), names,
            source_version=source_version, fingerprint=fingerprint, ef_search=ef_search,
            nprobe=nprobe, k_factor=k_factor, gpu_resources=gpu_res, build_params=params,
        )

    @staticmethod
    def _choose_kind(
        n: int, d: int, budget: int | None, gpu: bool, flat_max: int, gpu_flat_max: int, m: int, refine: str,
        hnsw_vector_bytes: int = 2,
    ) -> tuple[str, str]:
        raw = n * d * 4
        hnsw_bytes = n * d * hnsw_vector_bytes + n * (2 * m * 4 + 16)  # level-0 links dominate the graph
        if n < flat_max or (gpu and n < gpu_flat_max and (budget is None or raw <= budget)):
            return "flat", refine
        if budget is None or hnsw_bytes <= budget:
            return "hnsw", refine
        if refine == "auto":
            refine = "flat" if raw + n * (d // 8 + 8) <= budget else "sq8"
        return "ivfpq", refine

    @staticmethod
    def _to_gpu(index: Any) -> tuple[Any, Any]:
        """Clone to GPU 0 -> (gpu index, its resources), or stay on the CPU with a warning (a CPU
        result beats no result) -> (index, None). The resources must outlive the GPU index."""
        try:
            res = faiss.StandardGpuResources()
            return faiss.index_cpu_to_gpu(res, 0, index), res
        except Exception as exc:  # pragma: no cover - needs a GPU
            log.warning("GPU index unavailable, using the CPU: %s", exc)
            return index, None

    @staticmethod
    def _train_ivf(base: Any, x: np.ndarray, gpu: bool, seed: int) -> None:
        """Train the IVF quantizer and PQ codebooks, with k-means on the GPU when there is one."""
        ivf = faiss.extract_index_ivf(base)
        ivf.cp.seed = seed
        ivf.cp.max_points_per_centroid = 256  # subsample: more points do not improve the lists
        if gpu:
            try:  # pragma: no cover - needs a GPU
                res = faiss.StandardGpuResources()
                clustering_index = faiss.index_cpu_to_gpu(res, 0, faiss.IndexFlatL2(x.shape[1]))
                ivf.clustering_index = clustering_index
            except Exception as exc:  # pragma: no cover
                log.warning("GPU k-means unavailable, training on the CPU: %s", exc)
        base.train(x)

    # ------------------------------------------------------------------------------------------
    # bookkeeping

    @property
    def ntotal(self) -> int:
        return int(self._ids.shape[0])

    @property
    def n_live(self) -> int:
        return int(self.ntotal - np.count_nonzero(self._dead))

    @property
    def dead_fraction(self) -> float:
        return 0.0 if self.ntotal == 0 else float(np.count_nonzero(self._dead)) / self.ntotal

    @property
    def video_ids(self) -> np.ndarray:
        """Video ids with at least one live vector."""
        live_codes = np.unique(self._video_codes[~self._dead])
        return self._video_names[live_codes]

    def _removal_state(self) -> tuple[np.ndarray, int, np.ndarray | None]:
        """(dead mask, live count, packed live bitmap), cached between mutations: packing a bitmap
        over millions of rows on every query would cost more than the HNSW search itself."""
        state = self._state
        if state is None:
            dead = self._dead
            n_live = int(dead.shape[0] - np.count_nonzero(dead))
            bits = np.packbits(~dead, bitorder="little") if n_live < dead.shape[0] else None
            state = self._state = (dead, n_live, bits)
        return state

    def is_stale(self, current_version: Any) -> bool:
        """True when the store moved on since this index was built (versions compare as given)."""
        return current_version != self.source_version

    def _codes_of(self, video_ids: Iterable[Any]) -> np.ndarray:
        wanted = np.asarray(list(video_ids) if not isinstance(video_ids, np.ndarray) else video_ids).astype(str)
        return np.flatnonzero(np.isin(self._video_names, wanted))

    def remove_videos(self, video_ids: Iterable[Any], source_version: Any = None) -> int:
        """Tombstone every vector of these videos; returns how many live vectors were removed."""
        with self._lock:
            codes = self._codes_of(video_ids)
            hit = np.isin(self._video_codes, codes) & ~self._dead
            self._dead = self._dead | hit
            self._state = None
            if source_version is not None:
                self.source_version = source_version
            return int(np.count_nonzero(hit))

    def add(self, vectors: Any, ids: Iterable[Any], video_ids: Iterable[Any] | None = None,
            source_version: Any = None) -> None:
        """Append vectors (new videos, or a re-indexed video whose old rows were removed).

        IVF-PQ keeps its trained codebooks: a library whose content drifts far from the training set
        should be rebuilt, not appended to forever.
        """
        x = _as_matrix(vectors, self.dim)
        n = x.shape[0]
        seg_ids = _as_str_array(ids, n, "ids")
        vid = seg_ids if video_ids is None else _as_str_array(video_ids, n, "video ids")
        with self._lock:
            new_names, inv = np.unique(vid, return_inverse=True)
            order = np.argsort(self._video_names, kind="stable")
            sorted_names = self._video_names[order]
            pos = np.searchsorted(sorted_names, new_names)
            pos_c = np.minimum(pos, max(len(sorted_names) - 1, 0))
            found = (pos < len(sorted_names)) & (sorted_names[pos_c] == new_names) if len(sorted_names) else \
                np.zeros(len(new_names), dtype=bool)
            name_codes = np.empty(len(new_names), dtype=np.int64)
            name_codes[found] = order[pos_c[found]]
            fresh = np.flatnonzero(~found)
            name_codes[fresh] = len(self._video_names) + np.arange(fresh.size)
            self._video_names = np.concatenate([self._video_names.astype(str), new_names[fresh]])
            self._index.add(x)
            self._ids = np.concatenate([self._ids.astype(str), seg_ids])
            self._video_codes = np.concatenate([self._video_codes, name_codes[inv].astype(np.int32)])
            self._dead = np.concatenate([self._dead, np.zeros(n, dtype=bool)])
            self._state = None
            if source_version is not None:
                self.source_version = source_version

    def copy(self) -> "CoarseIndex":
        """An independent copy to mutate while searches go on against this one (then swap)."""
        with self._lock:
            cpu = faiss.clone_index(self._cpu_index())
            gpu_res = None
            if self.on_gpu:
                cpu, gpu_res = self._to_gpu(cpu)
            return CoarseIndex(
                cpu, self.kind, self._ids.copy(), self._video_codes.copy(), self._video_names.copy(),
                dead=self._dead.copy(), source_version=self.source_version, fingerprint=self.fingerprint,
                ef_search=self.ef_search, nprobe=self.nprobe, k_factor=self.k_factor, gpu_resources=gpu_res,
                build_params=self.build_params,
            )

    # ------------------------------------------------------------------------------------------
    # searching

    def _search_params(self, k: int, sel: Any, ef_search: int | None, nprobe: int | None,
                       k_factor: int | None) -> Any:
        if self.kind == "hnsw":
            ef = max(int(ef_search or self.ef_search), k)
            return faiss.SearchParametersHNSW(efSearch=ef, sel=sel) if sel is not None else \
                faiss.SearchParametersHNSW(efSearch=ef)
        if self.kind == "ivfpq":
            ivf_kwargs: dict[str, Any] = {"nprobe": int(nprobe or self.nprobe)}
            if sel is not None:
                ivf_kwargs["sel"] = sel
            ivf_params = faiss.SearchParametersIVF(**ivf_kwargs)
            if isinstance(self._index, faiss.IndexRefine):
                return faiss.IndexRefineSearchParameters(k_factor=float(k_factor or self.k_factor),
                                                         base_index_params=ivf_params)
            return ivf_params
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def search(
        self,
        queries: Any,
        k: int = 10,
        *,
        exclude_videos: Iterable[Any] | None = None,
        only_videos: Iterable[Any] | None = None,
        ef_search: int | None = None,
        nprobe: int | None = None,
        k_factor: int | None = None,
    ) -> CoarseHits:
        """Top-k segments for each query (Q, D) by inner product.

        exclude_videos / only_videos restrict this search (user filters) on top of the removals.
        ef_search, nprobe, k_factor override the recall/latency knobs for this call.
        """
        q = _as_matrix(queries, self.dim)
        nq = q.shape[0]
        k = int(k)
        if k <= 0:
            raise ValueError("k must be positive")
        mask, n_ok, live_bits = self._removal_state()  # snapshot: later removals apply next search
        if exclude_videos is not None or only_videos is not None:
            if exclude_videos is not None:
                mask = mask | np.isin(self._video_codes, self._codes_of(exclude_videos))
            if only_videos is not None:
                mask = mask | ~np.isin(self._video_codes, self._codes_of(only_videos))
            n_ok = int(mask.shape[0] - np.count_nonzero(mask))
            live_bits = None
        n = mask.shape[0]
        k_eff = min(k, n_ok)
        out = CoarseHits(
            np.full((nq, k), -np.inf, dtype=np.float32),
            np.full((nq, k), "", dtype=self._ids.dtype if self._ids.size else "<U1"),
            np.full((nq, k), "", dtype=self._video_names.dtype if self._video_names.size else "<U1"),
            np.full((nq, k), -1, dtype=np.int64),
        )
        if k_eff == 0 or nq == 0:
            return out

        masked = n_ok < n
        if masked and self.use_selector:
            if live_bits is None:
                live_bits = np.packbits(~mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(live_bits))
            params = self._search_params(k_eff, sel, ef_search, nprobe, k_factor)
            D, I = self._index.search(q, k_eff, params=params)
            del sel, live_bits  # the selector points into the bitmap: both live until here
        else:
            fetch = k_eff if not masked else min(n, math.ceil((k_eff + 8) * n / n_ok))
            while True:
                if self.on_gpu:
                    fetch = min(fetch, GPU_MAX_K)
                params = self._search_params(fetch, None, ef_search, nprobe, k_factor)
                D, I = self._index.search(q, fetch, params=params) if params is not None else \
                    self._index.search(q, fetch)
                ok = (I >= 0) & (I < n) & ~mask[np.clip(I, 0, n - 1)]
                enough = ok.sum(axis=1).min() >= k_eff
                if not masked or enough or fetch >= n or (self.on_gpu and fetch >= GPU_MAX_K):
                    break
                fetch = min(n, fetch * 4)
            if masked:
                # Move surviving hits to the front of each row, keeping their score order.
                order = np.argsort(~ok, axis=1, kind="stable")
                I = np.take_along_axis(np.where(ok, I, -1), order, axis=1)[:, :k_eff]
                D = np.take_along_axis(np.where(ok, D, -np.inf), order, axis=1)[:, :k_eff]

        # Post-filter always: correctness of removals must not depend on a selector's semantics.
        I = np.where((I >= 0) & (I < n) & ~mask[np.clip(I, 0, n - 1)], I, -1)
        valid = I >= 0
        safe = np.where(valid, I, 0)
        out.positions[:, :k_eff] = I
        out.scores[:, :k_eff] = np.where(valid, D, -np.inf)
        out.ids[:, :k_eff] = np.where(valid, self._ids[safe], "")
        out.video_ids[:, :k_eff] = np.where(valid, self._video_names[self._video_codes[safe]], "")
        return out

    # ------------------------------------------------------------------------------------------
    # persistence

    def _cpu_index(self) -> Any:
        return faiss.index_gpu_to_cpu(self._index) if self.on_gpu else self._index

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index, its id maps, tombstones and a manifest to `directory`.

        Each file is written under a temporary name and renamed; the manifest goes last and carries
        the counts `load` checks, so a reader never takes a half-written index for a whole one.
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)

        def put(name: str, writer) -> None:
            tmp = path / f".{name}.tmp-{os.getpid()}"
            writer(str(tmp))
            os.replace(tmp, path / name)

        put("index.faiss", lambda p: faiss.write_index(self._cpu_index(), p))
        for name, arr in (("ids.npy", self._ids), ("video_codes.npy", self._video_codes),
                          ("video_names.npy", self._video_names), ("dead.npy", self._dead)):
            put(name, lambda p, a=arr: _save_npy(p, a))
        manifest = {
            "format": FORMAT_VERSION,
            "kind": self.kind,
            "dim": self.dim,
            "metric": "inner_product",
            "ntotal": self.ntotal,
            "n_live": self.n_live,
            "n_videos": int(self._video_names.shape[0]),
            "source_version": self.source_version,
            "fingerprint": self.fingerprint,
            "ef_search": self.ef_search,
            "nprobe": self.nprobe,
            "k_factor": self.k_factor,
            "build": self.build_params,
            "faiss_version": getattr(faiss, "__version__", "unknown"),
            "saved_at": time.time(),
        }
        put(MANIFEST, lambda p: Path(p).write_text(json.dumps(manifest, indent=2, default=str)))
        return path

    @staticmethod
    def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
        """The manifest alone: enough to decide whether loading is worth it (staleness, model)."""
        return json.loads((Path(directory) / MANIFEST).read_text())

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, use_gpu: bool | None = None, mmap: bool = False) -> "CoarseIndex":
        """Read an index written by `save`. mmap leaves flat/IVF data on disk (large, cold indexes)."""
        _ensure_configured()
        path = Path(directory)
        manifest = cls.read_manifest(path)
        if manifest.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path}: index format {manifest.get('format')}, expected {FORMAT_VERSION}")
        flags = faiss.IO_FLAG_MMAP if mmap else 0
        index = faiss.read_index(str(path / "index.faiss"), flags)
        arrays = {name: np.load(path / f"{name}.npy", allow_pickle=False)
                  for name in ("ids", "video_codes", "video_names", "dead")}
        n = manifest["ntotal"]
        if index.ntotal != n or any(arrays[a].shape[0] != n for a in ("ids", "video_codes", "dead")):
            raise ValueError(f"{path}: files disagree with the manifest (ntotal {n}); re-save or rebuild")
        if index.d != manifest["dim"]:
            raise ValueError(f"{path}: index dimension {index.d}, manifest says {manifest['dim']}")
        gpu_res = None
        gpu = _gpu_count() > 0 if use_gpu is None else bool(use_gpu)
        if gpu and manifest["kind"] == "flat" and n < DEFAULT_GPU_FLAT_MAX:
            index, gpu_res = cls._to_gpu(index)
        return cls(
            index, manifest["kind"], arrays["ids"], arrays["video_codes"], arrays["video_names"],
            dead=arrays["dead"], source_version=manifest.get("source_version"),
            fingerprint=manifest.get("fingerprint"), ef_search=manifest.get("ef_search", DEFAULT_EF_SEARCH),
            nprobe=manifest.get("nprobe", DEFAULT_NPROBE), k_factor=manifest.get("k_factor", DEFAULT_K_FACTOR),
            gpu_resources=gpu_res, build_params=manifest.get("build"),
        )

    def __repr__(self) -> str:
        return (f"CoarseIndex(kind={self.kind!r}, dim={self.dim}, ntotal={self.ntotal}, live={self.n_live}, "
                f"gpu={self.on_gpu}, source_version={self.source_version!r})")
