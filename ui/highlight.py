"""The query's words marked in matched transcript or on-screen text, so a reader sees at a glance why
a span matched. The text comes from ASR/OCR of arbitrary videos, so it is HTML-escaped piece by piece
and only our own `<mark>` tags reach the page."""

from __future__ import annotations

import html
import re

STOPWORDS = frozenset(
    "a an and are as at be by did do does for from has have he her his i in is it its me my of on or "
    "our she so that the their them they this to was we were what when where which who will with you".split()
)
_WORD = re.compile(r"\w+", re.UNICODE)
_SUFFIXES = ("s", "es", "ed", "ing", "d")


def query_terms(query: str) -> list[str]:
    """The words worth marking: lower case, without stop words (unless the query is only those)."""
    words = [w.lower() for w in _WORD.findall(query)]
    kept = [w for w in words if w not in STOPWORDS and len(w) > 1] or words
    return list(dict.fromkeys(kept))


def _matches(word: str, terms: list[str]) -> bool:
    """A whole word, or a term plus a common suffix (frisbee / frisbees, grow / growing)."""
    w = word.lower()
    for t in terms:
        if w == t or (len(t) >= 3 and w.startswith(t) and w[len(t) :] in _SUFFIXES):
            return True
    return False


def highlight_html(text: str, query: str) -> str:
    """`text` as safe HTML with the query's words wrapped in `<mark>`."""
    terms = query_terms(query)
    if not terms:
        return html.escape(text)
    out, last = [], 0
    for m in _WORD.finditer(text):
        if _matches(m.group(), terms):
            out.append(html.escape(text[last : m.start()]))
            out.append(f"<mark>{html.escape(m.group())}</mark>")
            last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def snippet(text: str, query: str, width: int = 240) -> str:
    """At most about `width` characters of `text`, centred on the first matching word."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    terms = query_terms(query)
    first = next((m.start() for m in _WORD.finditer(text) if _matches(m.group(), terms)), 0)
    start = max(0, min(first - width // 3, len(text) - width))
    cut = text[start : start + width]
    return ("…" if start > 0 else "") + cut + ("…" if start + width < len(text) else "")
