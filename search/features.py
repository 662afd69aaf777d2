"""Stored unit vectors of candidate videos, kept in memory for re-ranking and moments (and the
vectors of recent query texts, which users repeat and page through).

A video's features never change under its id (the id is a content hash and the index has one
fingerprint), so a cache entry is never stale; it is only evicted when the byte budget is reached.
Misses for a whole candidate list are read in one LanceDB query, not one per video.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vidsearch.encoders.silhouettes import SHAPE_COLUMNS
from vidsearch.encoders.sound_cues import SOUND_COLUMNS
from vidsearch.schema import SOUND_CUES, UNIT_CUES, UNIT_SHAPES
from vidsearch.store import FEATURES, Store, sql_in_list


EMPTY = np.zeros(0, np.float32)


@dataclass(frozen=True)
class VideoFeatures:
    start: np.ndarray  # (T,) float32 seconds
    end: np.ndarray  # (T,)
    vectors: np.ndarray  # (T, D) float32, unit length
    audio_start: np.ndarray = field(default_factory=lambda: EMPTY)  # (A,) audio tokens (audio tower)
    audio_end: np.ndarray = field(default_factory=lambda: EMPTY)
    audio_vectors: np.ndarray = field(default_factory=lambda: EMPTY.reshape(0, 0))  # (A, D)
    cues: np.ndarray = field(default_factory=lambda: EMPTY.reshape(0, 2))  # (T, 2) where-cues per unit, or (0, 2): none stored
    shapes: np.ndarray = field(default_factory=lambda: EMPTY.reshape(0, SHAPE_COLUMNS))  # (T, 6) silhouettes per unit, or none stored
    sound: np.ndarray = field(default_factory=lambda: EMPTY.reshape(0, SOUND_COLUMNS))  # (R, 5) the soundtrack per quarter second, or none

    @property
    def nbytes(self) -> int:
        return self.start.nbytes + self.end.nbytes + self.vectors.nbytes + self.audio_vectors.nbytes + self.cues.nbytes + self.shapes.nbytes + self.sound.nbytes


def pad_vectors(vectors: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-video (n_i, dim) matrices -> a zero-padded (V, max n_i, dim) batch and its (V, max n_i) mask.

    A matrix of another width (a video with no vectors of this kind) counts as empty.
    """
    lengths = [len(v) if v.ndim == 2 and v.shape[1] == dim else 0 for v in vectors]
    t = max(lengths, default=0)
    x = np.zeros((len(vectors), t, dim), np.float32)
    m = np.zeros((len(vectors), t), bool)
    for row, (v, n) in enumerate(zip(vectors, lengths)):
        if n:  # an empty one may be (0, 0): a silent video's audio, which no width matches
            x[row, :n] = v[:n]
            m[row, :n] = True
    return x, m


class FeatureCache:
    def __init__(self, store: Store, max_bytes: int = 1 << 30):
        self.store = store
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, VideoFeatures] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_many(self, video_ids: list[str]) -> dict[str, VideoFeatures]:
        out: dict[str, VideoFeatures] = {}
        with self._lock:
            for vid in video_ids:
                item = self._items.get(vid)
                if item is not None:
                    self._items.move_to_end(vid)
                    out[vid] = item
        missing = [v for v in video_ids if v not in out]
        if missing:
            loaded = self._load(missing)
            out.update(loaded)
            with self._lock:
                for vid, item in loaded.items():
                    if vid not in self._items:
                        self._items[vid] = item
                        self._bytes += item.nbytes
                while self._bytes > self.max_bytes and len(self._items) > 1:
                    _, old = self._items.popitem(last=False)
                    self._bytes -= old.nbytes
        return out

    def put(self, video_id: str, features: VideoFeatures) -> None:
        """Seed the cache (benchmarks with synthetic features, warm-up after a build)."""
        with self._lock:
            if video_id not in self._items:
                self._items[video_id] = features
                self._bytes += features.nbytes

    def _load(self, video_ids: list[str]) -> dict[str, VideoFeatures]:
        source = self.store.table(FEATURES)
        with_cues = UNIT_CUES.name in source.schema.names  # an index made before the motion channel has none
        with_shapes = UNIT_SHAPES.name in source.schema.names  # ... or before the shape channel
        with_sound = SOUND_CUES.name in source.schema.names  # ... or before the sound channel
        table = (
            source.search()
            .where(f"video_id IN {sql_in_list(video_ids)}")
            .select(["video_id", "unit_start", "unit_end", "unit_vectors", "audio_start", "audio_end", "audio_vectors"]
                    + [c.name for c, there in ((UNIT_CUES, with_cues), (UNIT_SHAPES, with_shapes), (SOUND_CUES, with_sound)) if there])  # fmt: skip
            .limit(None)
            .to_arrow()
        )
        if table.num_rows == 0:
            return {}
        starts, ends, vectors, bounds = _ragged(table, "unit_start", "unit_end", "unit_vectors")
        a_starts, a_ends, a_vectors, a_bounds = _ragged(table, "audio_start", "audio_end", "audio_vectors")
        cues, c_bounds = _rows_per_video(table, UNIT_CUES.name, 2) if with_cues else (EMPTY.reshape(0, 2), np.zeros(len(bounds), np.int64))
        shapes, s_bounds = _rows_per_video(table, UNIT_SHAPES.name, SHAPE_COLUMNS) if with_shapes else (EMPTY.reshape(0, SHAPE_COLUMNS), np.zeros(len(bounds), np.int64))
        sound, r_bounds = _rows_per_video(table, SOUND_CUES.name, SOUND_COLUMNS) if with_sound else (EMPTY.reshape(0, SOUND_COLUMNS), np.zeros(len(bounds), np.int64))
        ids = table["video_id"].to_pylist()
        return {
            vid: VideoFeatures(
                starts[a:b].copy(), ends[a:b].copy(), vectors[a:b].copy(),
                a_starts[c:d].copy(), a_ends[c:d].copy(), a_vectors[c:d].copy(),
                cues[e:f].copy() if f - e == b - a else EMPTY.reshape(0, 2),
                shapes[g:h].copy() if h - g == b - a else EMPTY.reshape(0, SHAPE_COLUMNS),
                sound[i:j].copy(),  # its own time grid: any number of rows
            )  # fmt: skip
            for vid, a, b, c, d, e, f, g, h, i, j in zip(ids, bounds[:-1], bounds[1:], a_bounds[:-1], a_bounds[1:], c_bounds[:-1], c_bounds[1:],
                                                        s_bounds[:-1], s_bounds[1:], r_bounds[:-1], r_bounds[1:])
        }


def _bounds(column) -> np.ndarray:
    """Per-video bounds of a list column's flattened rows; a null row (a column added after the row
    was written) holds none."""
    counts = column.combine_chunks().value_lengths().to_numpy(zero_copy_only=False)
    return np.concatenate([[0], np.cumsum(np.nan_to_num(counts.astype(np.float64)).astype(np.int64))])


def _ragged(table, start_col: str, end_col: str, vec_col: str):
    """Per-video lists of times and vectors -> flat arrays plus per-video bounds (columnar)."""
    bounds = _bounds(table[start_col])
    starts = table[start_col].combine_chunks().flatten().to_numpy().astype(np.float32)
    ends = table[end_col].combine_chunks().flatten().to_numpy().astype(np.float32)
    flat = table[vec_col].combine_chunks().flatten().flatten().to_numpy().astype(np.float32)
    total = int(bounds[-1])
    vectors = flat.reshape(total, -1) if total else np.zeros((0, 0), np.float32)
    return starts, ends, vectors, bounds


def _rows_per_video(table, name: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A column of rows per video (where-cues, silhouettes, sound cues) -> flat (N, width) rows plus per-video bounds
    (an empty or null row holds none)."""
    column = table[name]
    return column.combine_chunks().flatten().flatten().to_numpy().astype(np.float32).reshape(-1, width), _bounds(column)


class QueryVectorCache:
    """Recent query texts -> their vectors: least recently used out past `size`, safe across threads.

    Encoding a query is a text-tower pass (tens of ms on a CPU), and the same text comes back for the
    next page, a changed filter, or the UI rerunning; the CLIP tower and the sentence encoder each keep
    one. Two threads that miss on the same text may both encode it; the result is the same.
    """

    def __init__(self, encode: Callable[[str], np.ndarray], size: int = 1024):
        self._encode, self._size = encode, size
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str, make: Callable[[], np.ndarray] | None = None) -> np.ndarray:
        """The vector of `text`; `make` computes it on a miss instead of `encode(text)` (an example
        image is keyed by its digest and encoded from its bytes)."""
        with self._lock:
            hit = self._vectors.get(text)
            if hit is not None:
                self._vectors.move_to_end(text)
                return hit
        vec = np.asarray(self._encode(text) if make is None else make(), dtype=np.float32)
        self.put(text, vec)
        return vec

    def peek(self, text: str) -> np.ndarray | None:
        """The vector of `text` if it is kept, without computing it."""
        with self._lock:
            return self._vectors.get(text)

    def put(self, text: str, vec: np.ndarray) -> None:
        """Remember a vector computed elsewhere (the query tower's pass that also gave this one)."""
        with self._lock:
            self._vectors[text] = np.asarray(vec, dtype=np.float32)
            self._vectors.move_to_end(text)
            if len(self._vectors) > self._size:
                self._vectors.popitem(last=False)
