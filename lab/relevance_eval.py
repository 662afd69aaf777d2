"""Metrics as users feel them: is the first result *a* right answer, not *the* caption's own video?

R@1 counts a hit only when the caption's own video comes first, but other videos often hold the same
event ("a red circle moves left with a low tone" happens in several videos), so a perfect model scores
far below 100% and R@1 undersells what a user sees. Here a result is relevant when it holds an event
matching every attribute the caption names, read from a synthetic corpus's events.jsonl:

- **P@1 by relevance**: the first result holds such an event; **P@5**: the share of the first five
  that do;
- **moment P@1 (IoU >= 0.5)**: the first result is relevant *and* its top moment overlaps a matching
  event of that video with IoU >= 0.5 (where a user lands when they press play);
- **R@1 ceiling**: the R@1 of a perfect recogniser that ranks all matching videos equal (mean of
  1 / number of matching videos), i.e. how much of R@1's shortfall is ties, not mistakes;
- **direction accuracy**: how often a caption naming a direction scores above the same caption with
  the direction reversed, on its own video (50% = blind to order);
- **P@1 by attribute**: the first result holds an event with the caption's colour (shape, motion,
  sound), beside its chance (the share of videos holding it): which attribute a model misses.

Captions always name colour, shape, motion and sound (every template does); they name the backdrop,
on-screen words or speech only sometimes, and those count only when the caption names them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from vidsearch.metrics import temporal_iou

ALWAYS = ("colour", "shape", "motion", "sound")
BACKDROP_WORDS = ("background", "backdrop")


def named_key(event: dict, caption: str) -> tuple:
    """The attributes this caption names for its event, as a hashable key."""
    text = caption.lower()
    key = [event[a] for a in ALWAYS]
    key.append(event["background"] if any(w in text for w in BACKDROP_WORDS) else None)
    key.append(event["onscreen"] if event.get("onscreen") and f'"{event["onscreen"].lower()}"' in text else None)
    key.append(event["spoken"] if event.get("spoken") and f'"{event["spoken"].lower()}"' in text else None)
    return tuple(key)


def _matches(event: dict, key: tuple) -> bool:
    attrs = [event[a] for a in ALWAYS] + [event["background"], event.get("onscreen"), event.get("spoken")]
    return all(k is None or k == a for k, a in zip(key, attrs))


def _read_events(events_path: Path, data_root: Path, col_of_path: dict[str, int]) -> tuple[dict, dict[int, list[dict]]]:
    """events.jsonl as ({(resolved path, start): event}, {video column: its events})."""
    by_key: dict[tuple[str, float], dict] = {}
    by_col: dict[int, list[dict]] = defaultdict(list)
    for line in Path(events_path).read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        path = str((data_root / e["video"]).resolve())
        by_key[(path, round(float(e["start"]), 3))] = e
        if path in col_of_path:
            by_col[col_of_path[path]].append(e)
    return by_key, by_col


def _own_event(by_key: dict, queries, q: int) -> dict | None:
    """The event a query's caption describes (None for an untimed caption or one not in the file)."""
    return by_key.get((queries.path[q], round(float(queries.start[q]), 3))) if not np.isnan(queries.start[q]) else None


def relevant_events(events_path: Path, data_root: Path, col_of_path: dict[str, int], queries, true_cols: np.ndarray) -> list[dict[int, list[tuple[float, float]]]]:
    """Per query: {video column: [(start, end) of each matching event]} over the evaluated videos
    (``true_cols``: each query's own video's column, which always counts)."""
    by_key, by_col = _read_events(events_path, data_root, col_of_path)
    out = []
    for q in range(len(queries.text)):
        own = _own_event(by_key, queries, q)
        if own is None:
            out.append({int(true_cols[q]): [(queries.start[q], queries.end[q])]})
            continue
        key = named_key(own, queries.text[q])
        found: dict[int, list[tuple[float, float]]] = {}
        for col, events in by_col.items():
            spans = [(float(e["start"]), float(e["end"])) for e in events if _matches(e, key)]
            if spans:
                found[col] = spans
        found.setdefault(int(true_cols[q]), [(queries.start[q], queries.end[q])])
        out.append(found)
    return out


def attribute_relevance(events_path: Path, data_root: Path, col_of_path: dict[str, int], queries, true_cols: np.ndarray) -> dict[str, list[set[int]]]:
    """Per attribute the caption always names (colour, shape, motion, sound), per query: the video
    columns holding an event with the caption's own value of that attribute. P@1 on each says which
    attribute a model recognises and which it misses (P@1 by relevance needs all four at once)."""
    by_key, by_col = _read_events(events_path, data_root, col_of_path)
    cols_by_value: dict[tuple[str, str], set[int]] = defaultdict(set)
    for col, events in by_col.items():
        for e in events:
            for a in ALWAYS:
                cols_by_value[(a, e[a])].add(col)
    out: dict[str, list[set[int]]] = {a: [] for a in ALWAYS}
    for q in range(len(queries.text)):
        own = _own_event(by_key, queries, q)
        for a in ALWAYS:
            out[a].append(cols_by_value[(a, own[a])] | {int(true_cols[q])} if own is not None else {int(true_cols[q])})
    return out


def attribute_p1(sims: np.ndarray, by_attribute: dict[str, list[set[int]]]) -> dict[str, float]:
    """Percent of first results holding an event with the caption's colour (shape, motion, sound)."""
    top1 = np.argmax(sims, axis=1)
    return {a: round(100 * float(np.mean([int(top1[q]) in cols[q] for q in range(len(cols))])), 2) for a, cols in by_attribute.items()}


def attribute_chance(by_attribute: dict[str, list[set[int]]], videos: int) -> dict[str, float]:
    """`attribute_p1` of a ranking that ignores that attribute: the share of videos holding the
    caption's value (a video holds 2-3 events, so a random one often has the shape by luck)."""
    return {a: round(100 * float(np.mean([len(c) / videos for c in cols])), 2) for a, cols in by_attribute.items()}


def relevance_metrics(sims: np.ndarray, relevant: list[dict[int, list]], top_moment=None) -> dict:
    """P@1 / P@5 by relevance (percent) for a queries x videos score matrix; with ``top_moment(q,
    col) -> (start, end) | None`` also the share of first results whose top moment hits a matching
    event (IoU >= 0.5)."""
    order = np.argsort(-sims, axis=1, kind="stable")
    top1 = order[:, 0]
    top5 = order[:, :5]
    p1 = np.array([int(top1[q]) in relevant[q] for q in range(len(relevant))])
    p5 = np.array([np.mean([int(c) in relevant[q] for c in top5[q]]) for q in range(len(relevant))])
    out = {"P@1_relevant": round(100 * float(p1.mean()), 2), "P@5_relevant": round(100 * float(p5.mean()), 2)}
    if top_moment is not None:
        hits = []
        for q in range(len(relevant)):
            col = int(top1[q])
            moment = top_moment(q, col) if col in relevant[q] else None
            hits.append(moment is not None and bool((temporal_iou([moment], relevant[q][col]) >= 0.5).any()))
        out["moment_P@1_iou0.5"] = round(100 * float(np.mean(hits)), 2)
    return out


def r1_ceiling(relevant: list[dict[int, list]]) -> float:
    """R@1 (percent) of a model that recognises every named attribute perfectly and ranks all
    matching videos equal: the caption's own video comes first 1 / (matching videos) of the time."""
    return round(100 * float(np.mean([1.0 / len(r) for r in relevant])), 2)


def direction_accuracy(true_scores: np.ndarray, reversed_scores: np.ndarray) -> float:
    """Percent of captions whose own video scores them above their reversed-direction twin."""
    return round(100 * float(np.mean(np.asarray(true_scores) > np.asarray(reversed_scores))), 2)
