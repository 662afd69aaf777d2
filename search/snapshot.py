"""Snapshots: one committed version of the index, as readers see it.

A search never reads a table that a job is writing: it ranks against an immutable `Snapshot` (the
visible videos, their durations and metadata, and the coarse index over their segment vectors)
built from one pair of table versions. A newer version is built aside, extending a copy of the
previous coarse index when only a few videos changed, and swapped in whole, so a reindex or a
delete never makes a search fail or see half an index.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidsearch.api_models import Filters
from vidsearch.config import Settings
from vidsearch.store import SEGMENTS, VIDEOS, Store

from .coarse import CoarseIndex
from .saved_coarse import load_saved

__all__ = ["Snapshot", "build_snapshot", "store_version"]


@dataclass(frozen=True)
class Snapshot:
    """One committed version of the index, as readers see it."""

    version: str
    videos: dict[str, dict]  # video_id -> videos row (metadata parsed)
    ids: np.ndarray  # visible video ids
    durations: np.ndarray
    coarse: CoarseIndex | None
    built_at: float = field(default_factory=time.time)

    def allowed(self, filters: Filters | None) -> np.ndarray | None:
        """Video ids that pass the filters (None: every video)."""
        if filters is None:
            return None
        keep = np.ones(len(self.ids), dtype=bool)
        if filters.video_ids is not None:
            keep &= np.isin(self.ids, np.asarray(filters.video_ids, dtype=str))
        if filters.min_duration is not None:
            keep &= self.durations >= filters.min_duration
        if filters.max_duration is not None:
            keep &= self.durations <= filters.max_duration
        if filters.metadata:
            meta_ok = np.array(
                [all(self.videos[v]["metadata"].get(k) == val for k, val in filters.metadata.items()) for v in self.ids],
                dtype=bool,
            )
            keep &= meta_ok if len(meta_ok) else keep
        if filters.video_ids is None and filters.min_duration is None and filters.max_duration is None and not filters.metadata:
            return None
        return self.ids[keep]


def store_version(store: Store) -> str:
    """The versions of the two tables a snapshot reads: a change in either is a new snapshot."""
    return f"{store.table(VIDEOS).version}.{store.table(SEGMENTS).version}"


def build_snapshot(store: Store, settings: Settings, previous: Snapshot | None = None) -> Snapshot:
    """Read the visible videos and their segment vectors, and index them (incrementally when possible:
    from the previous snapshot's index, or at start from the index saved beside the store)."""
    version = store_version(store)
    videos = {r["video_id"]: r for r in store.video_rows()}
    ids = np.array(list(videos), dtype=str)
    durations = np.array([videos[v]["duration"] for v in ids], dtype=np.float64)
    coarse = None
    if len(ids):
        fp = store.fingerprint.id if store.fingerprint else None
        base = previous.coarse if previous is not None else None
        if base is None and settings.ann_saved:
            base = load_saved(store.path, fp, settings.ann)
        coarse = _updated_coarse(store, settings, base, ids, version, fp)
    return Snapshot(version=version, videos=videos, ids=ids, durations=durations, coarse=coarse)


def _segments_of(store: Store, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = store.segments(["segment_id", "video_id", "vector"])
    if ids is not None:
        table = table.filter(pc.is_in(table["video_id"], pa.array(ids)))
    if table.num_rows == 0:
        return np.zeros((0, 1), np.float32), np.zeros(0, str), np.zeros(0, str)
    vectors = table["vector"].combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)
    return (
        np.ascontiguousarray(vectors, dtype=np.float32),
        np.asarray(table["segment_id"].to_pylist(), dtype=str),
        np.asarray(table["video_id"].to_pylist(), dtype=str),
    )


def _updated_coarse(store: Store, settings: Settings, base: CoarseIndex | None, ids: np.ndarray, version: str, fp):
    """Bring `base` (the previous snapshot's index, or the saved one) to this version: tombstone
    removed videos and add new ones (ids are content hashes, so a changed file is a new id) on a copy;
    rebuild when that would leave much dead weight or there is nothing to start from."""
    if base is not None and base.fingerprint == fp:
        if base.source_version == version:
            return base
        old_ids = base.video_ids
        added = np.setdiff1d(ids, old_ids)
        removed = np.setdiff1d(old_ids, ids)
        if len(added) <= max(100, len(ids) // 5):
            coarse = base.copy()
            if len(removed):
                coarse.remove_videos(removed, source_version=version)
            if len(added):
                vectors, seg_ids, vids = _segments_of(store, added)
                if len(seg_ids):
                    coarse.add(vectors, seg_ids, vids, source_version=version)
            coarse.source_version = version
            if coarse.dead_fraction < 0.3:
                return coarse
    vectors, seg_ids, vids = _segments_of(store, ids)
    if len(seg_ids) == 0:
        return None
    return CoarseIndex.build(vectors, seg_ids, vids, kind=settings.ann, hnsw_storage=settings.ann_storage, source_version=version, fingerprint=fp)
