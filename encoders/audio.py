"""Audio tokens: 16 kHz mono waveform -> log-mel -> small conv + transformer -> timed vectors in D.

The fusion head attends over these tokens with the query, so each token must be (a) in the shared
embedding space of the frame/text tower (projected to D, unit length, like stored frame vectors) and
(b) timed, so an audio match can localise a moment. One token covers 0.5 s: long enough to hold a
bark or a word, short enough to place it.

The front end is written here on ``torch.stft`` (no torchaudio): 25 ms Hann window, 10 ms hop, 512-point
FFT, 64 HTK-mel triangular filters, natural log. STFT padding is zeros, not reflection, and every
stage re-zeros what lies past each clip's end, so a clip encodes the same alone or padded in a batch.

The encoder only ever sees clips of at most ``max_seconds`` (10 s): long soundtracks are cut into
token-aligned chunks and batched. That keeps attention cost flat for hour-long files and means training
(on short clips) and indexing see the same context length.

Pretrained towers plug in through ``AudioTower`` and ``register_audio_tower``; see ``AudioTower``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidsearch.fingerprint import Fingerprint

log = logging.getLogger(__name__)

__all__ = [
    "SAMPLE_RATE",
    "AudioEncoder",
    "AudioTokenBatch",
    "AudioTower",
    "LogMel",
    "audio_tokens",
    "audio_tokens_stream",
    "default_audio_tower",
    "hz_to_mel",
    "list_audio_towers",
    "load_audio_tower",
    "mel_to_hz",
    "mel_filterbank",
    "register_audio_tower",
    "set_default_audio_tower",
]

SAMPLE_RATE = 16_000
N_MELS = 64
WIN_SECONDS = 0.025
HOP_SECONDS = 0.010
DEFAULT_DIM = 256  # the shipped `tiny` frame/text tower's embedding size
WEIGHTS_DIR = Path(__file__).parent / "weights"
# Rough centre and spread of log-mel power for speech/ambient audio at float [-1, 1] scale; a fixed
# affine (not per-clip normalisation) so that silence stays recognisably quiet for the gate.
LOGMEL_MEAN, LOGMEL_STD = -6.0, 4.0
LOG_EPS = 1e-6


# ----------------------------------------------------------------------------------------- front end


def hz_to_mel(f: Tensor | float) -> Tensor:
    """HTK mel scale: linear-ish below ~1 kHz, logarithmic above, like pitch perception."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor | float) -> Tensor:
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(
    n_freqs: int = 257,
    n_mels: int = N_MELS,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> Tensor:
    """[n_freqs, n_mels] triangular filters, evenly spaced in mel, peak 1 at each filter's centre.

    Filter m rises from centre m-1 to centre m and falls to centre m+1 (centres include f_min and
    f_max at the ends), so neighbouring filters overlap by half and cover the band without gaps.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64))
    width = edges[1:] - edges[:-1]  # [n_mels + 1]
    offset = edges[None, :] - freqs[:, None]  # [n_freqs, n_mels + 2]
    rising = -offset[:, :-2] / width[:-1]
    falling = offset[:, 2:] / width[1:]
    return torch.minimum(rising, falling).clamp_min(0.0).to(torch.float32)


def mel_centers(n_mels: int = N_MELS, sample_rate: int = SAMPLE_RATE, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Centre frequency (Hz) of each mel filter, to read a spectrogram's axis."""
    f_max = sample_rate / 2 if f_max is None else f_max
    return mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2))[1:-1].float()


class LogMel(nn.Module):
    """Batched waveform [B, N] -> log-mel [B, frames, n_mels] and frame mask [B, frames]."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS, win_seconds: float = WIN_SECONDS, hop_seconds: float = HOP_SECONDS):
        super().__init__()
        self.sample_rate, self.n_mels = sample_rate, n_mels
        self.win_length = round(sample_rate * win_seconds)
        self.hop_length = round(sample_rate * hop_seconds)
        self.n_fft = 1 << (self.win_length - 1).bit_length()  # next power of two: 400 -> 512
        # derived, not learned: kept out of checkpoints so a checkpoint never pins the front end's numerics
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer("fbank", mel_filterbank(self.n_fft // 2 + 1, n_mels, sample_rate), persistent=False)

    def n_frames(self, lengths: Tensor) -> Tensor:
        """Frames whose centre lies within the clip (centred STFT: one per hop, plus the one at 0)."""
        return torch.where(lengths > 0, lengths // self.hop_length + 1, torch.zeros_like(lengths))

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if waveforms.dim() == 1:
            waveforms = waveforms[None]
        b, n = waveforms.shape
        if lengths is None:
            lengths = torch.full((b,), n, dtype=torch.long, device=waveforms.device)
        lengths = lengths.to(device=waveforms.device, dtype=torch.long)
        within = torch.arange(n, device=waveforms.device)[None, :] < lengths[:, None]
        wave = (waveforms * within).float()  # whatever sits in the padding must not leak into frames
        spec = torch.stft(
            wave, self.n_fft, self.hop_length, self.win_length, self.window,
            center=True, pad_mode="constant", return_complex=True,
        )  # [B, n_freqs, frames]
        power = spec.real.square() + spec.imag.square()
        logmel = torch.log(torch.einsum("bft,fm->btm", power, self.fbank) + LOG_EPS)
        frames = logmel.shape[1]
        mask = torch.arange(frames, device=wave.device)[None, :] < self.n_frames(lengths)[:, None]
        return logmel, mask


# ------------------------------------------------------------------------------------------ encoder


@dataclass
class AudioTokenBatch:
    """Padded audio tokens of a batch of clips; times are seconds from each clip's start."""

    vectors: Tensor  # [B, A, D], unit length where mask is True
    mask: Tensor  # [B, A] bool, True = real token
    starts: Tensor  # [B, A] float seconds
    ends: Tensor  # [B, A] float seconds


@runtime_checkable
class AudioTower(Protocol):
    """What the indexer and training need from an audio encoder; implement it to plug in your own.

    A pretrained tower (an AST, BEATs, CLAP or PANNs checkpoint already on disk) fits by wrapping it in
    a class with these members, mapping its output to ``dim`` (the frame/text tower's embedding size)
    and giving each token its time span, then registering a factory::

        @register_audio_tower("clap-local")
        def _clap(dim: int, checkpoint: Path | None = None, **kw) -> AudioTower:
            return MyClapTower(dim, checkpoint)           # loads from a local file; no downloads here

        tower = load_audio_tower("clap-local", dim=512, checkpoint=Path("clap.pt"))

    ``fingerprint`` must change whenever the vectors would (model, weights, dim), because stored
    audio vectors of two towers must never be compared.
    """

    sample_rate: int
    dim: int
    max_seconds: float

    @property
    def fingerprint(self) -> Fingerprint: ...

    def encode(self, waveforms: Tensor, lengths: Tensor | None = None) -> AudioTokenBatch: ...


def _sinusoids(length: int, width: int, device: torch.device) -> Tensor:
    """Fixed positions: no length limit baked into parameters, and nothing to learn from few clips."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10_000.0) / width))
    pe = torch.zeros(length, width, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: width // 2])
    return pe


class AudioEncoder(nn.Module):
    """The built-in "small" tower: strided conv stem over log-mel, a short transformer, a projection to D.

    Each conv has stride s and kernel 2s-1 (padding s-1), so a stage of L steps becomes ceil(L/s) and
    token i sits on mel frames [50 i, 50 i + 50) for strides (2, 5, 5): 0.5 s per token at a 10 ms
    hop. The transformer then lets a token use its neighbours (a word's context, a sound's onset)
    within the clip.
    """

    def __init__(
        self,
        dim: int = DEFAULT_DIM,
        width: int = 128,
        layers: int = 2,
        heads: int = 4,
        n_mels: int = N_MELS,
        strides: tuple[int, ...] = (2, 5, 5),
        sample_rate: int = SAMPLE_RATE,
        max_seconds: float = 10.0,
        name: str = "small",
        weights: str = "random:seed0",
    ):
        super().__init__()
        self.dim, self.sample_rate, self.name, self.weights = dim, sample_rate, name, weights
        self.config = dict(dim=dim, width=width, layers=layers, heads=heads, n_mels=n_mels, strides=tuple(strides), sample_rate=sample_rate)
        self.melspec = LogMel(sample_rate, n_mels)
        self.strides = tuple(strides)
        self.frames_per_token = math.prod(self.strides)
        self.samples_per_token = self.frames_per_token * self.melspec.hop_length
        self.token_seconds = self.samples_per_token / sample_rate
        # whole tokens per chunk, so chunk boundaries fall on token boundaries
        self.max_seconds = max(1, int(max_seconds // self.token_seconds)) * self.token_seconds
        convs, c_in = [], n_mels
        for s in self.strides:
            convs.append(nn.Conv1d(c_in, width, kernel_size=2 * s - 1, stride=s, padding=s - 1))
            c_in = width
        self.convs = nn.ModuleList(convs)
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, dim)

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint(model=f"audio-{self.name}", weights=self.weights, dim=self.dim, extra={k: list(v) if isinstance(v, tuple) else v for k, v in self.config.items()})

    def n_tokens(self, lengths: Tensor) -> Tensor:
        """Tokens that start inside the clip: ceil(samples / samples_per_token)."""
        return (lengths + self.samples_per_token - 1) // self.samples_per_token

    def encode(self, waveforms: Tensor, lengths: Tensor | None = None) -> AudioTokenBatch:
        if waveforms.dim() == 1:
            waveforms = waveforms[None]
        b, n = waveforms.shape
        device = waveforms.device
        if lengths is None:
            lengths = torch.full((b,), n, dtype=torch.long, device=device)
        lengths = lengths.to(device=device, dtype=torch.long)
        x, valid = self.melspec(waveforms, lengths)
        x = ((x - LOGMEL_MEAN) / LOGMEL_STD) * valid[..., None]
        x = x.transpose(1, 2)  # [B, n_mels, frames]
        steps = valid.sum(-1)
        for conv, s in zip(self.convs, self.strides):
            x = F.gelu(conv(x))
            steps = (steps + s - 1) // s
            # zero past each clip's end, as if the clip had been encoded alone (conv pads with zeros)
            x = x * (torch.arange(x.shape[-1], device=device)[None, :] < steps[:, None])[:, None, :]
        # the last stage step may only hold the centred STFT's closing frame; it is no token of its own
        n_tok = self.n_tokens(lengths)
        a = int(n_tok.max()) if b else 0
        if a == 0:  # nothing but empty clips: no tokens, and nothing for attention to attend to
            empty = x.new_zeros(b, 0)
            return AudioTokenBatch(x.new_zeros(b, 0, self.dim), empty.bool(), empty, empty)
        x = x[..., :a].transpose(1, 2)  # [B, A, width]
        mask = torch.arange(a, device=device)[None, :] < n_tok[:, None]
        x = x + _sinusoids(a, x.shape[-1], device)
        # attention needs at least one key per row; an empty clip gets one dummy key and no tokens
        keys = mask.clone()
        keys[:, 0] = True
        x = self.transformer(x, src_key_padding_mask=~keys)
        vectors = F.normalize(self.proj(self.norm(x)), dim=-1) * mask[..., None]
        idx = torch.arange(a, device=device, dtype=torch.float32)[None, :]
        duration = (lengths.float() / self.sample_rate)[:, None]
        starts = (idx * self.token_seconds) * mask
        ends = torch.minimum((idx + 1) * self.token_seconds, duration) * mask
        return AudioTokenBatch(vectors=vectors, mask=mask, starts=starts, ends=ends)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> AudioTokenBatch:
        return self.encode(waveforms, lengths)


# ----------------------------------------------------------------------------------------- registry

_TOWERS: dict[str, Callable[..., AudioTower]] = {}


def register_audio_tower(name: str, factory: Callable[..., AudioTower] | None = None):
    """Register ``factory(dim=..., checkpoint=..., **kw) -> AudioTower`` under ``name``; usable as a decorator."""

    def add(f: Callable[..., AudioTower]) -> Callable[..., AudioTower]:
        _TOWERS[name] = f
        return f

    return add(factory) if factory is not None else add


def list_audio_towers() -> list[str]:
    return sorted(_TOWERS)


def load_audio_tower(name: str = "small", *, dim: int = DEFAULT_DIM, checkpoint: Path | str | None = None, **kwargs) -> AudioTower:
    if name not in _TOWERS:
        raise ValueError(f"unknown audio tower {name!r}; registered: {list_audio_towers()} (add yours with register_audio_tower)")
    return _TOWERS[name](dim=dim, checkpoint=None if checkpoint is None else Path(checkpoint), **kwargs)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@register_audio_tower("small")
def _small(dim: int = DEFAULT_DIM, checkpoint: Path | None = None, seed: int = 0, **kwargs) -> AudioEncoder:
    """Our encoder: from a checkpoint ({"config": ..., "state_dict": ...} or a bare state dict),
    else the shipped ``weights/audio-small.pt`` when its dim matches, else a seeded random init whose
    fingerprint says so (vectors are then only useful for testing the plumbing)."""
    shipped = WEIGHTS_DIR / "audio-small.pt"
    path = checkpoint if checkpoint is not None else (shipped if shipped.is_file() else None)
    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return AudioEncoder(dim=dim, weights=f"random:seed{seed}", **kwargs).eval()
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(blob, dict) and "state_dict" in blob:
        config, state = {**blob.get("config", {}), **kwargs}, blob["state_dict"]
    else:
        config, state = dict(kwargs), blob
    config.setdefault("dim", dim)
    if config["dim"] != dim:
        raise ValueError(f"audio checkpoint {path} projects to dim {config['dim']}, but the frame/text tower has dim {dim}")
    if "strides" in config:
        config["strides"] = tuple(config["strides"])
    model = AudioEncoder(**config, weights=f"sha256:{_sha256(path)}")
    model.load_state_dict(state)
    return model.eval()


_default: AudioTower | None = None


def set_default_audio_tower(tower: AudioTower | None) -> None:
    """Make ``audio_tokens`` use this tower when none is passed (e.g. the one training just produced)."""
    global _default
    _default = tower


def default_audio_tower() -> AudioTower:
    global _default
    if _default is None:
        _default = load_audio_tower("small")
        if _default.fingerprint.weights.startswith("random:"):
            log.warning("audio tower %s has no trained weights; audio vectors are untrained", _default.fingerprint.describe())
    return _default


# ------------------------------------------------------------------------------------------ indexer


def _mono(waveform) -> Tensor:
    wave = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, Tensor) else waveform)
    if not wave.is_floating_point():
        raise ValueError("expected a float waveform in [-1, 1] (decode with ffmpeg -f f32le)")
    if wave.dim() == 2:  # [channels, samples]: listeners hear the sum, so the encoder gets the mean
        wave = wave.float().mean(0)
    if wave.dim() != 1:
        raise ValueError(f"expected a mono [N] or [channels, N] waveform, got shape {tuple(wave.shape)}")
    return wave.float()


@torch.inference_mode()
def audio_tokens(
    waveform,
    sr: int = SAMPLE_RATE,
    tower: AudioTower | None = None,
    *,
    chunks_per_batch: int = 32,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A whole soundtrack -> (starts [A], ends [A], vectors [A, D]), float32, times in file seconds.

    The soundtrack is cut into ``tower.max_seconds`` chunks encoded as one padded batch (a few
    batches for long files); an empty soundtrack gives zero tokens.
    """
    tower = default_audio_tower() if tower is None else tower
    if sr != tower.sample_rate:
        raise ValueError(f"audio must be {tower.sample_rate} Hz mono (decode with ffmpeg -ac 1 -ar {tower.sample_rate}); got {sr} Hz")
    wave = _mono(waveform)
    n = wave.shape[0]
    chunk = round(tower.max_seconds * tower.sample_rate)
    n_chunks = -(-n // chunk)
    if n_chunks == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros((0, tower.dim), np.float32)
    device = next(iter(tower.parameters()), torch.empty(0)).device if isinstance(tower, nn.Module) else torch.device("cpu")
    padded = F.pad(wave, (0, n_chunks * chunk - n)).view(n_chunks, chunk).to(device)
    lengths = (n - torch.arange(n_chunks, device=device) * chunk).clamp(max=chunk)
    starts, ends, vectors = [], [], []
    for i in range(0, n_chunks, chunks_per_batch):
        out = tower.encode(padded[i : i + chunks_per_batch], lengths[i : i + chunks_per_batch])
        offset = (torch.arange(out.mask.shape[0], device=device) + i)[:, None] * (chunk / tower.sample_rate)
        starts.append((out.starts + offset)[out.mask])
        ends.append((out.ends + offset)[out.mask])
        vectors.append(out.vectors[out.mask])
    return (
        torch.cat(starts).float().cpu().numpy(),
        torch.cat(ends).float().cpu().numpy(),
        torch.cat(vectors).float().cpu().numpy(),
    )


def audio_tokens_stream(
    blocks,
    sr: int = SAMPLE_RATE,
    tower: AudioTower | None = None,
    *,
    chunks_per_batch: int = 8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``audio_tokens`` over a soundtrack that arrives in consecutive blocks (ffmpeg's output as it is
    read), so an hours-long soundtrack never sits in memory: one batch of chunks at a time. Batches are
    cut on chunk boundaries, so the tokens equal those of the whole waveform encoded at once. Batches of
    8 chunks (80 s): with 32 the process's peak grew by ~90 MB over a 2-hour soundtrack, with 8 by the
    tokens themselves (~20 MB)."""
    tower = default_audio_tower() if tower is None else tower
    span = round(tower.max_seconds * tower.sample_rate) * chunks_per_batch
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending: list[np.ndarray] = []
    held = consumed = 0

    def encode(wave: np.ndarray) -> None:
        s, e, v = audio_tokens(wave, sr, tower, chunks_per_batch=chunks_per_batch)
        offset = np.float32(consumed / sr)
        parts.append((s + offset, e + offset, v))

    for block in blocks:
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        pending.append(block)
        held += len(block)
        while held >= span:
            wave = np.concatenate(pending)
            encode(wave[:span])
            consumed += span
            pending, held = [wave[span:]], held - span
    if held:
        encode(np.concatenate(pending))
    if not parts:
        return np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros((0, tower.dim), np.float32)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]
