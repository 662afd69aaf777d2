"""Text-conditioned audio fusion without training (the TEFAL idea, parameter-free), for audio tokens
of a pretrained tower (CLAP) that live in a space of their own, with any visual backbone.

For a query q (in the audio tower's text space) and a video's audio tokens a_1..a_A (unit vectors):

    c_j    = q · a_j                                   each token's match to the query
    w_j    = softmax_j(c_j / temperature)               the query attends to the tokens that match it
    s_a    = Σ_j w_j c_j                                the soundtrack's score for this query
    gate   = sigmoid(gate_scale · (max_j c_j − gate_bias))   trust: does *any* token match well?
    fused  = s_v + weight · gate · s_a

Attention, not the mean, because a bark lasts a second of a minute-long soundtrack; the gate looks at
the best token before the pooled score may vote, so silent or unrelated soundtracks (no token close
to the query) are shut out instead of adding noise, and a video with no audio tokens gets gate 0:
its fused score is exactly its visual score. Nothing is learned: `temperature`, `gate_scale`,
`gate_bias` and `weight` are settings. Where a checkpoint brings a trained TEFAL head (the `tiny`
model), that head is used instead (search/ranking.py).

`audio_hits` turns the matching tokens into timed evidence for the moment curve, weighted as the
fusion weighs audio, so the seconds that sound like the query shape the moment.

Batched over candidates: tokens arrive padded [V, A, D] with a mask [V, A] (features.pad_vectors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AudioFusion", "AudioQuery", "AudioScores"]


@dataclass(frozen=True)
class AudioScores:
    score: np.ndarray  # (V,) s_a
    gate: np.ndarray  # (V,) trust in each soundtrack for this query (0: no audio tokens)
    weights: np.ndarray  # (V, A) attention over each video's tokens (0 on padding)
    cosine: np.ndarray  # (V, A) c_j (0 on padding)

    def fused(self, visual: np.ndarray, weight: float) -> np.ndarray:
        return np.asarray(visual, np.float64) + weight * self.gate * self.score


@dataclass(frozen=True)
class AudioFusion:
    weight: float = 0.5  # audio's part against the visual score
    temperature: float = 0.05  # attention sharpness over tokens (cosine units)
    gate_scale: float = 20.0
    gate_bias: float = 0.2  # a best-token cosine below this barely counts

    def scores(self, query: np.ndarray, tokens: np.ndarray, mask: np.ndarray) -> AudioScores:
        """query (D,), tokens (V, A, D) unit vectors, mask (V, A) -> per-video audio scores."""
        tokens = np.asarray(tokens, np.float32)
        mask = np.asarray(mask, bool)
        v = tokens.shape[0]
        if tokens.ndim != 3 or tokens.shape[1] == 0:
            zeros = np.zeros(v)
            return AudioScores(zeros, zeros.copy(), np.zeros((v, 0)), np.zeros((v, 0)))
        cos = np.where(mask, tokens @ np.asarray(query, np.float32), 0.0).astype(np.float64)
        logits = np.where(mask, cos / self.temperature, -np.inf)
        has = mask.any(axis=1)
        top = np.where(has, logits.max(axis=1, initial=-np.inf, where=mask), 0.0)
        e = np.where(mask, np.exp(logits - top[:, None]), 0.0)
        weights = e / np.maximum(e.sum(axis=1, keepdims=True), 1e-12)
        score = (weights * cos).sum(axis=1)
        best = np.where(has, np.where(mask, cos, -1.0).max(axis=1), -1.0)
        gate = 1.0 / (1.0 + np.exp(-self.gate_scale * (best - self.gate_bias))) * has
        return AudioScores(score, gate, weights, cos)

    def audio_hits(self, starts: np.ndarray, ends: np.ndarray, cosine: np.ndarray, gate: float) -> np.ndarray:
        """One video's tokens -> timed (start, end, score) rows for the moment curve: each token's match
        above the soundtrack's median, scaled by weight x gate (a gate of 0 adds nothing)."""
        cosine = np.asarray(cosine, np.float64)
        if cosine.size == 0:
            return np.empty((0, 3))
        lift = self.weight * gate * (cosine - np.median(cosine))
        return np.stack([np.asarray(starts, np.float64), np.asarray(ends, np.float64), lift], axis=1)


@dataclass(frozen=True)
class AudioQuery:
    """A search's query in the audio tower's own text space, and how its match is fused."""

    vector: np.ndarray  # (D_audio,) unit length
    fusion: AudioFusion

    def fuse(self, visual: np.ndarray, audio: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates' visual scores and stored audio tokens -> (fused scores, audio part, gate)."""
        from .features import pad_vectors

        tokens, mask = pad_vectors(audio, len(self.vector))
        got = self.fusion.scores(self.vector, tokens, mask)
        part = self.fusion.weight * got.gate * got.score
        return (np.asarray(visual, np.float64) + part).astype(np.float32), part.astype(np.float32), got.gate.astype(np.float32)

    def hits(self, starts: np.ndarray, ends: np.ndarray, tokens: np.ndarray, gate: float) -> np.ndarray:
        """One video's timed audio evidence for the moment curve (empty without tokens of this space)."""
        if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] != len(self.vector):
            return np.empty((0, 3))
        return self.fusion.audio_hits(starts, ends, tokens @ self.vector, gate)
