"""A caption with its direction of motion reversed: the hard negative that only order can refute.

"a red circle moves left" and "a red circle moves right" name the same colours, shape, sound and
positions; only the order of the frames tells them apart. Training uses the reversed caption as a
negative for the caption's own event, and evaluation scores how often a model prefers the true
direction over the reversed one ("direction accuracy"). Works on English motion words, which is
what the synthetic corpus (and most people) use to say where something goes.
"""

from __future__ import annotations

import re

# each pair swaps both ways; longer phrases first so "upward" is not read as "up" + "ward"
_PAIRS: tuple[tuple[str, str], ...] = (
    ("leftward", "rightward"),
    ("leftwards", "rightwards"),
    ("upward", "downward"),
    ("upwards", "downwards"),
    ("left", "right"),
    ("up", "down"),
    ("rises", "sinks"),
    ("climbs", "drops"),
    ("falls", "rises"),
)
_SWAP: dict[str, str] = {}
for a, b in _PAIRS:
    _SWAP.setdefault(a, b)
    _SWAP.setdefault(b, a)
_WORD = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _SWAP), key=len, reverse=True)) + r")\b", re.IGNORECASE)
# "up" and "down" are motion words only as verb particles: not in quoted speech or on-screen text
_QUOTED = re.compile(r'"[^"]*"')


def reverse_direction(caption: str) -> str | None:
    """The caption with every motion word reversed (left<->right, up<->down, rises<->sinks, ...),
    or None when it names no direction. Quoted words (speech, on-screen text) are left alone."""
    found = False

    def swap(m: re.Match) -> str:
        nonlocal found
        found = True
        word = m.group(0)
        out = _SWAP[word.lower()]
        return out.capitalize() if word[0].isupper() else out

    parts, last = [], 0
    for q in _QUOTED.finditer(caption):
        parts.append(_WORD.sub(swap, caption[last : q.start()]))
        parts.append(q.group(0))
        last = q.end()
    parts.append(_WORD.sub(swap, caption[last:]))
    return "".join(parts) if found else None
