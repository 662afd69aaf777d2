"""A pretrained text-audio tower: CLAP through `transformers` (`ClapModel`), for non-speech sound
search ("a dog barks", "applause", "a siren") with any visual backbone.

CLAP embeds sound and text in a space of its own (not the frame/text tower's), so an index that uses
it stores CLAP audio tokens and a search embeds the query with CLAP's own text tower; the two meet
only through the parameter-free fusion in `vidsearch.search.audio_fusion`.

The tower fits the `AudioTower` protocol (encoders/audio.py), so `audio_tokens_stream` streams a
soundtrack through it in bounded memory, chunk by chunk, exactly as it does the built-in tower. Inside
each chunk (`max_seconds`, 10 s) the tower takes **windows** of `window_seconds` (4 s) every
`hop_seconds` (2 s): one timed token per window, overlapping so a sound that straddles a window edge
is whole in its neighbour. A chunk's tail shorter than a window gets one last, shorter window (CLAP's
feature extractor pads it by repeating it, as CLAP was trained).

Weights are looked up in the local Hugging Face cache first; offline and uncached, the error names
the model and the flag that points at a local copy, as for open_clip weights (backbone.py). Users
who have the internet get `laion/clap-htsat-unfused` by default.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidsearch.fingerprint import Fingerprint

from .audio import AudioTokenBatch, register_audio_tower
from .backbone import ModelLoadError, _hub_offline, _hub_reachable, _quiet_open_clip, file_sha256
from .torchvision_compat import import_open_clip

__all__ = ["DEFAULT_CLAP", "ClapTower", "load_clap"]

DEFAULT_CLAP = "laion/clap-htsat-unfused"
WINDOW_SECONDS = 4.0
HOP_SECONDS = 2.0
CHUNK_SECONDS = 10.0


def _transformers():
    import_open_clip()  # transformers' CLAP pulls in torchvision: the op shim must come first (MACHINE-NOTES)
    import transformers

    return transformers


class ClapTower:
    """CLAP's audio and text towers, as timed audio tokens and query vectors (unit length)."""

    def __init__(self, model, extractor, tokenizer, name: str, weights: str, window_seconds: float = WINDOW_SECONDS,
                 hop_seconds: float = HOP_SECONDS, max_seconds: float = CHUNK_SECONDS, batch: int = 16):  # fmt: skip
        if not 0 < hop_seconds <= window_seconds <= max_seconds:
            raise ValueError(f"CLAP windows need 0 < hop ({hop_seconds}) <= window ({window_seconds}) <= chunk ({max_seconds}) seconds")
        self.model, self.extractor, self.tokenizer = model.eval(), extractor, tokenizer
        self.name, self.weights = name, weights
        self.sample_rate = int(extractor.sampling_rate)
        self.dim = int(model.config.projection_dim)
        self.window_seconds, self.hop_seconds, self.max_seconds, self.batch = window_seconds, hop_seconds, max_seconds, batch

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(model=f"clap:{self.name}", weights=self.weights, dim=self.dim,
                           extra={"window": self.window_seconds, "hop": self.hop_seconds, "chunk": self.max_seconds})  # fmt: skip

    def window_starts(self, seconds: float) -> np.ndarray:
        """Start times of the windows over a clip of `seconds`: every hop while a whole window fits,
        plus one shorter window for a tail the last whole window leaves out."""
        if seconds <= 0:
            return np.zeros(0)
        whole = max(0, math.floor((seconds - self.window_seconds) / self.hop_seconds + 1e-9) + 1)
        starts = np.arange(whole) * self.hop_seconds
        covered = starts[-1] + self.window_seconds if whole else 0.0
        if seconds - covered > 1e-6:
            starts = np.append(starts, whole * self.hop_seconds if whole else 0.0)
        return starts

    @torch.inference_mode()
    def encode(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> AudioTokenBatch:
        """Chunks [B, N] at `sample_rate` (real lengths in `lengths`) -> one token per window of each."""
        if waveforms.dim() == 1:
            waveforms = waveforms[None]
        b, n = waveforms.shape
        lengths = torch.full((b,), n, dtype=torch.long) if lengths is None else lengths.cpu().long()
        waves = waveforms.float().cpu().numpy()
        spans, clips = [], []  # (row, start, end) and the window's samples
        for row in range(b):
            seconds = int(lengths[row]) / self.sample_rate
            for s in self.window_starts(seconds):
                e = min(s + self.window_seconds, seconds)
                spans.append((row, s, e))
                clips.append(waves[row, round(s * self.sample_rate) : round(e * self.sample_rate)])
        vectors = self.embed_audio(clips) if clips else np.zeros((0, self.dim), np.float32)
        table = np.asarray(spans, dtype=np.float64).reshape(-1, 3)
        rows = table[:, 0].astype(np.int64)
        per_row = np.bincount(rows, minlength=b)
        slot = np.arange(len(rows)) - np.repeat(np.cumsum(per_row) - per_row, per_row)  # index within its row
        a = int(per_row.max()) if b else 0
        out_v, mask = torch.zeros(b, a, self.dim), torch.zeros(b, a, dtype=torch.bool)
        starts, ends = torch.zeros(b, a), torch.zeros(b, a)
        out_v[rows, slot] = torch.from_numpy(vectors).float()
        mask[rows, slot] = True
        starts[rows, slot] = torch.from_numpy(table[:, 1]).float()
        ends[rows, slot] = torch.from_numpy(table[:, 2]).float()
        return AudioTokenBatch(vectors=out_v, mask=mask, starts=starts, ends=ends)

    @torch.inference_mode()
    def embed_audio(self, clips: list[np.ndarray]) -> np.ndarray:
        """Waveforms at `sample_rate` -> (N, dim) unit vectors, in batches of `batch`."""
        out = []
        # an unfused model takes one crop; "fusion" makes the 4-crop input only fused models read.
        # Windows are never longer than the extractor's max length, so rand_trunc crops nothing.
        truncation = "fusion" if getattr(self.model.config.audio_config, "enable_fusion", False) else "rand_trunc"
        for i in range(0, len(clips), self.batch):
            feats = self.extractor(clips[i : i + self.batch], sampling_rate=self.sample_rate, return_tensors="pt", truncation=truncation)
            emb = self.model.get_audio_features(**{k: v for k, v in feats.items() if k in ("input_features", "is_longer")})
            out.append(F.normalize(_pooled(emb), dim=-1).float().numpy())
        return np.concatenate(out)

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Queries -> (N, dim) unit vectors in CLAP's space (CLAP's own text tower)."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        emb = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return F.normalize(_pooled(emb), dim=-1).float().numpy()


def _pooled(out) -> torch.Tensor:
    """`get_*_features` returns a tensor in transformers 4.x and an output object in 5.x."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_clap(name_or_path: str = DEFAULT_CLAP, **options) -> ClapTower:
    """CLAP from a local folder (`save_pretrained` layout), the local Hugging Face cache, or the hub
    when it is reachable; ModelLoadError naming the model and `--audio-model PATH` otherwise."""
    tf = _transformers()
    local = Path(name_or_path).expanduser()

    def parts(**kw):
        with _quiet_open_clip():
            return (tf.ClapModel.from_pretrained(name_or_path, **kw), tf.ClapFeatureExtractor.from_pretrained(name_or_path, **kw),
                    tf.AutoTokenizer.from_pretrained(name_or_path, **kw))  # fmt: skip

    if local.is_dir():
        try:
            model, extractor, tokenizer = parts(local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable folder gets the same clear message
            raise ModelLoadError(f"audio model folder {local} is not a CLAP model (save_pretrained of ClapModel, its feature extractor and tokenizer): {exc}") from exc
        weights = next((f"sha256:{file_sha256(f)[:16]}" for f in sorted(local.glob("*.safetensors")) + sorted(local.glob("*.bin"))), "local")
        return ClapTower(model, extractor, tokenizer, local.name, weights, **options)
    try:
        with _hub_offline():
            model, extractor, tokenizer = parts(local_files_only=True)
    except Exception as cached_exc:  # not in the cache: the hub, unless it cannot be reached
        if not _hub_reachable():
            raise ModelLoadError(
                f"audio model {name_or_path} is not in the local Hugging Face cache and the hub cannot be reached "
                f"(offline?). Point at a local copy with --audio-model PATH (a folder written by save_pretrained), "
                f"or index without it: --audio-model none."
            ) from cached_exc
        try:
            model, extractor, tokenizer = parts()
        except Exception as exc:
            raise ModelLoadError(f"could not load audio model {name_or_path}: {exc}. Use --audio-model PATH for a local copy.") from exc
    revision = getattr(model.config, "_commit_hash", None) or "hub"
    return ClapTower(model, extractor, tokenizer, name_or_path, f"hf:{revision}", **options)


@register_audio_tower("clap")
def _clap(dim: int | None = None, checkpoint: Path | None = None, **kwargs) -> ClapTower:
    """`load_audio_tower("clap", checkpoint=PATH_OR_NAME)`: CLAP keeps its own space, so `dim` (the
    frame/text tower's) is not imposed on it."""
    return load_clap(str(checkpoint) if checkpoint is not None else DEFAULT_CLAP, **kwargs)
