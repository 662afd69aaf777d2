"""Text-conditioned pooling of a video's timed unit vectors (frames or merged frames).

Mean pooling blurs a video that shows several things into one vector, so a query about one of them
matches weakly. X-Pool (Gorti et al., CVPR 2022) lets the query choose: the text attends over the
frames and the video is pooled with those weights, one pooled vector per (text, video) pair. The
weights double as the explanation the API returns ("which frames the query attended to").

Three poolers share one surface so evaluation can swap them:

- ``pool(text [Bt, D], frames [Bv, T, D], mask [Bv, T] | None) -> (pooled [Bt, Bv, D], weights [Bt, Bv, T])``
  every text against every video, as contrastive training needs;
- ``similarity(text, frames, mask) -> [Bt, Bv]`` cosine of each text with its pooled video;
- ``rerank(text [D], frames [Bv, T, D], mask) -> (scores [Bv], weights [Bv, T])`` one query against a
  candidate list, the search-time path.

Videos have different numbers of units, so batches are padded and ``mask`` (True = real unit) keeps
padding out: masked units get exactly zero weight, and a video with no real unit scores 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FramePooler",
    "MeanPool",
    "ParameterFreePool",
    "XPool",
    "make_pooler",
    "masked_softmax",
    "mean_pool",
    "POOLERS",
]


def masked_softmax(logits: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last axis that gives padding exactly 0 and an all-padding row all zeros.

    Filling with the dtype's minimum instead of -inf keeps an all-masked row finite (uniform, then
    zeroed), so neither the output nor its gradient ever turns NaN.
    """
    if mask is None:
        return logits.softmax(-1)
    mask = mask.to(torch.bool)
    filled = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
    return filled.softmax(-1) * mask.to(logits.dtype)


def _check(text: Tensor, frames: Tensor, mask: Tensor | None) -> Tensor:
    if text.dim() != 2 or frames.dim() != 3 or text.shape[-1] != frames.shape[-1]:
        raise ValueError(f"expected text [Bt, D] and frames [Bv, T, D], got {tuple(text.shape)} and {tuple(frames.shape)}")
    if mask is None:
        return torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
    if mask.shape != frames.shape[:2]:
        raise ValueError(f"mask must be [Bv, T] = {tuple(frames.shape[:2])}, got {tuple(mask.shape)}")
    return mask.to(torch.bool)


def _pairwise_cosine(text: Tensor, pooled: Tensor) -> Tensor:
    """cos(text_i, pooled_ij) for text [Bt, D] and pooled [Bt, Bv, D] -> [Bt, Bv]."""
    return torch.einsum("td,tvd->tv", F.normalize(text, dim=-1), F.normalize(pooled, dim=-1))


class FramePooler(nn.Module):
    """The shared surface; subclasses implement ``pool`` and may offer a cheaper ``rerank``."""

    def pool(self, text: Tensor, frames: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, text: Tensor, frames: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.pool(text, frames, mask)

    def similarity(self, text: Tensor, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.similarity_and_weights(text, frames, mask)[0]

    def similarity_and_weights(self, text: Tensor, frames: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Scores [Bt, Bv] and weights [Bt, Bv, T] from one pass, since callers usually want both."""
        valid = _check(text, frames, mask)
        pooled, weights = self.pool(text, frames, valid)
        scores = _pairwise_cosine(text, pooled)
        # A learned head maps "nothing attended" to its LayerNorm biases, which can score anything;
        # a video without units has no evidence, so it scores 0.
        return scores * valid.any(-1).to(scores.dtype), weights

    def rerank(self, text: Tensor, frames: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One query [D] against candidates [Bv, T, D] -> (scores [Bv], weights [Bv, T])."""
        scores, weights = self.similarity_and_weights(text.reshape(1, -1), frames, mask)
        return scores[0], weights[0]


def mean_pool(text: Tensor, frames: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """CLIP4Clip meanP in the pooler shape: the plain mean of real units, the same for every text.

    Returned as an expanded view, so the [Bt, Bv, D] result costs the memory of [Bv, D].
    """
    valid = _check(text, frames, mask).to(frames.dtype)
    w = valid / valid.sum(-1, keepdim=True).clamp_min(1.0)
    pooled = torch.einsum("vs,vsd->vd", w, frames)
    bt = text.shape[0]
    return pooled.unsqueeze(0).expand(bt, -1, -1), w.unsqueeze(0).expand(bt, -1, -1)


class MeanPool(FramePooler):
    """The baseline every text-conditioned pooler must beat (no parameters)."""

    def pool(self, text: Tensor, frames: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return mean_pool(text, frames, mask)


class ParameterFreePool(FramePooler):
    """a = softmax(F t / tau), z = normalise(a^T F): X-Pool's idea with nothing to train.

    Text and units are L2-normalised first, because tau is a temperature on cosines (stored vectors
    are unit length already, so this is a no-op for them). Small tau approaches "pick the best unit";
    large tau approaches mean pooling.
    """

    def __init__(self, temperature: float = 0.01):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = float(temperature)

    def pool(self, text: Tensor, frames: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        valid = _check(text, frames, mask)
        t = F.normalize(text, dim=-1)
        f = F.normalize(frames, dim=-1)
        weights = masked_softmax(torch.einsum("td,vsd->tvs", t, f) / self.temperature, valid)
        pooled = F.normalize(torch.einsum("tvs,vsd->tvd", weights, f), dim=-1)
        return pooled, weights

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class XPool(FramePooler):
    """X-Pool's cross-attention head: the text is the query, the units are keys and values.

    Q = LN1(t) W_Q, K = LN1(F) W_K, V = LN1(F) W_V (LN1 shared, so text and units are compared on one
    scale), a = softmax(Q K^T / sqrt(d_head)), o = LN2((a V) W_O), z = LN3(o + dropout(o W_L)).

    Every projection starts as the identity with zero bias, as the reference does: an untrained head
    is then similarity-weighted pooling of the layer-normed units, a sound starting point that
    training only refines. Random projections would start from pooling by noise.
    """

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.0, attention_scale: float = 1.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if attention_scale <= 0:
            raise ValueError("attention_scale must be > 0")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        # times the attention logits (1: the reference's 1/sqrt(d_head)); below 1 softer attention,
        # which generalises better to footage unlike the training set's (README "Where X-Pool loses")
        self.attention_scale = float(attention_scale)
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.linear_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.linear_proj):
            nn.init.eye_(lin.weight)
            nn.init.zeros_(lin.bias)
        for ln in (self.ln1, self.ln2, self.ln3):
            ln.reset_parameters()

    def _scaled(self, logits: Tensor) -> Tensor:
        """The logits at this head's attention scale (the reference's, 1, leaves them as they are)."""
        return logits if self.attention_scale == 1.0 else logits * self.attention_scale

    def _head(self, mixed: Tensor) -> Tensor:
        """From attention output (before W_O) to the pooled vector z."""
        o = self.ln2(self.out_proj(mixed))
        return self.ln3(o + self.dropout(self.linear_proj(o)))

    def pool(self, text: Tensor, frames: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """All Bt x Bv pairs: K and V are projected once per video and shared by every text."""
        valid = _check(text, frames, mask)
        (bt, d), (bv, n, _) = text.shape, frames.shape
        h, dh = self.heads, self.head_dim
        t, f = self.ln1(text), self.ln1(frames)
        q = self.q_proj(t).view(bt, h, dh)
        k = self.k_proj(f).view(bv, n, h, dh)
        v = self.v_proj(f).view(bv, n, h, dh)
        logits = self._scaled(torch.einsum("thd,vshd->tvhs", q, k) / math.sqrt(dh))
        attn = masked_softmax(logits, valid[None, :, None, :])  # [Bt, Bv, H, T]
        mixed = torch.einsum("tvhs,vshd->tvhd", attn, v).reshape(bt, bv, d)
        return self._head(mixed), attn.mean(2)

    def rerank(self, text: Tensor, frames: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One query against Bv candidates without projecting any unit through W_K or W_V.

        Per head, q_h . (f W_K,h + b_K,h) = f . (W_K,h^T q_h) + const, and the constant cancels in the
        softmax; and since the weights sum to 1, sum_t a_t (f_t W_V,h + b_V,h) = (sum_t a_t f_t) W_V,h
        + b_V,h. Folding W_K into the query and applying W_V after pooling turns O(Bv T D^2) of
        projection into O(Bv T D H) dot products plus O(Bv D^2), which is what makes re-ranking a
        long candidate list straight from stored unit vectors cheap. Same result as ``pool``.
        """
        text = text.reshape(1, -1)
        valid = _check(text, frames, mask)
        (bv, _, d), h, dh = frames.shape, self.heads, self.head_dim
        t, f = self.ln1(text[0]), self.ln1(frames)
        q = self.q_proj(t).view(h, dh)
        q_folded = torch.einsum("hk,hke->he", q, self.k_proj.weight.view(h, dh, d))  # [H, D]
        logits = self._scaled(torch.einsum("vse,he->vhs", f, q_folded) / math.sqrt(dh))
        attn = masked_softmax(logits, valid[:, None, :])  # [Bv, H, T]
        f_bar = torch.einsum("vhs,vse->vhe", attn, f)  # per-head pooled LN1(F)
        mixed = torch.einsum("vhe,hke->vhk", f_bar, self.v_proj.weight.view(h, dh, d))
        # the value bias enters with the weights' total: 1, or 0 for a video with no units
        mixed = mixed + self.v_proj.bias.view(h, dh) * attn.sum(-1, keepdim=True)
        z = self._head(mixed.reshape(bv, d))
        scores = torch.einsum("d,vd->v", F.normalize(text[0], dim=-1), F.normalize(z, dim=-1))
        return scores * valid.any(-1).to(scores.dtype), attn.mean(1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, dropout={self.dropout.p}, attention_scale={self.attention_scale}"


POOLERS = {"mean": MeanPool, "param_free": ParameterFreePool, "xpool": XPool}


def make_pooler(name: str, dim: int | None = None, **kwargs) -> FramePooler:
    """Build a pooler by name ("mean", "param_free", "xpool"), so configs and evaluation can compare them."""
    if name not in POOLERS:
        raise ValueError(f"unknown pooler {name!r}; choose one of {sorted(POOLERS)}")
    if name == "xpool":
        if dim is None:
            raise ValueError("xpool needs dim")
        return XPool(dim, **kwargs)
    return POOLERS[name](**kwargs)
