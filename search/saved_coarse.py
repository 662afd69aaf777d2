"""The coarse index on disk, beside the store version it was built from, so a server starts by
loading it instead of rebuilding it.

Why: at a million segments an HNSW build takes minutes on two cores, and every start of
`vidsearch serve` paid it (reading every segment vector back from the store, then building). A
saved index is loaded in seconds and then brought up to the store's current version the way a
running server does it: new videos added, removed ones tombstoned, a rebuild only when that would
leave too much dead weight (snapshot.py).

Layout, inside the index directory: `ann/<name>/` holds one `CoarseIndex.save` (whose manifest
carries the store version and the model fingerprint it was built from) and `ann/CURRENT` names the
newest. A save writes a new directory, then replaces CURRENT in one rename, then removes all but
the previous one, so a reader never opens a half-written index, and one that is loading while a
newer save lands still finds its files. Any problem reading it (absent, another model, another
index kind, corrupt) is logged and the caller rebuilds from the store: the saved index is a cache,
never the truth.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from .coarse import CoarseIndex

__all__ = ["ANN_DIR", "load_saved", "save_coarse", "saved_version"]

log = logging.getLogger(__name__)

ANN_DIR = "ann"
_CURRENT = "CURRENT"


def _root(db: Path | str | None) -> Path | None:
    """The saved-index folder of a local index directory (None for one on object storage)."""
    if db is None or "://" in str(db):
        return None
    path = Path(db)
    return path / ANN_DIR if path.is_dir() else None


def _current(root: Path) -> Path | None:
    try:
        name = (root / _CURRENT).read_text().strip()
    except OSError:
        return None
    return root / name if name and "/" not in name else None


def saved_version(db: Path | str | None) -> str | None:
    """The store version the saved index was built from (None: nothing saved)."""
    root = _root(db)
    current = _current(root) if root else None
    if current is None:
        return None
    try:
        return CoarseIndex.read_manifest(current).get("source_version")
    except (OSError, ValueError):
        return None


def load_saved(db: Path | str | None, fingerprint: str | None, kind: str = "auto") -> CoarseIndex | None:
    """The saved index when it was built for this model (and this index kind, unless "auto")."""
    root = _root(db)
    current = _current(root) if root else None
    if current is None:
        return None
    try:
        manifest = CoarseIndex.read_manifest(current)
        if manifest.get("fingerprint") != fingerprint:
            log.info("saved coarse index %s was built for another model: rebuilding", current)
            return None
        if kind != "auto" and manifest.get("kind") != kind:
            log.info("saved coarse index %s is %s, settings ask for %s: rebuilding", current, manifest.get("kind"), kind)
            return None
        t0 = time.perf_counter()
        coarse = CoarseIndex.load(current)
    except Exception as exc:  # noqa: BLE001 - a cache: any failure means "build it from the store"
        log.warning("could not load the saved coarse index %s (%s): rebuilding from the store", current, exc)
        return None
    log.info("loaded saved coarse index %s (%d vectors) in %.1fs", current, coarse.ntotal, time.perf_counter() - t0)
    return coarse


def save_coarse(db: Path | str | None, coarse: CoarseIndex) -> Path | None:
    """Write `coarse` as the newest saved index; None when the index directory is not local or
    not writable (logged: serving goes on, the next start rebuilds)."""
    root = _root(db)
    if root is None:
        return None
    name = f"v{coarse.source_version}-{os.getpid()}-{time.time_ns()}"
    try:
        root.mkdir(exist_ok=True)
        path = coarse.save(root / name)
        tmp = root / f".{_CURRENT}.tmp-{os.getpid()}"
        tmp.write_text(name)
        os.replace(tmp, root / _CURRENT)
    except OSError as exc:
        log.warning("could not save the coarse index under %s: %s", root, exc)
        shutil.rmtree(root / name, ignore_errors=True)
        return None
    _prune(root, keep=2)
    return path


def _prune(root: Path, keep: int) -> None:
    """Remove saved indexes but the newest `keep` (by name's time; CURRENT's always kept)."""
    current = _current(root)
    dirs = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: int(p.name.rsplit("-", 1)[-1]) if p.name.rsplit("-", 1)[-1].isdigit() else 0)  # fmt: skip
    for old in dirs[:-keep]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
