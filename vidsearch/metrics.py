"""Evaluation metrics, computed the way the reference tools compute them.

A number is only worth reporting if it can be set beside published ones, so every rule here follows
the tool that defined the metric, down to its quirks:

* text-to-video retrieval (R@K, MdR, MnR) as CLIP4Clip's ``compute_metrics``;
* moment retrieval (R1@0.5, R1@0.7, mAP over IoU 0.5:0.05:0.95) as QVHighlights' standalone_eval
  (jayleicn/moment_detr), whose AP is ActivityNet's greedy matching with VOC-style interpolation.

Where a reference is silent or would crash (a query with no predicted window) the choice made here is
written at the function that makes it. Everything is columnar numpy: queries, thresholds and windows
are array axes; the only Python loops run over the (at most ten) predictions of a query, because
greedy matching is sequential by nature, or over row chunks, to bound memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

RETRIEVAL_KS: tuple[int, ...] = (1, 5, 10)
# Two-decimal thresholds, built the way standalone_eval builds them: np.linspace gives
# 0.8999999999999999, which would let a window just short of IoU 0.9 count as a hit.
MOMENT_IOU_THRESHOLDS: tuple[float, ...] = tuple(
    float(f"{t:.2f}") for t in np.linspace(0.5, 0.95, 10)
)
R1_IOU_THRESHOLDS: tuple[float, ...] = (0.5, 0.7)
MAX_PRED_WINDOWS = 10

_RANK_CHUNK_ROWS = 4096

Qid = Hashable


# --------------------------------------------------------------------------------------------------
# Text-to-video retrieval
# --------------------------------------------------------------------------------------------------


def ranks_from_similarity(sim: np.ndarray, true_cols: np.ndarray | None = None) -> np.ndarray:
    """Rank of each row's true column: how many columns score strictly higher than it.

    Strictly higher, so a tie with the true video does not push it down: this is the rank CLIP4Clip
    means (first position of the true score in the sorted row), without its bug of emitting several
    ranks for a row with ties. ``true_cols[i]`` names row i's video when several captions share one
    video; without it row i's video is column i. Rows are compared in chunks so a large matrix
    never needs a second boolean matrix of its full size.
    """
    sim = _as_similarity(sim)
    rows = sim.shape[0]
    cols = _true_columns(sim.shape, true_cols)
    true_scores = sim[np.arange(rows), cols]
    ranks = np.empty(rows, dtype=np.int64)
    for start in range(0, rows, _RANK_CHUNK_ROWS):
        stop = start + _RANK_CHUNK_ROWS
        ranks[start:stop] = np.count_nonzero(sim[start:stop] > true_scores[start:stop, None], axis=1)
    return ranks


def retrieval_metrics_from_ranks(
    ranks: np.ndarray | Sequence[int], ks: Sequence[int] = RETRIEVAL_KS
) -> dict[str, float]:
    """R@K (percent), MdR and MnR from 0-based ranks.

    Kept apart from the similarity matrix so any ranking (a fused one, an ANN one that never builds
    the full matrix) is scored by the same rules. MdR and MnR add 1 because CLIP4Clip reports ranks
    counted from 1.
    """
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
    if not np.issubdtype(ranks.dtype, np.integer) or (ranks < 0).any():
        raise ValueError("ranks must be non-negative integers (0 = the true item came first)")
    n = ranks.size
    out = {f"R@{k}": float(np.count_nonzero(ranks < k)) * 100 / n for k in ks}
    out["MdR"] = float(np.median(ranks)) + 1
    out["MnR"] = float(np.mean(ranks)) + 1
    return out


def retrieval_metrics(sim: np.ndarray, true_cols: np.ndarray | None = None) -> dict[str, float]:
    """CLIP4Clip's retrieval metrics for a queries x videos similarity matrix.

    Row i's true video is column i unless ``true_cols`` says otherwise (several captions per video).
    Keys: ``R@1``, ``R@5``, ``R@10`` (percent), ``MdR``, ``MnR``.
    """
    return retrieval_metrics_from_ranks(ranks_from_similarity(sim, true_cols))


def _as_similarity(sim: np.ndarray) -> np.ndarray:
    """A 2-D real matrix without NaN, because NaN compares false and would silently rank first."""
    sim = np.asarray(sim)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be a 2-D (queries x videos) matrix, got shape {sim.shape}")
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"similarity matrix is empty (shape {sim.shape})")
    if not (np.issubdtype(sim.dtype, np.integer) or np.issubdtype(sim.dtype, np.floating)):
        raise ValueError(f"similarity must hold real numbers, got dtype {sim.dtype}")
    if np.issubdtype(sim.dtype, np.floating) and np.isnan(sim).any():
        raise ValueError("similarity matrix contains NaN")
    return sim


def _true_columns(shape: tuple[int, int], true_cols: np.ndarray | None) -> np.ndarray:
    """Each row's true column, checked, so a bad index is an error rather than a wrong rank."""
    rows, cols = shape
    if true_cols is None:
        if cols < rows:
            raise ValueError(
                f"row i's true video is column i, so the matrix needs at least as many columns as "
                f"rows; got {rows} rows and {cols} columns (pass true_cols for other layouts)"
            )
        return np.arange(rows)
    true_cols = np.asarray(true_cols)
    if true_cols.shape != (rows,):
        raise ValueError(f"true_cols needs one entry per row ({rows}), got shape {true_cols.shape}")
    if not np.issubdtype(true_cols.dtype, np.integer):
        raise ValueError(f"true_cols must be integer column indices, got dtype {true_cols.dtype}")
    if ((true_cols < 0) | (true_cols >= cols)).any():
        raise ValueError(f"true_cols must lie in [0, {cols}); got values outside it")
    return true_cols


# --------------------------------------------------------------------------------------------------
# Moment retrieval
# --------------------------------------------------------------------------------------------------


def temporal_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every window in ``a`` (..., N, 2) with every window in ``b`` (..., M, 2): (..., N, M).

    Leading axes broadcast, so a whole padded batch of queries is one call. The union is the two
    lengths minus the overlap (as the reference's AP matching computes it), so windows that only
    touch score 0, and two zero-length windows score 0 rather than 0/0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a0, a1 = a[..., :, None, 0], a[..., :, None, 1]
    b0, b1 = b[..., None, :, 0], b[..., None, :, 1]
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0, None)
    union = (a1 - a0) + (b1 - b0) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def recall_at_one(
    pred_windows: Sequence[np.ndarray],
    gt_windows: Sequence[np.ndarray],
    thresholds: Sequence[float] = R1_IOU_THRESHOLDS,
) -> np.ndarray:
    """Per query and threshold, whether the top-1 window hits some ground-truth window: (Q, T) bool.

    "Top-1" is the first window as submitted, not the highest-scored one: standalone_eval reads
    ``pred_relevant_windows[0]``, and the submission format promises best-first order. A query with
    no predicted window is a miss (the reference would crash on it). The IoU here divides by the
    span from the earliest start to the latest end, as the reference's paired IoU does; wherever the
    windows overlap that is the union, and computing it the same way keeps boundary cases (IoU
    exactly 0.7) rounding as theirs do.
    """
    preds, pred_valid = _pad(pred_windows, 3)
    gts, gt_valid = _pad(gt_windows, 2)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if preds.shape[1] == 0:
        return np.zeros((len(preds), len(thresholds)), dtype=bool)
    iou = _hull_iou(preds[:, :1, :2], gts)[:, 0, :]  # (Q, G)
    best = np.where(gt_valid, iou, 0.0).max(axis=1, initial=0.0)
    return (best[:, None] >= thresholds[None, :]) & pred_valid[:, :1]


def average_precision(
    pred_windows: Sequence[np.ndarray],
    gt_windows: Sequence[np.ndarray],
    thresholds: Sequence[float] = MOMENT_IOU_THRESHOLDS,
) -> np.ndarray:
    """Per-query average precision at each IoU threshold: (Q, T) in [0, 1].

    ActivityNet detection AP, as standalone_eval uses it: predictions in descending score (ties keep
    submitted order), each matched to the still-unmatched ground-truth window of highest IoU at or
    above the threshold, and AP is the area under the precision envelope (VOC 2011 interpolation)
    over recall. Callers truncate to the top 10 submitted windows first; ``moment_metrics`` does.
    A query without predictions, or without ground truth, has AP 0.
    """
    preds, pred_valid = _pad(pred_windows, 3)
    gts, gt_valid = _pad(gt_windows, 2)
    order = np.argsort(np.where(pred_valid, -preds[..., 2], np.inf), axis=1, kind="stable")
    preds = np.take_along_axis(preds, order[..., None], axis=1)
    pred_valid = np.take_along_axis(pred_valid, order, axis=1)
    iou = temporal_iou(preds[..., :2], gts)  # (Q, P, G)
    tp = _greedy_true_positives(iou, pred_valid, gt_valid, np.asarray(thresholds, dtype=np.float64))
    return _interpolated_ap(tp, pred_valid.sum(axis=1), gt_valid.sum(axis=1))


def moment_metrics(
    predictions: Mapping[Qid, np.ndarray],
    ground_truth: Mapping[Qid, np.ndarray],
    max_pred_windows: int | None = MAX_PRED_WINDOWS,
) -> dict[str, float]:
    """QVHighlights moment-retrieval metrics, in percent.

    ``predictions`` maps qid -> (P, 3) windows [start, end, score] in submitted order;
    ``ground_truth`` maps qid -> (G, 2) windows. Both must cover the same queries, as the reference
    insists, so a dropped query cannot flatter the score. Only the first ``max_pred_windows``
    submitted windows count (the reference keeps 10). mAP averages AP over queries, then over the ten
    thresholds. A query with an empty window list counts as AP 0 and an R1 miss; the reference
    would leave it out of mAP (and crash in R1), which would reward predicting nothing.
    Keys: ``R1@0.5``, ``R1@0.7``, ``mAP@0.5``, ``mAP@0.75``, ``mAP``.
    """
    qids = _matched_qids(predictions, ground_truth)
    preds = [_as_windows(predictions[q], 3, f"qid {q!r} predictions")[:max_pred_windows] for q in qids]
    gts = [_as_windows(ground_truth[q], 2, f"qid {q!r} ground truth") for q in qids]
    r1 = recall_at_one(preds, gts, R1_IOU_THRESHOLDS).mean(axis=0)
    ap = average_precision(preds, gts, MOMENT_IOU_THRESHOLDS).mean(axis=0)
    by_thd = dict(zip(MOMENT_IOU_THRESHOLDS, ap))
    out = {f"R1@{t}": 100 * float(v) for t, v in zip(R1_IOU_THRESHOLDS, r1)}
    out["mAP@0.5"] = 100 * float(by_thd[0.5])
    out["mAP@0.75"] = 100 * float(by_thd[0.75])
    out["mAP"] = 100 * float(np.mean(ap))
    return out


def _matched_qids(
    predictions: Mapping[Qid, np.ndarray], ground_truth: Mapping[Qid, np.ndarray]
) -> list[Qid]:
    """The shared query ids, or an error naming the strays, so a partial submission is not scored."""
    if not ground_truth:
        raise ValueError("ground truth has no queries")
    missing = [q for q in ground_truth if q not in predictions]
    extra = [q for q in predictions if q not in ground_truth]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} ground-truth qid(s) lack predictions, e.g. {missing[:5]!r}")
        if extra:
            parts.append(f"{len(extra)} predicted qid(s) not in the ground truth, e.g. {extra[:5]!r}")
        raise ValueError("predictions and ground truth cover different queries: " + "; ".join(parts))
    return list(ground_truth)


def _hull_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU with the earliest-start-to-latest-end span as denominator (the reference's R1 formula)."""
    a0, a1 = a[..., :, None, 0], a[..., :, None, 1]
    b0, b1 = b[..., None, :, 0], b[..., None, :, 1]
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0, None)
    hull = np.maximum(a1, b1) - np.minimum(a0, b0)
    return np.divide(inter, hull, out=np.zeros_like(inter), where=hull > 0)


def _greedy_true_positives(
    iou: np.ndarray, pred_valid: np.ndarray, gt_valid: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Greedy matching for all queries and thresholds at once: (Q, T, P) true-positive flags.

    Predictions must already be in score order. Each one takes the unmatched ground-truth window of
    highest IoU at or above the threshold; among equal IoUs the later window, as the reference's
    reversed argsort does. The loop runs over prediction slots only (at most ten).
    """
    n_q, n_p, n_g = iou.shape
    tp = np.zeros((n_q, len(thresholds), n_p), dtype=bool)
    if n_g == 0:
        return tp
    matched = np.zeros((n_q, len(thresholds), n_g), dtype=bool)
    q_idx = np.arange(n_q)[:, None]
    t_idx = np.arange(len(thresholds))[None, :]
    for p in range(n_p):
        ious = iou[:, None, p, :]  # (Q, 1, G)
        free = (ious >= thresholds[None, :, None]) & gt_valid[:, None, :] & ~matched
        pick = n_g - 1 - np.argmax(np.where(free, ious, -1.0)[..., ::-1], axis=-1)  # (Q, T)
        hit = free.any(axis=-1) & pred_valid[:, None, p]
        tp[:, :, p] = hit
        matched[q_idx, t_idx, pick] |= hit
    return tp


def _interpolated_ap(tp: np.ndarray, n_pred: np.ndarray, n_gt: np.ndarray) -> np.ndarray:
    """Area under the VOC 2011 precision envelope, (Q, T, P) flags -> (Q, T).

    The curve is bracketed by (recall 0) and (recall 1, precision 0) as the reference does, so
    ground truth never recalled adds nothing, and a query without ground truth (recall held at 0)
    gets AP 0 instead of 0/0. Padding slots (beyond a query's own predictions) get
    precision 0 and no recall step, which leaves the envelope of the real points untouched.
    """
    n_q, n_t, n_p = tp.shape
    hits = np.cumsum(tp, axis=-1, dtype=np.float64)
    rank = np.arange(1, n_p + 1, dtype=np.float64)
    real = rank[None, None, :] <= n_pred[:, None, None]
    precision = np.where(real, hits / rank, 0.0)
    denom = n_gt[:, None, None].astype(np.float64)
    recall = np.divide(hits, denom, out=np.zeros_like(hits), where=denom > 0)
    padded = np.concatenate([precision, np.zeros((n_q, n_t, 1))], axis=-1)
    envelope = np.maximum.accumulate(padded[..., ::-1], axis=-1)[..., ::-1]
    bracketed = np.concatenate([np.zeros((n_q, n_t, 1)), recall, np.ones((n_q, n_t, 1))], axis=-1)
    return (np.diff(bracketed, axis=-1) * envelope).sum(axis=-1)


def _pad(windows: Sequence[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-query windows -> one (Q, Kmax, width) array and a validity mask, for batching."""
    n_q = len(windows)
    k_max = max((len(w) for w in windows), default=0)
    out = np.zeros((n_q, k_max, width), dtype=np.float64)
    valid = np.zeros((n_q, k_max), dtype=bool)
    for i, w in enumerate(windows):
        w = _as_windows(w, width, f"query {i}")
        out[i, : len(w)] = w
        valid[i, : len(w)] = True
    return out, valid


def _as_windows(windows: np.ndarray | Sequence, width: int, what: str) -> np.ndarray:
    """Checked (K, width) float windows, so a reversed or NaN window is an error, not a silent 0."""
    arr = np.asarray(windows, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, width))
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{what}: expected windows of {width} numbers, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: windows must be finite numbers")
    if (arr[:, 1] < arr[:, 0]).any():
        raise ValueError(f"{what}: a window ends before it starts")
    return arr


# --------------------------------------------------------------------------------------------------
# QVHighlights submission files
# --------------------------------------------------------------------------------------------------


def read_predictions(path: str | Path) -> dict[Qid, np.ndarray]:
    """Predictions jsonl (``{"qid", "pred_relevant_windows": [[start, end, score], ...]}``).

    Returns qid -> (P, 3) windows in file order, since the order is part of the submission (the first
    window is the top-1). Other keys (``pred_saliency_scores``, ``vid``...) are ignored. An empty
    window list is allowed and scores as a miss.
    """
    return _read_windows_jsonl(Path(path), "pred_relevant_windows", 3, allow_empty=True)


def read_ground_truth(path: str | Path) -> dict[Qid, np.ndarray]:
    """Ground-truth jsonl (``{"qid", "relevant_windows": [[start, end], ...]}``) -> qid -> (G, 2).

    A query needs at least one window: without one recall is undefined and the reference crashes.
    """
    return _read_windows_jsonl(Path(path), "relevant_windows", 2, allow_empty=False)


def _read_windows_jsonl(path: Path, key: str, width: int, allow_empty: bool) -> dict[Qid, np.ndarray]:
    """One qid -> windows entry per non-blank line; errors say file, line and what is wrong."""
    out: dict[Qid, np.ndarray] = {}
    try:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    qid, windows = _parse_record(line, key, width, allow_empty)
                    if qid in out:
                        raise ValueError(f"duplicate qid {qid!r}")
                except ValueError as e:
                    raise ValueError(f"{path}, line {lineno}: {e}") from None
                out[qid] = windows
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (expected JSON lines)") from None
    if not out:
        raise ValueError(f"{path}: no records (expected one JSON object per line)")
    return out


def _parse_record(line: str, key: str, width: int, allow_empty: bool) -> tuple[Qid, np.ndarray]:
    """Decode and check one jsonl record; the problem, without location, goes into a ValueError."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "qid" not in record:
        raise ValueError('missing "qid"')
    qid = record["qid"]
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise ValueError(f'"qid" must be an integer or a string, got {json.dumps(qid)}')
    if key not in record:
        raise ValueError(f'missing "{key}"')
    return qid, _parse_windows(record[key], key, width, allow_empty)


def _parse_windows(raw: object, key: str, width: int, allow_empty: bool) -> np.ndarray:
    """JSON windows -> (K, width) floats; strings and booleans are refused, not coerced."""
    shape = "[start, end, score]" if width == 3 else "[start, end]"
    if not isinstance(raw, list):
        raise ValueError(f'"{key}" must be a list of {shape} windows')
    if not raw and not allow_empty:
        raise ValueError(f'"{key}" is empty (each query needs at least one window)')
    for j, w in enumerate(raw):
        if not (isinstance(w, list) and len(w) == width and all(_is_number(x) for x in w)):
            raise ValueError(f'"{key}"[{j}] must be {shape} numbers, got {json.dumps(w)}')
        if not all(math.isfinite(x) for x in w):
            raise ValueError(f'"{key}"[{j}] has a non-finite number: {json.dumps(w)}')
        if w[1] < w[0]:
            raise ValueError(f'"{key}"[{j}] ends before it starts: {json.dumps(w)}')
    return np.asarray(raw, dtype=np.float64).reshape(len(raw), width)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
