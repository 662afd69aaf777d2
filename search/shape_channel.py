"""The shape channel: a window's moving thing has the outline the query names.

Unit vectors know a thing's colour far better than its shape off the renderer a model learned: on
the held-out renderer the first result had the caption's shape 60-69% of the time (colour 100%),
and no training change tried lifted it past that. The pixels hold the outline whatever the drawing:
the indexer stores, for every unit of every model, the radial harmonics of the silhouette of what
moved (encoders/silhouettes.py: harmonic 3 is a triangle's, 4 a square's, 5 a five-pointed star's,
a disc has none). A query that names one shape (encoders/shape_swaps.py `named_shape`: "circle",
"ball", "box", "three-sided shape", "five-pointed star", ...; quoted speech and on-screen words left
out; none when it names two) adds

    SHAPE_WEIGHT * agreement,  agreement in [-1, 1]

to the event window's score (event_windows.py), beside the motion channel's term. A window's
reading is the mean of its units' harmonics, weighed by the share of each unit's frames that had a
silhouette; each shape scores one harmonic (a disc a fixed CIRCLE_LEVEL, which the others must pass;
the square's 4th harmonic is SQUARE_GAIN times its own, since a square's corners stand out less
than a star's points), and the agreement is the named shape's score against the best other one,
over MARGIN, clipped to [-1, 1]. A window adds 0 where fewer than MIN_UNITS units had a silhouette,
and where its outline is not one of these shapes: a mean 1st harmonic over MAX_H1 (the outline is
lopsided: several things, or a shadow) or a 2nd over MAX_H2 (stretched: a person, a car, a smear).
Real footage mostly reads that way, so a "box" or a "star" in an everyday query mostly leaves its
ranking alone; a window whose moving thing does read as another of the four shapes (a ball under "a
cardboard box") loses up to SHAPE_WEIGHT. Everyday phrases that name no outline ("Times Square",
"movie star", "box office") are not read as shapes. A video indexed before the channel adds 0, and
so does a window with token merging on at the default rate (a 3 s window then holds one unit).

The thresholds were set on the training renderer's looks and the held-out selection set, and
checked on the held-out report set (README "The shape channel").
"""

from __future__ import annotations

import numpy as np

from vidsearch.encoders.shape_swaps import SHAPES, named_shape

__all__ = ["SHAPES", "SHAPE_WEIGHT", "agreement", "query_shape", "window_harmonics"]

SHAPE_WEIGHT = 0.2
MIN_UNITS = 2.0  # units (weighed by the share of their frames) with a silhouette a window needs
MAX_H1 = 0.04  # a mean 1st harmonic above this: lopsided, not one of the shapes
MAX_H2 = 0.12  # a mean 2nd harmonic above this: stretched, not one of the shapes
CIRCLE_LEVEL = 0.06  # a disc's score: what the other shapes' harmonics must pass
SQUARE_GAIN = 1.5  # a square's corners are a weaker 4th harmonic than a star's points are a 5th
MARGIN = 0.03  # the named shape's lead (in harmonic units) at which agreement is full


def query_shape(text: str | None) -> str | None:
    """The one shape a query names ("circle", "square", "triangle", "star"), else None."""
    return named_shape(text) if text else None


def window_harmonics(shapes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per window of rows lo..hi-1 of `shapes` (N, 6: share of frames with a silhouette, harmonics
    1..5): the mean harmonics (W, 5) over the units with a silhouette, weighed by that share, and
    the summed share (W,). Columnar: one cumulative sum, two lookups per window."""
    s = np.asarray(shapes, np.float64)
    cols = np.concatenate([s[:, :1], s[:, :1] * s[:, 1:]], axis=1)
    acc = np.zeros((len(s) + 1, cols.shape[1]), np.float64)
    np.cumsum(cols, axis=0, out=acc[1:])
    total = acc[hi] - acc[lo]
    weight = total[:, 0]
    return total[:, 1:] / np.maximum(weight, 1e-9)[:, None], weight


def agreement(harmonics: np.ndarray, weight: np.ndarray, shape: str) -> np.ndarray:
    """How well each window's outline (W, 5 harmonics; `weight` (W,) units that had one) matches
    `shape`, in [-1, 1]; 0 where too few units had an outline or it is none of the shapes."""
    h = np.asarray(harmonics, np.float64)
    scores = np.column_stack([np.full(len(h), CIRCLE_LEVEL), SQUARE_GAIN * h[:, 3], h[:, 2], h[:, 4]])  # SHAPES order
    k = SHAPES.index(shape)
    others = np.delete(scores, k, axis=1).max(axis=1)
    out = np.clip((scores[:, k] - others) / MARGIN, -1.0, 1.0)
    readable = (weight >= MIN_UNITS) & (h[:, 0] <= MAX_H1) & (h[:, 1] <= MAX_H2)
    return np.where(readable, out, 0.0)
