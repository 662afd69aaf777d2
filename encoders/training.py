"""`vidsearch train`: symmetric InfoNCE over (video, caption) pairs, heads and towers together.

What is trained, per batch of B videos with one caption each (drawn from the video's events):
- the fused score (X-Pool over frames + text-conditioned audio attention, TEFAL-style), B x B;
- the X-Pool score alone, so the visual channel stands on its own when a video has no audio;
- the caption against the mean of the frames inside its event, so pooled segment vectors (what the
  coarse stage searches) and per-frame relevance (what moments are cut from) line up with text.
A pretrained language-model text tower (MiniLM) stays frozen and only its projection learns, so new
phrasings keep the meaning the language model gave them; its pooled features are computed once.
Checkpoints keep only what was trained (frozen parts come from their package), with their
fingerprint, the optimizer state for `--resume`, and the training settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidsearch.metrics import retrieval_metrics

from .audio import AudioEncoder
from .backbone import CHECKPOINT_FORMAT, cpu_supports_bf16, load_backbone, read_checkpoint
from .directions import reverse_direction
from .focus import FOCUS_SCALE, focus_crops
from .fusion import FusionHead
from .head_tuning import HeadTuning, TunedUnits, tune_heads
from .losses import ContrastiveLoss
from .motion_swaps import MOTIONS, swap_motions
from .shape_swaps import SHAPES, swap_shapes
from .temporal import CUES, cue_cells, where_cues, widen_state
from .unit_head import head_units
from .xpool import mean_pool

AUDIO_RATE = 16_000


@dataclass
class TrainConfig:
    model: str = "tiny"
    pretrained: str | None = "none"
    checkpoint: str | None = None  # start from these weights (fine-tuning)
    epochs: int = 12
    batch_size: int = 64  # videos per step
    frames_per_video: int = 16  # at most; sampled in time order
    lr: float = 5e-4
    weight_decay: float = 0.05
    scalar_lr_mult: float = 50.0  # the loss temperature, fusion weight and gate: single numbers that must travel far
    warmup_steps: int = 40
    freeze_backbone: bool = False  # True: train the heads (and text projection) only
    freeze_text: bool = True  # keep a pretrained language-model text tower frozen
    audio: bool = True
    seed: int = 0
    event_weight: float = 1.0
    xpool_weight: float = 1.0
    bf16: bool = True  # autocast matmuls to bf16 where the CPU has bf16 instructions (else fp32)
    temporal: bool = True  # a temporal module over unit vectors (encoders/temporal.py): order and direction
    direction_weight: float = 0.5  # the caption vs. its reversed-direction twin, on its own event
    shape_weight: float = 0.5  # the caption vs. the same caption naming each other shape, on its own event (shape_swaps.py)
    motion_weight: float = 0.5  # ... naming each other motion: left, right, up, down, still (motion_swaps.py)
    where_cues: bool = True  # the temporal module also reads where things move, from the pixels (temporal.where_cues)
    temporal_lr_mult: float = 10.0  # the temporal module's learning rate over `lr`: new, small, and far from where it must go
    augment: bool = True  # per-video crop, brightness/contrast and noise on training frames
    focus: float = FOCUS_SCALE  # each frame also seen as a crop of this side around what moves (encoders/focus.py); 0: off
    xpool_attention: float | None = None  # the video X-Pool's attention logits times this (below 1: softer; xpool.XPool); None: the checkpoint's, else 1
    heads_only: bool = False  # the run only retunes the video head and fusion scalars of --checkpoint (`Trainer.tune_heads`)
    extra: dict = field(default_factory=dict)


@dataclass
class Swapped:
    """Captions with one attribute named otherwise (the hard negatives of `_swap_loss`)."""

    has: torch.Tensor  # (captions,) bool: the caption names the attribute once
    texts: list[list[str]]  # per caption, its n swapped versions (itself where it has none)
    cache: torch.Tensor | None  # (captions, n, width): the frozen language model's reading of them
    n: int


def _reversed(caption: str) -> list[str]:
    twin = reverse_direction(caption)
    return [] if twin is None else [twin]


# the hard negatives, each weighted by TrainConfig.<name>_weight: the attribute's swap and its number
# of alternatives (the reversed-direction twin is the one-alternative case)
SWAPS: dict[str, tuple[Callable[[str], list[str]], int]] = {
    "direction": (_reversed, 1), "shape": (swap_shapes, len(SHAPES) - 1), "motion": (swap_motions, len(MOTIONS) - 1)}  # fmt: skip


@dataclass
class Batch:
    frames: torch.Tensor  # (B, K, 3, S, S) float, normalised
    frame_mask: torch.Tensor  # (B, K)
    times: torch.Tensor  # (B, K) seconds, the frames' centres
    event_mask: torch.Tensor  # (B, K) frames inside the caption's event
    audio: torch.Tensor  # (B, N)
    audio_len: torch.Tensor  # (B,)
    caption_idx: torch.Tensor  # (B,)


class Trainer:
    def __init__(self, data, cfg: TrainConfig, out: Path, log: Callable[[dict], None] | None = None):
        self.data, self.cfg, self.out = data, cfg, Path(out)
        self.log = log or (lambda row: None)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.backbone = load_backbone(cfg.model, cfg.pretrained, Path(cfg.checkpoint) if cfg.checkpoint else None, precision="fp32")
        self.net = self.backbone.model
        self.dim = self.backbone.dim
        # bf16 autocast only where the CPU computes bf16 natively: without AVX512-BF16/AMX it is
        # emulated and a training step took ~8x longer than in fp32 (measured on an AVX2-only host)
        self.bf16 = cfg.bf16 and (torch.device(self.backbone.device).type != "cpu" or cpu_supports_bf16())
        self.hf_text = hasattr(self.net, "text") and hasattr(getattr(self.net, "text"), "transformer") and hasattr(self.net.text, "pooler")
        self.frozen_prefixes: list[str] = []
        if cfg.freeze_text and self.hf_text:
            self.frozen_prefixes.append("text.transformer.")
        if cfg.freeze_backbone:
            self.frozen_prefixes += ["visual.", "text.transformer.", "transformer.", "token_embedding.", "positional_embedding", "ln_final."]
        for name, p in self.net.named_parameters():
            p.requires_grad_(not any(name.startswith(f) for f in self.frozen_prefixes))
        self._start = read_checkpoint(Path(cfg.checkpoint)) if cfg.checkpoint else {}  # read once: heads, audio, meta
        saved_head = _head_config_of(self._start)
        if cfg.heads_only:  # retuning keeps the model as it is: its own head layout and audio tower, whatever the flags say
            if "head" not in self._start:
                raise RuntimeError(f"{cfg.checkpoint or 'no --checkpoint'}: retuning the heads needs a vidsearch checkpoint with a trained head")
            self.audio = AudioEncoder(dim=self.dim, weights="trained") if "audio" in self._start else None
            self.head = FusionHead(self.dim, **saved_head)
        else:
            self.audio = AudioEncoder(dim=self.dim, weights="trained") if cfg.audio else None
            self.head = FusionHead(self.dim, temporal=cfg.temporal, temporal_cues=CUES if cfg.temporal and cfg.where_cues else 0, focus=cfg.focus,
                                   video_attention=self._video_attention(cfg, saved_head), window_weight=saved_head.get("window_weight"))  # fmt: skip
        self.loss = ContrastiveLoss()
        self.warm_started = self._warm_start_heads(cfg.checkpoint) if cfg.checkpoint else []
        if not cfg.heads_only:  # only a heads-only run writes it back; a full run would hold e.g. a plain open_clip state dict
            self._start = {}
        params = [p for p in self.net.parameters() if p.requires_grad] + list(self.head.parameters()) + list(self.loss.parameters())
        if self.audio is not None:
            params += list(self.audio.parameters())
        self.params = params
        fast = list(self.head.temporal.parameters()) if self.head.temporal is not None else []
        self.opt = torch.optim.AdamW(param_groups(params, cfg, fast), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n_videos = len(data.videos)
        self.steps_per_epoch = max(1, n_videos // cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.epoch = 0
        self.step = 0
        frozen_text = self.hf_text and "text.transformer." in self.frozen_prefixes
        self._text_cache = self._pooled_caption_features(self.data.cap_text) if frozen_text else None
        # a heads-only run trains on stored units, never on swapped captions (minutes of language model saved)
        self._swaps = {name: self._swapped_captions(swap, n, frozen_text) for name, (swap, n) in SWAPS.items()
                       if getattr(cfg, f"{name}_weight") and not cfg.heads_only}  # fmt: skip
        self.tuning: HeadTuning | None = None

    @staticmethod
    def _video_attention(cfg: TrainConfig, saved_head: dict | None = None) -> float:
        """The video X-Pool's attention scale: the run's, else the warm-start checkpoint's (a fine-tune
        of a softened head stays soft; `saved_head`: its head config when the caller has read it), else
        the reference's 1."""
        if cfg.xpool_attention is not None:
            return float(cfg.xpool_attention)
        if saved_head is None:
            saved_head = _head_config_of(read_checkpoint(Path(cfg.checkpoint)) if cfg.checkpoint else {})
        return float(saved_head.get("video_attention", 1.0))

    def _warm_start_heads(self, checkpoint: str) -> list[str]:
        """Fine-tuning from a vidsearch checkpoint starts the fusion head and the audio tower from it
        too (not only the frame tower); parts the checkpoint lacks (e.g. a new temporal module) keep
        their fresh initialisation. Returns what was loaded."""
        saved = self._start
        loaded = []
        if "head" in saved:
            state = widen_state({k: v.float() for k, v in saved["head"]["state"].items()}, self.head.temporal)
            if self.head.focus is None:  # a run without the focus view (`--no-focus`) from a model with one
                state = {k: v for k, v in state.items() if not k.startswith("focus.")}
            missing, unexpected = self.head.load_state_dict(state, strict=False)
            if unexpected or any(not k.startswith(("temporal.", "focus.")) for k in missing):
                raise RuntimeError(f"{checkpoint}: its fusion head does not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
            if missing and self.cfg.heads_only:  # built from the checkpoint's own config: nothing may start fresh
                raise RuntimeError(f"{checkpoint}: its fusion head lacks {missing[:3]}")
            loaded.append("head")
        if "audio" in saved and self.audio is not None:
            try:
                self.audio.load_state_dict({k: v.float() for k, v in saved["audio"]["state"].items()})
                loaded.append("audio")
            except RuntimeError as exc:
                raise RuntimeError(f"{checkpoint}: its audio tower does not fit this run's ({exc})") from exc
        return loaded

    # -- schedule ------------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        if step < self.cfg.warmup_steps:
            return (step + 1) / self.cfg.warmup_steps
        progress = (step - self.cfg.warmup_steps) / max(1, self.total_steps - self.cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # -- text ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _pooled_caption_features(self, captions: list[str]) -> torch.Tensor:
        """The frozen language model's pooled output for every caption, computed once."""
        text = self.net.text
        out = []
        for i in range(0, len(captions), 256):
            tokens = self.backbone.tokenizer(captions[i : i + 256])
            mask = (tokens != text.config.pad_token_id).long()
            hidden = text.transformer(input_ids=tokens, attention_mask=mask)
            out.append(text.pooler(hidden, mask))
        return torch.cat(out)

    def _swapped_captions(self, swap: Callable[[str], list[str]], n: int, frozen_text: bool) -> Swapped:
        """Each caption's n swapped versions (itself where it has none), with the frozen language
        model's reading of them computed once (it runs only on captions that have them)."""
        alts = [swap(c) for c in self.data.cap_text]
        has = torch.tensor([len(a) == n for a in alts])
        texts = [a if len(a) == n else [c] * n for a, c in zip(alts, self.data.cap_text)]
        cache = None
        if frozen_text and bool(has.any()):  # [captions, n, width]
            rows = torch.nonzero(has).squeeze(1)
            pooled = self._pooled_caption_features([t for i in rows.tolist() for t in texts[i]])
            cache = self._text_cache.unsqueeze(1).repeat(1, n, 1)
            cache[rows] = pooled.view(len(rows), n, -1)
        return Swapped(has, texts, cache, n)

    def encode_swapped(self, name: str, idx: torch.Tensor) -> torch.Tensor:
        """[len(idx), n, D]: each caption with its direction reversed ("direction"), or with each
        other shape ("shape") or motion ("motion")."""
        sw = self._swaps[name]
        if sw.cache is not None:
            return F.normalize(self.net.text.proj(sw.cache[idx]), dim=-1)
        tokens = self.backbone.tokenizer([t for i in idx.tolist() for t in sw.texts[i]])
        return F.normalize(self.net.encode_text(tokens), dim=-1).view(len(idx), sw.n, -1)

    def encode_captions(self, idx: torch.Tensor) -> torch.Tensor:
        if self._text_cache is not None:
            return F.normalize(self.net.text.proj(self._text_cache[idx]), dim=-1)
        tokens = self.backbone.tokenizer([self.data.cap_text[i] for i in idx.tolist()])
        return F.normalize(self.net.encode_text(tokens), dim=-1)

    # -- batches -------------------------------------------------------------------------------
    def _batch(self, videos: np.ndarray) -> Batch:
        d, k = self.data, self.cfg.frames_per_video
        size = self.backbone.image_size
        frames = np.zeros((len(videos), k, size, size, 3), np.uint8)
        fmask = np.zeros((len(videos), k), bool)
        times = np.zeros((len(videos), k), np.float32)
        emask = np.zeros((len(videos), k), bool)
        caps = np.zeros(len(videos), np.int64)
        by_video = self._captions_by_video
        n_audio = [int(d.audio_offsets[v + 1] - d.audio_offsets[v]) for v in videos]
        audio = np.zeros((len(videos), max(max(n_audio), 1)), np.float32)
        for row, v in enumerate(videos):
            lo, hi = d.frame_offsets[v], d.frame_offsets[v + 1]
            idx = np.arange(lo, hi)
            if len(idx) > k:
                idx = np.sort(self.rng.choice(idx, k, replace=False))
            frames[row, : len(idx)] = d.frames[idx]
            fmask[row, : len(idx)] = True
            c = self.rng.choice(by_video[v])
            caps[row] = c
            centre = (d.unit_start[idx] + d.unit_end[idx]) / 2
            inside = (centre >= d.cap_start[c]) & (centre <= d.cap_end[c])
            if not inside.any():  # an event shorter than the sampling step: take the nearest frame
                inside[np.abs(centre - (d.cap_start[c] + d.cap_end[c]) / 2).argmin()] = True
            emask[row, : len(idx)] = inside
            a0 = d.audio_offsets[v]
            audio[row, : n_audio[row]] = d.audio[a0 : a0 + n_audio[row]]
            times[row, : len(idx)] = centre
        x = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float().div_(255.0)
        if self.cfg.augment:
            x = self._augment(x)
        x = (x - self.backbone.mean.view(1, 1, 3, 1, 1)) / self.backbone.std.view(1, 1, 3, 1, 1)
        return Batch(x, torch.from_numpy(fmask), torch.from_numpy(times), torch.from_numpy(emask), torch.from_numpy(audio),
                     torch.tensor(n_audio), torch.from_numpy(caps))  # fmt: skip

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, K, 3, S, S) in [0, 1]. One draw per video, the same for all its frames (so motion is
        kept): a crop of 80-100% of the frame resized back, brightness and contrast within 15%,
        and mild pixel noise. No flips and no hue shifts: they would change what captions say."""
        b, k, c, s, _ = x.shape
        g = torch.Generator().manual_seed(int(self.rng.integers(1 << 31)))
        out = torch.empty_like(x)
        for i in range(b):
            side = int(s * (0.8 + 0.2 * torch.rand(1, generator=g).item()))
            y0, x0 = (int(torch.randint(0, s - side + 1, (1,), generator=g)) for _ in range(2))
            crop = x[i, :, :, y0 : y0 + side, x0 : x0 + side]
            out[i] = F.interpolate(crop, size=(s, s), mode="bilinear", align_corners=False) if side < s else crop
        bright = 1 + 0.3 * (torch.rand(b, 1, 1, 1, 1, generator=g) - 0.5)
        contrast = 1 + 0.3 * (torch.rand(b, 1, 1, 1, 1, generator=g) - 0.5)
        mean = out.mean(dim=(2, 3, 4), keepdim=True)
        out = (out - mean) * contrast + mean * bright
        out = out + 0.02 * torch.randn(out.shape, generator=g)
        return out.clamp_(0, 1)

    @property
    def _captions_by_video(self) -> list[np.ndarray]:
        if not hasattr(self, "_cbv"):
            order = np.argsort(self.data.cap_video, kind="stable")
            bounds = np.searchsorted(self.data.cap_video[order], np.arange(len(self.data.videos) + 1))
            self._cbv = [order[bounds[v] : bounds[v + 1]] for v in range(len(self.data.videos))]
        return self._cbv

    # -- one step ------------------------------------------------------------------------------
    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        b, k = batch.frame_mask.shape
        flat = batch.frames.reshape(b * k, *batch.frames.shape[2:])
        keep = batch.frame_mask.reshape(-1)
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)
        with autocast:
            feats = self.net.encode_image(flat[keep])
        frames = torch.zeros(b * k, self.dim, dtype=torch.float32)
        frames[keep] = F.normalize(feats.float(), dim=-1)
        cues = self._cues(batch.frames, batch.frame_mask)
        if self.head.focus is not None:  # the same frames, closer around what moves, through the same tower
            crops = focus_crops(flat[keep], cues.reshape(b * k, -1)[keep], self.head.focus.scale)
            with autocast:
                near = self.net.encode_image(crops)
            focused = torch.zeros(b * k, self.dim, dtype=torch.float32)
            focused[keep] = self.head.focus(frames[keep], F.normalize(near.float(), dim=-1))
            frames = focused
        frames = frames.view(b, k, self.dim)
        if self.head.temporal is not None:
            frames = self.head.temporal(frames, batch.frame_mask, batch.times, cues if self.head.temporal.cues else None)
        text = self.encode_captions(batch.caption_idx)
        audio = mask = None
        if self.audio is not None:
            with autocast:
                tokens = self.audio.encode(batch.audio, batch.audio_len)
            audio, mask = tokens.vectors.float(), tokens.mask
        out = self.head.scores(text, frames, batch.frame_mask, audio, mask)
        event, _ = mean_pool(text, frames, batch.event_mask)
        event_sims = torch.einsum("td,tvd->tv", text, F.normalize(event, dim=-1))
        parts = {
            "fused": self.loss(out["fused"]),
            "xpool": self.loss(out["video"]) * self.cfg.xpool_weight,
            "event": self.loss(event_sims) * self.cfg.event_weight,
        }
        for name, sw in self._swaps.items():
            has = sw.has[batch.caption_idx]
            if bool(has.any()):
                parts[name] = self._swap_loss(name, text, batch, frames, event, has) * getattr(self.cfg, f"{name}_weight")
        parts["total"] = sum(parts.values())
        return parts

    def _swap_loss(self, name: str, text, batch: Batch, frames, event, has) -> torch.Tensor:
        """The caption against itself with the attribute named otherwise (its reversed-direction
        twin, or each other shape or motion), on the caption's own event and own video (X-Pool): an
        (n + 1)-way softmax, the true caption should win. Everything else the captions name is the
        same; only that attribute tells them apart (for direction, only order: what the temporal
        module is for)."""
        rows = torch.nonzero(has).squeeze(1)
        cands = torch.cat([text[rows].unsqueeze(1), self.encode_swapped(name, batch.caption_idx[rows])], dim=1)  # [R, n + 1, D]
        ev = F.normalize(event[rows, rows], dim=-1)
        own_event = torch.einsum("rcd,rd->rc", cands, ev)
        f, m = frames[rows], batch.frame_mask[rows]
        own_video = torch.stack([self.head.video.similarity(cands[:, c], f, m).diagonal() for c in range(cands.shape[1])], dim=1)
        scale = self.loss.scale.detach()  # the contrastive loss's temperature; not learned from this term
        target = torch.zeros(len(rows), dtype=torch.long)
        return F.cross_entropy(own_event * scale, target) + F.cross_entropy(own_video * scale, target)

    # -- validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, data, sound_dependent: np.ndarray | None = None) -> dict:
        """Text->video retrieval on held-out captioned videos, in memory, per method (as `vidsearch
        eval` scores an index): mean pooling, X-Pool, X-Pool + audio fusion. Every frame and the whole
        soundtrack of each video is used, as indexing would; R@1 on the sound-dependent queries too
        when `sound_dependent` (one flag per caption) is given."""
        modules = [m for m in (self.net, self.head, self.audio) if m is not None]
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        try:
            frames, fmask = self._encode_frames(data)
            captions = list(data.cap_text)
            text = torch.from_numpy(np.concatenate([self.backbone.encode_text(captions[i : i + 256]) for i in range(0, len(captions), 256)]))
            audio, amask = self._encode_audio(data) if self.audio is not None else (None, None)
            scores: dict[str, list[torch.Tensor]] = {"mean": [], "xpool": []}
            if audio is not None:
                scores["fused"] = []
            for i in range(0, len(text), 64):
                t = text[i : i + 64]
                pooled, _ = mean_pool(t, frames, fmask)
                scores["mean"].append(torch.einsum("td,tvd->tv", t, F.normalize(pooled, dim=-1)))
                out = self.head.scores(t, frames, fmask, audio, amask)
                scores["xpool"].append(out["video"])
                if audio is not None:
                    scores["fused"].append(out["fused"])
            direction = self._direction_accuracy(data, captions, text, frames, fmask)
        finally:
            for m, mode in zip(modules, modes):
                m.train(mode)
        report = {}
        for name, parts in scores.items():
            sims = torch.cat(parts).float().numpy()
            row = retrieval_metrics(sims, data.cap_video)
            if sound_dependent is not None and sound_dependent.any():
                row["sound_R@1"] = retrieval_metrics(sims[sound_dependent], data.cap_video[sound_dependent])["R@1"]
            report[name] = {k: round(float(v), 2) for k, v in row.items()}
        if direction is not None:
            report["direction_accuracy"] = direction
        return report

    def _direction_accuracy(self, data, captions: list[str], text: torch.Tensor, frames: torch.Tensor, fmask: torch.Tensor) -> dict | None:
        """Share of captions naming a direction whose own video scores them above their reversed twin
        (per method: the mean of the event's frames, X-Pool over the video); 50% is chance."""
        rows = [i for i, c in enumerate(captions) if reverse_direction(c) is not None]
        if not rows:
            return None
        rev = torch.from_numpy(self.backbone.encode_text([reverse_direction(captions[i]) for i in rows]))
        idx = torch.tensor(rows)
        vid = torch.from_numpy(data.cap_video[rows])
        f, m = frames[vid], fmask[vid]
        centre_ok = torch.zeros(m.shape, dtype=torch.bool)
        for j, r in enumerate(rows):  # frames inside the caption's event
            n = int(m[j].sum())
            lo = data.frame_offsets[data.cap_video[r]]
            c = (data.unit_start[lo : lo + n] + data.unit_end[lo : lo + n]) / 2
            centre_ok[j, :n] = torch.from_numpy((c >= data.cap_start[r]) & (c <= data.cap_end[r]))
        event = F.normalize((f * centre_ok.unsqueeze(-1)).sum(1), dim=-1)
        t = text[idx]
        out = {"queries": len(rows),
               "event_mean": round(100 * float(((t * event).sum(-1) > (rev * event).sum(-1)).float().mean()), 2)}  # fmt: skip
        true_x = torch.stack([self.head.video.similarity(t[j : j + 1], f[j : j + 1], m[j : j + 1])[0, 0] for j in range(len(rows))])
        rev_x = torch.stack([self.head.video.similarity(rev[j : j + 1], f[j : j + 1], m[j : j + 1])[0, 0] for j in range(len(rows))])
        out["xpool"] = round(100 * float((true_x > rev_x).float().mean()), 2)
        return out

    def _encode_frames(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sampled frame of every video, as unit vectors padded to [V, T, D] with a mask (as
        the indexer makes them: encoders/unit_head.py)."""
        counts = torch.from_numpy(np.diff(data.frame_offsets))
        owner = np.repeat(np.arange(len(counts)), counts.numpy())
        start, end = np.asarray(data.unit_start, np.float64), np.asarray(data.unit_end, np.float64)

        def encode(frames: np.ndarray) -> np.ndarray:
            pixels = torch.from_numpy(frames).permute(0, 3, 1, 2)
            mean, std = self.backbone.mean.view(1, 3, 1, 1), self.backbone.std.view(1, 3, 1, 1)
            feats = []
            for i in range(0, len(pixels), 256):
                x = (pixels[i : i + 256].float() / 255.0 - mean) / std
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                    feats.append(F.normalize(self.net.encode_image(x).float(), dim=-1))
            return torch.cat(feats).numpy()

        units = head_units(self.head, encode, data.frames, encode(data.frames), start, end, owner, start, end, owner)
        mask = torch.arange(int(counts.max()))[None, :] < counts[:, None]
        out = torch.zeros(*mask.shape, units.shape[-1])
        out[mask] = torch.from_numpy(units)
        return out, mask

    def _cues(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """where_cues of a batch's normalised frames [B, K, 3, S, S], read from their pixels in [0, 1]
        (None when neither the focus view nor the temporal module reads them)."""
        if not self.head.reads_cues:
            return None
        b, k = mask.shape
        mean, std = self.backbone.mean.view(1, 3, 1, 1), self.backbone.std.view(1, 3, 1, 1)
        with torch.no_grad():
            cells = cue_cells(frames.reshape(b * k, *frames.shape[2:]) * std + mean)
            return where_cues(cells.view(b, k, *cells.shape[1:]), mask)

    def _encode_audio(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """Each video's soundtrack through the audio tower, a few videos at a time (padded waveforms)."""
        lengths = np.diff(data.audio_offsets)
        vectors, masks = [], []
        for lo in range(0, len(lengths), 16):
            n = lengths[lo : lo + 16]
            wave = np.zeros((len(n), max(int(n.max()), 1)), np.float32)
            for row, v in enumerate(range(lo, lo + len(n))):
                wave[row, : n[row]] = data.audio[data.audio_offsets[v] : data.audio_offsets[v + 1]]
            tokens = self.audio.encode(torch.from_numpy(wave), torch.from_numpy(n))
            vectors += list(tokens.vectors.float())
            masks += list(tokens.mask)
        width = max(len(v) for v in vectors)
        audio = torch.zeros(len(vectors), width, self.dim)
        mask = torch.zeros(len(vectors), width, dtype=torch.bool)
        for i, (v, m) in enumerate(zip(vectors, masks)):
            audio[i, : len(v)], mask[i, : len(m)] = v, m
        return audio, mask

    def train(self, progress: Callable[[int, int, float], None] | None = None, validate: Callable[[int], dict | None] | None = None) -> dict:
        if self.cfg.heads_only:
            raise RuntimeError("a heads-only trainer retunes the heads (tune_heads); it does not train the towers")
        t0 = time.monotonic()
        n = len(self.data.videos)
        history = []
        while self.epoch < self.cfg.epochs:
            self.net.train(), self.head.train()
            if self.audio is not None:
                self.audio.train()
            perm = self.rng.permutation(n)
            losses = []
            for s in range(self.steps_per_epoch):
                batch = self._batch(perm[s * self.cfg.batch_size : (s + 1) * self.cfg.batch_size])
                parts = self.losses(batch)
                self.opt.zero_grad(set_to_none=True)
                parts["total"].backward()
                torch.nn.utils.clip_grad_norm_(self.params, 1.0)
                self.opt.step()
                self.sched.step()
                self.step += 1
                losses.append({k: float(v.detach()) for k, v in parts.items()})
                if progress:
                    progress(self.step, self.total_steps, losses[-1]["total"])
            self.epoch += 1
            row = {"epoch": self.epoch, **{k: float(np.mean([l[k] for l in losses])) for k in losses[0]},
                   "scale": float(self.loss.scale.detach()), "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
            report = validate(self.epoch) if validate is not None else None
            if report is not None:
                row["eval"] = report
            history.append(row)
            self.log(row)
            self.save()
        return {"epochs": self.epoch, "steps": self.step, "seconds": round(time.monotonic() - t0, 1), "history": history}

    # -- the heads-only stage -----------------------------------------------------------------
    def tune_heads(self, tuning: HeadTuning, progress: Callable[[int, int, float], None] | None = None) -> dict:
        """Retune the video X-Pool head (from its identity start, anchored there) and the fusion
        scalars on this model's units of the training videos, and write the checkpoint; the towers,
        temporal module, focus view and audio tower stay as loaded (encoders/head_tuning.py)."""
        if not self.cfg.heads_only:
            raise RuntimeError("tune_heads is for a heads-only trainer (TrainConfig.heads_only): it keeps the checkpoint's layout")
        t0 = time.monotonic()
        modules = [m for m in (self.net, self.head, self.audio) if m is not None]
        for m in modules:
            m.eval()
        with torch.no_grad():
            frames, fmask = self._encode_frames(self.data)
            captions = list(self.data.cap_text)
            text = torch.from_numpy(np.concatenate([self.backbone.encode_text(captions[i : i + 256]) for i in range(0, len(captions), 256)]))
            audio, amask = self._encode_audio(self.data) if self.audio is not None else (None, None)
        encoded = time.monotonic() - t0
        units = TunedUnits(frames, fmask, audio, amask, text, np.asarray(self.data.cap_video))
        history = tune_heads(self.head, units, tuning, progress)
        self.tuning = tuning
        self.save(resumable=False)
        self.resume_path.unlink(missing_ok=True)  # a full run's state at this --out would resume the old head
        return {"epochs": tuning.epochs, "steps": history[-1]["step"] if history else 0, "seconds": round(time.monotonic() - t0, 1),
                "encode_seconds": round(encoded, 1), "history": history}  # fmt: skip

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        clip = {k: (v.half() if torch.is_floating_point(v) else v) for k, v in self.net.state_dict().items()
                if not any(k.startswith(f) for f in self.frozen_prefixes if f.startswith("text.transformer."))}  # fmt: skip
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "model": self.cfg.model,
            "frozen": [f for f in self.frozen_prefixes if f.startswith("text.transformer.")],
            "clip": clip,
            "head": {"config": self._head_config(),
                     "state": {k: v.half() for k, v in self.head.state_dict().items()}},
            "meta": {"train": asdict(self.cfg), "epochs_done": self.epoch, "data": data_fingerprint(self.data)},
        }
        if self.audio is not None:
            ckpt["audio"] = {"config": {**self.audio.config, "strides": list(self.audio.config["strides"])},
                             "weights": "trained", "state": {k: v.half() for k, v in self.audio.state_dict().items()}}  # fmt: skip
        if self.tuning is not None:  # the start checkpoint as it was (towers, audio tower, their training), but the head
            start = self._start
            ckpt = {**start, "head": ckpt["head"],
                    "meta": {**(start.get("meta") or {}), "head_tuning": {**asdict(self.tuning), "data": data_fingerprint(self.data)}}}  # fmt: skip
        return ckpt

    def _head_config(self) -> dict:
        """The FusionHead arguments that rebuild this head (encoders/backbone.py `_build_heads`)."""
        config = {"temporal": True, "temporal_cues": self.head.temporal.cues} if self.head.temporal is not None else {}
        if self.head.focus is not None:
            config["focus"] = self.head.focus.scale
        if self.head.video.attention_scale != 1.0:
            config["video_attention"] = self.head.video.attention_scale
        if self.head.window_weight is not None:
            config["window_weight"] = self.head.window_weight
        return config

    def save(self, resumable: bool = True) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        torch.save(self.checkpoint(), tmp)
        tmp.replace(self.out)
        if not resumable:
            return
        state = {"epoch": self.epoch, "step": self.step, "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                 "net": self.net.state_dict(), "head": self.head.state_dict(), "loss": self.loss.state_dict(),
                 "audio": self.audio.state_dict() if self.audio is not None else None, "rng": self.rng.bit_generator.state}  # fmt: skip
        torch.save(state, self.resume_path.with_suffix(".tmp"))
        self.resume_path.with_suffix(".tmp").replace(self.resume_path)

    @property
    def resume_path(self) -> Path:
        return self.out.with_name(self.out.name + ".resume")

    def resume(self) -> bool:
        if not self.resume_path.is_file():
            return False
        state = torch.load(self.resume_path, map_location="cpu", weights_only=False)
        self.net.load_state_dict(state["net"])
        self.head.load_state_dict(state["head"])
        self.loss.load_state_dict(state["loss"])
        if self.audio is not None and state["audio"] is not None:
            self.audio.load_state_dict(state["audio"])
        try:
            self.opt.load_state_dict(state["opt"])
        except ValueError as exc:  # e.g. written before scalars got their own parameter group
            raise RuntimeError(f"{self.resume_path} was written by another version of the trainer ({exc}); "
                               f"delete it to start afresh, or train to a new --out") from exc  # fmt: skip
        self.sched.load_state_dict(state["sched"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.rng.bit_generator.state = state["rng"]
        return True


def _head_config_of(saved: dict) -> dict:
    """A read checkpoint's head config ({} without a head): what a fine-tune keeps unless told."""
    return dict((saved.get("head") or {}).get("config", {}))


def param_groups(params: list[torch.nn.Parameter], cfg: TrainConfig, fast: list[torch.nn.Parameter] = ()) -> list[dict]:
    """Weight decay on matrices only; scalars, and the `fast` parameters (the temporal module), at a
    higher learning rate.

    Adam moves every parameter by about `lr` per step whatever its gradient's size, so the learned
    scalars (the InfoNCE logit scale, the audio fusion weight and its gate) would need thousands of
    steps to go from their starting values to where training wants them (e.g. the audio weight from
    0.1 to ~1): a few hundred steps of a short run left audio fusion with almost no say. The same
    holds for the temporal module's weights that read the motion cues, which a fine-tune starts at
    zero: at `lr` they could move ~0.05 in 248 steps, and direction accuracy on the selection set
    rose only to 66% while the cues themselves tell direction 99-100% of the time. Norms and biases are
    not decayed, as is usual for transformers.
    """
    quick = {id(p) for p in fast}
    slow = [p for p in params if id(p) not in quick]
    matrices = [p for p in slow if p.dim() >= 2]
    vectors = [p for p in slow if p.dim() == 1]
    scalars = [p for p in slow if p.dim() == 0]
    groups = [{"params": matrices}, {"params": vectors, "weight_decay": 0.0}]
    if scalars:
        groups.append({"params": scalars, "weight_decay": 0.0, "lr": cfg.lr * cfg.scalar_lr_mult})
    fast = [p for p in params if id(p) in quick]
    groups.append({"params": [p for p in fast if p.dim() >= 2], "lr": cfg.lr * cfg.temporal_lr_mult})
    groups.append({"params": [p for p in fast if p.dim() < 2], "weight_decay": 0.0, "lr": cfg.lr * cfg.temporal_lr_mult})
    return [g for g in groups if g["params"]]


def data_fingerprint(data) -> str:
    h = hashlib.sha256(json.dumps([data.videos, data.cap_text]).encode())
    return h.hexdigest()[:16]
