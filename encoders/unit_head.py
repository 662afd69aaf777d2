"""What a model's fusion head does to units after the frame tower, the same in every backbone.

Two steps, both optional per checkpoint: the focus view (encoders/focus.py: each frame encoded again
as a crop around what moves, mixed in) and the temporal module (encoders/temporal.py: each unit
mixed with its neighbours and the where-cues). Both read the where-cues of each frame, so they are
read once here. The local torch backbone and the Triton backend call this with their own `encode`
(uint8 frames -> unit vectors through the same tower that made `vectors`), so stored units are the
same whichever engine made them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .focus import apply_focus
from .temporal import frame_cues, mix_units_of, unit_cues_of

__all__ = ["head_units"]


def head_units(head, encode: Callable[[np.ndarray], np.ndarray], frames: np.ndarray, vectors: np.ndarray,
               frame_start: np.ndarray, frame_end: np.ndarray, frame_owner: np.ndarray,
               unit_start: np.ndarray, unit_end: np.ndarray, unit_owner: np.ndarray, cues: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Frames (uint8, contiguous per owner in time order) and the tower's unit vectors -> the unit
    vectors as the model stores them (unchanged for a model without a head). `cues`: the frames'
    `frame_cues` when the caller already read them (the indexer does, for the stored cues)."""
    if head is None or len(frames) == 0:
        return vectors
    if cues is None and head.reads_cues:
        cues = frame_cues(frames, frame_owner)  # where things move (pixels)
    vectors = apply_focus(head, encode, frames, vectors, cues, frame_start, frame_end, frame_owner, unit_start, unit_owner)
    unit_cues = unit_cues_of(head, frames, frame_start, frame_end, frame_owner, unit_start, unit_owner, cues)
    return mix_units_of(head, vectors, unit_start, unit_end, unit_owner, unit_cues)  # units that know their neighbours (order)
