"""Order-aware unit vectors: a small temporal module over each video's unit sequence.

Pooling frames, by mean or by X-Pool's attention, is blind to order: a shape that moves left covers
the same positions as one that moves right, so the pooled vectors are the same. This module lets each
unit see its neighbours before anything is pooled: for unit t it reads the unit itself and the
change across it, d_t = (f_{t+1} - f_{t-1}) / (time between them), and adds a learned residual

    u_t = normalise(f_t + W_2 GELU(W_1 [f_t ; d_t]))

W_2 starts at zero, so an untrained module is the identity and training only adds what order buys.
The change is divided by the time between the neighbours (per 2 s), so a model trained on sampled
frames reads units at the index's own spacing the same way. The first and last unit use themselves
as the missing neighbour (a one-sided change).

A frame tower trained to say *what* is in a frame says little about *where*: the change of its
vectors across neighbours did not tell "moves left" from "moves right" (direction accuracy stayed at
chance). So the module also reads a cue of where things are, taken from the pixels (`where_cues`):
the centroid of what differs from the video's median frame (its static background), in [-1, 1]
image coordinates, and that centroid's change across the neighbours. Pixel change is what any camera
records of a moving thing, whatever it is drawn like; a static shot gives (0, 0), a moving camera a
centroid of everything that moved. With `cues=0` (models trained before) the module reads vectors
only.

It runs where unit vectors are made (the indexer's encode step), so the stored unit vectors, the
coarse segment means, X-Pool and moment curves all see order at no cost per query.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CUES", "TemporalMixer", "cue_cells", "floor_cues", "frame_cues", "frame_cues_and_strength", "mix_units", "mix_units_of", "per_unit_mean", "unit_cues_of", "unit_where_cues", "where_cues", "where_cues_and_strength", "widen_state"]

GAP_SECONDS = 2.0  # the change is expressed per this many seconds
CUES = 2  # where_cues: the (x, y) centroid of what moved
CUE_GRID = 56  # frames are averaged down to this many cells a side before the cue is read
CUE_MIN_STRENGTH = 0.06  # stored cues (motion channel): below this nothing moved, whatever the noise placed


def cue_cells(frames: Tensor) -> Tensor:
    """[N, C, H, W] pixels in [0, 1] -> [N, C, CUE_GRID, CUE_GRID] cell means (any frame size)."""
    return F.adaptive_avg_pool2d(frames.float(), CUE_GRID)


def where_cues(cells: Tensor, mask: Tensor) -> Tensor:
    """Where the moving thing is in each frame: cells [B, T, C, G, G] (`cue_cells` of pixels in [0, 1]),
    mask [B, T] -> [B, T, 2] (x, y in [-1, 1], y down; zero for padding, for a static video and for a
    video of fewer than 3 frames).

    The background is the video's per-cell median over its frames (a thing that moves covers each
    cell in few of them); a cell's change is its summed absolute difference to it, smoothed over 3x3
    cells; the cue is the centroid of the squared excess of change over the frame's mean change, so
    grain, compression noise and a slightly shaking camera weigh little against the object."""
    return where_cues_and_strength(cells, mask)[0]


def where_cues_and_strength(cells: Tensor, mask: Tensor, with_change: bool = False) -> tuple[Tensor, ...]:
    """`where_cues`, and how strongly something stands out in each frame [B, T]: the largest excess
    of a cell's change over the frame's mean change (summed over the 3 channels, pixels in [0, 1]). A
    static shot's sensor or compression noise stands out by ~0.01-0.03; a thing that moves by tenths.
    `with_change`: also each cell's change itself, unsmoothed [B, T, G, G] (encoders/silhouettes.py
    reads the moving thing's outline from it)."""
    b, t, c, g, _ = cells.shape
    x = cells.float().masked_fill(~mask.to(torch.bool).view(b, t, 1, 1, 1), float("nan"))
    background = torch.nanmedian(x.flatten(3), dim=1).values.view(b, 1, c, g, g)
    raw = (x - background).abs().sum(2).nan_to_num(0.0)  # [B, T, G, G]
    change = F.avg_pool2d(raw.view(b * t, 1, g, g), 3, 1, 1, count_include_pad=False).view(b, t, g, g)
    excess = (change - change.mean((2, 3), keepdim=True)).clamp_min(0)
    weight = excess**2
    axis = torch.linspace(-1.0, 1.0, g)
    total = weight.sum((2, 3))
    cx = (weight.sum(2) * axis).sum(-1) / total.clamp_min(1e-12)
    cy = (weight.sum(3) * axis).sum(-1) / total.clamp_min(1e-12)
    cue = torch.stack([cx, cy], dim=-1) * (total > 1e-12).unsqueeze(-1)
    # a median of fewer than 3 frames is no background (of 2, torch takes the darker value per cell:
    # a dark object then becomes the background at both places and the cues swap): no cue
    enough = (mask.to(torch.bool).sum(1, keepdim=True) >= 3).unsqueeze(-1)
    keep = mask.to(cue.dtype).unsqueeze(-1) * enough.to(cue.dtype)
    out = (cue * keep, excess.flatten(2).max(-1).values * keep[..., 0])
    return (*out, raw * keep[..., 0, None, None]) if with_change else out


def frame_cues(frames: np.ndarray, owner: np.ndarray, batch: int = 64, min_strength: float = 0.0) -> np.ndarray:
    """uint8 frames (N, S, S, 3), contiguous per owner (video) in time order -> where_cues per frame
    (N, 2), each video's background taken over its frames here (a long video's decode chunk); with
    `min_strength`, (0, 0) (no cue) for a frame where nothing stands out by that much
    (`where_cues_and_strength`: noise on a static shot)."""
    cues, strength = frame_cues_and_strength(frames, owner, batch)
    return floor_cues(cues, strength, min_strength) if min_strength > 0 else cues


def frame_cues_and_strength(frames: np.ndarray, owner: np.ndarray, batch: int = 64, with_change: bool = False) -> tuple[np.ndarray, ...]:
    """`frame_cues` (N, 2) and each frame's strength (N,): read once, the model's head takes the cues
    as they are and the stored cues leave out the weak ones (`floor_cues`). `with_change`: also each
    frame's cell change (N, CUE_GRID, CUE_GRID) against its video's background (the silhouettes)."""
    if len(frames) == 0:
        empty = (np.zeros((0, CUES), np.float32), np.zeros(0, np.float32))
        return (*empty, np.zeros((0, CUE_GRID, CUE_GRID), np.float32)) if with_change else empty
    cells = torch.cat([cue_cells(torch.from_numpy(np.ascontiguousarray(frames[i : i + batch])).permute(0, 3, 1, 2).float().div_(255.0))
                       for i in range(0, len(frames), batch)]).numpy()  # fmt: skip
    owner = np.asarray(owner)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(owner)) + 1])
    out = np.zeros((len(frames), CUES), np.float32)
    strengths = np.zeros(len(frames), np.float32)
    changes = np.zeros((len(frames), CUE_GRID, CUE_GRID), np.float32) if with_change else None
    lo = 0
    while lo < len(starts):  # a few videos at a time: the padded median is ~5 copies of their cells
        hi = lo + 1
        while hi < len(starts) and starts[hi] - starts[lo] < 4 * batch:
            hi += 1
        a, b = starts[lo], (starts[hi] if hi < len(starts) else len(frames))
        padded, mask = _pad_by_owner(cells[a:b], owner[a:b])
        read = where_cues_and_strength(torch.from_numpy(padded), torch.from_numpy(mask), with_change)
        out[a:b] = read[0].numpy()[mask]
        strengths[a:b] = read[1].numpy()[mask]
        if with_change:
            changes[a:b] = read[2].numpy()[mask]
        lo = hi
    return (out, strengths, changes) if with_change else (out, strengths)


def floor_cues(cues: np.ndarray, strength: np.ndarray, min_strength: float = CUE_MIN_STRENGTH) -> np.ndarray:
    """Per-frame cues with (0, 0) (no cue) where nothing stands out by `min_strength`."""
    return np.where((strength >= min_strength)[:, None], cues, 0.0).astype(np.float32)


def unit_cues_of(head, frames: np.ndarray, frame_start: np.ndarray, frame_end: np.ndarray, frame_owner: np.ndarray,
                 unit_start: np.ndarray, unit_owner: np.ndarray, cues: np.ndarray | None = None) -> np.ndarray | None:  # fmt: skip
    """The cues a model's temporal module reads for each unit (None when it reads none): per frame
    (`cues` when already read, else read here), averaged over the frames a unit holds where token
    merging made units of several frames."""
    module = getattr(head, "temporal", None) if head is not None else None
    if module is None or not module.cues:
        return None
    cues = frame_cues(frames, frame_owner) if cues is None else cues
    return per_unit_mean(cues, frame_start, frame_end, frame_owner, unit_start, unit_owner)


def unit_where_cues(frames: np.ndarray, frame_start: np.ndarray, frame_end: np.ndarray, frame_owner: np.ndarray,
                    unit_start: np.ndarray, unit_owner: np.ndarray, cues: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:  # fmt: skip
    """Each unit's where-cue (U, 2), whatever the model: the index stores them so a search can read
    how a window's moving thing travels (search/motion_channel.py), for any model, trained or not.
    `cues`: the frames' `frame_cues_and_strength` when already read."""
    cue, strength = frame_cues_and_strength(frames, frame_owner) if cues is None else cues
    return per_unit_mean(floor_cues(cue, strength), frame_start, frame_end, frame_owner, unit_start, unit_owner).astype(np.float32)


def per_unit_mean(values: np.ndarray, frame_start: np.ndarray, frame_end: np.ndarray, frame_owner: np.ndarray,
                  unit_start: np.ndarray, unit_owner: np.ndarray) -> np.ndarray:  # fmt: skip
    """Per-frame rows (N, K) -> per-unit means (U, K), where token merging made units of several
    frames (a unit that is a frame keeps its row): a frame belongs to the last unit of its video
    starting at or before its centre (videos numbered in the order they come, so the keys ascend
    whatever the owners' own numbers)."""
    if len(unit_start) == len(values):  # a unit is a frame
        return values
    group = lambda o: np.concatenate([[0], np.cumsum(np.diff(np.asarray(o)) != 0)]).astype(np.float64)  # noqa: E731
    centre = (np.asarray(frame_start, np.float64) + np.asarray(frame_end, np.float64)) / 2
    span = max(float(np.max(centre, initial=0.0)), float(np.max(unit_start, initial=0.0))) + 1.0
    unit_key = group(unit_owner) * span + np.asarray(unit_start, np.float64)
    frame_key = group(frame_owner) * span + centre
    unit = np.clip(np.searchsorted(unit_key, frame_key + 1e-9, side="right") - 1, 0, len(unit_start) - 1)
    counts = np.bincount(unit, minlength=len(unit_start)).astype(np.float32)
    sums = np.zeros((len(unit_start), values.shape[1]), np.float64)
    np.add.at(sums, unit, values)  # every column at once (the focus view's are the tower's width)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def widen_state(state: dict, module: TemporalMixer | None, prefix: str = "temporal.") -> dict:
    """A checkpoint's temporal module loaded into one that reads cues: the input columns it lacks
    start at zero (so the loaded model is unchanged until training uses them); into one that reads
    none (`--no-where-cues`), the cue columns are dropped."""
    key = prefix + "fc.weight"
    if module is None or key not in state:
        return state
    have, want = state[key], module.fc.weight
    if have.shape[0] == want.shape[0] and have.shape[1] < want.shape[1]:
        state = dict(state)
        state[key] = torch.cat([have, have.new_zeros(have.shape[0], want.shape[1] - have.shape[1])], dim=1)
    elif have.shape[0] == want.shape[0] and have.shape[1] > want.shape[1]:  # a run without cues: drop their columns (last)
        state = dict(state)
        state[key] = have[:, : want.shape[1]]
    return state


class TemporalMixer(nn.Module):
    def __init__(self, dim: int, hidden: int | None = None, cues: int = 0):
        super().__init__()
        hidden = hidden or dim
        self.cues = int(cues)
        self.fc = nn.Linear(2 * dim + 2 * self.cues, hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, units: Tensor, mask: Tensor | None = None, times: Tensor | None = None, cues: Tensor | None = None) -> Tensor:
        """units [B, T, D] in time order (real units first, padding after), mask [B, T], times [B, T]
        (seconds, unit centres), cues [B, T, cues] (`where_cues`; zeros when not given) -> unit
        vectors [B, T, D], padding left at zero."""
        b, t, _ = units.shape
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=units.device)
        mask = mask.to(torch.bool)
        n = mask.sum(-1, keepdim=True).clamp_min(1)  # [B, 1]
        idx = torch.arange(t, device=units.device).expand(b, t)
        nxt = torch.minimum(idx + 1, n - 1)
        prv = (idx - 1).clamp_min(0)
        take = lambda x, i: torch.gather(x, 1, i.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # noqa: E731
        def across(x: Tensor) -> Tensor:  # the change across a unit's neighbours, per GAP_SECONDS
            change = take(x, nxt) - take(x, prv)
            if times is not None:
                gap = (torch.gather(times, 1, nxt) - torch.gather(times, 1, prv)).clamp_min(1e-3)
                change = change * (GAP_SECONDS / gap).unsqueeze(-1)
            return change

        parts = [units, across(units)]
        if self.cues:  # read after the vectors' columns, so a checkpoint without cues widens with zeros
            cues = units.new_zeros(b, t, self.cues) if cues is None else cues.to(units.dtype)
            parts += [cues, across(cues)]
        residual = self.out(F.gelu(self.fc(torch.cat(parts, dim=-1))))
        mixed = F.normalize(units + residual, dim=-1)
        return mixed * mask.unsqueeze(-1).to(mixed.dtype)


def mix_units_of(head, vectors: np.ndarray, unit_start: np.ndarray, unit_end: np.ndarray, owner: np.ndarray,
                 cues: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The units as a model's fusion head wants them stored: mixed by its temporal module, or as
    they are when it has none (every backbone's encode step calls this, with `unit_cues_of`)."""
    module = getattr(head, "temporal", None) if head is not None else None
    return vectors if module is None else mix_units(module, vectors, unit_start, unit_end, owner, cues)


def _pad_by_owner(rows: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows contiguous per owner -> ([owners, longest, ...] zero-padded, mask [owners, longest])."""
    cuts = np.flatnonzero(np.diff(owner)) + 1
    counts = np.diff(np.concatenate([[0], cuts, [len(owner)]]))
    mask = np.arange(int(counts.max()))[None, :] < counts[:, None]
    padded = np.zeros((len(counts), mask.shape[1], *rows.shape[1:]), np.float32)
    padded[mask] = rows
    return padded, mask


@torch.inference_mode()
def mix_units(module: TemporalMixer, vectors: np.ndarray, unit_start: np.ndarray, unit_end: np.ndarray, owner: np.ndarray,
              cues: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Apply the module to several videos' units at once (units contiguous per owner, in time order),
    as the indexer's encode step returns them; the result is in the same order."""
    if len(vectors) == 0:
        return vectors
    owner = np.asarray(owner)
    padded, mask = _pad_by_owner(np.asarray(vectors, np.float32), owner)
    centres = (np.asarray(unit_start, np.float64) + np.asarray(unit_end, np.float64)) / 2
    times, _ = _pad_by_owner(centres, owner)
    where = None if cues is None or not module.cues else torch.from_numpy(_pad_by_owner(np.asarray(cues, np.float32), owner)[0])
    out = module(torch.from_numpy(padded), torch.from_numpy(mask), torch.from_numpy(times), where)
    return out.numpy()[mask].astype(vectors.dtype, copy=False)
