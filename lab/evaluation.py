"""`vidsearch eval`: retrieval and moment metrics of an index against captioned data.

Every caption is a query whose true video is the one it describes. Scores are computed for every
query against every evaluated video, per method, so the ablation compares like with like:
- `mean`: the caption against the mean of the video's unit vectors (CLIP4Clip meanP);
- `xpool`: text-conditioned pooling (the trained X-Pool head, or the parameter-free variant);
- `fused`: X-Pool plus text-conditioned audio attention (TEFAL), when the model has an audio tower;
- `+window`: that (or X-Pool) plus the video's best event window (search/event_windows.py);
- `+direction`: the same, the window scored with the query contrasted with its reversed direction
  where it names one (search/direction_contrast.py), the fine stage's visual score as search
  computes it (only for a model whose units read order, where search does it);
- `engine`: the product's own ranking (coarse ANN, channel fusion, re-ranking), as `search` returns it.
Retrieval metrics follow CLIP4Clip, moment metrics QVHighlights (vidsearch.metrics). Moments are
predicted in the caption's own video, from the relevance curve (scored with the contrasted query
too), as `search` cuts them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidsearch.api_models import Filters, SearchRequest
from vidsearch.encoders import ParameterFreePool, mean_pool
from vidsearch.metrics import moment_metrics, retrieval_metrics
from vidsearch.search import SearchEngine, VideoFeatures, audio_hits, localize_moments
from vidsearch.search.direction_contrast import contrast, reversed_text
from vidsearch.search.event_windows import best_windows, channel_hits, window_weight
from vidsearch.search.features import pad_vectors
from vidsearch.search.motion_channel import query_motion
from vidsearch.search.shape_channel import query_shape
from vidsearch.search.sound_channel import query_sound
from vidsearch.store import StoreError

from .datasets import read_jsonl
from .relevance_eval import attribute_chance, attribute_p1, attribute_relevance, direction_accuracy, r1_ceiling, relevance_metrics, relevant_events

CHUNK = 64  # queries per scoring chunk (bounded memory: CHUNK x videos x D)


@dataclass
class Queries:
    text: list[str]
    video: np.ndarray  # (Q,) column of the true video
    start: np.ndarray  # (Q,) NaN where the caption has no times
    end: np.ndarray
    sound_dependent: np.ndarray  # (Q,) bool
    path: list[str]  # (Q,) the true video's resolved path


def _pad(feats: list[VideoFeatures], audio: bool) -> tuple[torch.Tensor, torch.Tensor]:
    vectors = [f.audio_vectors if audio else f.vectors for f in feats]
    dim = max((v.shape[1] for v in vectors if v.size), default=1)
    x, m = pad_vectors(vectors, dim)
    return torch.from_numpy(x), torch.from_numpy(m)


def event_key(video: str | Path, start: float | None) -> tuple[str, float]:
    """How a caption finds its event in events.jsonl: the video's resolved path and the start time."""
    return str(Path(video).resolve()), round(float(start or 0.0), 3)


def sound_dependent_map(events: Path | None, data_root: Path) -> dict[tuple[str, float], bool]:
    """event_key -> whether another event differs only by its sound (synth data)."""
    if events is None or not events.is_file():
        return {}
    out = {}
    for line in events.read_text().splitlines():
        e = json.loads(line)
        out[event_key(data_root / e["video"], e["start"])] = bool(e.get("sound_dependent"))
    return out


def load_queries(data: Path, path_to_col: dict[str, int], events: Path | None) -> Queries:
    items = read_jsonl(data)
    sd = sound_dependent_map(events, data.parent)
    missing = [str(it.video) for it in items if str(it.video.resolve()) not in path_to_col]
    if missing:
        raise StoreError(
            f"{len(missing)} video(s) of {data} are not in the index (first: {missing[0]}); "
            f"index them first with `vidsearch index` on the same --db"
        )
    text, video, start, end, dep, paths = [], [], [], [], [], []
    for it in items:
        col = path_to_col[str(it.video.resolve())]
        for c in it.captions:
            paths.append(str(it.video.resolve()))
            text.append(c.text)
            video.append(col)
            start.append(np.nan if c.start is None else c.start)
            end.append(np.nan if c.end is None else c.end)
            dep.append(sd.get(event_key(it.video, c.start), False))
    return Queries(text, np.array(video), np.array(start), np.array(end), np.array(dep, bool), paths)


def evaluate(engine: SearchEngine, data: Path, events: Path | None = None, with_engine: bool = True) -> dict:
    store = engine.store
    files = store.files()
    indexed = engine.snapshot.videos
    path_to_vid = {p: v for p, v, s in zip(files["path"].to_pylist(), files["video_id"].to_pylist(), files["status"].to_pylist())
                   if s == "indexed" and v in indexed}  # fmt: skip
    vids = sorted(set(path_to_vid.values()))
    col_of_vid = {v: i for i, v in enumerate(vids)}
    if events is None and (Path(data).parent / "events.jsonl").is_file():  # a synthetic corpus's ground truth
        events = Path(data).parent / "events.jsonl"
    queries = load_queries(Path(data), {p: col_of_vid[v] for p, v in path_to_vid.items()}, events)
    used = sorted(set(queries.video.tolist()))  # evaluate over the videos the data names
    remap = {c: i for i, c in enumerate(used)}
    true_cols = np.array([remap[c] for c in queries.video])
    feats_by_id = engine.cache.get_many([vids[c] for c in used])
    feats = [feats_by_id[vids[c]] for c in used]
    text = _encode(engine, queries.text)
    rows, rev = _reversed(engine, queries.text)  # encoded once: the contrast and direction accuracy read them
    units = _unit_queries(text, rows, rev) if getattr(engine, "reads_order", False) else None
    sims = _method_scores(engine, torch.from_numpy(text), feats, units)
    if with_engine:
        sims["engine"] = _engine_scores(engine, queries, [vids[c] for c in used])
    report: dict = {"queries": len(queries.text), "videos": len(used), "methods": {}}
    for name, s in sims.items():
        row = retrieval_metrics(s, true_cols)
        if queries.sound_dependent.any():
            sub = retrieval_metrics(s[queries.sound_dependent], true_cols[queries.sound_dependent])
            row["sound_R@1"] = sub["R@1"]
        report["methods"][name] = {k: round(float(v), 2) for k, v in row.items()}
    report["sound_dependent_queries"] = int(queries.sound_dependent.sum())
    head = getattr(engine.backbone, "head", None)
    if events is not None and Path(events).is_file():
        col_of_path = {p: remap[col_of_vid[v]] for p, v in path_to_vid.items() if col_of_vid[v] in remap}
        relevant = relevant_events(Path(events), Path(events).parent, col_of_path, queries, true_cols)

        @functools.cache  # the methods often agree on the first result: cut its moment once
        def top_moment(q: int, col: int):
            f = feats[col]
            hits = _moment_hits(head, text[q], f, queries.text[q])
            curve = f.vectors @ (text[q] if units is None else units[q])
            found = localize_moments(f.start, f.end, curve, hits if hits.size else None, max_moments=1)
            return (found.moments[0].start, found.moments[0].end) if found.moments else None

        by_attribute = attribute_relevance(Path(events), Path(events).parent, col_of_path, queries, true_cols)
        for name, s in sims.items():
            report["methods"][name].update(relevance_metrics(s, relevant, top_moment))
            report["methods"][name]["P@1_by_attribute"] = attribute_p1(s, by_attribute)
        report["R@1_ceiling"] = r1_ceiling(relevant)
        report["attribute_chance"] = attribute_chance(by_attribute, len(used))
    report["direction"] = _direction(engine, queries, text, rows, rev, true_cols, feats)
    timed = ~np.isnan(queries.start)
    if timed.any():
        args = (text[timed], feats, true_cols[timed], queries.start[timed], queries.end[timed])
        on_units = None if units is None else units[timed]
        said = [t for t, ok in zip(queries.text, timed) if ok]
        report["moments"] = _moment_metrics(*args, head, on_units, said)  # as search cuts them
        if any(_names_a_reading(t) for t in said):
            report["moments_without_reading_channels"] = _moment_metrics(*args, head, on_units)
        if head is not None and any(f.audio_vectors.size for f in feats):
            report["moments_frames_only"] = _moment_metrics(*args, None, on_units)
        if on_units is not None:
            report["moments_without_direction_contrast"] = _moment_metrics(*args, head, None, said)
    return report


def _encode(engine: SearchEngine, texts: list[str]) -> np.ndarray:
    return np.concatenate([engine.backbone.encode_text(texts[i : i + 256]) for i in range(0, len(texts), 256)])


def _reversed(engine: SearchEngine, texts: list[str]) -> tuple[list[int], np.ndarray | None]:
    """The captions that name a direction (their rows) and their reversed twins' vectors."""
    rows = [q for q, t in enumerate(texts) if reversed_text(t) is not None]
    return rows, (_encode(engine, [reversed_text(texts[q]) for q in rows]) if rows else None)


def _unit_queries(text: np.ndarray, rows: list[int], rev: np.ndarray | None) -> np.ndarray | None:
    """What search scores units with for each caption, for a model whose units read order
    (search/direction_contrast.py): the caption contrasted with its reversed twin where it names a
    direction (`rows`, twins `rev`); None where no caption names one."""
    if not rows:
        return None
    units = text.copy()
    for q, twin in zip(rows, rev):
        units[q] = contrast(text[q], text[q], twin)
    return units


def _direction(engine: SearchEngine, queries: Queries, text: np.ndarray, rows: list[int], rev: np.ndarray | None, true_cols: np.ndarray,
               feats: list[VideoFeatures]) -> dict | None:  # fmt: skip
    """Direction accuracy per method: each caption naming a direction (`rows`) against its reversed
    twin (`rev`), scored on the caption's own video, and ("event") on the units of the caption's own event."""
    if not rows:
        return None
    cols, idx = np.unique(true_cols[rows], return_inverse=True)  # each query's own video among those scored
    own = [feats[c] for c in cols]
    true_s = _method_scores(engine, torch.from_numpy(text[rows]), own)
    rev_s = _method_scores(engine, torch.from_numpy(rev), own)
    out: dict = {"queries": len(rows)}
    pick = np.arange(len(rows))
    for name in true_s:
        out[name] = direction_accuracy(true_s[name][pick, idx], rev_s[name][pick, idx])
    # on the event itself: the mean of the units inside the caption's own span, as a moment is
    # scored, so the video's other events (moving their own ways) do not vote
    pairs = []
    for j, q in enumerate(rows):
        f = own[idx[j]]
        centre = (f.start + f.end) / 2
        inside = (centre >= queries.start[q]) & (centre <= queries.end[q])  # False for untimed captions (NaN)
        if inside.any():
            event = f.vectors[inside].mean(axis=0)
            pairs.append((float(event @ text[q]), float(event @ rev[j])))
    if pairs:
        true_e, rev_e = np.asarray(pairs).T
        out["event"], out["event_queries"] = direction_accuracy(true_e, rev_e), len(pairs)
    return out


@torch.inference_mode()
def _method_scores(engine: SearchEngine, text: torch.Tensor, feats: list[VideoFeatures], units: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each method's (queries, videos) scores; `units`: what search scores units with (the
    `+direction` method), None where it scores them with the query itself."""
    frames, mask = _pad(feats, audio=False)
    head = getattr(engine.backbone, "head", None)
    has_audio = head is not None and any(f.audio_vectors.size for f in feats)
    audio, amask = _pad(feats, audio=True) if has_audio else (None, None)
    out = {"mean": [], "xpool": []}
    if has_audio:
        out["fused"] = []
    out["+window"] = []
    if units is not None:
        out["+direction"] = []
    pfree = ParameterFreePool(engine.settings.pool_temperature)
    for i in range(0, len(text), CHUNK):
        t = text[i : i + CHUNK]
        pooled, _ = mean_pool(t, frames, mask)
        out["mean"].append(torch.einsum("td,tvd->tv", t, F.normalize(pooled, dim=-1)))
        if head is not None:
            scores = head.scores(t, frames, mask, audio, amask)
            out["xpool"].append(scores["video"])
            if has_audio:
                out["fused"].append(scores["fused"])
        else:
            out["xpool"].append(pfree.similarity(t, frames, mask))
        # the fine stage's score as search computes it: the video-level one plus the best event window
        # (without the motion channel: the `engine` method, the served ranking, has it)
        video_level = out["fused" if has_audio else "xpool"][-1]
        windows = torch.from_numpy(best_windows(t.numpy(), feats, use_audio=has_audio).T)  # (queries, videos)
        out["+window"].append(video_level + window_weight(head) * windows)
        if units is not None:
            contrasted = torch.from_numpy(best_windows(units[i : i + CHUNK], feats, use_audio=has_audio).T)
            out["+direction"].append(video_level + window_weight(head) * contrasted)
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def _engine_scores(engine: SearchEngine, queries: Queries, vids: list[str]) -> np.ndarray:
    """The product ranking as a score matrix, in the order it is served, below every ranked score
    where a video is not ranked: by calibrated relevance where the model has a calibration (each
    place its own score), else by fused score rounded to 6 digits as the API reports it, so ties
    rank as a client would see them."""
    sims = np.full((len(queries.text), len(vids)), -1e9, dtype=np.float64)
    col = {v: i for i, v in enumerate(vids)}
    for q, text in enumerate(queries.text):
        # min_relevance 0: every candidate ranked, so an unranked true video cannot tie at the floor
        ranking = engine.rank(engine.plan(SearchRequest(query=text, top_k=200, min_relevance=0.0, filters=Filters(video_ids=vids))))
        for place, c in enumerate(ranking.candidates[:200]):  # the first page, as a client asking top_k=200 gets
            if c.video_id in col:
                sims[q, col[c.video_id]] = -place if ranking.calibrated else round(c.score, 6)
    return sims


def _names_a_reading(said: str) -> bool:
    """Whether a caption names a motion, shape or sound the reading channels look for."""
    return any(parse(said) is not None for parse in (query_motion, query_shape, query_sound))


def _moment_hits(head, q: np.ndarray, f: VideoFeatures, said: str | None) -> np.ndarray:
    """The timed evidence search adds to a moment's curve: the soundtrack's matching tokens (with a
    head) and, for the caption's words `said`, where the reading channels agree with the motion,
    shape or sound it names (ranking.moment_evidence)."""
    sound = audio_hits(head, q, f)
    if said is None:
        return sound
    return np.concatenate([sound, channel_hits([f], None, query_motion(said), query_shape(said), query_sound(said))[0]])


def _moment_metrics(text: np.ndarray, feats: list[VideoFeatures], video: np.ndarray, start: np.ndarray, end: np.ndarray, head=None,
                    units: np.ndarray | None = None, said: list[str] | None = None) -> dict:  # fmt: skip
    """Moments in the caption's own video: from the frames (the curve scored with `units`, else the
    caption itself), plus the soundtrack when `head` is given, plus the reading channels for the
    captions' words `said`."""
    preds, gts = {}, {}
    for q in range(len(text)):
        f = feats[video[q]]
        hits = _moment_hits(head, text[q], f, None if said is None else said[q])
        curve = f.vectors @ (text[q] if units is None else units[q])
        found = localize_moments(f.start, f.end, curve, hits if hits.size else None, max_moments=10)
        preds[q] = np.array([[m.start, m.end, m.score] for m in found.moments], dtype=np.float64).reshape(-1, 3)
        gts[q] = np.array([[start[q], end[q]]])
    return {k: round(float(v), 2) for k, v in moment_metrics(preds, gts).items()}
