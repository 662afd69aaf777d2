"""vidsearch.lab: what exists to train and measure models, beside the product.

The synthetic corpus (`synth`), caption datasets (our JSONL, MSR-VTT splits), decoded training sets,
the evaluation of an index against captions, and the commands that drive them (`vidsearch train`,
`eval`, `eval-moments`, `eval-retrieval`, `synth`). The lab uses the indexer's decoders, the
encoders and the search engine; nothing in the product imports the lab. The metrics themselves
(`vidsearch.metrics`) stay in the core: search cuts moments with the same IoU they are scored by.

Exports resolve on first use: the CLI imports this package to register the commands, and the
training and evaluation code would otherwise bring torch and the search stack (~5 s) to every
`vidsearch` start.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "generate": ".synth",
    "plan": ".synth",
    "SynthSummary": ".synth",
    "DatasetError": ".datasets",
    "Caption": ".datasets",
    "VideoCaptions": ".datasets",
    "read_jsonl": ".datasets",
    "read_msrvtt": ".datasets",
    "write_jsonl": ".datasets",
    "TrainingSet": ".training_data",
    "load_training_set": ".training_data",
    "evaluate": ".evaluation",
    "register": ".commands",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
