"""A search request resolved once into what ranking needs: the query plan.

A request names channels, filters and a time window in the API's words; ranking needs them as
values it can use directly: the fusion weight of each channel the index has, the ids of the videos
the filters allow, the time window as numbers, the query's vector, and the snapshot everything is
answered from. Resolving them once, before any stage runs, means a stage never re-reads the request
and every stage of one search sees the same index version.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vidsearch.api_models import TEXT_CHANNELS, Filters, SearchRequest

from .motion_channel import query_motion
from .shape_channel import query_shape
from .sound_channel import query_sound
from .snapshot import Snapshot

__all__ = ["QueryPlan", "SearchError", "TimeWindow", "channel_weights"]


class SearchError(ValueError):
    """A request that cannot be answered as asked (bad cursor, unknown channel...): a 4xx."""


@dataclass(frozen=True)
class TimeWindow:
    """The part of each video a search may answer from (seconds; `end` is inf when open-ended).

    Units are kept when they overlap it and, like timed evidence (text spans, sounds), cut to it for
    moments (`ranking.moment_evidence`), so a moment never reaches outside the window.
    """

    start: float
    end: float

    @classmethod
    def of(cls, filters: Filters | None) -> TimeWindow | None:
        if filters is None or filters.time_range is None:
            return None
        r = filters.time_range
        return cls(float(r.start), math.inf if r.end is None else float(r.end))

    def units(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """(T,) bool: the units that overlap the window."""
        return (end > self.start) & (start < self.end)

    def clip(self, rows: np.ndarray) -> np.ndarray:
        """(N, 3) timed rows (start, end, score) cut to the window; rows left empty are dropped."""
        if not rows.size:
            return rows
        rows = rows.copy()
        rows[:, 0] = np.maximum(rows[:, 0], self.start)
        rows[:, 1] = np.minimum(rows[:, 1], self.end)
        return rows[rows[:, 1] > rows[:, 0]]


@dataclass(frozen=True)
class QueryPlan:
    """Everything a search is ranked by, resolved from the request against one snapshot."""

    request: SearchRequest  # as asked: the query text, group_by, max_moments
    snapshot: Snapshot  # the index version every stage reads
    query: np.ndarray  # (D,) the query's vector in the frame/text tower's space
    weights: dict[str, float]  # channel -> fusion weight, only channels the index has
    allowed: np.ndarray | None  # video ids that pass the filters (None: every video)
    window: TimeWindow | None
    inputs: dict[str, float] = field(default_factory=lambda: {"text": 1.0})  # what made `query` (search/examples.py)
    audio: object | None = None  # an AudioQuery (audio_fusion.py) when a pretrained audio tower fuses sound
    event_query: np.ndarray | None = None  # (D,) what units are scored with, when not `query` (direction_contrast.py)

    @property
    def unit_query(self) -> np.ndarray:
        """The vector the event window and the moment curve score units with."""
        return self.query if self.event_query is None else self.event_query

    @property
    def text(self) -> str | None:
        """The query's words (None for an image or `like` query alone: no text channel can vote)."""
        return self.request.query

    @property
    def motion(self) -> str | None:
        """The one motion the query's words name (motion_channel.py), else None."""
        return query_motion(self.text)

    @property
    def shape(self) -> str | None:
        """The one shape the query's words name (shape_channel.py), else None."""
        return query_shape(self.text)

    @property
    def sound(self) -> str | None:
        """The one sound the query's words name (sound_channel.py), else None."""
        return query_sound(self.text)

    @property
    def use_audio(self) -> bool:
        """The audio channel is fused into the visual score by the TEFAL head."""
        return "audio" in self.weights

    @property
    def use_frames(self) -> bool:
        """The coarse segment vectors vote (visual, or audio, which rides on the visual candidates)."""
        return "visual" in self.weights or "audio" in self.weights

    @property
    def text_sources(self) -> list[str]:
        return [c for c in self.weights if c not in ("visual", "audio")]

    @property
    def answerable(self) -> bool:
        """Something can match: the index has segments and the filters leave a video."""
        return self.snapshot.coarse is not None and (self.allowed is None or len(self.allowed) > 0)


def channel_weights(req: SearchRequest, available: set[str]) -> dict[str, float]:
    """The request's channels and weights, checked against what the index has (default: all, 1.0).

    Without words (an image or `like` query alone) only the visual channel can match: the text
    channels search words and the audio head is conditioned on a sentence."""
    if req.query is None:
        wordless = [c for c in (req.channels or {}) if c != "visual" and c in available]
        if wordless:
            raise SearchError(f"channel(s) {', '.join(wordless)} need a query in words (an image or like query searches the visual channel)")
        available = available & {"visual"}
    if req.channels is None:
        return {c: 1.0 for c in sorted(available)}
    unknown = [c for c in req.channels if c not in available]
    if unknown:
        why = " (no video of it has such text: indexed without that channel, or none was found)" if set(unknown) <= set(TEXT_CHANNELS) else ""
        raise SearchError(f"channel(s) {', '.join(unknown)} are not in this index{why}; available: {', '.join(sorted(available))}")
    weights = {c: w for c, w in req.channels.items() if w > 0 and c in available}
    if not weights:
        raise SearchError("every requested channel has weight 0 or is not indexed")
    return weights
