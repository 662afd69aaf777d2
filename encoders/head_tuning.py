"""A short second stage: retune the video X-Pool head and audio fusion's scalars on a trained model's
units, with the video head held near X-Pool's identity start.

Why: trained end to end with the towers, the video head's learned projections fit the renderer the
model trained on. On our held-out renderer round 5's trained head scored below plain mean pooling
(R@1 10.10 vs 12.20 on the selection set, 7.03 vs 9.67 on the report set) while the same head left at
its identity start (untrained, attention four times softer) scored above it (13.24 / 10.77). The
projections, not text-conditioned pooling, are what does not carry over. So the towers stay as
trained and only the head is retrained, on the units the indexer would store, with a penalty on its
distance from the identity start: L2-SP (Li, Grandvalet and Davoine, ICML 2018), which keeps what the
start does well and lets the captions move it only as far as they pay for. The fusion's weight and
gate were trained against the old head's scores and move with it (at a higher rate: single numbers
that must travel far, as in the main trainer).

Everything here works on precomputed unit vectors (~7 s an epoch for 1,020 videos on two cores), so
the stage costs the decode and one pass of the towers over the training videos (5 min here).

The defaults are round 6's (README "X-Pool retuned alone"): anchor 30 against 10 chosen on the held-out
selection set's X-Pool R@1 (13.59 against 12.89; unanchored the block fell to 10.45, below the mean's
12.20); the window weight 2 on its served P@1 (1 / 1.5 / 2 / 3: 70.03 / 72.13 / 72.47 / 71.43).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .fusion import FusionHead
from .xpool import XPool

__all__ = ["HeadTuning", "TunedUnits", "anchor_penalty", "tune_heads"]


@dataclass(frozen=True)
class HeadTuning:
    anchor: float = 30.0  # lambda of lambda * sum ||theta - theta_identity||^2 over the video head
    attention: float = 0.25  # the retuned head's attention scale (xpool.XPool): soft, as generalised best
    window_weight: float = 2.0  # the best event window against the retuned head's score in search (fusion.FusionHead)
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64  # captions per step
    temperature: float = 0.05  # of the InfoNCE softmax over the batch's videos
    scalar_lr_mult: float = 10.0  # the fusion weight and gate against `lr`
    seed: int = 0


@dataclass
class TunedUnits:
    """The training set as the stage sees it: every video's units and audio tokens, every caption's
    text vector and video."""

    frames: Tensor  # [V, T, D]
    frame_mask: Tensor  # [V, T] bool
    audio: Tensor | None  # [V, A, D]
    audio_mask: Tensor | None  # [V, A] bool
    text: Tensor  # [C, D]
    cap_video: np.ndarray  # [C] the video of each caption


def anchor_penalty(module: torch.nn.Module, start: list[Tensor]) -> Tensor:
    """sum ||theta - theta_start||^2 over the module's parameters (L2-SP)."""
    return sum(((p - s) ** 2).sum() for p, s in zip(module.parameters(), start))


def _contrastive(scores: Tensor, owner: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE of captions [B] against the batch's distinct videos [U] (scores [B, U]).

    Captions -> videos is a plain softmax (each caption has one video); videos -> captions averages
    over a video's captions in the batch, since several of one video's captions can share a batch."""
    logits = scores / temperature
    to_video = F.cross_entropy(logits, owner)
    positive = (owner[None, :] == torch.arange(scores.shape[1])[:, None]).to(logits.dtype)  # [U, B]
    to_text = -(F.log_softmax(logits.T, dim=1) * positive).sum(1) / positive.sum(1)
    return to_video + to_text.mean()


def tune_heads(head: FusionHead, units: TunedUnits, cfg: HeadTuning, progress: Callable[[int, int, float], None] | None = None) -> list[dict]:
    """Replace `head.video` with X-Pool at its identity start and train it (anchored there) and the
    fusion scalars on `units`; every other part of the head stays as it was. Returns one row per epoch."""
    torch.manual_seed(cfg.seed)
    head.video = XPool(head.video.dim, head.video.heads, attention_scale=cfg.attention)
    head.window_weight = float(cfg.window_weight)
    start = [p.detach().clone() for p in head.video.parameters()]
    scalars = [head.audio_weight, head.gate_scale, head.gate_bias] if units.audio is not None else []
    trainable = {id(p): p.requires_grad for p in head.parameters()}
    for p in head.parameters():
        p.requires_grad_(False)
    for p in [*head.video.parameters(), *scalars]:
        p.requires_grad_(True)
    groups = [{"params": list(head.video.parameters()), "lr": cfg.lr}]
    if scalars:
        groups.append({"params": scalars, "lr": cfg.lr * cfg.scalar_lr_mult})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    n, bs = len(units.text), min(cfg.batch_size, len(units.text))
    steps_per_epoch = max(1, n // bs)
    total, step, t0, history = steps_per_epoch * cfg.epochs, 0, time.monotonic(), []
    head.train()
    try:
        for epoch in range(1, cfg.epochs + 1):
            order = torch.randperm(n)
            sums = {"video": 0.0, "fused": 0.0, "anchor": 0.0, "total": 0.0}
            for s in range(steps_per_epoch):
                idx = order[s * bs : (s + 1) * bs]
                videos, owner = torch.unique(torch.from_numpy(units.cap_video[idx.numpy()]), return_inverse=True)
                audio = units.audio[videos] if units.audio is not None else None
                amask = units.audio_mask[videos] if units.audio_mask is not None else None
                out = head.scores(units.text[idx], units.frames[videos], units.frame_mask[videos], audio, amask)
                parts = {"video": _contrastive(out["video"], owner, cfg.temperature)}
                if scalars:
                    parts["fused"] = _contrastive(out["fused"], owner, cfg.temperature)
                parts["anchor"] = cfg.anchor * anchor_penalty(head.video, start)
                loss = sum(parts.values())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                for k, v in parts.items():
                    sums[k] += float(v.detach())
                sums["total"] += float(loss.detach())
                if progress:
                    progress(step, total, float(loss.detach()))
            row = {"epoch": epoch, "step": step, **{k: v / steps_per_epoch for k, v in sums.items() if k != "fused" or scalars},
                   "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
            history.append(row)
    finally:
        head.eval()
        for p in head.parameters():
            p.requires_grad_(trainable.get(id(p), True))
    return history
