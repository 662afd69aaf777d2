"""How a ranking is presented over HTTP: pages and cursors, rounded numbers, links, the video record.

The engine ranks; what a response looks like is decided here, once, for the API, the in-process
client the UI and `vidsearch search --db` use, and the benchmarks: a cursor is the next offset
tied to the request and the index version it belongs to (`min_score` applies before paging); scores are rounded to 6 digits and times to 3 (milliseconds);
the relevance curve is thinned to at most 200 points; each result links to its video, its media and
a thumbnail at its first moment.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

import numpy as np

from vidsearch.api_models import Curve, MomentOut, SearchRequest, SearchResponse, SearchResult, VideoInfo
from vidsearch.search import Hit, SearchEngine, SearchError

__all__ = ["CURVE_POINTS", "links", "relevance_label", "rounded", "search_response", "search_results", "video_info"]

CURVE_POINTS = 200


def video_info(row: dict) -> VideoInfo:
    """A `videos` row (metadata parsed) as the API's video record."""
    return VideoInfo(
        id=row["video_id"],
        title=row["title"],
        uri=row["path"],
        duration=row["duration"],
        width=row.get("width"),
        height=row.get("height"),
        has_audio=row.get("has_audio"),
        metadata=row["metadata"],
    )


def links(video_id: str, t: float | None = None, moment: MomentOut | None = None) -> dict[str, str]:
    """Where a result's parts are: the video, its media, a thumbnail and the player at `t`, the
    moment as a playable clip, and `ui`: the UI's own address of that moment (relative to the UI's
    root, which the API does not know), so a moment can be shared."""
    base = f"/v1/videos/{video_id}"
    out = {"self": base, "media": f"{base}/media"}
    if t is not None:
        out["player"] = f"{base}/media#t={t:.2f}"
        out["thumbnail"] = f"{base}/thumbnail?t={t:.2f}"
        out["ui"] = f"?video={video_id}&t={t:.2f}"
    if moment is not None:
        out["clip"] = f"{base}/clip?start={moment.start:.3f}&end={moment.end:.3f}"
        out["ui"] = f"?video={video_id}&t={t if t is not None else moment.start:.2f}&start={moment.start:.3f}&end={moment.end:.3f}"
    return out


def relevance_label(p: float | None) -> str | None:
    """A relevance as people read it: strong (>= 0.8), good (>= 0.5), weak."""
    if p is None:
        return None
    return "strong" if p >= 0.8 else "good" if p >= 0.5 else "weak"


def best_time(curve, start: float, end: float) -> float:
    """Where the relevance curve peaks inside [start, end] (the moment's start when no bin falls in it)."""
    inside = (curve.times >= start) & (curve.times <= end)
    if not inside.any():
        return start
    return float(curve.times[inside][np.argmax(curve.values[inside])])


def empty_message(ranking, query: str | None) -> str | None:
    """Why a first page is empty, in words: nothing passed the relevance threshold, or nothing matched.
    `query`: the words searched for; None for a search by picture or moment alone (it was quoted as
    'this search')."""
    what = repr(query) if query else "this search"
    if len(ranking.plan.snapshot.ids) == 0:  # every video deleted, or a first index run that has committed none yet
        return "the index holds no videos yet: nothing to search (index a folder first, or wait for the run that is indexing one)"
    if ranking.plan.allowed is not None and len(ranking.plan.allowed) == 0:
        return f"no indexed video passes the filters of {what}"
    if ranking.dropped:
        return (
            f"nothing in the library matches {what} well enough: the best result's relevance is "
            f"{ranking.best_dropped:.0%}, under the threshold of {ranking.min_relevance:.0%} "
            f"(set min_relevance lower to see weaker matches)"
        )
    return f"nothing in the library matches {what}"


def encode_cursor(offset: int, key: str, version: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "k": key, "v": version}).encode()).decode()


def decode_cursor(cursor: str, key: str) -> tuple[int, str]:
    """The offset a cursor continues from and the index version it was made on; SearchError when it
    is not one of ours or belongs to another query."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        offset, ckey, cversion = data["o"], data["k"], data["v"]
        if type(offset) is not int or not isinstance(ckey, str) or not isinstance(cversion, str):
            raise TypeError("a cursor holds an integer offset, its query's key and an index version")
    except Exception as exc:  # noqa: BLE001 - any malformed cursor is the client's error
        raise SearchError("cursor is not valid (use next_cursor from a previous response)") from exc
    if ckey != key or offset < 0:
        raise SearchError("cursor belongs to a different query; start again without a cursor")
    return offset, cversion


def request_key(req: SearchRequest) -> str:
    """What a cursor is tied to: the request, less the cursor."""
    body = req.model_dump(exclude={"cursor"}, mode="json")
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def rounded(values: np.ndarray, digits: int) -> list[float]:
    """`round(float(v), digits)` for each v, vectorised: thousands per response (the curve, the unit
    times, the attention weights) cost ~2 ms a search one at a time.

    Exactly the same numbers: rint(v * 10^d) is the integer Python's correctly rounded `round`
    picks unless v * 10^d lies within its rounding error of a half (then Python decides, element by
    element), and dividing that integer by 10^d rounds correctly, as parsing the decimal does.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    scale = 10.0**digits
    with np.errstate(invalid="ignore"):
        y = x * scale
        out = np.rint(y) / scale
        frac = np.abs(y - np.trunc(y))
        risky = (np.abs(frac - 0.5) <= 1e-9 * np.maximum(1.0, np.abs(y))) | ~np.isfinite(y) | (np.abs(y) >= 2.0**52)
    if risky.any():
        out[risky] = [round(v, digits) for v in x[risky].tolist()]
    return out.tolist()


def search_results(hits: list[Hit], rows: list[dict]) -> list[SearchResult]:
    """A page of results as the API shows them; the numbers of the whole page rounded in two passes
    (each pass costs ~30 us of numpy calls whatever its size: two per result were ~0.6 ms a page)."""
    ms_parts, six_parts, shapes = [], [], []
    for hit in hits:
        c, curve = hit.candidate, hit.found.curve
        step = max(1, int(np.ceil(len(curve.times) / CURVE_POINTS)))
        times, values = curve.times[::step], curve.values[::step]
        attention = np.asarray(c.attention, dtype=np.float64).reshape(-1)
        ms_parts += [c.features.start, c.features.end, times]
        six_parts += [attention, values]
        shapes.append((len(c.features.start), len(times), attention.size))
    at_ms = rounded(np.concatenate(ms_parts), 3) if ms_parts else []
    at_6 = rounded(np.concatenate(six_parts), 6) if six_parts else []
    out, i, j = [], 0, 0
    for hit, row, (n_units, n_curve, n_att) in zip(hits, rows, shapes):
        c, curve = hit.candidate, hit.found.curve
        rel = hit.moment_relevance or (None,) * len(hit.moments)
        # a unit's end is its frame's end, up to a frame past the video's last instant: a moment (and its
        # clip link, its exported edit) ends where the video does
        end_of = float(row["duration"]) if row.get("duration") else float("inf")
        moments = [
            MomentOut(start=round(min(m.start, end_of), 3), end=round(min(m.end, end_of), 3), score=round(m.score, 6),
                      relevance=None if r is None else round(r, 4), best=round(min(best_time(curve, m.start, m.end), end_of), 3))
            for m, r in zip(hit.moments, rel)
        ]  # fmt: skip
        starts, ends, times = at_ms[i : i + n_units], at_ms[i + n_units : i + 2 * n_units], at_ms[i + 2 * n_units : i + 2 * n_units + n_curve]
        weights, values = at_6[j : j + n_att], at_6[j + n_att : j + n_att + n_curve]
        i, j = i + 2 * n_units + n_curve, j + n_att + n_curve
        out.append(SearchResult(
            video=video_info(row),
            score=round(hit.score, 6),
            relevance=None if hit.relevance is None else round(hit.relevance, 4),
            relevance_label=relevance_label(hit.relevance),
            channel_scores={name: round(v, 6) for name, v in c.channel_scores.items()},
            moments=moments,
            frame_weights=weights,
            unit_times=[[a, b] for a, b in zip(starts, ends)],
            spans=c.spans,
            curve=Curve(times=times, values=values),
            links=links(c.video_id, moments[0].best if moments else 0.0, moments[0] if moments else None),
        ))  # fmt: skip
    return out


def search_response(engine: SearchEngine, req: SearchRequest, query_vector: np.ndarray | None = None) -> SearchResponse:
    """One page of results for a request (SearchError when it cannot be answered as asked)."""
    t0 = time.perf_counter()
    key = request_key(req)
    offset, made_on = decode_cursor(req.cursor, key) if req.cursor else (0, None)
    plan = engine.plan(req, query_vector)
    version = plan.snapshot.version
    if made_on is not None and made_on != version:  # its offsets would skip or repeat results
        raise SearchError(f"the index changed since this cursor was made (version {made_on}, now {version}); start again without a cursor")
    ranking = engine.rank(plan)
    if req.min_score is not None:
        ranking = ranking.at_least(req.min_score)
    hits = ranking.page(offset, req.top_k)
    results = search_results(hits, [plan.snapshot.videos[hit.candidate.video_id] for hit in hits])
    more = offset + req.top_k < len(ranking)
    return SearchResponse(
        query=req.query or "",
        inputs=plan.inputs,
        group_by=req.group_by,
        results=results,
        next_cursor=encode_cursor(offset + req.top_k, key, version) if more else None,
        min_relevance=ranking.min_relevance,
        message=empty_message(ranking, req.query or None) if not results and offset == 0 else None,
        index_version=version,
        took_ms=round((time.perf_counter() - t0) * 1000, 3),
    )
