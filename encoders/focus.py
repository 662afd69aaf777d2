"""A closer look at what moves: each frame is also encoded as a crop centred where things move.

The frame tower sees 112 px frames in 16 px patches, so a shape a sixth of the frame wide covers one
or two patches: colour survives that, shape barely does (round 4 read 104 of 120 of the held-out
renderer's triangles as stars, lab/shape_probe.py). The where-cue (`temporal.where_cues`, the
centroid of what differs from the video's static background) already says where the moving thing
is, so each frame gets a second view: the window of `scale` times the frame's side around that point (kept inside the frame),
resized back to the tower's input, encoded by the same tower. The two are mixed per frame,

    f = normalise(f_frame + w * f_focus)

with w a learned scalar that starts at 0 (a model fine-tuned with it starts as the model it came
from). A static shot has no cue (0, 0), so its window is the centre of the frame, as for a still image.
The crop is a bilinear resample (`affine_grid` / `grid_sample`), batched, and the same at training
(on float frames) and at indexing (on uint8 frames, rounded back to uint8 before the tower).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .temporal import per_unit_mean

__all__ = ["FOCUS_SCALE", "FocusMix", "apply_focus", "focus_crops", "focus_crops_uint8"]

FOCUS_SCALE = 0.5  # the window's side over the frame's: 2x closer


class FocusMix(nn.Module):
    """normalise(frame + w * focus) per frame; w starts at 0 (the identity)."""

    def __init__(self, scale: float = FOCUS_SCALE):
        super().__init__()
        self.scale = float(scale)
        self.weight = nn.Parameter(torch.tensor(0.0))

    def forward(self, frames: Tensor, focus: Tensor) -> Tensor:
        """frames, focus: unit vectors [..., D] of the same frames -> unit vectors [..., D]."""
        return F.normalize(frames + self.weight * focus, dim=-1)


def focus_crops(x: Tensor, cues: Tensor, scale: float = FOCUS_SCALE) -> Tensor:
    """x [N, C, S, S] float pixels, cues [N, 2] (x, y in [-1, 1]) -> [N, C, S, S]: the window of side
    `scale` x S around each cue, moved inside the frame where the cue is near an edge."""
    n = x.shape[0]
    if n == 0:
        return x
    room = 1.0 - scale
    centre = cues.to(x.dtype).clamp(-room, room)
    theta = x.new_zeros(n, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def focus_crops_uint8(frames: np.ndarray, cues: np.ndarray, scale: float = FOCUS_SCALE, batch: int = 64) -> np.ndarray:
    """uint8 frames (N, S, S, 3) and their cues (N, 2) -> uint8 crops (N, S, S, 3), as `focus_crops`."""
    out = np.empty_like(frames)
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(np.ascontiguousarray(frames[i : i + batch])).permute(0, 3, 1, 2).float()
        crops = focus_crops(x, torch.from_numpy(np.asarray(cues[i : i + batch], np.float32)), scale)
        out[i : i + batch] = crops.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def apply_focus(head, encode: Callable[[np.ndarray], np.ndarray], frames: np.ndarray, vectors: np.ndarray, cues: np.ndarray | None,
                frame_start: np.ndarray, frame_end: np.ndarray, frame_owner: np.ndarray,
                unit_start: np.ndarray, unit_owner: np.ndarray) -> np.ndarray:  # fmt: skip
    """Unit vectors with the head's focus view mixed in (as they are when the head has none):
    `encode` turns uint8 frames into unit vectors with the same tower that made `vectors`."""
    mix = getattr(head, "focus", None) if head is not None else None
    if mix is None or len(frames) == 0:
        return vectors
    if cues is None:
        cues = np.zeros((len(frames), 2), np.float32)
    near = encode(focus_crops_uint8(frames, cues, mix.scale))
    near = per_unit_mean(np.asarray(near, np.float32), frame_start, frame_end, frame_owner, unit_start, unit_owner)
    with torch.inference_mode():
        near_t = F.normalize(torch.from_numpy(near), dim=-1)
        out = mix(torch.from_numpy(np.asarray(vectors, np.float32)), near_t)
    return out.numpy().astype(vectors.dtype, copy=False)
