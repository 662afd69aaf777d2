"""The model fingerprint: what made a vector, so vectors of two models never meet in one ranking.

It names the model, its weights (pretrained tag, checkpoint hash, or seeded random init), the
token-merging settings and the vector size. The index stores it; opening an index with another one is
an error that says how to reindex.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict


class Fingerprint(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str
    weights: str  # "pretrained:<tag>", "sha256:<hex>" of a checkpoint, or "random:seed<N>"
    dim: int
    merging: str = "off"  # token-merging settings, canonical string
    extra: dict[str, Any] = {}

    @property
    def id(self) -> str:
        """Short stable hash of every field."""
        blob = json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.model} [{self.weights}] dim={self.dim} merging={self.merging}"


class FingerprintMismatch(RuntimeError):
    """An index was built by one model and is being used with another."""

    def __init__(self, db: str, stored: Fingerprint, wanted: Fingerprint):
        self.stored, self.wanted = stored, wanted
        super().__init__(
            f"index {db} was built with {stored.describe()} (fingerprint {stored.id}), "
            f"but the current settings load {wanted.describe()} (fingerprint {wanted.id}). "
            f"Either use the same model flags (--model {stored.model} ...), or rebuild the index for "
            f"the new model with `vidsearch reindex PATH... --db {db} --rebuild` "
            f"(or index into a new --db directory)."
        )
