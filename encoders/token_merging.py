"""Temporal token merging inside the open_clip image tower (ToMe, Bolya et al.; TempMe, Shen et al.).

Why: a sampled video is mostly redundant. Within a frame, sky and walls cover many patches that say
the same thing; across neighbouring frames, the whole background repeats. A ViT pays for every token
in every layer, so we merge tokens that carry the same content and let each merged token stand for
the patches (and frames) it absorbed:

- **Bipartite soft matching** (ToMe), after attention in a block: the tokens of a unit are split into
  sets A and B, every a is scored against every b by the cosine of their attention keys (mean over
  heads), each a keeps its best b, and the r best-scoring pairs are merged by size-weighted average
  (x_b <- (s_a x_a + s_b x_b) / (s_a + s_b), s_b <- s_a + s_b). Matching a only against B (never A
  against A) is what makes it one batched matrix product and one argsort, with no iteration.
- **Proportional attention**: a merged token adds log(size) to every attention logit that looks at it,
  so it weighs as much as the tokens it replaced. Merging two identical tokens is then exactly
  neutral, which keeps an off-the-shelf model's attention meaning what it meant.
- **Temporal grouping** (TempMe): early layers merge within each frame; at the configured layers the
  tokens of neighbouring units are concatenated (frame pairs, then clips of 4, ...) and the first
  merge after grouping matches the earlier frames' tokens against the later ones', so a background
  shared by consecutive frames is paid for once from then on. Later layers keep merging inside the
  (wider) unit.

Unit vectors. Each frame keeps its own CLS token through the grouped layers (`cls=each`, default);
the CLS tokens are never matched. A CLS token of a grouped unit attends to the tokens of all frames
of its unit, goes through the model's own `ln_post` and `proj` like any image's CLS, and the unit
vector is the normalised mean of its frames' normalised vectors - exactly the meanP pooling the
store applies to unmerged frames. So the vector lives in the space the text tower was trained
against, and no untrained operation (such as averaging residual streams) sits between them. With
`cls=mean` the CLS tokens of the grouped frames are merged into one token of size g instead (one
token per unit instead of g; slightly cheaper, further from meanP). Both are exact when the grouped
frames are identical: duplicated tokens under proportional attention are the same as one token of
twice the size.

Every merge of the same layer removes the same number of tokens from each unit of the same shape, so
units stay in dense [B, N, C] batches. Units that cannot be grouped fully (the tail of a video whose
length the group size does not divide) form a second, smaller batch ("cohort") that follows the same
rules; nothing is padded and nothing is looped over per token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import nn

__all__ = [
    "MergeConfig",
    "VideoUnits",
    "RECOMMENDED",
    "recommended_config",
    "recommended_for",
    "merge_config_for",
    "Match",
    "alternate_split",
    "member_split",
    "bipartite_match",
    "merge_wavg",
    "attention_with_keys",
    "apply_token_merging",
    "remove_token_merging",
    "merge_config_of",
    "forward_units",
    "UnitFeatures",
    "encode_video_units",
    "encode_many_video_units",
    "token_schedule",
]


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


class MergeConfig(BaseModel):
    """Which layers merge and how much; its `canonical()` string goes into the model fingerprint.

    r:       tokens merged per frame in each block that is not a grouping block (a unit of g frames
             merges r*g), at most half of the unit's patch tokens per block.
    groups:  ((frames per unit, block index), ...): before that block, neighbouring units are
             concatenated into units of that many frames (each size divides the next).
    cross:   fraction of the earlier frames' patch tokens merged into the later frames' tokens in a
             grouping block (the cross-frame merge).
    prop_attn: proportional attention (log size added to attention logits).
    cls:     "each" keeps every frame's CLS token (unit vector = meanP of them); "mean" merges them.
    """

    model_config = ConfigDict(frozen=True)

    r: int = 0
    groups: tuple[tuple[int, int], ...] = ()
    cross: float = 0.5
    prop_attn: bool = True
    cls: Literal["each", "mean"] = "each"

    @field_validator("r")
    @classmethod
    def _r_non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("r must be >= 0")
        return v

    @field_validator("cross")
    @classmethod
    def _cross_fraction(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError("cross must be in [0, 1]")
        return float(v)

    @model_validator(mode="after")
    def _groups_nest(self) -> "MergeConfig":
        prev_size, prev_layer = 1, -1
        for size, layer in self.groups:
            if size < 2 or size <= prev_size or size % prev_size:
                raise ValueError(
                    f"group sizes must grow and each must divide the next (got {size} after {prev_size})"
                )
            if layer <= prev_layer or layer < 0:
                raise ValueError(f"grouping layers must be increasing and >= 0 (got {layer} after {prev_layer})")
            prev_size, prev_layer = size, layer
        return self

    @property
    def enabled(self) -> bool:
        return self.r > 0 or bool(self.groups)

    @property
    def max_group(self) -> int:
        return self.groups[-1][0] if self.groups else 1

    def canonical(self) -> str:
        """Stable text form for the fingerprint; "off" when nothing merges (vectors = plain frames)."""
        if not self.enabled:
            return "off"
        parts = [f"tome:r={self.r};prop={int(self.prop_attn)}"]
        if self.groups:
            groups = ",".join(f"{g}@{layer}" for g, layer in self.groups)
            parts.append(f"temporal:groups={groups};cross={self.cross:g};cls={self.cls}")
        return ";".join(parts)

    def __str__(self) -> str:
        return self.canonical()

    @classmethod
    def parse(cls, text: str | None) -> "MergeConfig":
        """Inverse of `canonical()`; also takes "off"/"none"/"" and keys in any order."""
        text = (text or "").strip()
        if text.lower() in ("", "off", "none", "0"):
            return cls()
        fields: dict = {}
        for item in re.split(r"[;]", text):
            item = item.strip()
            if not item:
                continue
            item = re.sub(r"^(tome|temporal):", "", item)
            if "=" not in item:
                raise ValueError(f"token-merging setting '{item}' is not key=value (in '{text}')")
            key, value = (s.strip() for s in item.split("=", 1))
            if key == "r":
                fields["r"] = int(value)
            elif key == "prop":
                fields["prop_attn"] = value.lower() in ("1", "true", "yes", "on")
            elif key == "groups":
                pairs = []
                for g in filter(None, (s.strip() for s in value.split(","))):
                    size, _, layer = g.partition("@")
                    if not layer:
                        raise ValueError(f"group '{g}' must read SIZE@LAYER (e.g. 2@4)")
                    pairs.append((int(size), int(layer)))
                fields["groups"] = tuple(pairs)
            elif key == "cross":
                fields["cross"] = float(value)
            elif key == "cls":
                fields["cls"] = value
            else:
                raise ValueError(f"unknown token-merging setting '{key}' (in '{text}')")
        return cls(**fields)


def recommended_config(n_layers: int) -> MergeConfig:
    """The default schedule for a tower of `n_layers` blocks: frame pairs from a sixth of the depth,
    clips of 4 from a third, one token merged per frame in each of the other blocks, 80% of the
    earlier frames' tokens merged across at each grouping.

    Grouping early is what buys the speed (most blocks then run on temporally merged tokens), and it
    is where it is safest: a static patch gives near-identical keys in consecutive frames in early
    blocks, so the cross-frame merges it forces are mostly exact duplicates. Per-frame ToMe is kept
    light (r=1) because on ViT-B-32's 49 patches it moves vectors far more than temporal merging
    does for the same FLOPs (bench/token_merging.py, drift_vs_spread).
    """
    q = max(1, round(n_layers / 6))
    h = max(q + 1, round(n_layers / 3))
    if h >= n_layers:
        return MergeConfig(r=RECOMMENDED_R)
    return MergeConfig(r=RECOMMENDED_R, groups=((2, q), (4, h)), cross=RECOMMENDED_CROSS)


def recommended_for(model: nn.Module) -> MergeConfig:
    return recommended_config(len(_vision_tower(model).transformer.resblocks))


def merge_config_for(model: nn.Module, setting: "str | MergeConfig | None") -> MergeConfig:
    """A user setting (CLI flag, env var) to a config: "recommended"/"auto" picks recommended_for(model),
    anything else is parsed (`off`, or a canonical string). Validated against the model's depth here,
    so a schedule for a deeper tower fails when the model loads, not mid-indexing."""
    if isinstance(setting, MergeConfig):
        config = setting
    elif (setting or "").strip().lower() in ("recommended", "auto", "default"):
        config = recommended_for(model)
    else:
        config = MergeConfig.parse(setting)
    depth = len(_vision_tower(model).transformer.resblocks)
    for _, layer in config.groups:
        if layer >= depth:
            raise ValueError(f"token merging groups at block {layer}, but the tower has {depth} blocks ({config})")
    return config


RECOMMENDED_R = 1
RECOMMENDED_CROSS = 0.8
RECOMMENDED = recommended_config(12)  # ViT-B-32's schedule


# --------------------------------------------------------------------------------------------------
# Matching and merging (batched; shared by the per-frame and the temporal stages)
# --------------------------------------------------------------------------------------------------


@dataclass
class Match:
    """Which tokens merge, as indices, so one decision can be applied to several tensors."""

    n_protected: int
    a_idx: torch.Tensor  # (Na,) token positions of set A
    b_idx: torch.Tensor  # (Nb,) token positions of set B
    src: torch.Tensor  # (B, r) positions within A that merge away
    dst: torch.Tensor  # (B, r) positions within B they merge into
    keep: torch.Tensor  # (B, Na - r) positions within A that stay, in their original order


def alternate_split(n_tokens: int, n_protected: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe's split: alternate tokens, so spatial neighbours (the likeliest duplicates) face each other."""
    a = torch.arange(n_protected, n_tokens, 2, device=device)
    b = torch.arange(n_protected + 1, n_tokens, 2, device=device)
    return a, b


def member_split(n_protected: int, members: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-frame split: even members' tokens in A, odd members' in B, so every merge spans frames.

    An alternate split would put a static patch of frame 1 and the same patch of frame 2 in the same
    set whenever a frame has an even number of tokens, and they could never meet.
    """
    a, b, start = [], [], n_protected
    for j, n in enumerate(members):
        (a if j % 2 == 0 else b).append(torch.arange(start, start + n, device=device))
        start += n
    empty = torch.zeros(0, dtype=torch.long, device=device)
    return (torch.cat(a) if a else empty), (torch.cat(b) if b else empty)


def bipartite_match(
    metric: torch.Tensor,
    r: int,
    n_protected: int = 1,
    a_idx: torch.Tensor | None = None,
    b_idx: torch.Tensor | None = None,
) -> Match:
    """Pick the r most similar (a, b) pairs by key cosine; protected tokens (CLS) never take part.

    metric: (B, N, d). The r pairs are chosen per row of the batch; several a may pick the same b
    (that b then absorbs all of them), which is what makes the choice a single argmax.
    """
    if a_idx is None or b_idx is None:
        a_idx, b_idx = alternate_split(metric.shape[1], n_protected, metric.device)
    r = max(0, min(int(r), a_idx.numel())) if b_idx.numel() else 0
    m = F.normalize(metric.float(), dim=-1)
    batch = metric.shape[0]
    if r == 0:
        empty = torch.zeros(batch, 0, dtype=torch.long, device=metric.device)
        keep = torch.arange(a_idx.numel(), device=metric.device).expand(batch, -1)
        return Match(n_protected, a_idx, b_idx, empty, empty, keep)
    scores = m[:, a_idx] @ m[:, b_idx].transpose(1, 2)  # (B, Na, Nb)
    best, best_b = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    src = order[:, :r]
    keep = order[:, r:].sort(dim=-1).values
    dst = best_b.gather(1, src)
    return Match(n_protected, a_idx, b_idx, src, dst, keep)


def merge_wavg(x: torch.Tensor, size: torch.Tensor, match: Match) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a match: size-weighted averages, sizes added. Output order: protected, kept A, B.

    Sums run in float32 (bf16 towers included) so a token that absorbs many others keeps its mean.
    B tokens that absorb nothing are passed through bit-exact.
    """
    p, dim = match.n_protected, x.shape[-1]
    wide = torch.promote_types(x.dtype, torch.float32)
    xf, s = x.to(wide), size.to(torch.promote_types(size.dtype, torch.float32))
    xa, xb = xf[:, match.a_idx], xf[:, match.b_idx]
    sa, sb = s[:, match.a_idx], s[:, match.b_idx]
    src = match.src.unsqueeze(-1)
    dst = match.dst.unsqueeze(-1)
    num = (xb * sb).scatter_add(1, dst.expand(-1, -1, dim), (xa * sa).gather(1, src.expand(-1, -1, dim)))
    den = sb.scatter_add(1, dst, sa.gather(1, src))
    xb_new = torch.where(den == sb, xb, num / den)
    keep = match.keep.unsqueeze(-1)
    x_out = torch.cat([xf[:, :p], xa.gather(1, keep.expand(-1, -1, dim)), xb_new], dim=1)
    s_out = torch.cat([s[:, :p], sa.gather(1, keep), den], dim=1)
    return x_out.to(x.dtype), s_out


def merge_protected(x: torch.Tensor, size: torch.Tensor, n_protected: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Collapse the leading protected tokens (the grouped frames' CLS) into one, size-weighted."""
    if n_protected <= 1:
        return x, size
    s = size[:, :n_protected].to(torch.promote_types(size.dtype, torch.float32))
    wide = torch.promote_types(x.dtype, torch.float32)
    cls = (x[:, :n_protected].to(wide) * s).sum(1, keepdim=True) / s.sum(1, keepdim=True)
    return (
        torch.cat([cls.to(x.dtype), x[:, n_protected:]], dim=1),
        torch.cat([s.sum(1, keepdim=True), size[:, n_protected:]], dim=1),
    )


# --------------------------------------------------------------------------------------------------
# One block with merging (reads the block's own weights; works for both open_clip block kinds)
# --------------------------------------------------------------------------------------------------


def _heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    b, n, c = t.shape
    return t.view(b, n, n_heads, c // n_heads).transpose(1, 2)


def attention_with_keys(
    attn: nn.Module, h: torch.Tensor, log_size: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention of an open_clip block that also returns the keys (mean over heads) for matching.

    open_clip's default block (what ViT-B-32 and our tiny config build) wraps nn.MultiheadAttention,
    which neither takes a per-key bias nor returns its keys, so we compute it from its weights; the
    custom block's `Attention` (qk-norm, scaled cosine, head scale, inner norm) is handled the same way.
    log_size: (B, 1, 1, N) added to the logits (proportional attention), or None.
    """
    b, n, c = h.shape
    if isinstance(attn, nn.MultiheadAttention):
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
            raise NotImplementedError("token merging needs a plain self-attention MultiheadAttention")
        qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = (_heads(t, attn.num_heads) for t in qkv.chunk(3, dim=-1))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=log_size)
        o = o.transpose(1, 2).reshape(b, n, c)
        return attn.out_proj(o), k.mean(1)
    if hasattr(attn, "in_proj_weight") and hasattr(attn, "num_heads"):  # open_clip.transformer.Attention
        qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = (_heads(t, attn.num_heads) for t in qkv.chunk(3, dim=-1))
        if getattr(attn, "logit_scale", None) is not None:
            k = F.normalize(k, dim=-1)
            logits = F.normalize(q, dim=-1) @ k.transpose(-1, -2)
            logits = logits * torch.clamp(attn.logit_scale, max=attn.logit_scale_max).exp()
            if log_size is not None:
                logits = logits + log_size
            o = logits.softmax(dim=-1) @ v
        else:
            q, k = attn.ln_q(q), attn.ln_k(k)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=log_size)
        if getattr(attn, "head_scale", None) is not None:
            o = o * attn.head_scale
        o = attn.ln_inner(o.transpose(1, 2).reshape(b, n, c))
        return attn.out_drop(attn.out_proj(o)), k.mean(1)
    raise NotImplementedError(f"token merging does not know attention module {type(attn).__name__}")


def _block(
    blk: nn.Module, x: torch.Tensor, size: torch.Tensor | None, merge, prop_attn: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The open_clip residual block with a merge between attention and MLP (where ToMe puts it).

    size is None while every token still has size 1: then no bias is passed and the attention kernel
    takes its fast path. `merge(x, size, keys)` returns the merged (x, size).
    """
    log_size = None
    if prop_attn and size is not None:
        log_size = size.log().squeeze(-1)[:, None, None, :].to(x.dtype)
    a, keys = attention_with_keys(blk.attn, blk.ln_1(x), log_size)
    ln_attn = getattr(blk, "ln_attn", None)
    if ln_attn is not None:
        a = ln_attn(a)
    x = x + blk.ls_1(a)
    x, size = merge(x, size, keys)
    x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
    return x, size


# --------------------------------------------------------------------------------------------------
# The tower, unit by unit
# --------------------------------------------------------------------------------------------------


@dataclass
class _Cohort:
    """Units with the same token layout, batched. Rows are units; unit bookkeeping is per row."""

    x: torch.Tensor  # (B, N, C)
    size: torch.Tensor | None  # (B, N, 1) float32, None while all sizes are 1
    n_cls: int  # leading protected tokens (one CLS per frame with cls=each)
    members: tuple[int, ...]  # patch-token count of each member unit, in time order (for the cross split)
    video: np.ndarray  # (B,) video index
    pos: np.ndarray  # (B,) position of the unit's first frame within its video
    lo: np.ndarray  # (B,) first frame (index into the input frames)
    hi: np.ndarray  # (B,) one past the last frame

    @property
    def n_frames(self) -> int:
        return int(self.hi[0] - self.lo[0])


class UnitFeatures(NamedTuple):
    features: torch.Tensor  # (U, D) unit vectors, L2-normalised
    lo: np.ndarray  # (U,) first frame of each unit (index into the input frames)
    hi: np.ndarray  # (U,) one past its last frame
    video: np.ndarray  # (U,) video index of each unit
    tokens: np.ndarray  # (U,) tokens the unit has left after the last block (CLS included)


def _vision_tower(model: nn.Module) -> nn.Module:
    visual = getattr(model, "visual", model)
    if not (hasattr(visual, "transformer") and hasattr(visual, "conv1") and hasattr(visual, "proj")):
        raise TypeError(
            f"token merging patches open_clip VisionTransformer towers; got {type(visual).__name__} "
            "(timm- or ModifiedResNet-based towers are not supported)"
        )
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") not in ("tok", "avg"):
        raise NotImplementedError("token merging supports towers pooled by class token or token average")
    return visual


def _embed(visual: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    if hasattr(visual, "_embeds"):  # open_clip >= 3: patchify, CLS, positions, patch dropout, ln_pre
        return visual._embeds(frames)
    x = visual.conv1(frames)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(visual.patch_dropout(x))


def _intra_merge(r_per_frame: int, n_frames: int, n_cls: int):
    """Merge inside each unit (alternate split), r per frame of the unit, at most half its patches."""

    def merge(x, size, keys):
        n_patch = x.shape[1] - n_cls
        r = min(r_per_frame * n_frames, n_patch // 2)
        if r <= 0:
            return x, size
        match = bipartite_match(keys, r, n_cls)
        return merge_wavg(x, _sizes(x, size), match)

    return merge


def _cross_merge(cross: float, n_cls: int, members: tuple[int, ...]):
    """Merge across the members of a freshly grouped unit (earlier frames' tokens into later ones')."""

    def merge(x, size, keys):
        a_idx, b_idx = member_split(n_cls, members, x.device)
        r = int(round(cross * a_idx.numel())) if b_idx.numel() else 0
        if r <= 0:
            return x, size
        match = bipartite_match(keys, r, n_cls, a_idx, b_idx)
        return merge_wavg(x, _sizes(x, size), match)

    return merge


def _sizes(x: torch.Tensor, size: torch.Tensor | None) -> torch.Tensor:
    if size is not None:
        return size
    return torch.ones(x.shape[0], x.shape[1], 1, device=x.device, dtype=torch.float32)


def _cls_first(parts: list[torch.Tensor], n_cls: list[int]) -> torch.Tensor:
    """Concatenate members' tokens with all CLS tokens in front, then the members' patches in order."""
    return torch.cat([t[:, :k] for t, k in zip(parts, n_cls)] + [t[:, k:] for t, k in zip(parts, n_cls)], dim=1)


def _regroup(cohorts: list[_Cohort], group: int, config: MergeConfig) -> list[_Cohort]:
    """Concatenate neighbouring units of each video into units of `group` frames.

    A new unit takes the existing units whose first frame falls in the same `group`-frame bucket of
    its video; the earlier sizes divide `group`, so buckets never cut a unit. Units are gathered by
    index per member position; the per-unit Python here is bookkeeping, not per-token work.
    """
    rows = []  # (video, pos, cohort, row)
    for ci, c in enumerate(cohorts):
        for i in range(len(c.video)):
            rows.append((int(c.video[i]), int(c.pos[i]), ci, i))
    rows.sort()
    by_layout: dict[tuple[int, ...], list[list[tuple[int, int]]]] = {}
    start = 0
    while start < len(rows):
        v, p = rows[start][0], rows[start][1]
        end = start + 1
        while end < len(rows) and rows[end][0] == v and rows[end][1] // group == p // group:
            end += 1
        members = [(ci, i) for _, _, ci, i in rows[start:end]]
        by_layout.setdefault(tuple(ci for ci, _ in members), []).append(members)
        start = end

    out = []
    for layout, units in by_layout.items():
        parts = []
        for j, ci in enumerate(layout):
            c = cohorts[ci]
            idx = torch.tensor([u[j][1] for u in units], device=c.x.device)
            parts.append((c, idx))
        first_c, first_idx = parts[0]
        last_c, last_idx = parts[-1]
        n_cls_each = [c.n_cls for c, _ in parts]
        x = _cls_first([c.x[idx] for c, idx in parts], n_cls_each)
        size = None
        if any(c.size is not None for c, _ in parts):
            size = _cls_first([_sizes(c.x, c.size)[idx] for c, idx in parts], n_cls_each)
        n_cls = sum(n_cls_each)
        if config.cls == "mean" and n_cls > 1:
            x, size = merge_protected(x, _sizes(x, size), n_cls)
            n_cls = 1
        fi, li = first_idx.cpu().numpy(), last_idx.cpu().numpy()
        out.append(
            _Cohort(
                x=x,
                size=size,
                n_cls=n_cls,
                members=tuple(c.x.shape[1] - c.n_cls for c, _ in parts),
                video=first_c.video[fi],
                pos=first_c.pos[fi],
                lo=first_c.lo[fi],
                hi=last_c.hi[li],
            )
        )
    return out


def _coalesce(cohorts: list[_Cohort]) -> list[_Cohort]:
    """Re-batch cohorts whose token layout became the same, so each block runs as few times as possible."""
    keyed: dict[tuple[int, int, int], list[_Cohort]] = {}
    for c in cohorts:
        keyed.setdefault((c.x.shape[1], c.n_cls, c.n_frames), []).append(c)
    out = []
    for group in keyed.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        sized = any(c.size is not None for c in group)
        out.append(
            _Cohort(
                x=torch.cat([c.x for c in group]),
                size=torch.cat([_sizes(c.x, c.size) for c in group]) if sized else None,
                n_cls=group[0].n_cls,
                members=(group[0].x.shape[1] - group[0].n_cls,),
                video=np.concatenate([c.video for c in group]),
                pos=np.concatenate([c.pos for c in group]),
                lo=np.concatenate([c.lo for c in group]),
                hi=np.concatenate([c.hi for c in group]),
            )
        )
    return out


def _pool(visual: nn.Module, c: _Cohort) -> torch.Tensor:
    """Unit vectors through the tower's own head: meanP of the frames' CLS vectors, or a weighted token mean."""
    if getattr(visual, "pool_type", "tok") == "avg":
        x, s = c.x[:, c.n_cls :], _sizes(c.x, c.size)[:, c.n_cls :]
        if not getattr(visual, "final_ln_after_pool", False):
            x = visual.ln_post(x)
        pooled = (x.float() * s).sum(1) / s.sum(1)
        pooled = pooled.to(x.dtype)
        if getattr(visual, "final_ln_after_pool", False):
            pooled = visual.ln_post(pooled)
        feats = pooled @ visual.proj if visual.proj is not None else pooled
        return F.normalize(feats.float(), dim=-1)
    cls = visual.ln_post(c.x[:, : c.n_cls])
    feats = cls @ visual.proj if visual.proj is not None else cls
    feats = F.normalize(feats.float(), dim=-1)
    if c.n_cls > 1:
        feats = F.normalize(feats.mean(1), dim=-1)
    else:
        feats = feats[:, 0]
    return feats


def forward_units(
    model: nn.Module,
    frames: torch.Tensor,
    config: MergeConfig | None = None,
    video_index: np.ndarray | Sequence[int] | None = None,
    layer_tokens: list[float] | None = None,
) -> UnitFeatures:
    """Run the image tower with merging over frames in temporal order; one vector per temporal unit.

    frames: (T, 3, S, S), normalised like the model's preprocessing. video_index: (T,) which video
    each frame belongs to (frames of one video contiguous and in time order); units never span two
    videos. Differentiable (training can run with merging); the caller picks grad or inference mode.
    layer_tokens, when given, receives the mean tokens per frame each block processed (attention
    input), for the benchmark.
    """
    config = config if config is not None else merge_config_of(model)
    visual = _vision_tower(model)
    blocks = list(visual.transformer.resblocks)
    for _, layer in config.groups:
        if layer >= len(blocks):
            raise ValueError(f"grouping at block {layer}, but the tower has {len(blocks)} blocks")
    t = frames.shape[0]
    if t == 0:
        raise ValueError("forward_units needs at least one frame")
    video = np.zeros(t, dtype=np.int64) if video_index is None else np.asarray(video_index, dtype=np.int64)
    if video.shape != (t,):
        raise ValueError(f"video_index must have one entry per frame ({t}), got shape {video.shape}")
    change = np.r_[True, video[1:] != video[:-1]]
    starts = np.flatnonzero(change)
    pos = np.arange(t) - np.repeat(starts, np.diff(np.r_[starts, t]))

    dtype = visual.conv1.weight.dtype
    x = _embed(visual, frames.to(dtype))
    cohorts = [_Cohort(x, None, 1, (x.shape[1] - 1,), video, pos, np.arange(t), np.arange(t) + 1)]
    group_at = {layer: g for g, layer in config.groups}
    for li, blk in enumerate(blocks):
        grouping = li in group_at
        if grouping:
            cohorts = _regroup(cohorts, group_at[li], config)
        if layer_tokens is not None:
            layer_tokens.append(sum(c.x.shape[0] * c.x.shape[1] for c in cohorts) / t)
        new = []
        for c in cohorts:
            if grouping and len(c.members) > 1:
                merge = _cross_merge(config.cross, c.n_cls, c.members)
            else:
                merge = _intra_merge(config.r, c.n_frames, c.n_cls)
            c.x, c.size = _block(blk, c.x, c.size, merge, config.prop_attn)
            c.members = (c.x.shape[1] - c.n_cls,)
            new.append(c)
        cohorts = _coalesce(new) if grouping else new

    feats = torch.cat([_pool(visual, c) for c in cohorts])
    lo = np.concatenate([c.lo for c in cohorts])
    hi = np.concatenate([c.hi for c in cohorts])
    vid = np.concatenate([c.video for c in cohorts])
    tokens = np.concatenate([np.full(len(c.lo), c.x.shape[1]) for c in cohorts])
    order = np.argsort(lo, kind="stable")  # frames of a video are contiguous: input order = video, time
    feats = feats[torch.as_tensor(order, device=feats.device)]
    return UnitFeatures(feats, lo[order], hi[order], vid[order], tokens[order])


def token_schedule(config: MergeConfig, n_tokens: int, n_layers: int, n_frames: int) -> list[float]:
    """Mean tokens per frame entering each block for `n_frames` frames of one video, without running a model.

    Mirrors forward_units' rules, for choosing schedules and for the benchmark's token figures.
    """
    units = [(1, 1, n_tokens - 1)] * n_frames  # (frames, n_cls, patches)
    group_at = {layer: g for g, layer in config.groups}
    out = []
    for li in range(n_layers):
        if li in group_at:
            g, grouped, i = group_at[li], [], 0
            pos = np.cumsum([0] + [u[0] for u in units])
            while i < len(units):
                j = i + 1
                while j < len(units) and pos[j] // g == pos[i] // g:
                    j += 1
                members = units[i:j]
                fr, nc = sum(m[0] for m in members), sum(m[1] for m in members)
                patches = sum(m[2] for m in members)
                if config.cls == "mean":
                    nc = 1
                grouped.append((fr, nc, patches, [m[2] for m in members]))
                i = j
            out.append(sum(u[1] + u[2] for u in grouped) / n_frames)
            units = []
            for fr, nc, patches, members in grouped:
                if len(members) > 1:
                    na = sum(m for k, m in enumerate(members) if k % 2 == 0)
                    nb = patches - na
                    r = min(int(round(config.cross * na)), na) if nb else 0
                else:
                    r = min(config.r * fr, patches // 2)
                units.append((fr, nc, patches - r))
        else:
            out.append(sum(u[1] + u[2] for u in units) / n_frames)
            units = [(fr, nc, p - min(config.r * fr, p // 2)) for fr, nc, p in units]
    return out


# --------------------------------------------------------------------------------------------------
# Patching an open_clip model
# --------------------------------------------------------------------------------------------------


class _MergingForward:
    """Mixin whose forward runs the merging schedule on each image alone (plain encode_image calls).

    A batch of images has no time order, so only per-frame ToMe applies here; temporal grouping
    needs `encode_video_units`, which knows which frames are neighbours.
    """

    def forward(self, x: torch.Tensor):
        config: MergeConfig = self._merge_config
        if not config.enabled:
            return super().forward(x)
        return _forward_pooled(self, x, config)


def _forward_pooled(visual: nn.Module, x: torch.Tensor, config: MergeConfig) -> torch.Tensor:
    """Per-image pooled features (not normalised), as open_clip's VisionTransformer.forward returns them."""
    blocks = list(visual.transformer.resblocks)
    h = _embed(visual, x.to(visual.conv1.weight.dtype))
    n = len(x)
    c = _Cohort(h, None, 1, (h.shape[1] - 1,), np.arange(n), np.zeros(n, np.int64), np.arange(n), np.arange(n) + 1)
    for blk in blocks:
        c.x, c.size = _block(blk, c.x, c.size, _intra_merge(config.r, 1, 1), config.prop_attn)
    if getattr(visual, "pool_type", "tok") == "avg":
        s = _sizes(c.x, c.size)[:, 1:]
        tokens = c.x[:, 1:]
        if getattr(visual, "final_ln_after_pool", False):
            pooled = visual.ln_post(((tokens.float() * s).sum(1) / s.sum(1)).to(tokens.dtype))
        else:
            tokens = visual.ln_post(tokens)
            pooled = ((tokens.float() * s).sum(1) / s.sum(1)).to(tokens.dtype)
    else:
        normed = visual.ln_post(c.x)
        pooled, tokens = normed[:, 0], normed[:, 1:]
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    if getattr(visual, "output_tokens", False):
        return pooled, tokens
    return pooled


def apply_token_merging(model: nn.Module, config: MergeConfig | str) -> nn.Module:
    """Patch an open_clip model (or its VisionTransformer) in place to merge tokens; returns it.

    The class of `model.visual` is swapped for a subclass (weights, state_dict and parameters are
    untouched, so checkpoints load and save as before). Calling it again replaces the settings; a
    disabled config makes forward the original one. `encode_image` then merges within each image;
    `encode_video_units` additionally merges across neighbouring frames.
    """
    config = merge_config_for(model, config)
    visual = _vision_tower(model)
    if not isinstance(visual, _MergingForward):
        base = type(visual)
        visual.__class__ = type(f"Merging{base.__name__}", (_MergingForward, base), {})
    visual._merge_config = config
    return model


def remove_token_merging(model: nn.Module) -> nn.Module:
    visual = _vision_tower(model)
    if isinstance(visual, _MergingForward):
        visual.__class__ = [b for b in type(visual).__mro__[1:] if not issubclass(b, _MergingForward)][0]
        del visual._merge_config
    return model


def merge_config_of(model: nn.Module) -> MergeConfig:
    """The settings a model was patched with ("off" when unpatched), for its fingerprint."""
    visual = getattr(model, "visual", model)
    return getattr(visual, "_merge_config", MergeConfig())


# --------------------------------------------------------------------------------------------------
# Indexing entry points
# --------------------------------------------------------------------------------------------------


class VideoUnits(NamedTuple):
    vectors: np.ndarray  # (U, D) float32, L2-normalised
    start: np.ndarray  # (U,) seconds: union of the unit's frame spans
    end: np.ndarray  # (U,)


def _chunks(video: np.ndarray, pos: np.ndarray, max_group: int, batch_frames: int) -> list[tuple[int, int]]:
    """Cut points that never split a group: a new video or a position that starts a max-size group."""
    t = len(video)
    cuttable = np.flatnonzero((pos % max_group == 0) | np.r_[True, video[1:] != video[:-1]])
    cuts, prev = [0], 0
    for c in [*cuttable[1:].tolist(), t]:  # neighbouring candidates are <= max_group <= batch_frames apart
        if c - cuts[-1] > batch_frames and prev > cuts[-1]:
            cuts.append(prev)
        prev = c
    cuts.append(t)
    return list(zip(cuts[:-1], cuts[1:]))


def encode_many_video_units(
    model: nn.Module,
    frames: torch.Tensor,
    unit_start: np.ndarray,
    unit_end: np.ndarray,
    video_index: np.ndarray,
    config: MergeConfig | None = None,
    batch_frames: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Several videos' frames at once (each video's frames contiguous, in time order).

    Returns (vectors (U, D), start (U,), end (U,), video (U,)), units ordered by video then time.
    Frames go through the tower in batches of about `batch_frames`, cut only between groups.
    """
    config = config if config is not None else merge_config_of(model)
    video = np.asarray(video_index, dtype=np.int64)
    unit_start, unit_end = np.asarray(unit_start, dtype=np.float64), np.asarray(unit_end, dtype=np.float64)
    t = len(video)
    if not (frames.shape[0] == t == len(unit_start) == len(unit_end)):
        raise ValueError("frames, unit_start, unit_end and video_index must have one entry per frame")
    if t == 0:
        dim = int(_vision_tower(model).output_dim)
        return np.zeros((0, dim), np.float32), np.zeros(0), np.zeros(0), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, video[1:] != video[:-1]])
    pos = np.arange(t) - np.repeat(starts, np.diff(np.r_[starts, t]))
    batch_frames = max(config.max_group, batch_frames - batch_frames % config.max_group)
    vecs, s, e, v = [], [], [], []
    with torch.inference_mode():
        for a, b in _chunks(video, pos, config.max_group, batch_frames):
            out = forward_units(model, frames[a:b], config, video[a:b])
            vecs.append(out.features.float().cpu().numpy())
            s.append(np.minimum.reduceat(unit_start[a:b], out.lo))  # units tile the chunk in order
            e.append(np.maximum.reduceat(unit_end[a:b], out.lo))
            v.append(out.video)
    return np.concatenate(vecs).astype(np.float32), np.concatenate(s), np.concatenate(e), np.concatenate(v)


def encode_video_units(
    model: nn.Module,
    frames: torch.Tensor,
    unit_start: np.ndarray,
    unit_end: np.ndarray,
    config: MergeConfig | None = None,
    batch_frames: int = 64,
) -> VideoUnits:
    """One video's frames (T, 3, S, S), normalised, in time order -> its temporal units.

    Each unit is a merged group of neighbouring frames (or one frame where the schedule keeps frames
    apart); its span is the union of its frames' spans, its vector L2-normalised and in the text
    tower's space. config defaults to the one the model was patched with.
    """
    t = frames.shape[0]
    vec, s, e, _ = encode_many_video_units(
        model, frames, unit_start, unit_end, np.zeros(t, np.int64), config, batch_frames
    )
    return VideoUnits(vec, s, e)
