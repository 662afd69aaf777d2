"""The query engine: a sentence in, ranked videos with their moments out.

A search is planned once (`plan`: channel weights, allowed ids, time window and query vector,
against one snapshot), then ranked (`rank`: candidate pool → final ranking, see ranking.py); the
`Ranking` cuts moments for the results a page shows. The engine owns what outlives a query: the
current snapshot and the swap to a newer one, the model, the feature and query-vector caches. How a
ranking is presented (pages and cursors, rounding, links) is the HTTP server's business.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

# Before torch: importing the coarse stage sets OMP_WAIT_POLICY=PASSIVE (unless the operator set it),
# and each OpenMP runtime (torch's, FAISS's) reads it once, when it loads. With torch's runtime left
# spinning, the re-rank's parallel regions starved on shared cores: a search measured 130-190 ms p50
# vs 30-40 ms (10k segments, 2 cores at load 7).
from . import coarse  # noqa: F401, I001 - must precede `import torch`

import numpy as np

from vidsearch.api_models import SearchRequest
from vidsearch.config import Settings
from vidsearch.encoders import backend_options, load_backbone, make_pooler, model_spec
from vidsearch.store import Store, StoreError

from .features import FeatureCache, QueryVectorCache, VideoFeatures
from .plan import QueryPlan, TimeWindow, channel_weights
from .ranking import Ranking, candidate_pool, final_ranking
from .relevance import Calibration, find_calibration, with_relevance
from .snapshot import Snapshot, build_snapshot, store_version
from .text_channels import TextChannels

__all__ = ["SearchEngine", "open_engine"]

log = logging.getLogger(__name__)


class SearchEngine:
    """Answers search plans over one index directory; safe to share between threads."""

    def __init__(
        self,
        store: Store,
        backbone,
        settings: Settings,
        pooler=None,
        text_channels: TextChannels | None = None,
    ):
        self._setup(store, backbone, settings, pooler, text_channels, FeatureCache(store, settings.feature_cache_mb << 20))
        self._snapshot = build_snapshot(store, settings)

    def _setup(self, store, backbone, settings: Settings, pooler, text_channels, cache: FeatureCache) -> None:
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
        self.calibration: Calibration | None = None
        fp = getattr(backbone, "fingerprint", None)
        if fp is not None:
            self.calibration = find_calibration(fp.id, settings.db, settings.calibration)

    def min_relevance(self, req: SearchRequest) -> float | None:
        """The threshold a request is answered with: its own, else the settings', else the
        calibration's default; None (nothing dropped) without a calibration."""
        if self.calibration is None:
            return None
        for value in (req.min_relevance, self.settings.min_relevance):
            if value is not None:
                return value
        return self.calibration.threshold

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
            if store_version(self.store) == self._snapshot.version:
                return False
            self._snapshot = build_snapshot(self.store, self.settings, previous=self._snapshot)
            self._refresh_text_channels()
            log.info("index version %s is live (%d videos)", self._snapshot.version, len(self._snapshot.ids))
            return True
        finally:
            self._refreshing.release()

    def _refresh_text_channels(self) -> None:
        """New spans may bring a channel (a job indexed speech into an index that had none)."""
        if self.text_channels is None:
            self.text_channels = TextChannels.for_store(self.store)
        else:
            self.text_channels.refresh()

    def refresh_soon(self, now: bool = False) -> None:
        """Look for a new version in the background, at most every `refresh_seconds` (`now`: at once,
        when the caller knows the index changed)."""
        if self.store is None:
            return
        if not now and time.monotonic() - self._last_check < self.settings.refresh_seconds:
            return
        self._last_check = time.monotonic()
        threading.Thread(target=self._refresh_quietly, daemon=True).start()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh(wait=False)
        except Exception:  # noqa: BLE001 - a failed refresh keeps serving the last good snapshot
            log.exception("index refresh failed; still serving version %s", self._snapshot.version)

    # -- the search ----------------------------------------------------------------------------
    def encode_query(self, text: str) -> np.ndarray:
        return self._query_vectors(text)

    def channels(self) -> set[str]:
        """What a request may name: visual, each indexed text channel, and audio when the head fuses it."""
        available = {"visual"} | (set(self.text_channels.sources()) if self.text_channels else set())
        if self.head is not None and getattr(self.backbone, "audio_tower", None) is not None:
            available.add("audio")  # fused into the visual ranking by the TEFAL head
        return available

    def plan(self, req: SearchRequest, query_vector: np.ndarray | None = None) -> QueryPlan:
        """Resolve a request against the current snapshot (SearchError when it cannot be answered)."""
        self.refresh_soon()
        snap = self._snapshot
        weights = channel_weights(req, self.channels())
        query = self.encode_query(req.query) if query_vector is None else query_vector
        return QueryPlan(req, snap, query, weights, snap.allowed(req.filters), TimeWindow.of(req.filters))

    def rank(self, plan: QueryPlan) -> Ranking:
        """Candidate pool → final ranking; moments are cut by the ranking, page by page."""
        s = self.settings
        threshold = self.min_relevance(plan.request)
        if not plan.answerable:
            return Ranking(plan, [], self.head, threshold)
        pool = candidate_pool(plan, self.text_channels, coarse_segments=s.coarse_segments, candidates=s.candidates, rrf_k=s.rrf_k)
        ranked = with_relevance(final_ranking(plan, pool, self.cache, self.head, self.pooler, rrf_k=s.rrf_k), self.calibration)
        return Ranking(plan, ranked, self.head, threshold)


def open_engine(settings: Settings, text_channels: Callable | None = None, backbone=None) -> SearchEngine:
    """Open the index in `settings.db` with the model it was built with (encoders.model_spec's rule);
    `backbone` skips loading when the caller already has that model (an index job just did)."""
    store = Store.open(settings.db)
    fp = store.stored_fingerprint()
    if fp is None:
        raise StoreError(f"index {settings.db} is empty: index some videos first (`vidsearch index PATH --db {settings.db}`)")
    if backbone is None:
        backbone = load_backbone(**model_spec(settings, fp), precision=settings.precision, device=settings.device, **backend_options(settings))
    store = Store.open(settings.db, backbone.fingerprint)  # a mismatch is a clear error
    return SearchEngine(store, backbone, settings, text_channels=(text_channels or TextChannels.for_store)(store))
