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
from .backbone import CHECKPOINT_FORMAT, load_backbone
from .fusion import FusionHead
from .losses import ContrastiveLoss
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
    bf16: bool = True  # autocast matmuls to bf16 on CPUs that support it
    extra: dict = field(default_factory=dict)


@dataclass
class Batch:
    frames: torch.Tensor  # (B, K, 3, S, S) float, normalised
    frame_mask: torch.Tensor  # (B, K)
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
        self.hf_text = hasattr(self.net, "text") and hasattr(getattr(self.net, "text"), "transformer") and hasattr(self.net.text, "pooler")
        self.frozen_prefixes: list[str] = []
        if cfg.freeze_text and self.hf_text:
            self.frozen_prefixes.append("text.transformer.")
        if cfg.freeze_backbone:
            self.frozen_prefixes += ["visual.", "text.transformer.", "transformer.", "token_embedding.", "positional_embedding", "ln_final."]
        for name, p in self.net.named_parameters():
            p.requires_grad_(not any(name.startswith(f) for f in self.frozen_prefixes))
        self.audio = AudioEncoder(dim=self.dim, weights="trained") if cfg.audio else None
        self.head = FusionHead(self.dim)
        self.loss = ContrastiveLoss()
        params = [p for p in self.net.parameters() if p.requires_grad] + list(self.head.parameters()) + list(self.loss.parameters())
        if self.audio is not None:
            params += list(self.audio.parameters())
        self.params = params
        self.opt = torch.optim.AdamW(param_groups(params, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n_videos = len(data.videos)
        self.steps_per_epoch = max(1, n_videos // cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.epoch = 0
        self.step = 0
        self._text_cache = self._pooled_caption_features() if (self.hf_text and "text.transformer." in self.frozen_prefixes) else None

    # -- schedule ------------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        if step < self.cfg.warmup_steps:
            return (step + 1) / self.cfg.warmup_steps
        progress = (step - self.cfg.warmup_steps) / max(1, self.total_steps - self.cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # -- text ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _pooled_caption_features(self) -> torch.Tensor:
        """The frozen language model's pooled output for every caption, computed once."""
        text = self.net.text
        out = []
        for i in range(0, len(self.data.cap_text), 256):
            tokens = self.backbone.tokenizer(self.data.cap_text[i : i + 256])
            mask = (tokens != text.config.pad_token_id).long()
            hidden = text.transformer(input_ids=tokens, attention_mask=mask)
            out.append(text.pooler(hidden, mask))
        return torch.cat(out)

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
        x = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float().div_(255.0)
        x = (x - self.backbone.mean.view(1, 1, 3, 1, 1)) / self.backbone.std.view(1, 1, 3, 1, 1)
        return Batch(x, torch.from_numpy(fmask), torch.from_numpy(emask), torch.from_numpy(audio),
                     torch.tensor(n_audio), torch.from_numpy(caps))  # fmt: skip

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
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16)
        with autocast:
            feats = self.net.encode_image(flat[keep])
        frames = torch.zeros(b * k, self.dim, dtype=torch.float32)
        frames[keep] = F.normalize(feats.float(), dim=-1)
        frames = frames.view(b, k, self.dim)
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
        parts["total"] = sum(parts.values())
        return parts

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
        return report

    def _encode_frames(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sampled frame of every video, as unit vectors padded to [V, T, D] with a mask."""
        pixels = torch.from_numpy(data.frames).permute(0, 3, 1, 2)
        mean, std = self.backbone.mean.view(1, 3, 1, 1), self.backbone.std.view(1, 3, 1, 1)
        feats = []
        for i in range(0, len(pixels), 256):
            x = (pixels[i : i + 256].float() / 255.0 - mean) / std
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16):
                feats.append(F.normalize(self.net.encode_image(x).float(), dim=-1))
        flat = torch.cat(feats)
        counts = torch.from_numpy(np.diff(data.frame_offsets))
        mask = torch.arange(int(counts.max()))[None, :] < counts[:, None]
        out = flat.new_zeros(*mask.shape, flat.shape[-1])
        out[mask] = flat
        return out, mask

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

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self) -> dict:
        clip = {k: (v.half() if torch.is_floating_point(v) else v) for k, v in self.net.state_dict().items()
                if not any(k.startswith(f) for f in self.frozen_prefixes if f.startswith("text.transformer."))}  # fmt: skip
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "model": self.cfg.model,
            "frozen": [f for f in self.frozen_prefixes if f.startswith("text.transformer.")],
            "clip": clip,
            "head": {"config": {}, "state": {k: v.half() for k, v in self.head.state_dict().items()}},
            "meta": {"train": asdict(self.cfg), "epochs_done": self.epoch, "data": data_fingerprint(self.data)},
        }
        if self.audio is not None:
            ckpt["audio"] = {"config": {**self.audio.config, "strides": list(self.audio.config["strides"])},
                             "weights": "trained", "state": {k: v.half() for k, v in self.audio.state_dict().items()}}  # fmt: skip
        return ckpt

    def save(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        torch.save(self.checkpoint(), tmp)
        tmp.replace(self.out)
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


def param_groups(params: list[torch.nn.Parameter], cfg: TrainConfig) -> list[dict]:
    """Weight decay on matrices only; scalars at a higher learning rate and no decay.

    Adam moves every parameter by about `lr` per step whatever its gradient's size, so the learned
    scalars (the InfoNCE logit scale, the audio fusion weight and its gate) would need thousands of
    steps to go from their starting values to where training wants them (e.g. the audio weight from
    0.1 to ~1): a few hundred steps of a short run left audio fusion with almost no say. Norms and
    biases are not decayed, as is usual for transformers.
    """
    matrices = [p for p in params if p.dim() >= 2]
    vectors = [p for p in params if p.dim() == 1]
    scalars = [p for p in params if p.dim() == 0]
    groups = [{"params": matrices}, {"params": vectors, "weight_decay": 0.0}]
    if scalars:
        groups.append({"params": scalars, "weight_decay": 0.0, "lr": cfg.lr * cfg.scalar_lr_mult})
    return [g for g in groups if g["params"]]


def data_fingerprint(data) -> str:
    h = hashlib.sha256(json.dumps([data.videos, data.cap_text]).encode())
    return h.hexdigest()[:16]
