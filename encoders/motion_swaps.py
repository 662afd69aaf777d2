"""A caption with its motion named otherwise: left, right, up, down or still, each against the rest.

The reversed-direction twin (`directions.py`) asks only "left or right?" of an event that moves
sideways; a video's first result moved as the caption said 62-63% of the time on the held-out
renderer (chance 43%), although the pixel cue reads every direction. Training therefore also asks
each event to prefer its caption over the same caption with each other motion, "stays still"
included, as `shape_swaps.py` does for shapes. The caption's motion phrase ("slides to the left",
"rises", "heads toward the top", "is stationary", ...) is replaced whole by a plain one ("moves
right", "stays still"); quoted words (speech, on-screen text) are left alone. Meant for captions
about moving shapes (the synthetic corpus): on everyday captions "runs up the stairs" would become
"moves left the stairs", a noisy negative; `--motion-weight 0` turns it off.
"""

from __future__ import annotations

import re

from .shape_swaps import unquoted_spans

__all__ = ["MOTIONS", "named_motion", "swap_motions"]

MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")
PLAIN: dict[str, str] = {"left": "moves left", "right": "moves right", "up": "moves up", "down": "moves down", "still": "stays still"}

_WORD_MOTION = {
    "left": "left", "leftward": "left", "leftwards": "left", "westward": "left",
    "right": "right", "rightward": "right", "rightwards": "right", "eastward": "right",
    "up": "up", "upward": "up", "upwards": "up", "top": "up",
    "down": "down", "downward": "down", "downwards": "down", "bottom": "down",
}  # fmt: skip
_VERB_MOTION = {"rises": "up", "ascends": "up", "climbs": "up", "falls": "down", "descends": "down", "sinks": "down", "drops": "down"}
_STILL = ("stays still", "sits still", "stands still", "keeps still", "remains still", "stays in place", "does not move",
          "doesn't move", "is stationary", "stays put", "is motionless", "rests without moving", "holds its position")  # fmt: skip
_VERBS = "moves|slides|heads|shifts|goes|travels|drifts|glides|floats|rolls|flies|runs|walks|swims|hovers"
_PHRASE = re.compile(
    r"\b(?:(?P<still>" + "|".join(map(re.escape, _STILL)) + r")"
    r"|(?:" + _VERBS + r")\s+(?:to the\s+|toward the\s+|towards the\s+)?(?P<way>" + "|".join(sorted(_WORD_MOTION, key=len, reverse=True)) + r")"
    r"|(?P<verb>" + "|".join(_VERB_MOTION) + r"))\b",
    re.IGNORECASE,
)


def _motion(m: re.Match) -> str:
    if m.group("still"):
        return "still"
    if m.group("way"):
        return _WORD_MOTION[m.group("way").lower()]
    return _VERB_MOTION[m.group("verb").lower()]


# said of a thing on its own, without a verb ("a red square, motionless"): read by search, not swapped
_BARE_STILL = re.compile(r"\b(?:motionless|stationary|unmoving|not moving|at rest)\b", re.IGNORECASE)


def named_motion(caption: str) -> str | None:
    """The one motion a caption names, in MOTIONS (None when it names none, or several that differ);
    quoted words (speech, on-screen text) do not count."""
    spans = unquoted_spans(caption)
    found = {_motion(m) for a, b in spans for m in _PHRASE.finditer(caption, a, b)}
    if not found and any(_BARE_STILL.search(caption, a, b) for a, b in spans):
        found = {"still"}
    return found.pop() if len(found) == 1 else None


def swap_motions(caption: str) -> list[str]:
    """The caption once with each other motion in place of the one it names, in MOTIONS order
    ([] when it names none, or more than one)."""
    found = [m for a, b in unquoted_spans(caption) for m in _PHRASE.finditer(caption, a, b)]
    if len(found) != 1:
        return []
    m = found[0]
    named = _motion(m)
    return [caption[: m.start()] + PLAIN[other] + caption[m.end() :] for other in MOTIONS if other != named]
