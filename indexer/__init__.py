"""vidsearch.indexer: discovery, probing, segmentation, decoding, the indexing pipeline, and jobs.

`IndexRun` turns folders, files and manifests into committed index rows (see pipeline.py);
`JobManager` runs such runs for a server, in order, with the server's settings (see jobs.py).

Exports resolve on first use (PEP 562): decoder processes import `vidsearch.indexer.worker`,
which imports this package first; they need only the decoders (a
worker starts in 0.25 s and 37 MB, measured here), while the pipeline brings torch and the store
(4-5 s, 360 MB).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "IndexRun": ".pipeline",
    "IndexRunError": ".pipeline",
    "Progress": ".pipeline",
    "RunSummary": ".pipeline",
    "default_decode_workers": ".pipeline",
    "open_store_for": ".pipeline",
    "RayIndexRun": ".ray_engine",
    "JobManager": ".jobs",
    "JobTracker": ".jobs",
    "Source": ".discover",
    "discover": ".discover",
    "DecodeJob": ".prepare",
    "Failed": ".prepare",
    "Prepared": ".prepare",
    "prepare": ".prepare",
    "DecoderPool": ".worker",
    "DecoderStartError": ".worker",
    "MediaError": ".probe",
    "probe": ".probe",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
