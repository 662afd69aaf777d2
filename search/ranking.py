"""The query path after planning: coarse candidates → fine re-ranking → moments, as typed values.

1. **Candidate pool** (coarse). Each channel ranks videos its own cheap way: the segment vectors by
   ANN (visual; the audio channel rides on the same candidates), each text channel by BM25 and
   sentence vectors over its spans. Reciprocal rank fusion of those lists picks the `candidates`
   videos worth a closer look. This first fusion only decides *who* is looked at closely.
2. **Final ranking** (fine). X-Pool (with TEFAL audio fusion when the model has a head) re-scores
   each candidate from its stored unit vectors, plus its best event window (event_windows.py: the
   attributes a query names bound to one moment); that list *replaces* the coarse visual list, the
   text channels keep theirs, and a second fusion gives the final order and score. Fusing again
   (instead of adding scores) is what keeps channels on incomparable scales (cosine, BM25) from
   drowning each other, and it lets a video that only a text channel found keep its place.
3. **Moments**. Each result's relevance curve (query · unit, for the units in the time window; the
   query contrasted with its reversed direction where it names one, direction_contrast.py) plus
   its timed evidence (matched speech/on-screen text, and sounds that match the query weighted as
   the head weighs audio) is cut into moments. The relevance and the audio gate come from step 2;
   nothing is recomputed.

A `Candidate` carries everything a result needs; `Ranking` pages them and localises moments only
for the page asked for (or, when results are listed by moment, for the leading candidates whose
moments compete).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch

from vidsearch.api_models import SpanHit

from .event_windows import best_windows, channel_hits, window_weight
from .features import FeatureCache, VideoFeatures
from .fusion import reciprocal_rank_fusion
from .moments import Moment, MomentResult, localize_moments_many
from .plan import QueryPlan
from .rerank import rerank
from .text_channels import match_strength

__all__ = ["Candidate", "CandidatePool", "Hit", "Ranking", "audio_hits", "candidate_pool", "final_ranking", "localize_many", "moment_evidence", "moment_relevance", "per_video_best"]

MOMENT_GROUP_VIDEOS = 30  # candidates whose moments compete when results are listed by moment
SPANS_PER_RESULT = 5


@dataclass(frozen=True)
class CandidatePool:
    """Stage 1's output: who gets re-ranked, and each channel's own list (kept for the final fusion)."""

    ids: list[str]  # videos to re-rank, coarse-fused order, at most `candidates`
    lists: dict[str, np.ndarray]  # channel -> video ids, best first (channels that matched something)
    scores: dict[str, np.ndarray]  # channel -> its own scores, aligned with `lists`
    spans: dict[str, list[SpanHit]]  # video -> its matched text, from every text channel


@dataclass(frozen=True)
class Candidate:
    """One video after the final ranking, with what its result and its moments are made of."""

    video_id: str
    score: float  # the final fused score
    channel_scores: dict[str, float]  # each channel's own evidence (cosine, X-Pool score, audio part)
    features: VideoFeatures  # the stored units (all of them: the API reports their times)
    in_window: np.ndarray  # (T,) the units inside the plan's time window
    relevance: np.ndarray  # plan.unit_query · unit for the units in the window
    attention: np.ndarray  # (T,) X-Pool's weights over the units
    audio_gate: float  # the head's trust in this soundtrack for this query (0: no head or no audio)
    spans: list[SpanHit]  # matched text, best first
    probability: float | None = None  # calibrated relevance (relevance.py); None without a calibration


@dataclass(frozen=True)
class Hit:
    """A candidate with its moments: what a search result is made of."""

    candidate: Candidate
    found: MomentResult  # the moments and the curve they were cut from
    moments: list[Moment]  # the moments to report (all, or the one moment in moment mode)
    score: float  # the candidate's score, or the moment's in moment mode
    relevance: float | None = None  # the result's calibrated relevance (the moment's in moment mode)
    moment_relevance: tuple[float, ...] = ()  # each reported moment's, aligned with `moments`


def per_video_best(video_ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best segment score per video, videos best first (columnar group-by)."""
    ok = video_ids != ""
    video_ids, scores = video_ids[ok], scores[ok]
    if len(video_ids) == 0:
        return video_ids, scores
    uniq, inverse = np.unique(video_ids, return_inverse=True)
    best = np.full(len(uniq), -np.inf)
    np.maximum.at(best, inverse, scores)
    order = np.argsort(-best, kind="stable")
    return uniq[order], best[order]


def candidate_pool(plan: QueryPlan, text_channels, *, coarse_segments: int, candidates: int, rrf_k: float) -> CandidatePool:
    """Stage 1: every channel's own ranking, fused to choose the videos worth re-ranking."""
    snap = plan.snapshot
    lists: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    spans: dict[str, list[SpanHit]] = {}
    if plan.use_frames:
        hits = snap.coarse.search(plan.query[None, :], k=min(coarse_segments, snap.coarse.n_live), only_videos=plan.allowed)
        lists["visual"], scores["visual"] = per_video_best(hits.video_ids[0], hits.scores[0])
    if text_channels is not None:
        for source, (ids, sc, found) in text_channels.search_many(plan.text_sources, plan.text, candidates, plan.allowed).items():
            lists[source], scores[source] = ids, sc
            for vid, h in found.items():
                spans.setdefault(vid, []).extend(h)
    lists = {c: ids for c, ids in lists.items() if len(ids)}
    scores = {c: s for c, s in scores.items() if c in lists}  # a channel with no match does not vote
    if not lists:
        return CandidatePool([], {}, {}, {})
    fused = reciprocal_rank_fusion(lists, plan.weights, k=rrf_k, scores=scores)
    ids = [str(v) for v in fused.ids[:candidates] if str(v) in snap.videos]
    return CandidatePool(ids, lists, scores, spans)


def final_ranking(plan: QueryPlan, pool: CandidatePool, cache: FeatureCache, head=None, pooler=None, *, rrf_k: float) -> list[Candidate]:
    """Stage 2: X-Pool re-scores the pool; its list replaces the coarse visual one in a second fusion."""
    feats = cache.get_many(pool.ids)
    ids = [v for v in pool.ids if v in feats]
    features = [feats[v] for v in ids]
    window = plan.window
    in_window = [np.ones(len(f.start), dtype=bool) if window is None else window.units(f.start, f.end) for f in features]
    if window is not None:  # a video with nothing inside the window is no result (it came back with no moment)
        keep = [k for k, units in enumerate(in_window) if units.any()]
        ids, features, in_window = [ids[k] for k in keep], [features[k] for k in keep], [in_window[k] for k in keep]
    out = rerank(plan.query, features, in_window, head=head, pooler=pooler, use_audio=plan.use_audio)
    if plan.audio is not None and features:  # a pretrained audio tower's tokens (no trained head)
        fused, part, gate = plan.audio.fuse(out.scores, [f.audio_vectors for f in features])
        out = replace(out, scores=fused, audio_part=part, audio_gate=gate)
    if features:  # plus the best moment where everything the query names happens at once
        # (the window's own audio only where the tokens are in the query's space: the model's own tower)
        event = best_windows(plan.unit_query, features, in_window, use_audio=plan.use_audio and plan.audio is None,
                             motion=plan.motion, shape=plan.shape, sound=plan.sound)  # fmt: skip
        out = replace(out, scores=out.scores + window_weight(head) * event)
    lists, scores = dict(pool.lists), dict(pool.scores)
    weights = {c: w for c, w in plan.weights.items() if c != "audio"}
    if plan.use_frames:
        order = np.argsort(-out.scores, kind="stable")
        lists["visual"] = np.asarray(ids, dtype=str)[order]
        scores["visual"] = out.scores[order]
        weights["visual"] = plan.weights.get("visual", 0.0) + plan.weights.get("audio", 0.0)
    fused = reciprocal_rank_fusion(lists, weights, k=rrf_k, scores=scores)
    pos = {v: i for i, v in enumerate(ids)}
    ranked: list[Candidate] = []
    for i, vid in enumerate(fused.ids):
        vid = str(vid)
        if vid not in pos:  # found by a text channel, but not among the re-ranked candidates
            continue
        k = pos[vid]
        evidence = {c: v["score"] for c, v in fused.explain(i).items()}
        if plan.use_audio:
            evidence["audio"] = float(out.audio_part[k])
        f = features[k]
        ranked.append(
            Candidate(
                video_id=vid,
                score=float(fused.scores[i]),
                channel_scores=evidence,
                features=f,
                in_window=in_window[k],
                relevance=f.vectors[in_window[k]] @ plan.unit_query,
                attention=out.attention[k],
                audio_gate=float(out.audio_gate[k]),
                spans=sorted(pool.spans.get(vid, []), key=lambda h: -h.score)[:SPANS_PER_RESULT],
            )
        )
    return ranked


def audio_hits(head, q: np.ndarray, f: VideoFeatures, gate: float | None = None) -> np.ndarray:
    """Where the soundtrack matches the query, as timed (start, end, score) rows for the moment curve.

    Each audio token scores its cosine to the query above the soundtrack's median, scaled as the TEFAL
    head scales audio in the fused score (learned weight x gate), so "a dog barks" lifts the seconds
    of barking and a silent or irrelevant soundtrack (gate ~0) changes nothing. Frames alone cannot
    tell two events that look alike and differ by their sound, which the synthetic corpus is full of
    (README: moment metrics with and without it). Empty when the model has no head or the video no
    audio. `gate` is the head's gate when the caller already has it (the re-rank computed it).
    """
    a = f.audio_vectors
    if head is None or a.ndim != 2 or a.shape[0] == 0 or a.shape[1] != q.shape[0]:
        return np.empty((0, 3))
    cos = a @ q
    if gate is None:
        with torch.inference_mode():
            gate = float(head.gate(torch.from_numpy(q[None].astype(np.float32)), torch.from_numpy(a[None].astype(np.float32)),
                                   torch.ones(1, len(a), dtype=torch.bool))[0, 0])  # fmt: skip
    weight = float(head.audio_weight.detach()) * gate
    return np.stack([f.audio_start, f.audio_end, weight * (cos - np.median(cos))], axis=1).astype(np.float64)


def moment_evidence(plan: QueryPlan, c: Candidate, head=None, agree: np.ndarray | None = None) -> tuple:
    """The candidate's timed evidence for moments: (unit starts, ends, relevance, sound hits, text hits).
    `agree`: its reading channels' rows (event_windows.channel_hits; `localize_many` reads a page's at
    once), added to the sound hits; None: read here.

    Text hits are (start, end, strength) with the strength of each span's own match
    (text_channels.match_strength: 1 where the span says the query), which the moment curve weighs
    on its own scale; they are not rescaled to the best hit or to the frames' relevance, so a
    mediocre best hit does not count as an exact one and an exact one is not capped at the frames'
    peak relevance (media probe M3)."""
    f, window = c.features, plan.window
    # timed text shapes the moment; metadata that covers the whole video (a title, tags) localises
    # nothing, a named chapter (indexer/container_text.py) covers its own stretch and does
    end = float(f.end.max()) if len(f.end) else 0.0
    text = np.array([[h.start, h.end, h.score] for h in c.spans if h.source != "metadata" or not _whole(h, end)],
                    dtype=np.float64).reshape(-1, 3)  # fmt: skip
    if window is not None:
        text = window.clip(text)
    if text.size:
        text[:, 2] = match_strength(text[:, 2])
        text = text[text[:, 2] > 0]
    hits = np.empty((0, 3))
    if plan.use_audio:
        if plan.audio is not None:
            sound = plan.audio.hits(f.audio_start, f.audio_end, f.audio_vectors, c.audio_gate)
        else:
            sound = audio_hits(head, plan.query, f, gate=c.audio_gate)
        hits = np.concatenate([hits, sound if window is None else window.clip(sound)])
    # where the pixels and samples agree with the motion, shape or sound the query names: the
    # ranking chose the video for such a window, so its moment is cut there too
    if agree is None:
        agree = channel_hits([f], [c.in_window], plan.motion, plan.shape, plan.sound)[0]
    if agree.size:
        hits = np.concatenate([hits, agree if window is None else window.clip(agree)])
    starts, ends = f.start[c.in_window], f.end[c.in_window]
    if window is not None:  # a unit that overlaps the window counts only for the part inside it
        starts, ends = np.maximum(starts, window.start), np.minimum(ends, window.end)
    return starts, ends, c.relevance, hits if hits.size else None, text if text.size else None


def _whole(hit, video_end: float) -> bool:
    """Whether a text hit spans the whole video (a metadata span made from a title or tags)."""
    return hit.start <= 0.01 and hit.end >= video_end - 0.05


def localize_many(plan: QueryPlan, candidates: list[Candidate], head=None) -> list[MomentResult]:
    """Stage 3 for a page of candidates: each one's relevance curve and timed evidence, cut into
    moments, in one pass over all their curves (moments.localize_moments_many)."""
    agree = channel_hits([c.features for c in candidates], [c.in_window for c in candidates], plan.motion, plan.shape, plan.sound)
    return localize_moments_many([moment_evidence(plan, c, head, a) for c, a in zip(candidates, agree)], max_moments=plan.request.max_moments)


def moment_relevance(probability: float | None, moments: list[Moment]) -> tuple[float, ...]:
    """Each moment's relevance: the video's calibrated probability, scaled by the moment's score
    against the video's best moment (the best moment carries the video's relevance, weaker ones less).
    Scores are measured from 0, or from the lowest moment's where one is negative (the reading
    channels' rows can take a curve below 0: where they disagree everywhere, the best moment is then
    still the best, and a worse one less)."""
    if probability is None or not moments:
        return ()
    scores = np.array([m.score for m in moments], dtype=np.float64)
    floor, best = min(0.0, float(scores.min())), float(scores.max())
    share = np.clip((scores - floor) / (best - floor), 0.0, 1.0) if best > floor else np.ones_like(scores)
    return tuple((probability * share).tolist())


class Ranking:
    """The ranked candidates of one plan; moments are cut only for the results a page shows.

    With a calibration, the candidates are ordered by their relevance (stable: equal relevance keeps
    the fused order), which puts a relevant video first more often than rank fusion does (README,
    "Relevance you can trust": P@1 on held-out captions 19.1% -> 23.5%); `fused` keeps the fused
    order, which the relevance evidence itself reads (`inv_rank`). Results whose relevance is under
    `min_relevance` are dropped before paging (so pages and cursors count only what is shown):
    `dropped` says how many, `best_dropped` the highest relevance among them, for the "nothing
    found" message.
    """

    def __init__(self, plan: QueryPlan, candidates: list[Candidate], head=None, min_relevance: float | None = None):
        self.plan, self.head, self.min_relevance = plan, head, min_relevance
        self.calibrated = bool(candidates) and candidates[0].probability is not None
        self.fused = candidates
        self.best_dropped: float | None = None
        self.dropped = 0
        if self.calibrated:
            probs = np.array([c.probability for c in candidates])
            order = np.argsort(-probs, kind="stable")
            candidates, probs = [candidates[i] for i in order], probs[order]
        if self.calibrated and min_relevance is not None and not self.by_moment:
            keep = probs >= min_relevance
            self.dropped = int((~keep).sum())
            if self.dropped:
                self.best_dropped = float(probs[~keep].max())
            candidates = [c for c, k in zip(candidates, keep) if k]
        self.candidates = candidates

    @property
    def by_moment(self) -> bool:
        return self.plan.request.group_by == "moment"

    def __len__(self) -> int:
        return len(self._moment_hits) if self.by_moment else len(self.candidates)

    def at_least(self, min_score: float) -> Ranking:
        """The same ranking without what scores under `min_score`, so pages and their count agree (a
        filter after paging left pages empty, or short, with more to come)."""
        kept = Ranking(self.plan, [c for c in self.candidates if c.score >= min_score], self.head)
        if self.by_moment:
            kept.__dict__["_moment_hits"] = [h for h in self._moment_hits if h.score >= min_score]
        return kept

    def page(self, offset: int, limit: int) -> list[Hit]:
        if self.by_moment:
            return self._moment_hits[offset : offset + limit]
        page = self.candidates[offset : offset + limit]
        return [
            Hit(c, found, found.moments, c.score, c.probability, moment_relevance(c.probability, found.moments))
            for c, found in zip(page, localize_many(self.plan, page, self.head))
        ]

    @cached_property
    def _moment_hits(self) -> list[Hit]:
        """Every moment of the leading candidates, ranked by its own relevance when calibrated (those
        under `min_relevance` dropped), else by its score."""
        flat = []
        leading = self.candidates[:MOMENT_GROUP_VIDEOS]
        for c, found in zip(leading, localize_many(self.plan, leading, self.head)):
            rel = moment_relevance(c.probability, found.moments) or (None,) * len(found.moments)
            flat += [Hit(c, found, [m], m.score, r, () if r is None else (r,)) for m, r in zip(found.moments, rel)]
        if self.calibrated and self.min_relevance is not None:
            dropped = [h.relevance for h in flat if h.relevance < self.min_relevance]
            self.dropped = len(dropped)
            if dropped:
                self.best_dropped = max(dropped)
            flat = [h for h in flat if h.relevance >= self.min_relevance]
        # calibrated, as videos are: by relevance, equal relevance by the moment's score
        flat.sort(key=(lambda h: (-h.relevance, -h.score)) if self.calibrated else (lambda h: -h.score))
        return flat
