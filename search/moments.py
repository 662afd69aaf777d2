"""Moment localization: where in a video the query happens, from a relevance curve over timed units.

This is deliberately not a learned detector (Moment-DETR). The signal we have is one relevance value
per timed unit (query . unit cosine, a frame or several merged frames), plus timed sounds and text
hits (speech, on-screen text, subtitles). Turning that into windows is signal processing: put the
units on a regular time grid so a merged five-second unit counts five times as much as a one-second
frame, smooth away frame jitter, keep what stands out relative to the curve's own floor and peak
(cosines are not comparable across videos or models, so absolute thresholds would not transfer),
cut the kept runs into windows, score them, and suppress near-duplicates. A text hit is weighed on
the curve's own scale too (its strength times the curve's range), so a span that says the query
tops frames that merely look like it, and its span, with its own times, is a candidate window
beside the cut runs. The curve itself is returned so the UI can draw the timeline the windows were
cut from, which is the explanation of a moment.

Everything is columnar: resampling uses prefix sums over box events, not a loop over units or bins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from vidsearch import metrics

__all__ = [
    "Moment",
    "RelevanceCurve",
    "MomentResult",
    "localize_moments",
    "localize_moments_many",
    "temporal_iou",
    "nms",
    "resample_boxes",
]

# Regular-grid resolution when the caller does not choose one: a quarter second is finer than any
# sampling rate we index at, but bounded in bin count so a two-hour film stays a few thousand bins
# and a two-second clip still gets enough bins to have a shape.
_DEFAULT_STEP = 0.25
_MIN_BINS = 64
_MAX_BINS = 20_000

# Timed text hits (`text_hits`: speech, on-screen text, subtitles) are lifted on the curve's own
# scale, not by an absolute amount: the unit curve's relevance is a cosine (or a contrast of two)
# whose level and spread differ between videos and models, and a lift sized by its absolute level
# (the peak relevance, as before) could not even reach the peak when part of the curve is negative
# (media probe M3: a transcript that says the query exactly lost to frames that look like one of its
# words). A hit of strength w in [0, 1] adds w * TEXT_LIFT * range over its span, `range` being the
# curve's max - min before the text (frames and sounds): a full-strength hit (the span says the
# query) lifts every second of its span above the curve's peak by at least half the range, wherever
# the frames sit, while a weak one moves the curve by a fraction of its own spread: it takes the
# moment only where its frames already stand high, never off a clear visual peak elsewhere. A curve
# with (nearly) no spread is lifted as if its range were TEXT_MIN_RANGE, the floor the text boost
# always had, so text lights up a flat curve.
TEXT_LIFT = 1.5
TEXT_MIN_RANGE = 0.1


@dataclass(frozen=True)
class Moment:
    """A window of a video, seconds from the start of the file, best moments first in results.

    `score` is the duration-weighted mean relevance inside the window (comparable between windows of
    one video and what ranking uses); `peak` is its maximum, which the UI seeks the player to.
    """

    start: float
    end: float
    score: float
    peak: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class RelevanceCurve:
    """The curve the moments were cut from, on a regular grid, so a timeline can be drawn as is.

    `values` is the smoothed curve the thresholds were applied to; `raw` is the resampled curve
    before smoothing (what window scores are computed from). `thresholds` has one entry per alpha.
    """

    times: np.ndarray  # (B,) bin centres, seconds
    values: np.ndarray  # (B,) smoothed relevance
    raw: np.ndarray  # (B,) resampled relevance, text-hit boosts included
    step: float
    baseline: float
    peak: float
    thresholds: tuple[float, ...]

    @property
    def edges(self) -> np.ndarray:
        """Bin edges (B + 1,), the times windows start and end at."""
        if self.times.size == 0:
            return np.empty(0)
        return np.append(self.times - self.step / 2, self.times[-1] + self.step / 2)


@dataclass(frozen=True)
class MomentResult:
    moments: list[Moment]
    curve: RelevanceCurve
    flat: bool = False  # the curve had no structure: the whole span was returned as one moment
    windows: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))  # (K, 2) as an array
    scores: np.ndarray = field(default_factory=lambda: np.empty(0))  # (K,)


# --------------------------------------------------------------------------------------------------
# interval geometry


def temporal_iou(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Pairwise IoU of windows a (N, 2) and b (M, 2) -> (N, M), with the evaluation's own definition.

    Zero-length windows have IoU 0 with everything (even themselves): they cover no time, and a
    degenerate window must not suppress a real one in NMS.
    """
    return metrics.temporal_iou(np.asarray(a, dtype=np.float64).reshape(-1, 2), np.asarray(b, dtype=np.float64).reshape(-1, 2))


def nms(windows: ArrayLike, scores: ArrayLike, iou: float = 0.5, max_keep: int | None = None) -> np.ndarray:
    """Greedy temporal NMS; returns indices of kept windows, best score first.

    A window is dropped when it overlaps an already kept, higher-scored one at IoU >= `iou`, so
    several distinct moments of one video survive while re-detections of the same moment do not.
    Ties in score keep the earlier window (stable order), which makes results reproducible.
    """
    windows = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if windows.shape[0] != scores.shape[0]:
        raise ValueError(f"{windows.shape[0]} windows but {scores.shape[0]} scores")
    n = scores.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    overlaps = temporal_iou(windows[order], windows[order]) >= iou
    suppressed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    limit = n if max_keep is None else max(0, int(max_keep))
    # The loop is over candidate windows of one video (tens), not over vectors or frames.
    for i in range(n):
        if len(keep) >= limit:
            break
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return order[np.asarray(keep, dtype=np.int64)]


# --------------------------------------------------------------------------------------------------
# resampling


def _box_integral(starts: np.ndarray, ends: np.ndarray, weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """F(x) = integral from -inf to x of sum_u w_u * 1[s_u <= t < e_u] dt, at every x (weights (U,)
    or (U, K): K integrals over the same boxes share one sort).

    Each box is two events (+w at its start, -w at its end); for events sorted by time,
    F(x) = x * sum(w_i) - sum(w_i * t_i) over events with t_i <= x. Prefix sums make that
    O((U + B) log U) with no (U, B) overlap matrix.
    """
    t = np.concatenate([starts, ends])
    w = np.concatenate([weights, -weights])
    order = np.argsort(t, kind="stable")
    t, w = t[order], w[order]
    tw = w * (t[:, None] if w.ndim == 2 else t)
    cw = np.zeros((len(w) + 1, *w.shape[1:]))
    cwt = np.zeros_like(cw)
    np.cumsum(w, axis=0, out=cw[1:])
    np.cumsum(tw, axis=0, out=cwt[1:])
    j = np.searchsorted(t, x, side="right")
    return (x[:, None] if w.ndim == 2 else x) * cw[j] - cwt[j]


def resample_boxes(
    starts: np.ndarray, ends: np.ndarray, values: np.ndarray, edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Overlap-weighted mean of box values in each bin, and the covered fraction of each bin.

    Where units overlap (sliding windows), a bin takes the duration-weighted mean of the units that
    cover it; a wide merged unit therefore counts by its duration, not once.
    """
    widths = np.diff(edges)
    both = _box_integral(starts, ends, np.stack([values, np.ones_like(values)], axis=1), edges)
    mass, cover = np.diff(both[:, 0]), np.diff(both[:, 1])
    covered = cover > 1e-9 * np.maximum(widths, 1e-12)
    mean = np.zeros_like(widths)
    np.divide(mass, cover, out=mean, where=covered)
    return mean, np.where(covered, cover / np.maximum(widths, 1e-12), 0.0)


def _fix_durations(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give zero-length units (point samples) a width, so they are not lost by a duration-weighted grid.

    The width is the typical positive unit duration, else the typical spacing between samples.
    """
    bad = ~(ends > starts)
    if not bad.any():
        return starts, ends
    pos = (ends - starts)[~bad]
    if pos.size:
        width = float(np.median(pos))
    else:
        gaps = np.diff(np.unique(starts))
        width = float(np.median(gaps)) if gaps.size else 1.0
    ends = np.where(bad, starts + width, ends)
    return starts, ends


def _quantile(values: np.ndarray, q: float) -> float:
    """np.quantile(values, q) (linear interpolation), by partition: numpy's generic quantile costs
    ~0.1 ms of checks on the short curves of one search's ten results."""
    n = values.size
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    part = np.partition(values, (lo, hi))
    a, b = float(part[lo]), float(part[hi])
    return a + (b - a) * (pos - lo)


def _gaussian_smooth(values: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Gaussian smoothing with edge padding, so the ends of a video are not pulled toward zero."""
    if sigma_bins < 0.3 or values.size < 2:
        return values.copy()
    radius = max(1, int(math.ceil(3.0 * sigma_bins)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma_bins) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, radius, mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _moving_average(values: np.ndarray, width_bins: int) -> np.ndarray:
    if width_bins <= 1 or values.size < 2:
        return values.copy()
    left = width_bins // 2
    padded = np.pad(values, (left, width_bins - 1 - left), mode="edge")
    cs = np.concatenate([[0.0], np.cumsum(padded)])
    return (cs[width_bins:] - cs[:-width_bins]) / width_bins


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) bin indices of the True runs of a boolean mask."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def _window_stats(raw: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max of raw[lo:hi] for many (possibly overlapping) bin ranges, without a Python loop."""
    cs = np.concatenate([[0.0], np.cumsum(raw)])
    means = (cs[hi] - cs[lo]) / np.maximum(hi - lo, 1)
    # reduceat over interleaved (lo, hi) boundaries: the even slots are exactly raw[lo:hi].
    padded = np.append(raw, -np.inf)
    bounds = np.stack([lo, hi], axis=1).reshape(-1)
    peaks = np.maximum.reduceat(padded, bounds)[0::2] if bounds.size else np.empty(0)
    return means, peaks


def _text_rows(text_hits: ArrayLike | None) -> np.ndarray:
    """Text hits as (H, 3) rows (start, end, strength in [0, 1]), those that cover no time or carry no
    strength dropped."""
    if text_hits is None:
        return np.empty((0, 3))
    th = np.asarray(text_hits, dtype=np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(th)):
        raise ValueError("text hits contain NaN or infinite values")
    th = th[(th[:, 1] > th[:, 0]) & (th[:, 2] > 0)]
    th[:, 2] = np.minimum(th[:, 2], 1.0)
    return th


def _text_lift(strength: np.ndarray, spread: np.ndarray | float) -> np.ndarray:
    """What each text hit adds over its span: its strength times TEXT_LIFT times the curve's range
    (per hit: the range of its video's curve), the range at least TEXT_MIN_RANGE."""
    return strength * TEXT_LIFT * np.maximum(spread, TEXT_MIN_RANGE)


def _hit_bins(start: np.ndarray, end: np.ndarray, t0, bin_w, n_bins) -> tuple[np.ndarray, np.ndarray]:
    """The bins [lo, hi) whose centres lie in [start, end), at least one and within the grid (t0, bin_w,
    n_bins scalars or per hit). Arithmetic on the grid's definition, so one video's bins come out the
    same alone and batched."""
    lo = np.clip(np.ceil((start - t0) / bin_w - 0.5), 0, np.asarray(n_bins) - 1).astype(np.int64)
    hi = np.clip(np.ceil((end - t0) / bin_w - 0.5), lo + 1, n_bins).astype(np.int64)
    return lo, hi


# --------------------------------------------------------------------------------------------------
# the localizer


def localize_moments(
    starts: ArrayLike,
    ends: ArrayLike,
    relevance: ArrayLike,
    hits: ArrayLike | None = None,
    text_hits: ArrayLike | None = None,
    *,
    hit_weight: float = 1.0,
    step: float | None = None,
    smooth: float | None = None,
    smoothing: str = "gaussian",
    alpha: float | Sequence[float] = 0.5,
    baseline_quantile: float = 0.25,
    flat_tol: float = 1e-3,
    merge_gap: float = 0.0,
    min_duration: float = 0.0,
    nms_iou: float = 0.5,
    max_moments: int = 5,
) -> MomentResult:
    """Cut a per-unit relevance curve into scored moments.

    starts, ends, relevance: (T,) per timed unit (seconds from file start; a unit may be one frame or
    several merged ones). hits: optional (H, 3) rows of (start, end, score) already on the curve's
    scale, added as `hit_weight * score` over their span (the soundtrack's matching tokens,
    ranking.audio_hits), so "where a dog barks" lights up the right seconds even when the frames do
    not show it.
    text_hits: optional (H, 3) rows of (start, end, strength), timed text that matched the query
    (speech, on-screen text, subtitles), strength in [0, 1] (1: the text says the query; values are
    clipped to it). Each lifts its span by `strength * TEXT_LIFT * range` (the range of the curve
    from units and `hits`, at least TEXT_MIN_RANGE), so an exact match tops the curve wherever the
    frames peak; and its span, with its own times, is a candidate window beside the cut runs when its
    mean on the lifted curve clears the lowest threshold, scored and thinned like any other.
    Without text hits the moments are exactly those of units and `hits` alone.

    step: grid resolution in seconds (None: 0.25 s, bounded to 64..20000 bins).
    smooth: smoothing scale in seconds (Gaussian sigma, or moving-average width); None picks half the
    median unit duration, the curve's own resolution, so smoothing removes jitter, not structure.
    alpha: keep bins above `baseline + alpha * (peak - baseline)`, baseline being the
    `baseline_quantile` of the smoothed curve. Relative thresholds make the cut invariant to the shift
    and scale of the scores (all-negative cosines work the same). Several alphas give multi-scale
    candidates, which NMS then thins.
    flat_tol: a curve whose peak rises less than this above its baseline has no moment worth cutting;
    the whole span is returned as one moment.
    merge_gap: runs separated by at most this many seconds are one moment (a brief cutaway).
    min_duration: shorter windows are dropped (unless nothing else remains).
    nms_iou, max_moments: temporal NMS threshold and how many moments to keep.
    """
    s = np.asarray(starts, dtype=np.float64).reshape(-1)
    e = np.asarray(ends, dtype=np.float64).reshape(-1)
    r = np.asarray(relevance, dtype=np.float64).reshape(-1)
    if not (s.shape == e.shape == r.shape):
        raise ValueError(f"starts {s.shape}, ends {e.shape} and relevance {r.shape} must match")
    if not np.all(np.isfinite(r)):
        raise ValueError("relevance contains NaN or infinite values")
    h = np.empty((0, 3)) if hits is None else np.asarray(hits, dtype=np.float64).reshape(-1, 3)
    th = _text_rows(text_hits)
    alphas = tuple(float(a) for a in np.atleast_1d(np.asarray(alpha, dtype=np.float64)))
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")

    if s.size:
        s, e = _fix_durations(s, e)
    if h.size:
        h = h[h[:, 1] > h[:, 0]]
    if s.size == 0 and h.shape[0] == 0 and th.shape[0] == 0:
        empty = np.empty(0)
        curve = RelevanceCurve(empty, empty, empty, step or _DEFAULT_STEP, math.nan, math.nan, ())
        return MomentResult([], curve)

    t0 = float(min(s.min() if s.size else np.inf, h[:, 0].min() if h.size else np.inf, th[:, 0].min() if th.size else np.inf))
    t1 = float(max(e.max() if e.size else -np.inf, h[:, 1].max() if h.size else -np.inf, th[:, 1].max() if th.size else -np.inf))
    span = t1 - t0
    if step is None:
        n_bins = int(np.clip(math.ceil(span / _DEFAULT_STEP), _MIN_BINS, _MAX_BINS))
    else:
        if step <= 0:
            raise ValueError("step must be positive")
        n_bins = max(1, int(round(span / step)))
    bin_w = span / n_bins
    edges = t0 + bin_w * np.arange(n_bins + 1)
    edges[-1] = t1
    centres = (edges[:-1] + edges[1:]) / 2

    # Visual/audio curve on the grid; bins no unit covers (gaps between sparse samples) take the
    # value interpolated from their covered neighbours rather than a fake zero.
    if s.size:
        raw, cover = resample_boxes(s, e, r, edges)
        covered = cover > 0
        if not covered.all():
            raw = np.interp(centres, centres[covered], raw[covered])
    else:
        raw = np.zeros(n_bins)
    if h.size:
        boost = np.diff(_box_integral(h[:, 0], h[:, 1], h[:, 2], edges)) / np.maximum(np.diff(edges), 1e-12)
        raw = raw + hit_weight * boost
    if th.size:
        lift = _text_lift(th[:, 2], float(raw.max() - raw.min()))
        raw = raw + np.diff(_box_integral(th[:, 0], th[:, 1], lift, edges)) / np.maximum(np.diff(edges), 1e-12)

    if smooth is None:
        unit_d = (e - s) if s.size else (h[:, 1] - h[:, 0]) if h.size else (th[:, 1] - th[:, 0])
        smooth = 0.5 * _quantile(unit_d, 0.5)
        smooth = min(smooth, span / 8)
    if smoothing == "gaussian":
        values = _gaussian_smooth(raw, smooth / bin_w)
    elif smoothing in ("mean", "moving_average", "box"):
        values = _moving_average(raw, int(round(smooth / bin_w)))
    elif smoothing == "none":
        values = raw.copy()
    else:
        raise ValueError(f"unknown smoothing {smoothing!r} (gaussian, mean, none)")

    baseline = _quantile(values, baseline_quantile)
    peak = float(values.max())
    rise = peak - baseline

    if rise <= flat_tol:
        mean, top = float(raw.mean()), float(raw.max())
        curve = RelevanceCurve(centres, values, raw, bin_w, baseline, peak, (baseline,) * len(alphas))
        windows = np.array([[t0, t1]])
        return MomentResult([Moment(t0, t1, mean, top)], curve, True, windows, np.array([mean]))

    thresholds = tuple(baseline + a * rise for a in alphas)
    lo_all, hi_all = [], []
    gap_bins = merge_gap / bin_w
    for thr in thresholds:
        lo, hi = _runs(values >= thr)
        if lo.size > 1 and merge_gap > 0:
            joined = (lo[1:] - hi[:-1]) <= gap_bins + 1e-9
            lo = lo[np.concatenate([[True], ~joined])]
            hi = hi[np.concatenate([~joined, [True]])]
        lo_all.append(lo)
        hi_all.append(hi)
    lo = np.concatenate(lo_all)
    hi = np.concatenate(hi_all)
    if min_duration > 0 and lo.size:
        long_enough = (edges[hi] - edges[lo]) >= min_duration
        if long_enough.any():
            lo, hi = lo[long_enough], hi[long_enough]
    # Identical runs produced by two alphas are one candidate.
    if len(thresholds) > 1 and lo.size:
        codes = np.unique(lo.astype(np.int64) * (n_bins + 1) + hi)  # (lo, hi) pairs, sorted as unique(axis=0) sorts them
        lo, hi = codes // (n_bins + 1), codes % (n_bins + 1)

    means, peaks = _window_stats(raw, lo, hi)
    windows = np.stack([edges[lo], edges[hi]], axis=1)
    if th.size:  # each text hit's own span, where it stands out as much as a cut run must; first, so
        # that of a run and a span over the same bins (equal scores) the span's own times are kept
        a_lo, a_hi = _hit_bins(th[:, 0], th[:, 1], t0, bin_w, n_bins)
        a_means, a_peaks = _window_stats(raw, a_lo, a_hi)
        ok = a_means >= min(thresholds)
        if min_duration > 0:
            ok &= (th[:, 1] - th[:, 0]) >= min_duration
        windows = np.concatenate([th[ok, :2], windows])
        means, peaks = np.concatenate([a_means[ok], means]), np.concatenate([a_peaks[ok], peaks])
    keep = nms(windows, means, iou=nms_iou, max_keep=max_moments)
    windows, means, peaks = windows[keep], means[keep], peaks[keep]
    moments = [Moment(float(a), float(b), float(m), float(p)) for (a, b), m, p in zip(windows, means, peaks)]
    curve = RelevanceCurve(centres, values, raw, bin_w, baseline, peak, thresholds)
    return MomentResult(moments, curve, False, windows, means)


# --------------------------------------------------------------------------------------------------
# many videos at once


def _segment_quantile(values: np.ndarray, seg: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, q: float) -> np.ndarray:
    """`_quantile(values[segment], q)` of every segment at once, for contiguous segments: one sort over
    all of them, each segment lifted above the one before it (the values themselves are read back)."""
    lo, hi = float(values.min()), float(values.max())
    ordered = values[np.argsort(values + seg * (hi - lo + 1.0))]
    pos = q * (lengths - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, lengths - 1)
    a, b = ordered[offsets + lo], ordered[offsets + hi]
    return a + (b - a) * (pos - lo)


def localize_moments_many(items: Sequence[tuple], *, max_moments: int = 5, **options) -> list[MomentResult]:
    """`localize_moments(starts, ends, relevance, hits, text_hits, max_moments=...)` for each of several videos
    (a page of results), with each step run once over all of their bins: the same moments and curves
    (to float rounding), without the ~50 small numpy calls per video that made moments the largest
    cost of a search (~0.5 ms a result). `items`: (starts, ends, relevance, hits or None[, text hits
    or None]) per video.

    The other options of `localize_moments` fall back to one call per video, as does a video with no
    units (only text hits): the batched path is the one searches take, with the defaults.
    """
    out: list[MomentResult | None] = [None] * len(items)
    batch = []
    for i, (starts, ends, relevance, *rest) in enumerate(items):
        s = np.asarray(starts, dtype=np.float64).reshape(-1)
        e = np.asarray(ends, dtype=np.float64).reshape(-1)
        r = np.asarray(relevance, dtype=np.float64).reshape(-1)
        hits = rest[0] if rest else None
        text = rest[1] if len(rest) > 1 else None
        if options or s.size == 0 or not (s.shape == e.shape == r.shape):
            out[i] = localize_moments(s, e, r, hits, text, max_moments=max_moments, **options)  # raises on bad shapes
            continue
        h = np.empty((0, 3)) if hits is None else np.asarray(hits, dtype=np.float64).reshape(-1, 3)
        batch.append((i, s, e, r, h, _text_rows(text)))
    if batch:
        for i, result in zip([b[0] for b in batch], _localize_batch(batch, max_moments)):
            out[i] = result
    return out  # type: ignore[return-value]


# A video smoothed over more bins than this either way is localised on its own (32: a median unit of
# ~5 s at the default 0.25 s bins, e.g. token-merged units, stays in the batch): the batch's smoothing
# holds (bins x (2 x radius + 1)) numbers, and one long unit (a still picture over an hour of talk,
# merged into one unit) asks for a radius of thousands of bins.
MAX_BATCH_RADIUS = 32


def _localize_batch(batch: list[tuple], max_moments: int) -> list[MomentResult]:
    """`localize_moments` with its defaults over videos that all have units (see localize_moments_many)."""
    V = len(batch)
    vids = np.arange(V)
    n_u = np.array([b[1].size for b in batch])
    u_off = np.concatenate([[0], np.cumsum(n_u)[:-1]])
    uv = np.repeat(vids, n_u)
    s = np.concatenate([b[1] for b in batch])
    e = np.concatenate([b[2] for b in batch])
    r = np.concatenate([b[3] for b in batch])
    if not np.all(np.isfinite(r)):
        raise ValueError("relevance contains NaN or infinite values")
    bad = ~(e > s)
    if bad.any():  # point samples: each video's own typical width (_fix_durations)
        for k in np.unique(uv[bad]):
            sl = slice(u_off[k], u_off[k] + n_u[k])
            s[sl], e[sl] = _fix_durations(s[sl], e[sl])
    n_h = np.array([b[4].shape[0] for b in batch])
    h = np.concatenate([b[4] for b in batch])
    hv = np.repeat(vids, n_h)
    valid = h[:, 1] > h[:, 0]
    h, hv = h[valid], hv[valid]
    n_t = np.array([b[5].shape[0] for b in batch])
    th = np.concatenate([b[5] for b in batch])  # already valid (_text_rows)
    tv = np.repeat(vids, n_t)

    t0 = np.minimum.reduceat(s, u_off)
    t1 = np.maximum.reduceat(e, u_off)
    if h.size:
        np.minimum.at(t0, hv, h[:, 0])
        np.maximum.at(t1, hv, h[:, 1])
    if th.size:
        np.minimum.at(t0, tv, th[:, 0])
        np.maximum.at(t1, tv, th[:, 1])
    span = t1 - t0
    n_bins = np.clip(np.ceil(span / _DEFAULT_STEP), _MIN_BINS, _MAX_BINS).astype(np.int64)
    bin_w = span / n_bins
    # each video's smoothing (Gaussian, sigma = half its median unit duration, at most span / 8)
    smooth = np.minimum(0.5 * _segment_quantile(e - s, uv, u_off, n_u, 0.5), span / 8)
    sigma = smooth / bin_w
    radius = np.where((sigma < 0.3) | (n_bins < 2), 0, np.maximum(1, np.ceil(3.0 * sigma))).astype(np.int64)
    wide = radius > MAX_BATCH_RADIUS
    if wide.any():  # those alone, the rest together
        out: list = [None] * V
        for k in np.flatnonzero(wide):
            _, s_k, e_k, r_k, h_k, t_k = batch[k]
            out[k] = localize_moments(s_k, e_k, r_k, h_k if h_k.size else None, t_k if t_k.size else None, max_moments=max_moments)
        narrow = np.flatnonzero(~wide)
        for k, result in zip(narrow, _localize_batch([batch[k] for k in narrow], max_moments) if narrow.size else []):
            out[k] = result
        return out
    # every video's grid in one array: bins b_off[k]..+n_bins[k], edges e_off[k]..+n_bins[k]+1 (= bin + k)
    b_off = np.concatenate([[0], np.cumsum(n_bins)[:-1]])
    e_off = b_off + vids
    ev = np.repeat(vids, n_bins + 1)
    edges = t0[ev] + bin_w[ev] * (np.arange(ev.size) - e_off[ev])
    edges[e_off + n_bins] = t1
    bv = np.repeat(vids, n_bins)
    lo_edge = np.arange(bv.size) + bv  # each bin's left edge
    left, right = edges[lo_edge], edges[lo_edge + 1]
    centres = (left + right) / 2
    widths = right - left

    # resampling: the videos laid end to end on one time axis (a second apart), one box integral
    shift = np.concatenate([[0.0], np.cumsum(span + 1.0)[:-1]]) - t0
    x = edges + shift[ev]
    both = _box_integral(s + shift[uv], e + shift[uv], np.stack([r, np.ones_like(r)], axis=1), x)
    mass, cover = both[lo_edge + 1, 0] - both[lo_edge, 0], both[lo_edge + 1, 1] - both[lo_edge, 1]
    covered = cover > 1e-9 * np.maximum(widths, 1e-12)
    raw = np.zeros_like(widths)
    np.divide(mass, cover, out=raw, where=covered)
    if not covered.all():  # gaps between sparse samples: interpolated from covered neighbours
        for k in np.unique(bv[~covered]):
            sl = slice(b_off[k], b_off[k] + n_bins[k])
            raw[sl] = np.interp(centres[sl], centres[sl][covered[sl]], raw[sl][covered[sl]])
    if h.size:
        hx = _box_integral(h[:, 0] + shift[hv], h[:, 1] + shift[hv], h[:, 2], x)
        raw = raw + (hx[lo_edge + 1] - hx[lo_edge]) / np.maximum(widths, 1e-12)
    if th.size:  # text hits, each on its own video's scale (localize_moments)
        spread = np.maximum.reduceat(raw, b_off) - np.minimum.reduceat(raw, b_off)
        tx = _box_integral(th[:, 0] + shift[tv], th[:, 1] + shift[tv], _text_lift(th[:, 2], spread[tv]), x)
        raw = raw + (tx[lo_edge + 1] - tx[lo_edge]) / np.maximum(widths, 1e-12)

    # Gaussian smoothing, each video with its own sigma and edge padding
    R = int(radius.max())
    taps = np.arange(-R, R + 1, dtype=np.float64)
    kernels = np.exp(-0.5 * (taps[None, :] / np.where(radius > 0, sigma, 1.0)[:, None]) ** 2)
    kernels[np.abs(taps)[None, :] > radius[:, None]] = 0.0
    kernels /= kernels.sum(axis=1, keepdims=True)  # radius 0: the centre tap alone, the curve as is
    if R:
        p_len = n_bins + 2 * R
        pv = np.repeat(vids, p_len)
        local = np.arange(pv.size) - np.repeat(np.concatenate([[0], np.cumsum(p_len)[:-1]]), p_len)
        padded = raw[b_off[pv] + np.clip(local - R, 0, n_bins[pv] - 1)]
        rows = np.lib.stride_tricks.sliding_window_view(padded, 2 * R + 1)[np.arange(bv.size) + 2 * R * bv]
        values = np.einsum("ij,ij->i", rows, kernels[bv])
    else:
        values = raw.copy()

    baseline = _segment_quantile(values, bv, b_off, n_bins, 0.25)
    peak = np.maximum.reduceat(values, b_off)
    rise = peak - baseline
    flat = rise <= 1e-3
    thr = baseline + 0.5 * rise
    mask = (values >= thr[bv]) & ~flat[bv]
    first, last = np.zeros(bv.size, bool), np.zeros(bv.size, bool)
    first[b_off], last[b_off + n_bins - 1] = True, True
    starts_run = mask & (first | ~np.roll(mask, 1))
    ends_run = mask & (last | ~np.roll(mask, -1))
    lo = np.flatnonzero(starts_run)
    hi = np.flatnonzero(ends_run) + 1
    rv = bv[lo]
    means, peaks = _window_stats(raw, lo, hi)
    windows = np.stack([edges[lo + rv], edges[hi + rv]], axis=1)
    if th.size:  # each text hit's own span where it clears its video's threshold (none in a flat video), first
        a_lo, a_hi = _hit_bins(th[:, 0], th[:, 1], t0[tv], bin_w[tv], n_bins[tv])
        a_means, a_peaks = _window_stats(raw, a_lo + b_off[tv], a_hi + b_off[tv])
        ok = (a_means >= thr[tv]) & ~flat[tv]
        windows = np.concatenate([th[ok, :2], windows])
        means, peaks, rv = np.concatenate([a_means[ok], means]), np.concatenate([a_peaks[ok], peaks]), np.concatenate([tv[ok], rv])
    # greedy NMS of every video's windows (nms()), in one pass over the runs of all videos, best first
    over = (metrics.temporal_iou(windows, windows) >= 0.5) & (rv[:, None] == rv[None, :])
    suppressed = np.zeros(rv.size, dtype=bool)
    kept: list[list[int]] = [[] for _ in range(V)]
    for j in np.lexsort((np.arange(rv.size), -means, rv)).tolist():
        k = int(rv[j])
        if suppressed[j] or len(kept[k]) >= max_moments:
            continue
        kept[k].append(j)
        suppressed |= over[j]

    results = []
    for k in range(V):
        sl = slice(b_off[k], b_off[k] + n_bins[k])
        c, v, rw = centres[sl], values[sl], raw[sl]
        base, top_k = float(baseline[k]), float(peak[k])
        if flat[k]:
            mean, top = float(rw.mean()), float(rw.max())
            a, b = float(t0[k]), float(t1[k])
            curve = RelevanceCurve(c, v, rw, float(bin_w[k]), base, top_k, (base,))
            results.append(MomentResult([Moment(a, b, mean, top)], curve, True, np.array([[a, b]]), np.array([mean])))
            continue
        j = np.asarray(kept[k], dtype=np.int64)
        w, m, p = windows[j].reshape(-1, 2), means[j], peaks[j]
        moments = [Moment(a, b, mm, pp) for (a, b), mm, pp in zip(w.tolist(), m.tolist(), p.tolist())]
        curve = RelevanceCurve(c, v, rw, float(bin_w[k]), base, top_k, (float(thr[k]),))
        results.append(MomentResult(moments, curve, False, w, m))
    return results
