"""The motion channel: a window's moving thing goes the way the query says.

Unit vectors know *what* is in a window far better than *which way it goes*: on the held-out
renderer the first result's motion matched the caption 62-67% of the time although the pixel cue
(encoders/temporal.py `where_cues`: the centroid of what differs from the video's static
background, x and y in [-1, 1], y down) follows every held-out direction. The cue is read at
indexing for every unit of every model and stored (`video_features.unit_cues`); here a window's
velocity is the least-squares slope of its units' cues over their times, once the jumps between one
event's thing and the next are taken out of the path (`unwrap_jumps`), and a query that names one
motion (encoders/motion_swaps.py: left, right, up, down, or staying still) adds

    MOTION_WEIGHT * agreement,  agreement in [-1, 1]

to the event window's score (event_windows.py): for a direction, the velocity's component along it
over max(speed, SPEED) (+1 going that way, -1 the opposite way, ~0 still); for "still", 1 at rest
falling to -1 at SPEED and faster. A window with fewer than MIN_UNITS cued units (a unit whose cue is
exactly (0, 0) saw nothing move: a static shot, or a clip under 3 frames) adds 0 for a direction; for
"still" it counts as still where it holds MIN_UNITS units and none saw anything move. A video indexed
before the channel adds 0. The term is added to every window before each video's best is taken, so it
can choose which window of a video counts; the unit vectors (colour, shape, sound) still weigh most,
and a query without motion words ranks as before. With token merging on (units of up to 4 frames) a
3 s window holds one or two units and the channel adds nothing.

What the cue cannot tell: several things moving at once move their centroid, and a moving camera
moves everything (its centroid is of all that changed); the weight is small enough that the unit
vectors still lead. Sensor and compression noise on a static shot would give each frame a weak cue
at a random place: the stored cues leave out frames where nothing stands out by CUE_MIN_STRENGTH
(encoders/temporal.py; noise measured 0.005-0.02, a 20 px square 15 grey levels off its background
0.17), so such a shot reads as still. MOTION_WEIGHT was chosen on the held-out selection set and checked on the report
set and the plain corpus (README "The motion channel": served P@1 by relevance 25.8 -> 36.9, 24.8 ->
31.0 and 26.3 -> 36.6 with calibrations refitted for it; 0.5 read 1-2 points higher, kept lower for
real footage, where a panning camera moves every cue).
"""

from __future__ import annotations

import numpy as np

from vidsearch.encoders.motion_swaps import named_motion

__all__ = ["DIRECTIONS", "JUMP", "MIN_UNITS", "MOTION_WEIGHT", "SPEED", "agreement", "query_motion", "unwrap_jumps", "window_velocity"]

MOTION_WEIGHT = 0.3
SPEED = 0.1  # cue units (half the frame) per second: slower than this counts as not going anywhere
MIN_UNITS = 3  # cued units a window needs for a slope
JUMP = 0.6  # cue units (a third of the picture) in one step against the steps around it: a thing left and another came in
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}  # image axes, y down


def query_motion(text: str | None) -> str | None:
    """The one motion a query names ("left", "right", "up", "down", "still"), else None."""
    return named_motion(text) if text else None


def unwrap_jumps(cues: np.ndarray, video: np.ndarray) -> np.ndarray:
    """The cues (N, 2) with each jump taken out of the path that follows it: a step between two
    consecutive cued units of a video longer than JUMP that goes against the steps on both sides of
    it is where the thing left the picture and a thing came in at the other side, or a cut, not a
    move; every later cue of the video is shifted back by it. (A long step with a step on one side
    only is kept: the first move of a short event, before its thing stops or leaves, reads as one.)
    Without this a window holding the end of one event and the start of the next, both moving right,
    read a move left (the thing seen at the right edge, then at the left one); a fast move across the
    picture keeps its steps' direction and is left as it is. Uncued units stay (0, 0)."""
    c = np.asarray(cues, np.float64).copy()
    cued = np.flatnonzero(np.abs(c).sum(1) > 0)
    if len(cued) < 2:
        return c
    same = video[cued[1:]] == video[cued[:-1]]
    step = np.where(same[:, None], c[cued[1:]] - c[cued[:-1]], 0.0)  # (K-1, 2): step into cued[k + 1]
    size = np.linalg.norm(step, axis=1)
    before = np.vstack([np.zeros((1, 2)), step[:-1] * same[:-1, None]])  # the step before each step, in its video
    after = np.vstack([step[1:] * same[1:, None], np.zeros((1, 2))])
    against = lambda other: ((step * other).sum(1) < 0) & (np.abs(other).sum(1) > 0)  # noqa: E731 - a step there, the other way
    jump = same & (size > JUMP) & against(before) & against(after)
    shift = np.cumsum(np.where(jump[:, None], step, 0.0), axis=0)  # jumps so far, along the cued rows
    start = np.r_[True, ~same]  # a video's first cued row: its own jumps only
    base = np.maximum.accumulate(np.where(start, np.arange(len(cued)), 0))  # each row's video start among the cued rows
    total = np.vstack([np.zeros((1, 2)), shift])  # total[k]: the jumps up to cued row k
    c[cued] -= total - total[base]
    landed = cued[(c[cued] == 0.0).all(1)]  # a shifted cue exactly at (0, 0) would read as no cue
    c[landed] = np.finfo(np.float32).tiny
    return c


def window_velocity(times: np.ndarray, cues: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares velocity (W, 2) of the cues (N, 2) over `times` (N,) in each window of rows
    lo..hi-1, whether the window had MIN_UNITS cued rows spread in time (W,), and how many cued rows
    it had (W,). Columnar: cumulative sums of the cued rows' moments, so every window costs a few
    lookups. Times should be each video's own (a window never spans two videos), which keeps the
    squares small."""
    t = np.asarray(times, np.float64)
    c = np.asarray(cues, np.float64)
    w = (np.abs(c).sum(1) > 0).astype(np.float64)  # (0, 0): no cue on this unit
    cols = np.column_stack([w, w * t, w * t * t, w * c[:, 0], w * c[:, 1], w * t * c[:, 0], w * t * c[:, 1]])
    acc = np.zeros((len(t) + 1, cols.shape[1]), np.float64)
    np.cumsum(cols, axis=0, out=acc[1:])
    n, st, stt, sx, sy, stx, sty = (acc[hi] - acc[lo]).T
    den = n * stt - st * st
    ok = (n >= MIN_UNITS) & (den > 1e-9 * np.maximum(n * n, 1.0))
    safe = np.where(ok, den, 1.0)
    vel = np.column_stack([(n * stx - st * sx) / safe, (n * sty - st * sy) / safe])
    vel[~ok] = 0.0
    return vel, ok, n


def agreement(velocity: np.ndarray, ok: np.ndarray, motion: str, still: np.ndarray | None = None) -> np.ndarray:
    """How well each window's velocity (W, 2) matches `motion`, in [-1, 1]; 0 where not `ok`, except
    that a window where nothing moved (`still`: MIN_UNITS units or more, none with a cue, in a video
    whose cues are stored) is still: "stays still" agrees with it (+1). A thing that never moves in a
    whole shot is part of its shot's median and reads no cue: it must not lose to a thing that sits
    still for only part of a video."""
    speed = np.linalg.norm(velocity, axis=1)
    if motion == "still":
        out = 1.0 - 2.0 * np.minimum(speed / SPEED, 1.0)
        return np.where(ok, out, 0.0 if still is None else np.where(still, 1.0, 0.0))
    out = velocity @ np.asarray(DIRECTIONS[motion]) / np.maximum(speed, SPEED)
    return np.where(ok, out, 0.0)
