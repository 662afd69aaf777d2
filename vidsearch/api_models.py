"""The search API's request and response shapes: one pydantic source for the engine, the HTTP
service (and so its OpenAPI schema), the Python client and the UI.

Times are float seconds from the start of the file everywhere.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Channel = Literal["visual", "audio", "speech", "ocr", "subtitle", "metadata"]
TEXT_CHANNELS: tuple[str, ...] = ("speech", "ocr", "subtitle", "metadata")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TimeRange(_Strict):
    start: float = Field(0.0, ge=0, description="seconds from the start of the file")
    end: float | None = Field(None, gt=0, description="seconds; open-ended when absent")

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.end is not None and self.end <= self.start:
            raise ValueError("time_range.end must be greater than time_range.start")
        return self


class Filters(_Strict):
    video_ids: list[str] | None = Field(None, max_length=10_000, description="only these videos")
    metadata: dict[str, str | int | float | bool] | None = Field(
        None, description="manifest metadata fields that must equal these values"
    )
    min_duration: float | None = Field(None, ge=0, description="seconds")
    max_duration: float | None = Field(None, gt=0, description="seconds")
    time_range: TimeRange | None = Field(None, description="only moments inside this part of each video")

    @model_validator(mode="after")
    def _durations(self) -> Filters:
        if self.min_duration is not None and self.max_duration is not None and self.max_duration < self.min_duration:
            raise ValueError("max_duration must be at least min_duration")
        return self


QueryInput = Literal["text", "image", "like"]
MAX_IMAGE_BASE64 = 64 << 20  # a hard cap on the JSON field; the server's own limit (max_image_mb) is lower


class LikeQuery(_Strict):
    """"More like this moment": the stored unit vectors of a stretch of an indexed video, averaged."""

    video_id: str = Field(..., min_length=1, max_length=128, description="an indexed video")
    start: float = Field(0.0, ge=0, description="seconds")
    end: float | None = Field(None, gt=0, description="seconds; the end of the video when absent")
    include_source: bool = Field(False, description="also return moments of the source video (left out by default)")

    @model_validator(mode="after")
    def _ordered(self) -> LikeQuery:
        if self.end is not None and self.end <= self.start:
            raise ValueError("like.end must be greater than like.start")
        return self


class SearchRequest(_Strict):
    query: str | None = Field(None, min_length=1, max_length=1000, description="what to find, in words (optional with an image or `like`)")
    image: str | None = Field(
        None, max_length=MAX_IMAGE_BASE64,
        description="an example picture, base64 (a data: URL too); or upload it as multipart/form-data",
    )  # fmt: skip
    like: LikeQuery | None = Field(None, description="find moments like this stretch of an indexed video")
    query_weights: dict[QueryInput, float] | None = Field(
        None, description="how much each input counts when several are given (default 1 each): text, image, like"
    )
    top_k: int = Field(10, ge=1, le=200, description="results per page")
    group_by: Literal["video", "moment"] = "video"
    channels: dict[Channel, float] | None = Field(
        None, description="channels to use and their fusion weights (default: all, weight 1)"
    )
    filters: Filters | None = None
    min_score: float | None = Field(None, description="drop results scoring below this")
    min_relevance: float | None = Field(
        None, ge=0, le=1, description="drop results whose calibrated relevance is below this (default: the server's; 0 keeps all)"
    )
    cursor: str | None = Field(None, max_length=512, description="page cursor from a previous response")
    max_moments: int = Field(3, ge=1, le=20, description="moments per video")

    @model_validator(mode="after")
    def _query_has_words(self) -> SearchRequest:
        if self.query is None and self.image is None and self.like is None:
            raise ValueError("give a query (words), an image, or like (a moment of an indexed video)")
        if self.query is not None and not _has_visible(self.query):
            raise ValueError("query must contain at least one non-space character")
        if self.channels is not None:
            if not self.channels:
                raise ValueError("channels must name at least one channel")
            for name, weight in self.channels.items():
                if not (0 <= weight <= 100):
                    raise ValueError(f"channel weight for {name} must be between 0 and 100")
        if self.query_weights is not None:
            for name, weight in self.query_weights.items():
                if not (0 <= weight <= 100):
                    raise ValueError(f"query weight for {name} must be between 0 and 100")
        return self

    @property
    def inputs(self) -> list[str]:
        """The query inputs this request gives, in a fixed order."""
        given = {"text": self.query is not None, "image": self.image is not None, "like": self.like is not None}
        return [name for name, present in given.items() if present]


def _has_visible(text: str) -> bool:
    """Whether `text` holds a character other than white space, format characters (zero-width spaces
    and joiners, the BOM, direction marks) and controls: a query of "\u200b" alone was searched as
    words, though it has none to match."""
    return any(not ch.isspace() and unicodedata.category(ch) not in ("Cf", "Cc") for ch in text)


class VideoInfo(BaseModel):
    id: str
    title: str
    uri: str
    duration: float
    width: int | None = None
    height: int | None = None
    has_audio: bool | None = None
    metadata: dict[str, Any] = {}


class SpanHit(BaseModel):
    source: str
    start: float
    end: float
    text: str
    score: float


class MomentOut(BaseModel):
    start: float
    end: float
    score: float
    relevance: float | None = Field(None, description="calibrated probability that this moment is what the query describes")
    best: float | None = Field(None, description="seconds: where the moment is most relevant (its thumbnail)")


class Curve(BaseModel):
    times: list[float]
    values: list[float]


class SearchResult(BaseModel):
    video: VideoInfo
    score: float = Field(
        ..., description="the rank fusion score: orders results where there is no calibration (else relevance does), means nothing across queries"
    )
    relevance: float | None = Field(
        None, description="calibrated probability in [0, 1] that this result is what the query describes (None: no calibration)"
    )
    relevance_label: str | None = Field(None, description="the relevance as people read it: strong, good or weak")
    channel_scores: dict[str, float] = Field(default_factory=dict, description="per-channel evidence")
    moments: list[MomentOut] = Field(default_factory=list)
    frame_weights: list[float] | None = Field(None, description="X-Pool attention over the video's units")
    unit_times: list[list[float]] | None = Field(None, description="[start, end] of each unit")
    spans: list[SpanHit] = Field(default_factory=list, description="matched text with times")
    curve: Curve | None = Field(None, description="the query's relevance over the video")
    links: dict[str, str] = Field(default_factory=dict)


class SearchResponse(BaseModel):
    query: str = Field("", description="the words searched for (empty for an image or `like` query alone)")
    inputs: dict[str, float] = Field(
        default_factory=dict, description="the query inputs that contributed (text, image, like) and each one's share of the query vector"
    )
    group_by: str
    results: list[SearchResult]
    next_cursor: str | None = None
    min_relevance: float | None = Field(None, description="the relevance threshold applied (None: not calibrated)")
    message: str | None = Field(None, description="why the list is empty or short, in words")
    index_version: str
    took_ms: float


class VideoList(BaseModel):
    videos: list[VideoInfo]
    total: int
    next_cursor: str | None = None


class JobRequest(_Strict):
    kind: Literal["index", "reindex"] = "index"
    paths: list[str] = Field(..., min_length=1, max_length=1000, description="folders, files or manifest.jsonl on the server")


class JobProgress(BaseModel):
    """How far an index job is: what the indexing pipeline reports as it goes."""

    total: int = Field(0, description="videos to encode (new or changed files; unchanged ones are skipped before)")
    done: int = Field(0, description="videos finished, encoded or failed")
    frames: int = Field(0, description="frames encoded so far")


class JobInfo(BaseModel):
    id: str
    kind: str
    paths: list[str]
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: JobProgress = Field(default_factory=JobProgress)
    summary: dict[str, Any] | None = None
    error: str | None = None
    created_at: float
    finished_at: float | None = None


class FileProblem(BaseModel):
    path: str
    error: str


class IndexStatus(BaseModel):
    """What is indexed, as `vidsearch status` reports it, plus what searches can use right now."""

    videos: int = Field(..., description="videos visible to search")
    files: int = Field(..., description="paths seen, including copies and failures")
    failed: int = Field(..., description="files that could not be indexed")
    hours: float = Field(..., description="hours of indexed video")
    model: str | None = Field(None, description="the model the index was built with")
    fingerprint: str | None = Field(None, description="the model fingerprint's id")
    channels: list[str] = Field(default_factory=list, description="channels a search may name (those this index has)")
    index_version: str | None = Field(None, description="the version searches are answered from")
    ready: bool = Field(..., description="searches will be answered (the index is open and its model loaded)")
    not_ready: str | None = Field(None, description="why searches cannot be answered yet")
    failures: list[FileProblem] = Field(default_factory=list, description="every failed file and why")
    warnings: list[FileProblem] = Field(
        default_factory=list, description="files indexed with a part lost (a damaged stretch, a truncated tail, a text channel)"
    )
    excluded: list[str] = Field(default_factory=list, description="files deleted from the index, kept out of later runs")
    indexing: bool = Field(
        False, description="an indexing run (a job, or `vidsearch index` in a shell) is writing to the index now: counts may be partial"
    )


class ErrorBody(BaseModel):
    detail: str


def validation_message(exc: ValidationError) -> str:
    """pydantic's errors as one line a user can act on ("query: at most 1000 characters"); a whole-model
    check names no field. The CLI and the UI both say it so."""
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()))
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)
