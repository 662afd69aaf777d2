"""vidsearch.encoders: the models that turn frames, sound and text into vectors.

The frame/text backbone (open_clip, loaded the real way, bf16 where the CPU agrees with fp32),
temporal token merging, X-Pool and the TEFAL audio fusion head, the log-mel audio tower, the
sentence encoder (MiniLM) for text spans, and speech (ASR) and on-screen text (OCR) readers.
`model_spec` is the one rule for which model an index is opened or extended with.

Exports resolve on first use (PEP 562). The decoder processes import `speech` and `ocr` from here,
and those are torch-free; importing the backbone eagerly would load torch (~2 s and ~190 MB
measured here) into every decoder process.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ClipBackbone": ".backbone",
    "ModelLoadError": ".backbone",
    "backend_options": ".backbone",
    "load_backbone": ".backbone",
    "model_spec": ".backbone",
    "spec_from_fingerprint": ".backbone",
    "FusionHead": ".fusion",
    "FramePooler": ".xpool",
    "MeanPool": ".xpool",
    "ParameterFreePool": ".xpool",
    "XPool": ".xpool",
    "make_pooler": ".xpool",
    "mean_pool": ".xpool",
    "AudioEncoder": ".audio",
    "audio_tokens": ".audio",
    "TextSpan": ".sentence",
    "SentenceEncoder": ".sentence",
    "get_sentence_encoder": ".sentence",
    "span_table": ".sentence",
    "SpeechRecognizer": ".speech",
    "get_recognizer": ".speech",
    "ocr_frames": ".ocr",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
