"""BM25 over the spans' words in memory, one index per index version, for the text channels' words
question (the counterpart of span_vectors.py for the sentence vectors).

Why: LanceDB's full-text query cost ~5 ms of CPU per search over a few dozen spans (planning, a
schema read, Arrow batches through its event loop), and under bench/api_load.py it was the largest
piece of a new query's work after the text tower. Scoring the query's few terms over a sparse
term-by-span matrix (bm25s) costs well under a millisecond at that size.

The words are read the way LanceDB's default full-text index (tantivy's `simple` tokenizer) reads
them, so an index answers the same spans in memory and from LanceDB: split on anything that is not a
letter or a digit, lower case, the 33 English stop words dropped, Snowball English stems; BM25 with
k1 = 1.2, b = 0.75 (tantivy's). A span counts only when it shares a term with the query (score > 0),
as a full-text match does. One difference, on purpose: accents are folded in the query as in the
spans (letters of other scripts kept), so "cafe" finds "café" and "Fridáy" finds "Friday"; LanceDB
folds none in the query.
"""

from __future__ import annotations

import logging
import unicodedata

import numpy as np

__all__ = ["SpanWords", "fold"]

TOKEN_PATTERN = r"(?u)\b\w+\b"
MAX_TOKEN = 40  # tantivy drops longer tokens (`max_token_length`)


def fold(text: str) -> str:
    """Accents off (é -> e), other scripts as they are: NFKD, then the combining marks dropped."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


class SpanWords:
    """`scores(query)` -> the BM25 score of every span (0 where it shares no term), in row order."""

    def __init__(self, texts: list[str]):
        import bm25s
        import Stemmer

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # its import sets DEBUG: a line at every build
        self._bm25s = bm25s
        self._stemmer = Stemmer.Stemmer("english")
        self.n = len(texts)
        corpus = self._tokens([t or "" for t in texts])
        self.model = None  # no span has a word that counts (none, or only stop words): nothing matches
        if any(corpus):
            self.model = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
            self.model.index(corpus, show_progress=False)

    @classmethod
    def build(cls, texts: list[str]) -> SpanWords | None:
        """The index, or None where bm25s / PyStemmer are not installed or fail (LanceDB answers then)."""
        try:
            return cls(texts)
        except ImportError:
            return None
        except Exception:  # noqa: BLE001 - the in-memory copy is an optimisation: never lose the channel over it
            logging.getLogger(__name__).warning("BM25 over the spans in memory failed; LanceDB answers", exc_info=True)
            return None

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        tokens = self._bm25s.tokenize([fold(t) for t in texts], lower=True, token_pattern=TOKEN_PATTERN, stopwords="en",
                                      stemmer=self._stemmer, return_ids=False, show_progress=False)  # fmt: skip
        return [[w for w in doc if len(w) <= MAX_TOKEN] for doc in tokens]

    def scores(self, query: str) -> np.ndarray:
        terms = self._tokens([query])[0]
        if not terms or self.model is None:
            return np.zeros(self.n, dtype=np.float32)
        return np.asarray(self.model.get_scores(terms), dtype=np.float32)
