"""The query engine: a sentence in, ranked videos with their moments out.

A search is planned once (`plan`: channel weights, allowed ids, time window and query vector,
against one snapshot), then ranked (`rank`: candidate pool → final ranking, see ranking.py); the
`Ranking` cuts moments for the results a page shows. The engine owns what outlives a query: the
current snapshot and the swap to a newer one, the model, the feature and query-vector caches. How a
ranking is presented (pages and cursors, rounding, links) is the HTTP server's business.
"""

from __future__ import annotations

import hashlib
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
from vidsearch.cores import usable_cores
from vidsearch.encoders import backend_options, load_backbone, make_pooler, model_spec
from vidsearch.store import Store, StoreError

from .audio_fusion import AudioFusion, AudioQuery
from .batching import QueryBatcher
from .direction_contrast import contrast, reads_order, reversed_text
from .examples import ComposedQuery, check_image_size, compose, decode_base64_image, image_frame, like_vector
from .features import FeatureCache, QueryVectorCache, VideoFeatures
from .plan import QueryPlan, SearchError, TimeWindow, channel_weights
from .ranking import Ranking, candidate_pool, final_ranking
from .relevance import Calibration, find_calibration, with_relevance
from .saved_coarse import save_coarse, saved_version
from .snapshot import Snapshot, build_snapshot, store_version
from .text_channels import TextChannels, channel_text

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
        self._save_coarse_soon()

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
        # units mixed by a temporal module at indexing read order, whatever pools them now
        self.reads_order = reads_order(head)
        # a pretrained text-audio tower (CLAP, --audio-model) fuses sound without training when there is no head
        tower = getattr(backbone, "audio_tower", None)
        self.clap = tower if head is None and getattr(backbone, "audio_model", None) and hasattr(tower, "encode_text") else None
        self.audio_fusion = AudioFusion(weight=settings.audio_weight)
        self._audio_vectors = QueryVectorCache(lambda text: self.clap.encode_text([text])[0])
        self.cache = cache
        self._batcher = QueryBatcher(self._encode_texts, wait_ms=settings.query_batch_ms)
        self.text_channels = text_channels  # speech / ocr / subtitle / metadata spans, when indexed
        self._query_vectors = QueryVectorCache(self._batcher)
        self._image_vectors = QueryVectorCache(lambda digest: None, size=64)  # example images, by digest
        self._refreshing = threading.Lock()
        self._last_check = 0.0
        self._save_lock = threading.Lock()
        self._saver: threading.Thread | None = None
        self._save_again = False
        self.calibration: Calibration | None = None
        self._pick_calibration()

    @property
    def text_channels(self) -> TextChannels | None:
        return self._text_channels

    @text_channels.setter
    def text_channels(self, channels: TextChannels | None) -> None:
        """Where the query tower is the sentence encoder's network, the channels make a sentence vector
        they no longer hold with the tower's pass (TextChannels.tower_pass), not with a MiniLM of their own."""
        if channels is not None and getattr(self.backbone, "sentence_tower", False):
            channels.tower_pass = self._batcher
        self._text_channels = channels

    def warm_text_channels(self) -> None:
        """Load the sentence encoder now where the text channels need one of their own (the query tower
        is not its network): its first load takes seconds, which the first query would wait for."""
        channels = self.text_channels
        if channels is not None and channels.tower_pass is None:
            try:
                channels.warm()
            except Exception:  # noqa: BLE001 - the first search that needs it says what is wrong
                log.warning("could not load the text channels' sentence encoder ahead of the first search", exc_info=True)

    def _pick_calibration(self) -> None:
        """The model's calibration for the text channels this index holds (relevance.find_calibration);
        picked again when a new version brings or drops a channel."""
        fp = getattr(self.backbone, "fingerprint", None)
        if fp is not None:
            sources = [] if self.text_channels is None else None if self.store is None else self.text_channels.sources()
            # (an engine over a bare snapshot has no spans table to ask: the model's first calibration)
            self.calibration = find_calibration(fp.id, self.settings.db, self.settings.calibration, text_channels=sources)

    def calibration_for(self, req: SearchRequest) -> Calibration | None:
        """The calibration was fitted on word queries: a picture or a `like` moment scores on another
        scale (images sit closer to frames than words do), so those get no relevance and lose nothing."""
        return None if req.image is not None or req.like is not None else self.calibration

    def min_relevance(self, req: SearchRequest) -> float | None:
        """The threshold a request is answered with: its own, else the settings', else the
        calibration's default; None (nothing dropped) without a calibration."""
        calibration = self.calibration_for(req)
        if calibration is None:
            return None
        for value in (req.min_relevance, self.settings.min_relevance):
            if value is not None:
                return value
        return calibration.threshold

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
            self._save_coarse_soon()
            log.info("index version %s is live (%d videos)", self._snapshot.version, len(self._snapshot.ids))
            return True
        finally:
            self._refreshing.release()

    def _save_coarse_soon(self) -> None:
        """Save the live snapshot's coarse index beside the store, in the background (saved_coarse.py:
        the next start loads it instead of rebuilding); one saver at a time, the newest snapshot wins."""
        if self.store is None or not self.settings.ann_saved or self._snapshot.coarse is None:
            return
        with self._save_lock:
            if self._saver is not None:
                self._save_again = True
                return
            self._saver = threading.Thread(target=self._save_latest, name="save-coarse", daemon=True)
            self._saver.start()

    def _save_latest(self) -> None:
        while True:
            coarse = self._snapshot.coarse
            try:
                if coarse is not None and coarse.source_version != saved_version(self.store.path):
                    save_coarse(self.store.path, coarse)
            except Exception:  # noqa: BLE001 - a cache: serving goes on, the next start rebuilds
                log.exception("saving the coarse index failed")
            with self._save_lock:
                if not self._save_again:
                    self._saver = None
                    return
                self._save_again = False

    def wait_saved(self, timeout: float | None = None) -> None:
        """Block until a background save of the coarse index (if any) has finished."""
        saver = self._saver
        if saver is not None:
            saver.join(timeout)

    def _refresh_text_channels(self) -> None:
        """New spans may bring a channel (a job indexed speech into an index that had none)."""
        before = self.text_channels.sources() if self.text_channels is not None else []
        if self.text_channels is None:
            self.text_channels = TextChannels.for_store(self.store)
        else:
            self.text_channels.refresh()
        if (self.text_channels.sources() if self.text_channels is not None else []) != before:
            self._pick_calibration()  # a channel came or went: the calibration fitted with the new set

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

    def query_vectors(self, text: str) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The query vector of `text`, where the same pass made it the text channels' sentence vector,
        and the vector of its reversed twin where the plan contrasts with one (None otherwise): what a
        search process needs to answer `text` without a text-tower pass of its own
        (server/search_processes.py). Batched and cached like `encode_query`."""
        vec = self.encode_query(text)
        twin = reversed_text(text) if self.reads_order else None
        channels = self.text_channels
        # the pass that made `vec` made the sentence vector too, but the two caches forget apart (a
        # text whose query vector is used again and again outlives its sentence vector): made again
        # here by this tower, where the receiver could only load a MiniLM of its own for it
        sentence = None if channels is None else channels.sentence_vector(text) if channels.tower_pass is not None else channels.remembered(text)
        return vec, sentence, self.encode_query(twin) if twin is not None else None

    def use_query_vectors(self, text: str, vector: np.ndarray, sentence: np.ndarray | None, twin: np.ndarray | None = None) -> None:
        """Take `text`'s vectors computed elsewhere (`query_vectors` of another engine on the same model)."""
        self._query_vectors.put(text, vector)
        if sentence is not None and self.text_channels is not None:
            self.text_channels.remember(text, sentence)
        reverse = reversed_text(text)
        if twin is not None and reverse is not None:
            self._query_vectors.put(reverse, twin)

    def encode_image(self, data: bytes) -> np.ndarray:
        """An example picture's vector from the index's own visual tower (a one-frame clip); NotAnImage
        or ImageTooLarge (SearchErrors) when it is not a picture or too large."""
        limit = int(self.settings.max_image_mb * 1e6)
        check_image_size(data, limit)  # before the cache: a picture seen before is still refused
        digest = hashlib.sha256(data).hexdigest()
        return self._image_vectors(digest, lambda: self._picture_vector(image_frame(data, self.backbone.image_size, limit)))

    def _picture_vector(self, frame: np.ndarray) -> np.ndarray:
        """One picture (1, S, S, 3) as the indexer makes a one-frame clip's frame vector: with the
        model's focus view where it has one (a still picture has no where-cue, so its window is the
        centre, encoders/focus.py); the temporal module, which reads neighbours, is left out."""
        from vidsearch.encoders.focus import apply_focus

        one, first = np.zeros(1), np.zeros(1, np.int64)
        vector = self.backbone.encode_frames(frame)
        return apply_focus(getattr(self.backbone, "head", None), self.backbone.encode_frames, frame, vector, None, one, one + 1, first, one, first)[0]

    def compose_query(self, req: SearchRequest, text_vector: np.ndarray | None = None) -> ComposedQuery:
        """The request's inputs (words, an image, a `like` moment) as one query vector (search/examples.py)."""
        vectors: dict[str, np.ndarray] = {}
        if req.query is not None:
            vectors["text"] = self.encode_query(req.query) if text_vector is None else text_vector
        if req.image is not None:
            vectors["image"] = self.encode_image(decode_base64_image(req.image))
        if req.like is not None:
            vid = req.like.video_id
            if vid not in self._snapshot.videos:
                raise SearchError(f"like.video_id {vid} is not an indexed video")
            vectors["like"] = like_vector(self.cache.get_many([vid]).get(vid), req.like)
        return compose(vectors, req.query_weights)

    @property
    def query_runtime(self) -> str:
        """What encodes new query texts now: onnx, torch, or building (torch until the ONNX copy is ready)."""
        if getattr(self.backbone, "query_tower", None) is not None:
            return "onnx"
        builder = getattr(self, "_runtime_builder", None)
        return "building" if builder is not None and builder.is_alive() else "torch"

    def start_query_runtime(self, wait: bool = False) -> threading.Thread | None:
        """Build the text tower's ONNX Runtime copy (encoders/onnx_text.py: ~2.5x less CPU per new
        query than torch) in the background and switch the query path to it once it agrees with torch;
        torch answers until then, and for good where it cannot be built. A server calls this at start."""
        if not getattr(self.backbone, "sentence_tower", False) or getattr(self.backbone, "query_tower", None) is not None:
            return None

        def build() -> None:
            from vidsearch.encoders.onnx_text import OnnxSentenceTower

            tower = OnnxSentenceTower.build(self.backbone)
            if tower is not None:
                self.backbone.query_tower = tower

        thread = self._runtime_builder = threading.Thread(target=build, name="query-runtime", daemon=True)
        thread.start()
        if wait:
            thread.join()
        return thread

    def _encode_texts(self, texts: list[str]) -> list[np.ndarray]:
        """Query vectors for a micro-batch of texts (QueryBatcher); where the text tower is the
        sentence encoder's network, the same pass gives the text channels their sentence vectors.
        A text's reversed twin (direction_contrast.py), when the plan will ask for it, rides in the
        same pass; every vector of the pass goes into the cache here, so a plan asking for a twin
        (or a text that is another's twin in the same batch) finds it: no second batch, no second
        wait, and the twin searched next has its sentence vector too."""
        twins = sorted({t for t in map(reversed_text, texts) if t is not None and t not in texts
                        and self._query_vectors.peek(t) is None}) if self.reads_order else []  # fmt: skip
        every = texts + twins
        every += sorted({channel_text(t) for t in every} - set(every))  # a quoted phrase's words, for the text channels
        both = getattr(self.backbone, "encode_text_and_sentences", None)
        if both is None:  # e.g. a Triton-served tower
            vectors, sentences = list(self.backbone.encode_text(every)), None
        else:
            vectors, sentences = both(every)
        if sentences is not None and self.text_channels is not None:
            made = dict(zip(every, sentences))
            for text in every:
                vec = made.get(channel_text(text))
                if vec is not None:  # None: a text cut at the tower's context
                    self.text_channels.remember(text, vec)
        for text, vec in zip(every, vectors):
            self._query_vectors.put(text, vec)
        return list(vectors[: len(texts)])

    def channels(self) -> set[str]:
        """What a request may name: visual, each indexed text channel, and audio when the head fuses it."""
        available = {"visual"} | (set(self.text_channels.sources()) if self.text_channels else set())
        if (self.head is not None and getattr(self.backbone, "audio_tower", None) is not None) or self.clap is not None:
            available.add("audio")  # fused into the visual ranking (the TEFAL head, or audio_fusion.py)
        return available

    def plan(self, req: SearchRequest, query_vector: np.ndarray | None = None) -> QueryPlan:
        """Resolve a request against the current snapshot (SearchError when it cannot be answered)."""
        self.refresh_soon()
        snap = self._snapshot
        weights = channel_weights(req, self.channels())
        query = self.compose_query(req, query_vector)
        allowed = snap.allowed(req.filters)
        if req.like is not None and not req.like.include_source:  # "more like this": other videos
            allowed = snap.ids if allowed is None else allowed
            allowed = allowed[allowed != req.like.video_id]
        audio = None
        if self.clap is not None and "audio" in weights:  # the query in the audio tower's own space
            audio = AudioQuery(self._audio_vectors(req.query), self.audio_fusion)
        return QueryPlan(req, snap, query.vector, weights, allowed, TimeWindow.of(req.filters), query.inputs, audio,
                         self._event_query(req, query, query_vector))  # fmt: skip

    def _event_query(self, req: SearchRequest, query: ComposedQuery, text_vector: np.ndarray | None) -> np.ndarray | None:
        """The vector the event window and the moment curve score units with: the query contrasted
        with its text's reversed twin where the words name a direction and the units read order
        (direction_contrast.py); None (the query itself) otherwise."""
        twin = reversed_text(req.query) if self.reads_order and "text" in query.inputs else None
        if twin is None:
            return None
        text = self.encode_query(req.query) if text_vector is None else text_vector
        return contrast(query.vector, text, self.encode_query(twin), query.inputs["text"])

    def rank(self, plan: QueryPlan) -> Ranking:
        """Candidate pool → final ranking; moments are cut by the ranking, page by page."""
        s = self.settings
        threshold = self.min_relevance(plan.request)
        if not plan.answerable:
            return Ranking(plan, [], self.head, threshold)
        pool = candidate_pool(plan, self.text_channels, coarse_segments=s.coarse_segments, candidates=s.candidates, rrf_k=s.rrf_k)
        ranked = with_relevance(final_ranking(plan, pool, self.cache, self.head, self.pooler, rrf_k=s.rrf_k), self.calibration_for(plan.request))
        return Ranking(plan, ranked, self.head, threshold)


def open_engine(settings: Settings, text_channels: Callable | None = None, backbone=None) -> SearchEngine:
    """Open the index in `settings.db` with the model it was built with (encoders.model_spec's rule);
    `backbone` skips loading when the caller already has that model (an index job just did)."""
    store = Store.open(settings.db)
    fp = store.stored_fingerprint()
    if fp is None:
        raise StoreError(f"index {settings.db} is empty: index some videos first (`vidsearch index PATH --db {settings.db}`)")
    import torch

    # torch starts a thread per core it sees; a container's CPU quota is invisible to it
    torch.set_num_threads(settings.threads or min(torch.get_num_threads(), usable_cores()))
    if backbone is None:
        backbone = load_backbone(**model_spec(settings, fp), precision=settings.precision, device=settings.device, **backend_options(settings))
    store = Store.open(settings.db, backbone.fingerprint)  # a mismatch is a clear error
    return SearchEngine(store, backbone, settings, text_channels=(text_channels or TextChannels.for_store)(store))
