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

It runs where unit vectors are made (the indexer's encode step), so the stored unit vectors, the
coarse segment means, X-Pool and moment curves all see order at no cost per query.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TemporalMixer", "mix_units", "mix_units_of"]

GAP_SECONDS = 2.0  # the change is expressed per this many seconds


class TemporalMixer(nn.Module):
    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.fc = nn.Linear(2 * dim, hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, units: Tensor, mask: Tensor | None = None, times: Tensor | None = None) -> Tensor:
        """units [B, T, D] in time order (real units first, padding after), mask [B, T], times [B, T]
        (seconds, unit centres) -> unit vectors [B, T, D], padding left at zero."""
        b, t, _ = units.shape
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=units.device)
        mask = mask.to(torch.bool)
        n = mask.sum(-1, keepdim=True).clamp_min(1)  # [B, 1]
        idx = torch.arange(t, device=units.device).expand(b, t)
        nxt = torch.minimum(idx + 1, n - 1)
        prv = (idx - 1).clamp_min(0)
        take = lambda x, i: torch.gather(x, 1, i.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # noqa: E731
        change = take(units, nxt) - take(units, prv)
        if times is not None:
            gap = (torch.gather(times, 1, nxt) - torch.gather(times, 1, prv)).clamp_min(1e-3)
            change = change * (GAP_SECONDS / gap).unsqueeze(-1)
        residual = self.out(F.gelu(self.fc(torch.cat([units, change], dim=-1))))
        mixed = F.normalize(units + residual, dim=-1)
        return mixed * mask.unsqueeze(-1).to(mixed.dtype)


def mix_units_of(head, vectors: np.ndarray, unit_start: np.ndarray, unit_end: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """The units as a model's fusion head wants them stored: mixed by its temporal module, or as
    they are when it has none (every backbone's encode step calls this)."""
    module = getattr(head, "temporal", None) if head is not None else None
    return vectors if module is None else mix_units(module, vectors, unit_start, unit_end, owner)


@torch.inference_mode()
def mix_units(module: TemporalMixer, vectors: np.ndarray, unit_start: np.ndarray, unit_end: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Apply the module to several videos' units at once (units contiguous per owner, in time order),
    as the indexer's encode step returns them; the result is in the same order."""
    if len(vectors) == 0:
        return vectors
    owner = np.asarray(owner)
    cuts = np.flatnonzero(np.diff(owner)) + 1
    bounds = np.concatenate([[0], cuts, [len(owner)]])
    counts = np.diff(bounds)
    width = int(counts.max())
    mask = np.arange(width)[None, :] < counts[:, None]
    d = vectors.shape[1]
    padded = np.zeros((len(counts), width, d), np.float32)
    padded[mask] = vectors
    centres = (np.asarray(unit_start, np.float64) + np.asarray(unit_end, np.float64)) / 2
    times = np.zeros((len(counts), width), np.float32)
    times[mask] = centres
    out = module(torch.from_numpy(padded), torch.from_numpy(mask), torch.from_numpy(times))
    return out.numpy()[mask].astype(vectors.dtype, copy=False)
