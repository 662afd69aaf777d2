"""Cut a video into the segments we pool vectors over: shots, fixed windows, and the whole video.

Shots are found on the frames we already sampled (colour-histogram change between neighbours), so
segmentation costs no extra decoding; a shot boundary is therefore as precise as the sampling rate.
Segment vectors are overlap-weighted means of unit vectors, so a unit that stands for several merged
frames weighs by the time it covers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIST_BINS = 8  # per channel -> 512-bin colour histogram
HIST_STRIDE = 8  # pixels: 224 px frames -> 28x28 samples per frame


@dataclass
class Segments:
    kind: np.ndarray  # (S,) "video" | "shot" | "window"
    start: np.ndarray  # (S,)
    end: np.ndarray  # (S,)


def colour_histograms(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, 512) normalised colour histograms, one bincount for all frames."""
    small = frames[:, ::HIST_STRIDE, ::HIST_STRIDE].astype(np.int32) // (256 // HIST_BINS)
    bins = (small[..., 0] * HIST_BINS + small[..., 1]) * HIST_BINS + small[..., 2]
    t = frames.shape[0]
    offset = (np.arange(t) * HIST_BINS**3)[:, None, None]
    counts = np.bincount((bins + offset).ravel(), minlength=t * HIST_BINS**3).reshape(t, -1)
    return counts / counts.sum(axis=1, keepdims=True)


def histogram_changes(hist: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Total-variation distance (0..1) of each histogram from the one before it; the first is compared
    with `previous` (the last histogram of the chunk before) or counts as no change."""
    before = np.concatenate([hist[:1] if previous is None else previous, hist[:-1]])
    return 0.5 * np.abs(hist - before).sum(axis=1)


def shot_boundaries(frames: np.ndarray, unit_start: np.ndarray, threshold: float) -> np.ndarray:
    """Times where a new shot starts: where the histogram distance between neighbours exceeds threshold."""
    if len(frames) < 2:
        return np.zeros(0)
    return cuts_from_changes(histogram_changes(colour_histograms(frames)), unit_start, threshold)


def cuts_from_changes(changes: np.ndarray, unit_start: np.ndarray, threshold: float) -> np.ndarray:
    """Shot starts from per-unit changes (`changes[0]`, the first unit's, never cuts)."""
    return unit_start[1:][np.asarray(changes)[1:] > threshold]


def fixed_windows(duration: float, length: float, stride: float) -> tuple[np.ndarray, np.ndarray]:
    """Windows [k*stride, k*stride+length] covering the video; the last one ends at the end."""
    if duration <= length:
        return np.array([0.0]), np.array([duration])
    n = int(np.ceil((duration - length) / stride - 1e-9)) + 1
    starts = np.arange(n) * stride
    ends = np.minimum(starts + length, duration)
    return starts.astype(np.float64), ends.astype(np.float64)


def make_segments(
    duration: float,
    changes: np.ndarray,
    unit_start: np.ndarray,
    window_seconds: float,
    window_stride: float,
    shot_threshold: float,
) -> Segments:
    """Whole video, shots (cut where `changes`, the colour change into each unit, passes the
    threshold) and fixed windows."""
    cuts = cuts_from_changes(changes, unit_start, shot_threshold)
    shot_edges = np.concatenate([[0.0], cuts, [duration]])
    w_start, w_end = fixed_windows(duration, window_seconds, window_stride)
    n_shots = len(shot_edges) - 1
    kind = np.array(["video"] + ["shot"] * n_shots + ["window"] * len(w_start))
    start = np.concatenate([[0.0], shot_edges[:-1], w_start])
    end = np.concatenate([[duration], shot_edges[1:], w_end])
    return Segments(kind=kind, start=start, end=end)


def pool_segments(
    segments: Segments, unit_start: np.ndarray, unit_end: np.ndarray, unit_vectors: np.ndarray
) -> np.ndarray:
    """(S, D) unit-length vectors: overlap-duration-weighted means of the units each segment covers.

    Units are in time order and do not overlap, so a segment covers a contiguous run of them and only its
    first and last may be partly covered: the weighted sum is a difference of prefix sums plus those two
    corrections, O((S + U) * D) in time and memory. (A dense segments x units overlap matrix was 3600 x
    7200 doubles, over 200 MB at a time, for a 2-hour video.)
    """
    start, end = np.asarray(unit_start, np.float64), np.asarray(unit_end, np.float64)
    vectors = np.asarray(unit_vectors, np.float64)
    duration = np.clip(end - start, 0.0, None)
    prefix = np.concatenate([np.zeros((1, vectors.shape[1])), np.cumsum(duration[:, None] * vectors, axis=0)])
    lo = np.searchsorted(end, segments.start, side="right")  # first unit ending after the segment starts
    hi = np.searchsorted(start, segments.end, side="left")  # units starting before it ends: [lo, hi)
    pooled = prefix[hi] - prefix[np.minimum(lo, hi)]
    for idx in (lo, hi - 1):  # the end units: replace their whole duration by the part covered
        ok = (lo < hi) & (idx >= 0) & (idx < len(start))
        i = idx[ok]
        covered = np.clip(np.minimum(segments.end[ok], end[i]) - np.maximum(segments.start[ok], start[i]), 0.0, None)
        pooled[ok] += (covered - duration[i])[:, None] * vectors[i]
    single = (hi - lo == 1)  # one unit, counted as both ends: its whole duration was removed twice
    pooled[single] += duration[lo[single], None] * vectors[lo[single]]
    empty = ~(np.linalg.norm(pooled, axis=1) > 0)
    if empty.any():  # a segment between samples (or of zero weight): take the nearest unit
        centres = (start + end) / 2
        mid = (segments.start[empty] + segments.end[empty]) / 2
        pooled[empty] = vectors[np.abs(mid[:, None] - centres[None, :]).argmin(axis=1)]
    pooled = pooled.astype(np.float32)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
