"""The outline of what moves in each frame, read from the pixels: the shape channel's evidence.

Unit vectors read *which shape* a thing is poorly off the renderer a model was trained on: on the
held-out renderer the first result had the caption's shape 60-69% of the time, and probing the
shipped model's units with "a {colour} {shape}" found the right one for 48% of the events (chance
25%). The pixels hold the outline whatever the drawing: a thing that moves differs from its video's
static background (the per-cell median over the video's frames in the encoder's batch, as the
where-cues read it, encoders/temporal.py), and the cells that differ by much trace its silhouette.

Per frame, on the cue grid (CUE_GRID cells a side, whatever the frame size), the silhouette is the
largest 8-connected blob of cells whose change exceeds max(CHANGE_FLOOR, 4 x the frame's median
change), after an opening that drops single-cell specks. From it: the *radial signature* (the
farthest blob cell from the blob's centroid in each of BINS directions, gaps filled between
neighbours) and the magnitudes of its first HARMONICS Fourier harmonics over its mean. These are
unchanged by where the thing is, how big it is and how it is turned, and each shape has its own: a
disc is flat (all small), an ellipse or a smear has a strong 2nd, a triangle the 3rd, a square the
4th, a five-pointed star the 5th. A frame gives no silhouette (a row of zeros) where nothing stands
out (strength under the where-cues' floor), where the blob is under MIN_AREA cells, or where it
touches the frame's edge (cut off: its outline is not the thing's).

Measured on generated videos, events' frames read at 2 frames/s with the event's mean signature
(lab work for search/shape_channel.py, README "The shape channel"): the shape read right for 95% of
the held-out renderer's events and 98% of the training renderer's among those whose signature is
readable (93% and 81% of events), where the model's own units read 48% and 58%.

Columnar: a decode chunk's frames are labelled at once (no connection across frames), each frame's
largest blob picked by sorting, and every signature filled by one scatter-max.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["BINS", "HARMONICS", "SHAPE_COLUMNS", "frame_silhouettes", "unit_silhouettes"]

BINS = 32  # directions of the radial signature
HARMONICS = 5  # harmonics kept: 1..5 (a star's points are the 5th)
SHAPE_COLUMNS = 1 + HARMONICS  # stored per unit: the share of its frames with a silhouette, then the harmonics
CHANGE_FLOOR = 0.2  # summed |RGB change| in [0, 3] a cell needs, at least, to be part of a silhouette
MIN_AREA = 20  # cells (of CUE_GRID x CUE_GRID) a silhouette needs


def frame_silhouettes(change: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Per-frame change maps (N, G, G) (each cell's summed |RGB difference| to its shot's background,
    pixels in [0, 1]) -> (N, SHAPE_COLUMNS): 1 and the silhouette's radial harmonics 1..HARMONICS
    over its mean radius, or zeros where a frame has no silhouette. `present` (N,) bool: frames where
    something stands out at all (the where-cues' strength floor); others give none."""
    change = np.asarray(change, np.float32)
    n, g = change.shape[0], change.shape[-1]
    out = np.zeros((n, SHAPE_COLUMNS), np.float32)
    if n == 0:
        return out
    threshold = np.maximum(CHANGE_FLOOR, 4.0 * np.median(change.reshape(n, -1), axis=1))
    mask = change > threshold[:, None, None]
    if present is not None:
        mask &= np.asarray(present, bool)[:, None, None]
    mask = ndimage.binary_opening(mask, structure=np.ones((1, 2, 2), bool))
    labels, count = ndimage.label(mask, structure=np.pad(np.ones((1, 3, 3), bool), ((1, 1), (0, 0), (0, 0))))
    if count == 0:
        return out
    flat = labels.ravel()
    cells = np.flatnonzero(flat)
    lab = flat[cells]
    frame = cells // (g * g)
    y, x = (cells % (g * g)) // g, cells % g
    area = np.bincount(lab, minlength=count + 1)
    frame_of = np.zeros(count + 1, np.int64)
    frame_of[lab] = frame
    # each frame's largest blob: labels ordered by frame, then by area descending; the first of each frame
    order = np.lexsort((-area[1:], frame_of[1:])) + 1
    first = order[np.r_[True, frame_of[order][1:] != frame_of[order][:-1]]]
    best = np.zeros(n, np.int64)
    best[frame_of[first]] = first
    keep = best[frame] == lab
    frame, y, x = frame[keep], y[keep].astype(np.float64), x[keep].astype(np.float64)
    size = np.bincount(frame, minlength=n).astype(np.float64)
    edge = np.bincount(frame, weights=((x == 0) | (y == 0) | (x == g - 1) | (y == g - 1)).astype(np.float64), minlength=n)
    ok = (size >= MIN_AREA) & (edge == 0)
    if not ok.any():
        return out
    cx = np.bincount(frame, weights=x, minlength=n) / np.maximum(size, 1)
    cy = np.bincount(frame, weights=y, minlength=n) / np.maximum(size, 1)
    dx, dy = x - cx[frame], y - cy[frame]
    angle = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * BINS).astype(np.int64) % BINS
    profile = np.zeros(n * BINS, np.float64)
    np.maximum.at(profile, frame * BINS + angle, np.hypot(dx, dy) + 0.5)  # a cell reaches half a cell past its centre
    profile = _fill_gaps(profile.reshape(n, BINS))
    spectrum = np.abs(np.fft.rfft(profile, axis=1))
    mean = np.maximum(spectrum[:, 0], 1e-9)
    out[ok, 0] = 1.0
    out[ok, 1:] = (spectrum[:, 1 : HARMONICS + 1] / mean[:, None])[ok]
    return out


def _fill_gaps(profile: np.ndarray) -> np.ndarray:
    """Radial signatures (N, BINS) with 0 where no cell lay in a direction (a small blob has fewer
    boundary cells than directions): each gap filled linearly between its filled neighbours, around
    the circle."""
    n, b = profile.shape
    filled = profile > 0
    if filled.all() or not filled.any():
        return profile
    idx = np.arange(3 * b)
    tiled = np.tile(profile, 3)
    known = np.tile(filled, 3)
    prev = np.maximum.accumulate(np.where(known, idx, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(known, idx, 10 * b)[:, ::-1], axis=1)[:, ::-1]
    mid = slice(b, 2 * b)
    p, q = prev[:, mid], nxt[:, mid]
    has = (p >= 0) & (q < 10 * b)
    p, q = np.where(has, p, idx[mid]), np.where(has, q, idx[mid])
    rows = np.arange(n)[:, None]
    w = np.where(q > p, (idx[mid] - p) / np.maximum(q - p, 1), 0.0)
    return np.where(filled, profile, (1 - w) * tiled[rows, p] + w * tiled[rows, q])


def unit_silhouettes(per_frame: np.ndarray, unit_of_frame) -> np.ndarray:
    """Per-frame rows (N, SHAPE_COLUMNS) -> per-unit rows: the share of the unit's frames with a
    silhouette, and the mean of their harmonics. `unit_of_frame(values)` is the caller's per-unit mean
    (encoders/temporal.py `per_unit_mean` with its frame and unit times)."""
    share = unit_of_frame(per_frame[:, :1])
    sums = unit_of_frame(per_frame[:, 1:] * per_frame[:, :1])
    return np.concatenate([share, sums / np.maximum(share, 1e-9)], axis=1).astype(np.float32)
