"""The query as a moment should match it: contrasted with the same words in the opposite direction.

A caption that names a direction ("a red circle moves left") and its reversed twin ("... moves
right") are nearly the same vector: colour, shape, sound and place are shared, and only the
direction words differ. A model whose unit vectors read order (a temporal module, encoders/
temporal.py) puts the direction into its units, but against the query it is a small part of the
cosine, so a window where the right shape moves the wrong way scores almost as well as the event
asked for (README: the first result's motion matched the caption barely more often than chance).
Subtracting the reversed twin keeps what the two share and amplifies what only the direction says:

    q_event = normalise(q + gamma * s * (q_text - q_reversed))

(s: the text's share of a composed query, search/examples.py). The event window (event_windows.py)
and the moment curve score units with `q_event`; the coarse search and the video-level score (X-Pool,
the fused head) keep `q`. Only a model whose units read order gets it: for an order-blind model the
difference is noise in the words' own space.

Measured with `vidsearch eval` (method `+direction` against `+window`; README "Direction"): GAMMA was
chosen on the held-out selection set (P@1 by relevance 19.16 -> 24.74 at 2; 24.39 at 3) and checked on
the report set and the plain corpus.
"""

from __future__ import annotations

import numpy as np

from vidsearch.encoders.directions import reverse_direction

__all__ = ["GAMMA", "contrast", "reads_order", "reversed_text"]

GAMMA = 2.0


def reads_order(head) -> bool:
    """The model's unit vectors carry order (its fusion head has a temporal module)."""
    return head is not None and getattr(head, "temporal", None) is not None


def reversed_text(text: str | None) -> str | None:
    """The query's reversed twin, or None when it names no direction (or there is no text)."""
    return reverse_direction(text) if text else None


def contrast(query: np.ndarray, text: np.ndarray, reversed_vector: np.ndarray, share: float = 1.0, gamma: float = GAMMA) -> np.ndarray:
    """`query` (unit, maybe composed with an image or a moment) moved away from the reversed text by
    gamma x the text's share of it, back to unit length. `query` itself when the result would have
    no direction (the text and its twin encode alike)."""
    v = np.asarray(query, np.float32) + np.float32(gamma * share) * (np.asarray(text, np.float32) - np.asarray(reversed_vector, np.float32))
    norm = float(np.linalg.norm(v))
    return (v / norm).astype(np.float32) if np.isfinite(norm) and norm > 1e-6 else np.asarray(query, np.float32)
