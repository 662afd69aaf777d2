"""The spans' sentence vectors in memory, one matrix per index version, for the text channels' nearest-
span question.

Why: asking LanceDB cost ~10 ms of CPU per search even over a few dozen spans (planning, the scan,
Arrow batches through its event loop), once per request; one matrix product over the same vectors in
numpy costs well under a millisecond at that size and ~10 ms at `MAX_SPANS`. The answer is exact
cosine, as LanceDB's flat scan was, and each source keeps its own `per_source` best spans.

The spans' words are indexed here too (BM25, span_words.py), for the words question.

Above `MAX_SPANS` (75 MB of 384-d float32) `load` returns None and LanceDB answers, as before: the
matrix is read whole when the index version changes, and a library with more spans than that should
not pay a full read at every refresh.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .span_words import SpanWords

__all__ = ["MAX_SPANS", "SpanVectors"]

MAX_SPANS = 50_000


class SpanVectors:
    """Span rows (`cols`) and their unit sentence vectors, searched by cosine; with `words`, their
    BM25 index too (span_words.py), searched by the query's terms."""

    def __init__(self, rows: pa.Table, vectors: np.ndarray, words: SpanWords | None = None):
        self.rows = rows
        self.vectors = vectors
        self.words = words
        self.sources = rows["source"].to_numpy(zero_copy_only=False).astype(str)
        self.video_ids = rows["video_id"].to_numpy(zero_copy_only=False).astype(str)

    @classmethod
    def load(cls, table, cols: list[str]) -> SpanVectors | None:
        """The whole spans table in memory; None when it has more than MAX_SPANS rows."""
        if table.count_rows() > MAX_SPANS:
            return None
        data = table.search().select([*cols, "vector"]).limit(None).to_arrow()
        vec = data["vector"].combine_chunks()
        dim = vec.type.list_size
        vectors = np.asarray(vec.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
        rows = data.select(cols)
        words = SpanWords.build(rows["text"].to_pylist()) if "text" in cols else None
        return cls(rows, np.ascontiguousarray(vectors), words)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, query: np.ndarray, sources: list[str], allowed: np.ndarray | None, per_source: int, min_cosine: float) -> pa.Table:
        """Rows (with `_distance` = 1 - cosine, LanceDB's cosine distance) of the spans of `sources`
        in `allowed` videos with cosine >= min_cosine, each source's best `per_source`, nearest first."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        cos = self.vectors @ q
        idx = self._best(cos, cos >= min_cosine, sources, allowed, per_source)
        out = self.rows.take(pa.array(idx, type=pa.int64()))
        return out.append_column("_distance", pa.array((1.0 - cos[idx]).astype(np.float32)))

    def search_words(self, query: str, sources: list[str], allowed: np.ndarray | None, per_source: int) -> pa.Table:
        """Rows (with `_score`, BM25, as LanceDB's full-text search gives it) of the spans of `sources`
        in `allowed` videos that share a term with `query`, each source's best `per_source`, best first."""
        score = self.words.scores(query)
        idx = self._best(score, score > 0, sources, allowed, per_source)
        out = self.rows.take(pa.array(idx, type=pa.int64()))
        return out.append_column("_score", pa.array(score[idx].astype(np.float32)))

    def _best(self, score: np.ndarray, keep: np.ndarray, sources: list[str], allowed: np.ndarray | None, per_source: int) -> np.ndarray:
        """Row numbers kept by `keep`, of `sources` and `allowed` videos, each source's best
        `per_source` by `score`, best first."""
        keep = keep & np.isin(self.sources, sources)
        if allowed is not None:
            keep &= np.isin(self.video_ids, np.asarray(allowed, dtype=str))
        picked = []
        for source in sources:
            idx = np.flatnonzero(keep & (self.sources == source))
            if len(idx) > per_source:
                idx = idx[np.argpartition(-score[idx], per_source - 1)[:per_source]]
            picked.append(idx)
        idx = np.concatenate(picked) if picked else np.zeros(0, np.int64)
        return idx[np.argsort(-score[idx], kind="stable")]
