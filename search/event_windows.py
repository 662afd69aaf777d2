"""The best event window of a video: a caption's attributes bound to one moment, not the whole video.

A video-level score (mean pooling, X-Pool, the fused head) adds up evidence from every event of the
video: one with "a blue circle moves left" and another with "a red square and a high tone" scores
well against "a blue square with a high tone", which no moment of it shows. Users ask for a moment
where everything they name happens at once, so the fine stage adds each candidate's best window: the
unit vectors inside a WINDOW_SECONDS span pooled and scored against the query, plus (when the
soundtrack's tokens live in the query's space, i.e. the model's own audio tower) the audio tokens of
the same span, weighted by AUDIO_WEIGHT; the maximum over windows starting at each unit. Every
window spans the full width (`_full_windows`): one that would run past the video's last unit ends
there instead, so an event scores the same wherever it sits in the video.

Measured with `vidsearch eval` (its `+window` method; README "Binding: the best event window"): P@1
by relevance rose with the window for the shipped model on both held-out seeds and the plain corpus
(report 14.07 -> 16.70, selection 16.72 -> 19.16, plain 14.57 -> 20.91), and for the other models
tried except one (the previous model on the selection set, 16.38 -> 13.59). The width (3 s: the
synthetic events last 2-4 s) and the weights were chosen on the held-out report set with one
candidate model and checked on the other sets and models.

Columnar: all candidates' units (and tokens) go on one time axis, each video shifted past the last,
so one searchsorted finds every window; no window's sum is built: its cosine comes from cumulative
sums of the units' projections and of their dot products with the next few units (a window spans a
few), so the cost is a few passes over the candidates' vectors, for hour-long videos too.
"""

from __future__ import annotations

import numpy as np

from vidsearch.encoders.sound_cues import WINDOW as SOUND_WINDOW

from . import shape_channel, sound_channel
from .features import VideoFeatures
from .motion_channel import MIN_UNITS, MOTION_WEIGHT, agreement, unwrap_jumps, window_velocity

__all__ = ["AUDIO_WEIGHT", "EVENT_WEIGHT", "WINDOW_SECONDS", "best_window", "best_windows", "channel_hits", "window_weight"]

WINDOW_SECONDS = 3.0
AUDIO_WEIGHT = 0.5  # the window's soundtrack against its frames
EVENT_WEIGHT = 1.0  # the best window against the video-level score, in the final visual score


def window_weight(head) -> float:
    """The best window's weight against the video-level score: the trained head's own where it has
    one (a head retuned soft pools more like the mean and leans on the window more:
    encoders/fusion.py), else EVENT_WEIGHT."""
    own = getattr(head, "window_weight", None) if head is not None else None
    return EVENT_WEIGHT if own is None else float(own)


def _window_cosines(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Cosine of each query (Q, D) with the sum of rows lo..hi-1 of x, per window: (W, Q); 0 for an
    empty window. No window sum is built: the numerator is a difference of cumulative sums of the
    rows' projections, and the squared norm of a sum is the sum of its rows' pairwise dot products,
    taken from one cumulative sum per offset d < the widest window (a few: windows span seconds)."""
    n = len(x)
    proj = np.zeros((n + 1, len(queries)), np.float64)
    np.cumsum(x @ queries.T, axis=0, out=proj[1:])
    num = proj[hi] - proj[lo]
    sq = np.zeros(len(lo), np.float64)
    for d in range(int((hi - lo).max(initial=0))):
        dots = np.zeros(n - d + 1, np.float64)
        np.cumsum(np.einsum("ij,ij->i", x[: n - d], x[d:]), out=dots[1:])  # x_i . x_(i+d)
        first = np.minimum(lo, n - d)
        last = np.maximum(np.minimum(hi - d, n - d), first)  # pairs (i, i + d) with lo <= i < hi - d
        sq += (1.0 if d == 0 else 2.0) * (dots[last] - dots[first])
    norm = np.sqrt(np.maximum(sq, 0.0))[:, None]
    return np.where(norm > 1e-9, num / np.maximum(norm, 1e-9), 0.0)


def _on_one_axis(times: list[np.ndarray], offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each video's times shifted to its offset on the shared axis: (keys in video-then-time order,
    the order that sorts the concatenated rows so (None: already sorted), and each sorted row's video)."""
    video = np.repeat(np.arange(len(times)), [len(t) for t in times])
    keys = (np.concatenate(times).astype(np.float64) + offsets[video]) if len(video) else np.zeros(0)
    if len(keys) < 2 or bool((np.diff(keys) >= 0).all()):  # stored in time order: nothing to move
        return keys, None, video
    order = np.argsort(keys, kind="stable")  # offsets keep videos apart: sorts within each video
    return keys[order], order, video[order]


def _offsets(spans: np.ndarray) -> np.ndarray:
    """Where each video starts on one shared time axis: past the previous one's last time by more
    than a window, so one searchsorted over all videos finds windows that never cross into the next."""
    return np.concatenate([[0.0], np.cumsum(spans + 2 * WINDOW_SECONDS + 1.0)])[:-1]


def _full_windows(keys: np.ndarray, video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows lo..hi-1 of each window, one per unit: the units within WINDOW_SECONDS of it. A window
    that would run past its video's last unit is moved back to end there (so every window of a video
    longer than WINDOW_SECONDS spans as much time): a short window at the end held only the last
    event's units, scored purer than any full window, and favoured events placed last."""
    lo = np.arange(len(keys))
    hi = np.maximum(np.searchsorted(keys, keys + WINDOW_SECONDS - 1e-6, side="left"), lo + 1)
    ends = np.r_[np.flatnonzero(video[1:] != video[:-1]) + 1, len(keys)]  # one past each video's last row
    video_end = ends[np.searchsorted(ends, lo, side="right")]
    # the video's last full window starts at its first unit within WINDOW_SECONDS of its last one
    # (never in the previous video: videos lie more than a window apart on the axis)
    last_start = np.searchsorted(keys, keys[video_end - 1] - WINDOW_SECONDS + 1e-6, side="left")
    lo = np.where(hi >= video_end, np.minimum(lo, last_start), lo)
    return lo, hi


def best_windows(q: np.ndarray, feats: list[VideoFeatures], keep: list[np.ndarray] | None = None, use_audio: bool = True,
                 motion: str | None = None, shape: str | None = None, sound: str | None = None) -> np.ndarray:  # fmt: skip
    """Each candidate's best window score: (N,) for one query (D,), (N, Q) for queries (Q, D).
    `keep`: per candidate, the units inside the search's time window (windows are made of those
    only); a candidate with none scores 0. `motion`: the one motion the query names (motion_channel.py),
    whose agreement with each window's moving thing is added; `shape`: likewise the one shape it names
    (shape_channel.py) and each window's outline; `sound`: the one sound it names (sound_channel.py) and
    each window's soundtrack. All candidates are scored at once, on one time axis."""
    queries = np.atleast_2d(q).astype(np.float32)
    out = np.zeros((len(feats), len(queries)), np.float32)
    found = _windows(queries, feats, keep, use_audio, motion, shape, sound)
    if found is not None:
        score, channels, _, _, video, _, _ = found
        score += channels[:, None]
        # per video, the best of its windows (one window starts at each unit; units are grouped by video)
        bounds = np.flatnonzero(np.r_[True, video[1:] != video[:-1]])
        out[video[bounds]] = np.maximum.reduceat(score, bounds, axis=0)
    return out if q.ndim == 2 else out[:, 0]


def channel_hits(feats: list[VideoFeatures], keep: list[np.ndarray] | None = None, motion: str | None = None, shape: str | None = None,
                 sound: str | None = None) -> list[np.ndarray]:  # fmt: skip
    """Where each video's pixels and samples agree with what the query names (its motion, shape,
    sound), as timed (start, end, score) rows for the moment curve (moments.localize_moments `hits`):
    per unit, the mean of the channel terms (as `best_windows` adds them) of the windows that hold
    it. The ranking picks a video for the window where everything the query names happens at once;
    without these rows its moment was cut from the frames' cosines alone, which on footage the model
    reads poorly often peak on another event of the same colour (README "Moments where the channels
    agree"). A mean, not a sum, so a reading that is the same all through a video (a silent video
    asked for a tone) lifts or lowers every unit alike and moves no moment, at its ends too (fewer
    windows hold a video's first and last units). Empty rows where the query names none of them. All
    videos on one time axis, as `best_windows`."""
    out = [np.empty((0, 3)) for _ in feats]
    if motion is None and shape is None and sound is None:
        return out
    found = _windows(None, feats, keep, False, motion, shape, sound)
    if found is None:
        return out
    _, channels, lo, hi, video, starts, ends = found
    n = len(video)
    _, first = np.unique(lo.astype(np.int64) * (n + 1) + hi, return_index=True)  # a window moved back to the end repeats
    total, count = np.zeros(n + 1), np.zeros(n + 1)
    np.add.at(total, lo[first], channels[first])
    np.add.at(total, hi[first], -channels[first])
    np.add.at(count, lo[first], 1.0)
    np.add.at(count, hi[first], -1.0)
    mean = np.cumsum(total)[:n] / np.maximum(np.cumsum(count)[:n], 1.0)  # units lo..hi-1 are in the window
    rows = np.stack([starts, ends, mean], axis=1)
    bounds = np.r_[np.flatnonzero(np.r_[True, video[1:] != video[:-1]]), n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        kept = rows[a:b]
        out[video[a]] = kept[kept[:, 1] > kept[:, 0]]
    return out


def _windows(queries: np.ndarray | None, feats: list[VideoFeatures], keep: list[np.ndarray] | None, use_audio: bool,
             motion: str | None, shape: str | None, sound: str | None):  # fmt: skip
    """Every window of every candidate on one time axis, one starting at each kept unit: (cosine
    score (W, Q) or None without `queries`, channel terms (W,), each window's units lo..hi-1 (W,),
    and per unit on the axis (W of them, grouped by video): its video, start and end in the video's
    own seconds); None where no candidate has a unit kept."""
    n = len(feats)
    kept = [np.ones(len(f.start), bool) if keep is None else np.asarray(keep[i], bool) for i, f in enumerate(feats)]
    centres = [((f.start + f.end) / 2)[k] for f, k in zip(feats, kept)]
    if n == 0 or not any(len(c) for c in centres):
        return None
    dim = 0 if queries is None else queries.shape[1]  # (no queries: no audio either)
    with_audio = [queries is not None and use_audio and len(c) > 0 and f.audio_vectors.ndim == 2 and len(f.audio_vectors) > 0
                  and f.audio_vectors.shape[1] == dim for f, c in zip(feats, centres)]  # fmt: skip
    a_centres = [(f.audio_start + f.audio_end) / 2 if ok else np.zeros(0, np.float32) for f, ok in zip(feats, with_audio)]
    s_rows = [_sound_of(f, k) for f, k in zip(feats, kept)] if sound is not None else []  # read only when the query names a sound
    s_centres = [r[:, 0] + SOUND_WINDOW / 2 for r in s_rows]
    spans = np.array([max(float(c.max(initial=0.0)), float(a.max(initial=0.0))) for c, a in zip(centres, a_centres)])
    if s_centres:  # the sound rows may run past the units: videos lie apart on the axis by all they hold
        spans = np.maximum(spans, [float(r.max(initial=0.0)) for r in s_centres])
    offsets = _offsets(spans)
    keys, order, video = _on_one_axis(centres, offsets)
    some = [i for i, c in enumerate(centres) if len(c)]  # a video with nothing kept adds no rows (its vectors may be (0, 0))
    starts = np.concatenate([feats[i].start if kept[i].all() else feats[i].start[kept[i]] for i in some]).astype(np.float64)
    ends = np.concatenate([feats[i].end if kept[i].all() else feats[i].end[kept[i]] for i in some]).astype(np.float64)
    if order is not None:
        starts, ends = starts[order], ends[order]
    lo, hi = _full_windows(keys, video)
    start_keys = starts[lo] + offsets[video]
    score = None
    if queries is not None:
        vectors = np.concatenate([feats[i].vectors if kept[i].all() else feats[i].vectors[kept[i]] for i in some])
        if order is not None:
            vectors = vectors[order]
        score = _window_cosines(vectors.astype(np.float32, copy=False), lo, hi, queries)  # (windows, Q)
    if any(with_audio):
        a_keys, a_order, _ = _on_one_axis(a_centres, offsets)
        audio = np.concatenate([f.audio_vectors if ok else np.zeros((0, dim), np.float32) for f, ok in zip(feats, with_audio)])
        if a_order is not None:
            audio = audio[a_order]
        alo = np.searchsorted(a_keys, start_keys, side="left")
        ahi = np.searchsorted(a_keys, start_keys + WINDOW_SECONDS, side="left")
        score += AUDIO_WEIGHT * _window_cosines(audio.astype(np.float32, copy=False), alo, ahi, queries)  # no tokens: adds 0
    channels = np.zeros(len(lo), np.float64)
    if motion is not None:
        cues = np.concatenate([_unit_rows(feats[i].cues, feats[i], kept[i]) for i in some])
        known = np.repeat([len(feats[i].cues) == len(feats[i].start) for i in some], [int(kept[i].sum()) for i in some])
        if order is not None:
            cues, known = cues[order], known[order]
        velocity, ok, cued = window_velocity(keys - offsets[video], unwrap_jumps(cues, video), lo, hi)  # each video's own times
        still = known[lo] & (hi - lo >= MIN_UNITS) & (cued == 0)  # enough units, none saw anything move
        channels += MOTION_WEIGHT * agreement(velocity, ok, motion, still)
    if shape is not None:
        outlines = np.concatenate([_unit_rows(feats[i].shapes, feats[i], kept[i]) for i in some])
        harmonics, weight = shape_channel.window_harmonics(outlines if order is None else outlines[order], lo, hi)
        channels += shape_channel.SHAPE_WEIGHT * shape_channel.agreement(harmonics, weight, shape)
    if sound is not None:  # the rows whose half-second frame lies inside each window (their own time grid)
        s_keys, s_order, _ = _on_one_axis(s_centres, offsets)
        rows = np.concatenate(s_rows)
        if s_order is not None:
            rows = rows[s_order]
        s_starts = s_keys - SOUND_WINDOW / 2
        slo = np.searchsorted(s_starts, start_keys, side="left")
        shi = np.searchsorted(s_starts, start_keys + WINDOW_SECONDS - SOUND_WINDOW, side="right")
        reading = sound_channel.window_sound(rows, slo, np.maximum(shi, slo))
        channels += sound_channel.SOUND_WEIGHT * sound_channel.agreement(reading, sound)
    return score, channels, lo, hi, video, starts, ends


def _unit_rows(rows: np.ndarray, f: VideoFeatures, kept: np.ndarray) -> np.ndarray:
    """A video's kept units' rows of a per-unit reading (where-cues, silhouettes), zeros (none) where
    the index stored none for it."""
    if len(rows) != len(f.start):
        return np.zeros((int(kept.sum()), rows.shape[1]), np.float32)
    return rows if kept.all() else rows[kept]


def _sound_of(f: VideoFeatures, kept: np.ndarray) -> np.ndarray:
    """A video's sound rows whose half-second frame lies within its kept units (the search's time
    window), all of them when every unit is kept; none where it stored none."""
    if kept.all() or not len(f.sound):
        return f.sound
    if not kept.any():
        return f.sound[:0]
    start = f.sound[:, 0]
    return f.sound[(start >= f.start[kept].min()) & (start + SOUND_WINDOW <= f.end[kept].max())]



def best_window(q: np.ndarray, f: VideoFeatures, keep: np.ndarray | None = None, use_audio: bool = True) -> np.ndarray:
    """`best_windows` of one video: a float for one query (D,), one per query for (Q, D)."""
    return best_windows(q, [f], None if keep is None else [keep], use_audio)[0]
