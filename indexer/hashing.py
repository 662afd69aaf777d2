"""Content hash that keys a video: the same bytes at two paths, or after a rename, are one video."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 4 << 20


def content_hash(path: Path) -> str:
    """blake2b-128 of the whole file (hashlib releases the GIL, so this overlaps with encoding)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb", buffering=0) as fh:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()
