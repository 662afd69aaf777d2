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


# What a search query may say, beyond the synthetic captions' own phrasing (which `_PHRASE`, the
# training swap, keeps to): a motion verb in any form ("is moving to the left", "rolled right",
# "drifting upward"), a path ("from left to right", "left to right"), a rising or falling verb, and
# stillness said of a thing alone ("a red square, motionless"). Conservative where words have other
# senses: each verb form is listed (a stem would read "passenger left", "panel left", "headphones
# down"); a direction followed by a noun phrase is a place or a route, not a way across the picture
# ("walks down the street", "runs right into the pool", "to the right of the car"); "left and
# right", "up and down", "back and forth" name no one way; "drop" and "fall" count as verbs only.
_SEARCH_VERBS = "|".join((
    "move", "moves", "moved", "moving", "slide", "slides", "slid", "sliding",
    "shift", "shifts", "shifted", "shifting", "go", "goes", "going", "went", "travel", "travels", "traveled", "travelled",
    "traveling", "travelling", "drift", "drifts", "drifted", "drifting", "glide", "glides", "glided", "gliding",
    "float", "floats", "floated", "floating", "roll", "rolls", "rolled", "rolling", "fly", "flies", "flew", "flying",
    "run", "runs", "ran", "running", "walk", "walks", "walked", "walking", "swim", "swims", "swam", "swimming",
    "hover", "hovers", "hovered", "hovering", "pan", "pans", "panned", "panning", "scroll", "scrolls", "scrolled",
    "scrolling", "turn", "turns", "turned", "turning", "race", "races", "raced", "racing", "speed", "speeds", "sped",
    "speeding", "crawl", "crawls", "crawled", "crawling", "march", "marches", "marched", "marching", "sail", "sails",
    "sailed", "sailing", "jump", "jumps", "jumped", "jumping", "hop", "hops", "hopped", "hopping", "bounce", "bounces",
    "bounced", "bouncing", "cross", "crosses", "crossed", "crossing", "swing", "swings", "swung", "swinging", "dart",
    "darts", "darted", "darting", "dash", "dashes", "dashed", "dashing", "zip", "zips", "zipped", "zipping", "rush",
    "rushes", "rushed", "rushing", "sweep", "sweeps", "swept", "sweeping", "stroll", "strolls", "strolled", "strolling",
    "tumble", "tumbles", "tumbled", "tumbling", "drive", "drives", "drove", "driving", "tilt", "tilts", "tilted", "tilting",
    "drop", "drops", "dropped", "dropping", "fall", "falls", "fell", "falling",
    "zoom", "zooms", "zoomed", "zooming", "streak", "streaks", "streaked", "streaking", "creep", "creeps", "crept", "creeping",
    "inched", "inching", "coasted", "coasting",  # not the nouns ("two inches left", "the coast"), nor "shoots up" (prices, heroin)
    "cruise", "cruises", "cruised", "cruising", "wander", "wanders", "wandered", "wandering", "advance", "advances",
    "advanced", "advancing", "makes its way", "made its way", "making its way",
))  # fmt: skip
_WAYS = "|".join(sorted(_WORD_MOTION, key=len, reverse=True))
_SIDE = r"(?:the\s+)?(?P<{}>left|right|top|bottom)(?:\s+(?:side|edge))?"
_NOT_A_WAY = r"(?!-|\s+(?:to|toward|towards|into|onto|of|from|the|a|an|his|her|their|its|my|your|our|this|that|some)\b)"  # and not "left-handed"
_SEARCH_PHRASE = re.compile(
    r"\b(?:(?P<still>" + "|".join(map(re.escape, _STILL)) + r"|motionless|stationary|unmoving|not moving|at rest|"
    r"(?:stays|stay|staying|stands|standing|sits|sitting|keeps|keeping|remains|remaining|holds|holding)\s+still|"
    r"(?:stays|stay|staying|remains|remaining|sits|sitting|rests|resting|spins|spinning|rotates|rotating|hovers|hovering)"
    r"\s+in\s+(?:the\s+same\s+|one\s+)?(?:place|spot)|"
    r"(?:does not|doesn't|do not|don't|never)\s+(?:move|budge)|not budging|never budges|"
    r"is\s+still(?=\s*(?:[,.;:!?]|$|(?:and|while|during|accompanied|throughout)\b)))"
    r"|(?:" + _SEARCH_VERBS + r"|heads|headed|heading)\s+(?:to|toward|towards)\s+the\s+(?P<edge>left|right|top|bottom)(?:\s+(?:side|edge))?"
    r"\s+of\s+the\s+(?:frame|screen|picture|image|view|video)\b"
    r"|(?:" + _SEARCH_VERBS + r")\s+(?P<along>up|down)\s+the\s+(?:frame|screen|picture|image|view|video)\b"
    r"|(?:from\s+)?" + _SIDE.format("src") + r"\s+(?:to|toward|towards)\s+" + _SIDE.format("dst") +
    r"|(?:" + _SEARCH_VERBS + r")\s+(?:off\s+|away\s+|across\s+)?(?:to\s+the\s+|toward\s+the\s+|towards\s+the\s+)?(?P<way>" + _WAYS + r")" + _NOT_A_WAY +
    r"|(?:heads|headed|heading)\s+(?:(?:to|toward|towards)\s+the\s+)?"  # not "heads up" (a warning)
    r"(?P<hway>leftwards|leftward|left|rightwards|rightward|right|upwards|upward|downwards|downward|westward|eastward|top|bottom)" + _NOT_A_WAY +
    r"|(?P<verb>rises|rising|rose|risen|ascends|ascending|ascended|climbs|climbing|climbed|descends|descending|descended|"
    r"sinks|sinking|sank|sunk|falls|falling|fell|drops|dropping|dropped)(?!\s+(?:of|in\s+love|asleep|apart)\b))\b",
    re.IGNORECASE,
)
_BOTH_WAYS = re.compile(r"\b(?:left and right|right and left|up and down|down and up|back and forth|to and fro|side to side)\b", re.IGNORECASE)
_RISE = ("ris", "rose", "ascend", "climb")


def _search_motion(m: re.Match) -> str | None:
    if m.group("verb") and m.group("verb")[0].isupper() and m.start() > 0:
        return None  # a name ("Niagara Falls"), not a thing falling
    if m.group("still"):
        return "still"
    if m.group("dst"):
        return _WORD_MOTION[m.group("dst").lower()]
    if m.group("edge") or m.group("along"):  # "toward the top of the frame", "down the screen": the picture's own ways
        return _WORD_MOTION[(m.group("edge") or m.group("along")).lower()]
    if m.group("way") or m.group("hway"):
        return _WORD_MOTION[(m.group("way") or m.group("hway")).lower()]
    return "up" if m.group("verb").lower().startswith(_RISE) else "down"


def named_motion(caption: str) -> str | None:
    """The one motion a query names, in MOTIONS (None when it names none, or several that differ);
    quoted words (speech, on-screen text) do not count. Reads more phrasings than the training swap
    (`_SEARCH_PHRASE`): a search query is written by whoever asks."""
    spans = unquoted_spans(caption)
    if any(_BOTH_WAYS.search(caption, a, b) for a, b in spans):
        return None
    found = {_search_motion(m) for a, b in spans for m in _SEARCH_PHRASE.finditer(caption, a, b)} - {None}
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
