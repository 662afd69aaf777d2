"""The fine stage's arithmetic: one query against each candidate's stored unit vectors (and audio
tokens), through the trained X-Pool / TEFAL head when the model has one, parameter-free X-Pool
otherwise. No video is re-encoded at query time.

Candidates have different numbers of units, so they are scored in zero-padded chunks of similar
lengths (sorted by length, a bounded number of floats per chunk), which bounds memory and wastes
little work on padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .features import VideoFeatures, pad_vectors

__all__ = ["Reranked", "rerank"]

CHUNK_FLOATS = 16 << 20  # floats per padded chunk


@dataclass(frozen=True)
class Reranked:
    """Per candidate, in input order."""

    scores: np.ndarray  # (N,) X-Pool score, fused with audio when asked and the head has audio
    attention: list[np.ndarray]  # (T_i,) X-Pool's weights over each candidate's units
    audio_part: np.ndarray  # (N,) what the audio added to the fused score: weight x gate x audio score
    audio_gate: np.ndarray  # (N,) the head's trust in each soundtrack for this query (0: none)


def rerank(q: np.ndarray, feats: list[VideoFeatures], masks: list[np.ndarray], head=None, pooler=None, use_audio: bool = False) -> Reranked:
    """Score candidates `feats` for query `q`, attending only to the units `masks` keep."""
    n = len(feats)
    scores = np.zeros(n, dtype=np.float32)
    audio_part = np.zeros(n, dtype=np.float32)
    gates = np.zeros(n, dtype=np.float32)
    weights: list[np.ndarray] = [np.zeros(0, np.float32)] * n
    if n == 0:
        return Reranked(scores, weights, audio_part, gates)
    lengths = np.array([len(f.start) for f in feats])
    order = np.argsort(lengths, kind="stable")
    dim = feats[0].vectors.shape[1]
    text = torch.from_numpy(q.astype(np.float32))
    i = 0
    while i < n:
        tmax = int(lengths[order[i]])
        j = i
        while j < n and (j - i + 1) * max(tmax, int(lengths[order[j]])) * dim <= CHUNK_FLOATS:
            tmax = max(tmax, int(lengths[order[j]]))
            j += 1
        j = max(j, i + 1)
        idx = order[i:j]
        frames = np.zeros((len(idx), tmax, dim), dtype=np.float32)
        mask = np.zeros((len(idx), tmax), dtype=bool)
        for row, k in enumerate(idx):
            t = len(feats[k].start)
            frames[row, :t] = feats[k].vectors
            mask[row, :t] = masks[k]
        a = g = np.zeros(len(idx), np.float32)
        with torch.inference_mode():
            if head is not None:
                audio, amask = _padded_audio([feats[k] for k in idx], dim)
                out = head.rerank(text, torch.from_numpy(frames), torch.from_numpy(mask), audio, amask)
                s, w = (out["fused"] if use_audio else out["video"]), out["frame_weights"]
                g = out["gate"].numpy()
                a = (head.audio_weight * out["gate"] * out["audio"]).numpy()
            else:
                s, w = pooler.rerank(text, torch.from_numpy(frames), torch.from_numpy(mask))
        s, w = s.numpy(), w.numpy()
        for row, k in enumerate(idx):
            scores[k] = s[row]
            audio_part[k] = a[row]
            gates[k] = g[row]
            weights[k] = w[row, : lengths[k]]
        i = j
    return Reranked(scores, weights, audio_part, gates)


def _padded_audio(feats: list[VideoFeatures], dim: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Audio tokens of a chunk of candidates as a padded batch (None when none has audio)."""
    x, m = pad_vectors([f.audio_vectors for f in feats], dim)
    if not m.any():
        return None, None
    return torch.from_numpy(x), torch.from_numpy(m)
