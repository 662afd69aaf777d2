"""The query engine: a sentence in, videos with their moments out.

Stages (DESIGN.md): coarse ANN over segment vectors (and the text channels) gives candidate videos;
X-Pool re-ranks them from their stored unit vectors (no video is re-encoded at query time); the
relevance curve of each result is cut into moments. Readers work on an immutable `Snapshot` of the
last committed index version; a new version is prepared aside and swapped in, so a reindex or delete
never makes a search fail or see half an index.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Before torch: importing the coarse stage sets OMP_WAIT_POLICY=PASSIVE (unless the operator set it),
# and each OpenMP runtime (torch's, FAISS's) reads it once, when it loads. With torch's runtime left
# spinning, the re-rank's parallel regions starved on shared cores: a search measured 130-190 ms p50
# vs 30-40 ms (10k segments, 2 cores at load 7).
from .coarse import CoarseIndex  # noqa: I001 - must precede `import torch`

import torch

from vidsearch.api_models import (
    Curve,
    Filters,
    MomentOut,
    SearchRequest,
    SearchResponse,
    SearchResult,
    SpanHit,
    VideoInfo,
)
from vidsearch.config import Settings
from vidsearch.store import SEGMENTS, VIDEOS, Store

from .features import FeatureCache, QueryVectorCache, VideoFeatures, pad_vectors
from .fusion import reciprocal_rank_fusion
from .moments import localize_moments

log = logging.getLogger(__name__)
CURVE_POINTS = 200
MOMENT_GROUP_VIDEOS = 30  # candidates whose moments compete when results are listed by moment


class SearchError(ValueError):
    """A request that cannot be answered as asked (bad cursor, unknown channel...): a 4xx."""


@dataclass(frozen=True)
class Snapshot:
    """One committed version of the index, as readers see it."""

    version: str
    videos: dict[str, dict]  # video_id -> videos row (metadata parsed)
    ids: np.ndarray  # visible video ids
    durations: np.ndarray
    coarse: CoarseIndex | None
    built_at: float = field(default_factory=time.time)

    def allowed(self, filters: Filters | None) -> np.ndarray | None:
        """Video ids that pass the filters (None: every video)."""
        if filters is None:
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        if filters.video_ids is not None:
            keep &= np.isin(self.ids, np.asarray(filters.video_ids, dtype=str))
        if filters.min_duration is not None:
            keep &= self.durations >= filters.min_duration
        if filters.max_duration is not None:
            keep &= self.durations <= filters.max_duration
        if filters.metadata:
            meta_ok = np.array(
                [all(self.videos[v]["metadata"].get(k) == val for k, val in filters.metadata.items()) for v in self.ids],
                dtype=bool,
            )
            keep &= meta_ok if len(meta_ok) else keep
        if filters.video_ids is None and filters.min_duration is None and filters.max_duration is None and not filters.metadata:
            return None
        return self.ids[keep]


def _store_versions(store: Store) -> str:
    return f"{store.table(VIDEOS).version}.{store.table(SEGMENTS).version}"


def build_snapshot(store: Store, settings: Settings, previous: Snapshot | None = None) -> Snapshot:
    """Read the visible videos and their segment vectors, and index them (incrementally when possible)."""
    version = _store_versions(store)
    videos = {r["video_id"]: r for r in store.video_rows()}
    ids = np.array(list(videos), dtype=str)
    durations = np.array([videos[v]["duration"] for v in ids], dtype=np.float64)
    coarse = None
    if len(ids):
        coarse = _updated_coarse(store, settings, previous, ids, version)
    return Snapshot(version=version, videos=videos, ids=ids, durations=durations, coarse=coarse)


def _segments_of(store: Store, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = store.segments(["segment_id", "video_id", "vector"])
    if ids is not None:
        table = table.filter(pc.is_in(table["video_id"], pa.array(ids)))
    if table.num_rows == 0:
        return np.zeros((0, 1), np.float32), np.zeros(0, str), np.zeros(0, str)
    vectors = table["vector"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    return (
        np.ascontiguousarray(vectors, dtype=np.float32),
        np.asarray(table["segment_id"].to_pylist(), dtype=str),
        np.asarray(table["video_id"].to_pylist(), dtype=str),
    )


def _updated_coarse(store: Store, settings: Settings, previous: Snapshot | None, ids: np.ndarray, version: str):
    """Extend a copy of the previous index with new videos and tombstone removed ones; rebuild when
    that would leave much dead weight or there is nothing to start from."""
    fp = store.fingerprint.id if store.fingerprint else None
    if previous is not None and previous.coarse is not None and previous.coarse.fingerprint == fp:
        old_ids = previous.ids
        added = np.setdiff1d(ids, old_ids)
        removed = np.setdiff1d(old_ids, ids)
        if len(added) <= max(100, len(ids) // 5):
            coarse = previous.coarse.copy()
            if len(removed):
                coarse.remove_videos(removed, source_version=version)
            if len(added):
                vectors, seg_ids, vids = _segments_of(store, added)
                if len(seg_ids):
                    coarse.add(vectors, seg_ids, vids, source_version=version)
            coarse.source_version = version
            if coarse.dead_fraction < 0.3:
                return coarse
    vectors, seg_ids, vids = _segments_of(store, ids)
    if len(seg_ids) == 0:
        return None
    return CoarseIndex.build(vectors, seg_ids, vids, kind=settings.ann, source_version=version, fingerprint=fp)


def _encode_cursor(offset: int, key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "k": key}).encode()).decode()


def _decode_cursor(cursor: str, key: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        offset, ckey = int(data["o"]), str(data["k"])
    except Exception as exc:  # noqa: BLE001 - any malformed cursor is the client's error
        raise SearchError("cursor is not valid (use next_cursor from a previous response)") from exc
    if ckey != key or offset < 0:
        raise SearchError("cursor belongs to a different query; start again without a cursor")
    return offset


def _request_key(req: SearchRequest) -> str:
    body = req.model_dump(exclude={"cursor"}, mode="json")
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _rounded(values: np.ndarray, digits: int) -> list[float]:
    """`round(float(v), digits)` for each v, vectorised: thousands per response (the curve, the unit
    times, the attention weights) cost ~2 ms a search one at a time.

    Exactly the same numbers: rint(v * 10^d) is the integer Python's correctly rounded `round`
    picks unless v * 10^d lies within its rounding error of a half (then Python decides, element by
    element), and dividing that integer by 10^d rounds correctly, as parsing the decimal does.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    scale = 10.0**digits
    with np.errstate(invalid="ignore"):
        y = x * scale
        out = np.rint(y) / scale
        frac = np.abs(y - np.trunc(y))
        risky = (np.abs(frac - 0.5) <= 1e-9 * np.maximum(1.0, np.abs(y))) | ~np.isfinite(y) | (np.abs(y) >= 2.0**52)
    if risky.any():
        out[risky] = [round(v, digits) for v in x[risky].tolist()]
    return out.tolist()


def per_video_best(video_ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best segment score per video, videos best first (columnar group-by)."""
    ok = video_ids != ""
    video_ids, scores = video_ids[ok], scores[ok]
    if len(video_ids) == 0:
        return video_ids, scores
    uniq, inverse = np.unique(video_ids, return_inverse=True)
    best = np.full(len(uniq), -np.inf)
    np.maximum.at(best, inverse, scores)
    order = np.argsort(-best, kind="stable")
    return uniq[order], best[order]


class SearchEngine:
    """Answers `SearchRequest`s over one index directory; safe to share between threads."""

    def __init__(
        self,
        store: Store,
        backbone,
        settings: Settings,
        pooler=None,
        text_channels=None,
    ):
        self._setup(store, backbone, settings, pooler, text_channels, FeatureCache(store, settings.feature_cache_mb << 20))
        self._snapshot = build_snapshot(store, settings)

    def _setup(self, store, backbone, settings: Settings, pooler, text_channels, cache: FeatureCache) -> None:
        from vidsearch.encoders.xpool import make_pooler

        self.store = store
        self.backbone = backbone
        self.settings = settings
        kind = settings.pooling if settings.pooling != "auto" else "param_free"
        self.pooler = pooler or make_pooler(
            kind, dim=backbone.dim, **({"temperature": settings.pool_temperature} if kind == "param_free" else {})
        )
        self.pooler.eval()
        # a trained checkpoint brings its X-Pool / TEFAL head: it re-ranks with frames and audio
        head = getattr(backbone, "head", None)
        self.head = head if head is not None and pooler is None and settings.pooling in ("auto", "xpool") else None
        self.text_channels = text_channels  # speech / ocr / subtitle / metadata spans, when indexed
        self.cache = cache
        self._query_vectors = QueryVectorCache(lambda text: self.backbone.encode_text([text])[0])
        self._refreshing = threading.Lock()
        self._last_check = 0.0

    @classmethod
    def from_snapshot(
        cls,
        snapshot: Snapshot,
        backbone,
        settings: Settings,
        features: FeatureCache | dict[str, VideoFeatures],
        pooler=None,
        text_channels=None,
    ) -> SearchEngine:
        """An engine over an in-memory snapshot and pre-loaded unit features, with no store behind it.

        For benchmarks at sizes no real library here reaches (synthetic vectors): nothing is read at
        query time, and the snapshot never refreshes. `backbone` is only asked for `dim` (and for
        `encode_text` when a search gets no query vector).
        """
        if not isinstance(features, FeatureCache):
            cache = FeatureCache(None, max(1, sum(f.nbytes for f in features.values())))
            for vid, f in features.items():
                cache.put(vid, f)
            features = cache
        engine = cls.__new__(cls)
        engine._setup(None, backbone, settings, pooler, text_channels, features)
        engine._snapshot = snapshot
        return engine

    # -- index versions ------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def refresh(self, wait: bool = True) -> bool:
        """Swap in the latest committed version if there is one; True when it changed."""
        if self.store is None:  # an in-memory engine (from_snapshot) has no newer version to find
            return False
        if not self._refreshing.acquire(blocking=wait):
            return False
        try:
            self._last_check = time.monotonic()
            if _store_versions(self.store) == self._snapshot.version:
                return False
            self._snapshot = build_snapshot(self.store, self.settings, previous=self._snapshot)
            self._refresh_text_channels()
            log.info("index version %s is live (%d videos)", self._snapshot.version, len(self._snapshot.ids))
            return True
        finally:
            self._refreshing.release()

    def _refresh_text_channels(self) -> None:
        """New spans may bring a channel (a job indexed speech into an index that had none)."""
        from .text_channels import TextChannels

        if self.text_channels is None:
            self.text_channels = TextChannels.for_store(self.store)
        else:
            self.text_channels.refresh()

    def _maybe_refresh(self) -> None:
        """At most every `refresh_seconds`, look for a new version in the background."""
        if self.store is None:
            return
        if time.monotonic() - self._last_check < self.settings.refresh_seconds:
            return
        self._last_check = time.monotonic()
        threading.Thread(target=self._refresh_quietly, daemon=True).start()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh(wait=False)
        except Exception:  # noqa: BLE001 - a failed refresh keeps serving the last good snapshot
            log.exception("index refresh failed; still serving version %s", self._snapshot.version)

    # -- query encoding ------------------------------------------------------------------------
    def encode_query(self, text: str) -> np.ndarray:
        return self._query_vectors(text)

    # -- the search ----------------------------------------------------------------------------
    def channel_weights(self, req: SearchRequest) -> dict[str, float]:
        available = {"visual"} | (set(self.text_channels.sources()) if self.text_channels else set())
        if self.head is not None and getattr(self.backbone, "audio_tower", None) is not None:
            available.add("audio")  # fused into the visual ranking by the TEFAL head
        if req.channels is None:
            return {c: 1.0 for c in sorted(available)}
        unknown = [c for c in req.channels if c not in available]
        if unknown:
            raise SearchError(f"channel(s) {', '.join(unknown)} are not in this index (available: {', '.join(sorted(available))})")
        weights = {c: w for c, w in req.channels.items() if w > 0 and c in available}
        if not weights:
            raise SearchError("every requested channel has weight 0 or is not indexed")
        return weights

    def search(self, req: SearchRequest, query_vector: np.ndarray | None = None) -> SearchResponse:
        t0 = time.perf_counter()
        self._maybe_refresh()
        snap = self._snapshot
        key = _request_key(req)
        offset = _decode_cursor(req.cursor, key) if req.cursor else 0
        weights = self.channel_weights(req)
        q = self.encode_query(req.query) if query_vector is None else query_vector
        allowed = snap.allowed(req.filters)
        results: list[SearchResult] = []
        total = 0
        if snap.coarse is not None and (allowed is None or len(allowed)):
            ranked = self._rank(snap, req, q, weights, allowed)
            if req.group_by == "video":
                total = len(ranked)
                results = [self._result(snap, req, q, item) for item in ranked[offset : offset + req.top_k]]
            else:
                results = self._by_moment(snap, req, q, ranked)
                total = len(results)
                results = results[offset : offset + req.top_k]
        if req.min_score is not None:
            results = [r for r in results if r.score >= req.min_score]
        more = offset + req.top_k < total
        return SearchResponse(
            query=req.query,
            group_by=req.group_by,
            results=results,
            next_cursor=_encode_cursor(offset + req.top_k, key) if more else None,
            index_version=snap.version,
            took_ms=round((time.perf_counter() - t0) * 1000, 3),
        )

    def _rank(self, snap: Snapshot, req: SearchRequest, q: np.ndarray, weights: dict[str, float], allowed) -> list[dict]:
        """Coarse candidates from every channel, fused; then the visual channel re-ranked by X-Pool."""
        lists: dict[str, np.ndarray] = {}
        scores: dict[str, np.ndarray] = {}
        span_hits: dict[str, list[SpanHit]] = {}
        if "visual" in weights or "audio" in weights:
            k = min(self.settings.coarse_segments, snap.coarse.n_live)
            hits = snap.coarse.search(q[None, :], k=k, only_videos=allowed)
            lists["visual"], scores["visual"] = per_video_best(hits.video_ids[0], hits.scores[0])
        if self.text_channels is not None:
            for source in [c for c in weights if c not in ("visual", "audio")]:
                ids, sc, hits = self.text_channels.search(source, req.query, self.settings.candidates, allowed)
                lists[source], scores[source] = ids, sc
                for vid, h in hits.items():
                    span_hits.setdefault(vid, []).extend(h)
        lists = {c: ids for c, ids in lists.items() if len(ids)}
        scores = {c: s for c, s in scores.items() if c in lists}  # a channel with no match does not vote
        if not lists:
            return []
        coarse = reciprocal_rank_fusion(lists, weights, k=self.settings.rrf_k, scores=scores)
        candidates = [str(v) for v in coarse.ids[: self.settings.candidates] if str(v) in snap.videos]
        feats = self.cache.get_many(candidates)
        candidates = [v for v in candidates if v in feats]
        use_audio = "audio" in weights
        fine_scores, attention, audio_part = self._rerank(q, [feats[v] for v in candidates], req.filters, use_audio)
        fine_lists = dict(lists)
        fine_scores_by = dict(scores)
        visual_weights = {c: w for c, w in weights.items() if c != "audio"}
        if "visual" in weights or use_audio:
            order = np.argsort(-fine_scores, kind="stable")
            fine_lists["visual"] = np.asarray(candidates, dtype=str)[order]
            fine_scores_by["visual"] = fine_scores[order]
            visual_weights["visual"] = weights.get("visual", 0.0) + weights.get("audio", 0.0)
        fused = reciprocal_rank_fusion(fine_lists, visual_weights, k=self.settings.rrf_k, scores=fine_scores_by)
        pos = {v: i for i, v in enumerate(candidates)}
        ranked = []
        for i, vid in enumerate(fused.ids):
            vid = str(vid)
            if vid not in pos:
                continue
            explain = fused.explain(i)
            ranked.append(
                {
                    "video_id": vid,
                    "score": float(fused.scores[i]),
                    "channel_scores": {
                        **{c: round(v["score"], 6) for c, v in explain.items()},
                        **({"audio": round(float(audio_part[pos[vid]]), 6)} if use_audio else {}),
                    },
                    "features": feats[vid],
                    "attention": attention[pos[vid]],
                    "spans": sorted(span_hits.get(vid, []), key=lambda h: -h.score)[:5],
                    "use_audio": use_audio,
                }
            )
        return ranked

    def _rerank(self, q: np.ndarray, feats: list[VideoFeatures], filters: Filters | None, use_audio: bool = False):
        """X-Pool scores (fused with audio by the TEFAL head when the model has one and the audio channel
        is on), attention weights, and the audio part of each score; in padded chunks of similar lengths
        (bounded memory)."""
        n = len(feats)
        scores = np.zeros(n, dtype=np.float32)
        audio_part = np.zeros(n, dtype=np.float32)
        weights: list[np.ndarray] = [np.zeros(0, np.float32)] * n
        if n == 0:
            return scores, weights, audio_part
        window = filters.time_range if filters else None
        masks = [self._unit_mask(f, window) for f in feats]
        lengths = np.array([len(f.start) for f in feats])
        order = np.argsort(lengths, kind="stable")
        dim = feats[0].vectors.shape[1]
        budget = 16 << 20  # floats per chunk
        text = torch.from_numpy(q.astype(np.float32))
        i = 0
        while i < n:
            tmax = int(lengths[order[i]])
            j = i
            while j < n and (j - i + 1) * max(tmax, int(lengths[order[j]])) * dim <= budget:
                tmax = max(tmax, int(lengths[order[j]]))
                j += 1
            j = max(j, i + 1)
            idx = order[i:j]
            frames = np.zeros((len(idx), tmax, dim), dtype=np.float32)
            mask = np.zeros((len(idx), tmax), dtype=bool)
            for row, k in enumerate(idx):
                t = len(feats[k].start)
                frames[row, :t] = feats[k].vectors
                mask[row, :t] = masks[k]
            a = np.zeros(len(idx), np.float32)
            with torch.inference_mode():
                if self.head is not None:
                    audio, amask = _padded_audio([feats[k] for k in idx], dim)
                    out = self.head.rerank(text, torch.from_numpy(frames), torch.from_numpy(mask), audio, amask)
                    s, w = (out["fused"] if use_audio else out["video"]), out["frame_weights"]
                    a = (self.head.audio_weight * out["gate"] * out["audio"]).numpy()
                else:
                    s, w = self.pooler.rerank(text, torch.from_numpy(frames), torch.from_numpy(mask))
            s, w = s.numpy(), w.numpy()
            for row, k in enumerate(idx):
                scores[k] = s[row]
                audio_part[k] = a[row]
                weights[k] = w[row, : lengths[k]]
            i = j
        return scores, weights, audio_part

    @staticmethod
    def _unit_mask(f: VideoFeatures, window) -> np.ndarray:
        if window is None:
            return np.ones(len(f.start), dtype=bool)
        end = window.end if window.end is not None else np.inf
        return (f.end > window.start) & (f.start < end)

    def _moments(self, q: np.ndarray, item: dict, req: SearchRequest):
        f: VideoFeatures = item["features"]
        window = req.filters.time_range if req.filters else None
        mask = self._unit_mask(f, window)
        relevance = f.vectors[mask] @ q
        # timed text shapes the moment; metadata covers the whole video and localises nothing
        hits = np.array([[h.start, h.end, h.score] for h in item["spans"] if h.source != "metadata"], dtype=np.float64).reshape(-1, 3)
        if window is not None and hits.size:
            hits[:, 0] = np.maximum(hits[:, 0], window.start)
            hits[:, 1] = np.minimum(hits[:, 1], window.end if window.end is not None else np.inf)
            hits = hits[hits[:, 1] > hits[:, 0]]
        if hits.size:
            hits[:, 2] = hits[:, 2] / max(hits[:, 2].max(), 1e-9) * max(float(relevance.max(initial=0)), 0.1)
        if item.get("use_audio"):
            sound = audio_hits(self.head, q, f)
            if window is not None and sound.size:
                sound = sound[(sound[:, 1] > window.start) & (sound[:, 0] < (window.end if window.end is not None else np.inf))]
            hits = np.concatenate([hits, sound])
        return localize_moments(f.start[mask], f.end[mask], relevance, hits if hits.size else None, max_moments=req.max_moments)

    def _result(self, snap: Snapshot, req: SearchRequest, q: np.ndarray, item: dict) -> SearchResult:
        found = self._moments(q, item, req)
        f: VideoFeatures = item["features"]
        curve = found.curve
        step = max(1, int(np.ceil(len(curve.times) / CURVE_POINTS)))
        return SearchResult(
            video=video_info(snap.videos[item["video_id"]]),
            score=round(item["score"], 6),
            channel_scores=item["channel_scores"],
            moments=[MomentOut(start=round(m.start, 3), end=round(m.end, 3), score=round(m.score, 6)) for m in found.moments],
            frame_weights=_rounded(item["attention"], 6),
            unit_times=[[a, b] for a, b in zip(_rounded(f.start, 3), _rounded(f.end, 3))],
            spans=item["spans"],
            curve=Curve(times=_rounded(curve.times[::step], 3), values=_rounded(curve.values[::step], 6)),
        )

    def _by_moment(self, snap: Snapshot, req: SearchRequest, q: np.ndarray, ranked: list[dict]) -> list[SearchResult]:
        """Every moment of the leading candidates, ranked by its own relevance."""
        flat = []
        for item in ranked[:MOMENT_GROUP_VIDEOS]:
            res = self._result(snap, req, q, item)
            for m in res.moments:
                flat.append(res.model_copy(update={"moments": [m], "score": m.score}))
        flat.sort(key=lambda r: -r.score)
        return flat


def audio_hits(head, q: np.ndarray, f: VideoFeatures) -> np.ndarray:
    """Where the soundtrack matches the query, as timed (start, end, score) rows for the moment curve.

    Each audio token scores its cosine to the query above the soundtrack's median, scaled as the TEFAL
    head scales audio in the fused score (learned weight x gate), so "a dog barks" lifts the seconds
    of barking and a silent or irrelevant soundtrack (gate ~0) changes nothing. Frames alone cannot
    tell two events that look alike and differ by their sound, which the synthetic corpus is full of
    (README: moment metrics with and without it). Empty when the model has no head or the video no audio.
    """
    a = f.audio_vectors
    if head is None or a.ndim != 2 or a.shape[0] == 0 or a.shape[1] != q.shape[0]:
        return np.empty((0, 3))
    cos = a @ q
    with torch.inference_mode():
        gate = float(head.gate(torch.from_numpy(q[None].astype(np.float32)), torch.from_numpy(a[None].astype(np.float32)),
                               torch.ones(1, len(a), dtype=torch.bool))[0, 0])  # fmt: skip
    weight = float(head.audio_weight.detach()) * gate
    return np.stack([f.audio_start, f.audio_end, weight * (cos - np.median(cos))], axis=1).astype(np.float64)


def _padded_audio(feats: list[VideoFeatures], dim: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Audio tokens of a chunk of candidates as a padded batch (None when none has audio)."""
    x, m = pad_vectors([f.audio_vectors for f in feats], dim)
    if not m.any():
        return None, None
    return torch.from_numpy(x), torch.from_numpy(m)


def video_info(row: dict) -> VideoInfo:
    return VideoInfo(
        id=row["video_id"],
        title=row["title"],
        uri=row["path"],
        duration=row["duration"],
        width=row.get("width"),
        height=row.get("height"),
        has_audio=row.get("has_audio"),
        metadata=row["metadata"],
    )


def open_engine(settings: Settings, text_channels: Callable | None = None) -> SearchEngine:
    """Open the index in `settings.db` with the model it was built with."""
    from vidsearch.encoders.backbone import backend_options, load_backbone, spec_from_fingerprint
    from vidsearch.store import StoreError

    store = Store.open(settings.db)
    fp = store.stored_fingerprint()
    if fp is None:
        raise StoreError(f"index {settings.db} is empty: index some videos first (`vidsearch index PATH --db {settings.db}`)")
    # the model the index was built with, unless the caller names another (then a mismatch is an error)
    explicit = {"model", "pretrained"} & settings.model_fields_set
    spec = (
        {"model": settings.model, "pretrained": settings.pretrained, "checkpoint": settings.checkpoint, "merging": settings.token_merging}
        if explicit
        else spec_from_fingerprint(fp, settings.checkpoint)
    )
    backbone = load_backbone(**spec, precision=settings.precision, device=settings.device, **backend_options(settings))
    store = Store.open(settings.db, backbone.fingerprint)  # a mismatch is a clear error
    if text_channels is None:
        from .text_channels import TextChannels

        text_channels = TextChannels.for_store
    return SearchEngine(store, backbone, settings, text_channels=text_channels(store))
