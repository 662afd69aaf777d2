"""The text channels (speech, on-screen text, subtitles, metadata) as rankings of videos.

Each channel matches the query two ways over its timed spans: BM25 on the words (LanceDB's native
full-text index) and cosine over sentence vectors (MiniLM), fused by reciprocal rank so exact words
and paraphrases both count. A video's channel score is its best span; the matched spans, with their
times, go back to the engine, which shows them and lets them shape the moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pyarrow.compute as pc
from numpy.typing import ArrayLike

from vidsearch.api_models import SpanHit
from vidsearch.encoders.sentence import get_sentence_encoder  # cheap: it imports sentence-transformers on first use
from vidsearch.store import SPANS, Store, sql_in_list

from .features import QueryVectorCache
from .fusion import reciprocal_rank_fusion
from .span_vectors import SpanVectors

SPAN_CANDIDATES = 200  # spans fetched per matcher before grouping by video
# Nearest neighbours always exist; below this cosine a span is not about the query, so it must not vote
# in the fusion and disturb the visual ranking (rank fusion gives a weak match the same say as a strong
# one). MiniLM on bench/speech_channel.py's pairs: unrelated sentences 0-0.3 (p99 0.30), paraphrases
# from 0.35 (median 0.64). Sentences on one topic sit in between ("look at the green circle" said, "a
# green block is motionless" asked: 0.34), and at 0.3 such passing remarks outranked strong visual
# matches. Measured (README): 0.35 keeps the paraphrases (fused R@1 80%, was 75% at 0.3), 0.4 starts
# losing them (pocketsphinx fused R@1 72.5%). BM25 needs no floor: it only returns spans that share
# words with the query.
MIN_COSINE = 0.35
# From this cosine a span says the query: the same words give or take ASR noise, punctuation, or a
# few words around them (MiniLM: "a hungry dragon sleeps" heard as "The hungry dragon sleeps." 0.97,
# "time to go home" / "Time to go home." 0.92, the query inside a longer sentence 0.85, a paraphrase
# 0.44-0.77, one word changed 0.77). What a match weighs where it shapes a moment (match_strength).
EXACT_COSINE = 0.85
# What a span weighs on the moment curve at MIN_COSINE, where it just counts as a match (1 at
# EXACT_COSINE): moments.TEXT_LIFT x 0.4 = 0.6 of the curve's range, about what every matched span
# added before strengths (the frames' peak relevance, on curves whose cosines straddle 0). Such a
# span moves the moment onto its own seconds only where the frames there are already in the upper
# part of the curve; a quoted on-screen word ('under the caption "DANGER"', cosine ~0.36 against the
# whole caption) still lands the moment on the caption's seconds.
MATCH_STRENGTH_AT_FLOOR = 0.4
COLS = ["span_id", "video_id", "source", "start", "end", "text"]
_CLOSING = {'"': '"', "\u201c": "\u201d", "\u201e": "\u201c", "'": "'", "\u2018": "\u2019", "\u00ab": "\u00bb"}


def channel_text(query: str) -> str:
    """The words the text channels match a query by: a query that is one quoted phrase
    (`"time to go home"`, in straight or curly quotes) is that phrase. Its quotes moved its sentence
    vector away from the very words said or shown ("Time to go home." 0.92 -> 0.73, "WIN" on screen
    1.0 -> 0.72) and its relevance with it (75% -> 43%), though quoting asks for those words exactly.
    The visual tower keeps the quotes (it was trained on captions that quote on-screen words)."""
    q = query.strip()
    if len(q) >= 3 and q[0] in _CLOSING and q[-1] == _CLOSING[q[0]] and not any(c in q[1:-1] for c in '"\u201c\u201d'):
        inner = q[1:-1].strip()
        if inner:
            return inner
    return query


class TextChannels:
    """The spans table as rankings of videos, one per text source. The table is opened once per index
    version (`refresh` reopens it) and each search asks two questions for all sources together
    (nearest sentence vectors, BM25), not two per source; both are answered from the version's spans
    held in memory (span_vectors.py, span_words.py) when the table is small enough, else by LanceDB."""

    def __init__(self, store: Store, encoder=None):
        self.store = store
        self._encoder = encoder
        self._sources: list[str] | None = None
        self._table = None
        self._vectors: SpanVectors | None = None
        self._vectors_loaded = False
        self._lock = threading.Lock()
        self._embed = QueryVectorCache(self._encode)
        # set by the engine where its query tower is the sentence encoder's network: a pass that
        # remembers the text's sentence vector (engine._encode_texts), so a sentence vector that left
        # this cache before its query vector left the engine's is made again by that tower, not by a
        # second copy of MiniLM loaded for it (seconds, and ~90 MB, in a search process)
        self.tower_pass: Callable[[str], object] | None = None

    @classmethod
    def for_store(cls, store: Store) -> TextChannels | None:
        """Text channels when the index has spans; None (visual only) when it has none."""
        return cls(store) if store.table(SPANS).count_rows() else None

    @property
    def table(self):
        if self._table is None:
            self._table = self.store.table(SPANS)
        return self._table

    def sources(self) -> list[str]:
        if self._sources is None:
            col = self.table.search().select(["source"]).limit(None).to_arrow()["source"]
            self._sources = sorted(pc.unique(col).to_pylist())
        return self._sources

    def refresh(self) -> None:
        """A new index version: reopen the table, re-read the sources and the span vectors (here, on
        the refreshing thread, so no request waits for the read)."""
        table = self.store.table(SPANS)
        vectors = SpanVectors.load(table, COLS)
        with self._lock:
            self._sources = None
            self._table = table
            self._vectors, self._vectors_loaded = vectors, True

    def span_vectors(self) -> SpanVectors | None:
        """This version's span vectors in memory (loaded on first use), or None: ask LanceDB."""
        with self._lock:
            if not self._vectors_loaded:
                self._vectors, self._vectors_loaded = SpanVectors.load(self.table, COLS), True
            return self._vectors

    def warm(self) -> None:
        """Load the sentence encoder now (its import takes seconds), so the first query does not wait."""
        self._embed("warm up")

    def remember(self, text: str, vec: np.ndarray) -> None:
        """The sentence vector of `text`, computed by the query's own text-tower pass (engine.py)."""
        self._embed.put(text, vec)

    def remembered(self, text: str) -> np.ndarray | None:
        """The sentence vector of `text` if it was computed (by `remember` or a search), else None."""
        return self._embed.peek(text)

    def sentence_vector(self, text: str) -> np.ndarray:
        """The sentence vector of `text`: remembered, else made (by the query tower's pass where it is
        the sentence encoder's network, else by the sentence encoder)."""
        return self._embed(text)

    def _encode(self, text: str) -> np.ndarray:
        """(The cache's maker, keyed by the query.) The sentence vector of the query's `channel_text`."""
        if self.tower_pass is not None:
            self.tower_pass(text)  # the engine's pass remembers the vector of the text's channel_text under it
            vec = self._embed.peek(text)
            if vec is not None:
                return vec  # else a text cut at the tower's context: the sentence encoder reads it whole
        if self._encoder is None:
            self._encoder = get_sentence_encoder()
        return self._encoder.encode([channel_text(text)])[0]

    def search(self, source: str, query: str, k: int, allowed: np.ndarray | None):
        """(video ids best first, their scores, {video id: [SpanHit]}) for one channel."""
        return self.search_many([source], query, k, allowed)[source]

    def search_many(self, sources: list[str], query: str, k: int, allowed: np.ndarray | None) -> dict:
        """{source: (video ids best first, their scores, {video id: [SpanHit]})} for these channels,
        from one vector query and one full-text query over all of them (each source keeps its own
        `SPAN_CANDIDATES` best spans)."""
        empty = (np.zeros(0, str), np.zeros(0), {})
        if not sources:
            return {}
        table = self.table
        where = f"source IN {sql_in_list(sorted(sources))}"
        if allowed is not None:
            where += f" AND video_id IN {sql_in_list(allowed.tolist())}" if len(allowed) else " AND false"
        cols = COLS
        limit = SPAN_CANDIDATES * len(sources)
        vec = self._embed(query)  # channel_text's vector (_encode)
        in_memory = self.span_vectors()
        if in_memory is not None:
            by_vector = in_memory.search(vec, sorted(sources), allowed, SPAN_CANDIDATES, MIN_COSINE)
        else:
            by_vector = (
                table.search(vec, vector_column_name="vector").distance_type("cosine").where(where, prefilter=True)
                .select(cols + ["_distance"]).limit(limit).to_arrow()
            )  # fmt: skip
        words = channel_text(query)
        if in_memory is not None and in_memory.words is not None:
            by_words = in_memory.search_words(words, sorted(sources), allowed, SPAN_CANDIDATES)
        else:
            try:
                by_words = (
                    table.search(words, query_type="fts").where(where, prefilter=True)
                    .select(cols + ["_score"]).limit(limit).to_arrow()
                )  # fmt: skip
            except Exception:  # noqa: BLE001 - no full-text index yet (an index run still writing): vectors only
                by_words = by_vector.slice(0, 0)
        if by_vector.num_rows:
            by_vector = by_vector.filter(pc.less_equal(by_vector["_distance"], 1.0 - MIN_COSINE))
        out = {}
        for source in sources:
            vec_rows = _head(by_vector.filter(pc.equal(by_vector["source"], source)), SPAN_CANDIDATES)
            word_rows = _head(by_words.filter(pc.equal(by_words["source"], source)), SPAN_CANDIDATES)
            out[source] = _rank_videos(source, vec_rows, word_rows, cols) if vec_rows.num_rows or word_rows.num_rows else empty
        return out


def match_strength(cosine: ArrayLike) -> np.ndarray:
    """How strongly timed text that matched the query speaks for its own seconds, in [0, 1]: 0 under
    MIN_COSINE (not a match; a span found by its words alone carries cosine 0, as it always weighed
    nothing on the curve), MATCH_STRENGTH_AT_FLOOR at it, rising linearly to 1 at EXACT_COSINE (the
    span says the query). The moment curve lifts the span by this share of TEXT_LIFT times its own
    range (moments.localize_moments, `text_hits`)."""
    cos = np.asarray(cosine, dtype=np.float64)
    rise = np.clip((cos - MIN_COSINE) / (EXACT_COSINE - MIN_COSINE), 0.0, 1.0)
    return np.where(cos >= MIN_COSINE, MATCH_STRENGTH_AT_FLOOR + (1.0 - MATCH_STRENGTH_AT_FLOOR) * rise, 0.0)


def _head(table, n: int):
    return table.slice(0, n) if table.num_rows > n else table


def _rank_videos(source: str, by_vector, by_words, cols: list[str]):
    """One channel's spans (nearest by vector, best by BM25) fused by rank, grouped into videos."""
    rows = {}
    for t in (by_vector, by_words):
        for r in t.select(cols).to_pylist():
            rows[r["span_id"]] = r
    lists = {}
    if by_vector.num_rows:
        lists["vector"] = by_vector["span_id"].to_numpy(zero_copy_only=False)
    if by_words.num_rows:
        lists["words"] = by_words["span_id"].to_numpy(zero_copy_only=False)
    fused = reciprocal_rank_fusion(lists)
    cos = dict(zip(by_vector["span_id"].to_pylist(), (1.0 - by_vector["_distance"].to_numpy()).tolist()))
    ids, scores, hits = [], [], {}
    for span_id in fused.ids:
        r = rows[str(span_id)]
        score = float(cos.get(str(span_id), 0.0))
        if r["video_id"] not in hits:
            ids.append(r["video_id"])
            scores.append(score)
            hits[r["video_id"]] = []
        if len(hits[r["video_id"]]) < 5:
            hits[r["video_id"]].append(SpanHit(source=source, start=r["start"], end=r["end"], text=r["text"], score=round(score, 6)))
    return np.asarray(ids, dtype=str), np.asarray(scores), hits
