"""Weighted reciprocal rank fusion of the retrieval channels (visual, audio, speech, on-screen text).

The channels score on incomparable scales (cosine similarity vs BM25), so their scores are never added;
only ranks are: score(v) = sum_c w_c / (k + rank_c(v)), ranks 1-based, k = 60 by default. A large k
flattens the head of each list, so one channel's top hit does not drown agreement between channels.
Calibrated score fusion should replace this only after it is measured to beat RRF on the synthetic set
(METHODS.md, "Fusing channels").

Each channel's rank and raw score are kept per fused id, because a result must say which channel
matched it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["FusedRanking", "reciprocal_rank_fusion", "DEFAULT_K"]

DEFAULT_K = 60.0


@dataclass(frozen=True)
class FusedRanking:
    """Fused ids best first, with what each channel contributed.

    ranks[i, c] is id i's 1-based rank in channel c (0: absent from that channel); channel_scores[i, c]
    is the channel's own score when one was given (NaN otherwise or when absent); contributions[i, c]
    is w_c / (k + rank), so contributions.sum(axis=1) == scores.
    """

    ids: np.ndarray  # (N,)
    scores: np.ndarray  # (N,) float64
    channels: tuple[str, ...]
    ranks: np.ndarray  # (N, C) int64
    channel_scores: np.ndarray  # (N, C) float64
    contributions: np.ndarray  # (N, C) float64

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def explain(self, i: int) -> dict[str, dict[str, float]]:
        """Per-channel rank, score and share of the fused score for the i-th result (channels that
        did not rank it are left out)."""
        out: dict[str, dict[str, float]] = {}
        for c, name in enumerate(self.channels):
            if self.ranks[i, c] > 0:
                out[name] = {
                    "rank": int(self.ranks[i, c]),
                    "score": float(self.channel_scores[i, c]),
                    "contribution": float(self.contributions[i, c]),
                }
        return out

    def head(self, n: int) -> "FusedRanking":
        return FusedRanking(
            self.ids[:n],
            self.scores[:n],
            self.channels,
            self.ranks[:n],
            self.channel_scores[:n],
            self.contributions[:n],
        )


def _as_id_array(ids: Sequence[Any] | np.ndarray) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


def reciprocal_rank_fusion(
    lists: Mapping[str, Sequence[Any] | np.ndarray],
    weights: Mapping[str, float] | None = None,
    *,
    k: float = DEFAULT_K,
    scores: Mapping[str, Sequence[float] | np.ndarray] | None = None,
    limit: int | None = None,
) -> FusedRanking:
    """Fuse ranked id lists (best first) into one ranking.

    lists: channel name -> ids, best first. An id listed twice in one channel counts once, at its
    best rank (a channel that returns several segments of one video must not vote twice).
    weights: channel name -> weight (missing channels weigh 1.0; a weight of 0 keeps the channel in
    the explanation but out of the score).
    scores: optional channel name -> the channel's own scores aligned with its list, kept only for
    explanations.
    Ties in fused score are broken by the best single-channel rank, then by first appearance
    (channel order, then position), so the result is deterministic.
    """
    if k < 0:
        raise ValueError("k must be >= 0")
    weights = dict(weights or {})
    scores = dict(scores or {})
    channels = tuple(lists.keys())
    unknown = set(scores) - set(channels)
    if unknown:
        raise ValueError(f"scores given for channels without a list: {sorted(unknown)}")

    per_channel: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (ids, 1-based ranks, scores)
    for name in channels:
        ids = _as_id_array(lists[name])
        if name in scores:
            sc = np.asarray(scores[name], dtype=np.float64).reshape(-1)
            if sc.shape[0] != ids.shape[0]:
                raise ValueError(f"channel {name!r}: {ids.shape[0]} ids but {sc.shape[0]} scores")
        else:
            sc = np.full(ids.shape[0], np.nan)
        if ids.size:
            _, first = np.unique(ids, return_index=True)
            first.sort()
        else:
            first = np.empty(0, dtype=np.int64)
        per_channel.append((ids[first], first.astype(np.int64) + 1, sc[first]))

    non_empty = [p[0] for p in per_channel if p[0].size]
    if not non_empty:
        empty2 = np.empty((0, len(channels)))
        return FusedRanking(
            np.empty(0, dtype=object), np.empty(0), channels,
            empty2.astype(np.int64), empty2, empty2,
        )
    all_ids = np.concatenate(non_empty)
    uniq, first_seen, inverse = np.unique(all_ids, return_index=True, return_inverse=True)

    n, c = uniq.shape[0], len(channels)
    ranks = np.zeros((n, c), dtype=np.int64)
    chan_scores = np.full((n, c), np.nan)
    offset = 0
    for j, (ids, rk, sc) in enumerate(per_channel):
        rows = inverse[offset : offset + ids.shape[0]]
        ranks[rows, j] = rk
        chan_scores[rows, j] = sc
        offset += ids.shape[0]

    w = np.array([float(weights.get(name, 1.0)) for name in channels])
    present = ranks > 0
    contrib = np.where(present, w[None, :] / (k + np.where(present, ranks, 1)), 0.0)
    fused = contrib.sum(axis=1)
    best_rank = np.where(present, ranks, np.iinfo(np.int64).max).min(axis=1)
    order = np.lexsort((first_seen, best_rank, -fused))
    if limit is not None:
        order = order[: max(0, int(limit))]
    return FusedRanking(uniq[order], fused[order], channels, ranks[order], chan_scores[order], contrib[order])
