"""A caption with its shape named otherwise: the hard negative that only the shape can refute.

Captions name a colour, a shape, a motion and a sound, and a batch of videos is usually told apart
by colour and sound alone, so contrastive training on whole captions taught the frame tower little
about shape: probed with "a {colour} {shape}" on each event's own units (lab/shape_probe.py),
round 4 named the right one of four shapes in 46% of unseen videos of its own training look and 38%
of another renderer's. Training therefore also asks each event to prefer its caption over the same caption
with every other shape (as `directions.py` does for the direction of motion), which only the
shape can answer. Works on English shape nouns, longest phrases first; quoted words (speech,
on-screen text, in straight or curly double quotes) are left alone. Meant for captions about shapes
(the synthetic corpus): on everyday captions a "movie star" would become a "movie circle", a weak
negative; `--shape-weight 0` turns it off.
"""

from __future__ import annotations

import re

__all__ = ["SHAPES", "named_shape", "swap_shapes"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
_NOUNS: dict[str, tuple[str, ...]] = {
    "circle": ("round figure", "circle", "dot", "orb", "ball", "disc", "disk"),
    "square": ("square figure", "quadrilateral", "square", "tile", "box", "block"),
    "triangle": ("triangular figure", "triangle", "wedge", "pyramid"),
    "star": ("pointy star", "star figure", "starburst", "star"),
}
_SHAPE_OF = {noun: shape for shape, nouns in _NOUNS.items() for noun in nouns}
_NOUN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _SHAPE_OF), key=len, reverse=True)) + r")\b", re.IGNORECASE)
_QUOTED = re.compile(r'"[^"]*"|\u201c[^\u201d]*\u201d')
# A search query is written by whoever asks: more words (and plurals) than the training swap reads.
_SEARCH_NOUNS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circles", "circular", "ball", "balls", "disc", "discs", "disk", "disks", "orb", "orbs", "sphere", "spheres",
               "dot", "dots", "round figure", "round shape", "round object", "round thing", "oval", "ovals", "ellipse", "ellipses"),
    "square": ("square", "squares", "box", "boxes", "block", "blocks", "cube", "cubes", "tile", "tiles", "quadrilateral",
               "square figure", "square shape", "rectangle", "rectangles"),
    "triangle": ("triangle", "triangles", "triangular", "three-sided", "three sided", "wedge", "wedges", "pyramid", "pyramids"),
    "star": ("star", "stars", "starburst", "star-shaped", "star shaped", "five-pointed", "five pointed", "pentagram"),
}
_SEARCH_SHAPE_OF = {noun: shape for shape, nouns in _SEARCH_NOUNS.items() for noun in nouns}
_SEARCH_NOUN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _SEARCH_SHAPE_OF), key=len, reverse=True)) + r")\b", re.IGNORECASE)
# everyday phrases where the word names no outline: a place, a job, a measure, a thing's use
_NOT_A_SHAPE = re.compile(r"\b(?:(?:times|town|village|market|city|public|main|trafalgar|union|tiananmen|st\.?|saint) squares?|oval office|"
                          r"(?:at|on|around|near|round) the (?:oval|ellipse)|"
                          r"square (?:meters?|metres?|feet|foot|miles?|kilometers?|kilometres?|inches?|yards?|roots?|deal|meal|one|dance)|"
                          r"fair and square|box office|(?:movie|film|rock|pop|tv|porn|football|soccer|basketball|super|guest|youtube|"
                          r"rising|north|lone|morning|evening|shooting|death) stars?|(?:one|two|three|four|five)-stars?|star wars|star trek|"
                          r"city blocks?|road ?blocks?|writer'?s block|building blocks?|cell ?blocks?|ice cubes?|sugar cubes?|rubik'?s cubes?|"
                          r"polka dots?|dot ?com|pyramids? of giza|pyramid schemes?|golf wedges?|disc jockey|disk drives?|hard disks?|"
                          r"compact discs?|ball ?game|ball ?room|ball ?gowns?|meat ?balls?|snow ?balls?|ball ?point|balls? of (?:yarn|wool))\b", re.IGNORECASE)


def unquoted_spans(caption: str) -> list[tuple[int, int]]:
    """(start, end) of the caption's stretches outside double quotes (speech, on-screen text)."""
    spans, last = [], 0
    for q in _QUOTED.finditer(caption):
        spans.append((last, q.start()))
        last = q.end()
    spans.append((last, len(caption)))
    return spans


def named_shape(caption: str) -> str | None:
    """The one shape a query names, in SHAPES (None when it names none, or several that differ);
    quoted words (speech, on-screen text) and everyday phrases that name no outline ("Times Square",
    "box office", "movie star", "city block", "ice cubes", ...) do not count."""
    found = set()
    for a, b in unquoted_spans(caption):
        part = _NOT_A_SHAPE.sub(lambda m: " " * len(m.group(0)), caption[a:b])
        found.update(_SEARCH_SHAPE_OF[m.group(0).lower()] for m in _SEARCH_NOUN.finditer(part))
    return found.pop() if len(found) == 1 else None


def swap_shapes(caption: str) -> list[str]:
    """The caption once with each other shape in place of the one it names ([] when it names
    none, or more than one: which event a swap would be about is then unclear)."""
    found = [(m.start(), m.end(), _SHAPE_OF[m.group(0).lower()]) for a, b in unquoted_spans(caption) for m in _NOUN.finditer(caption, a, b)]
    if not found or len({s for *_, s in found}) != 1:
        return []
    named = found[0][2]
    out = []
    for other in SHAPES:
        if other == named:
            continue
        text, shift = caption, 0
        for a, b, _ in found:
            text = text[: a + shift] + other + text[b + shift :]
            shift += len(other) - (b - a)
        out.append(text)
    return out
