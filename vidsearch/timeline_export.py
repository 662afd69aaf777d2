"""Moments as an edit decision list an editor opens: OpenTimelineIO (`.otio`) and CMX 3600 (`.edl`).

Both are written by OpenTimelineIO (the `cmx_3600` adapter for EDL), so the files are what editing
tools and OTIO's own readers expect. Each moment is one clip on one video track, in the order given,
its source range the moment (padded by `padding` seconds on each side, kept inside the video) at the
timeline's frame rate; its media reference is the video's file (a `file://` URL) with the whole video
as its available range, and its name the video's title. Used by `vidsearch search --export`,
`POST /v1/export` and the UI's export button.

The file's location is written as it is given: the caller shows it as its reader may see it (the API
gives a reader without a key the path relative to its library root, server/exposure.py). An absolute
path becomes a `file://` URL; a relative one stays relative. Names, the title and locations are
written on one line each: control and line-separator characters in names and titles become spaces
(in locations, `%XX` escapes), so that no text can add lines to an EDL. CMX 3600 timecodes exist at
the SMPTE rates only (`EDL_RATES`); an OTIO timeline takes any rate from 1 to 240 fps.
"""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = ["EDL_RATES", "ExportError", "ExportItem", "ExportRequest", "FORMATS", "export_timeline", "format_for"]

FORMATS = {"otio": "application/vnd.opentimelineio+json", "edl": "text/plain"}

# The rates CMX 3600 timecode counts in (SMPTE; OpenTimelineIO's `to_timecode` refuses others, or snaps a
# rate near one of these to it, or writes nonsense below 1 fps): name as written -> exact rate.
EDL_RATES = {"23.976": 24000 / 1001, "24": 24.0, "25": 25.0, "29.97": 30000 / 1001, "30": 30.0,
             "47.952": 48000 / 1001, "48": 48.0, "50": 50.0, "59.94": 60000 / 1001, "60": 60.0}  # fmt: skip
EDL_MAX_EVENTS = 999  # CMX 3600 event numbers are 3 digits: a 1000th shifts the fixed columns
_RATE_TOLERANCE = 0.005  # 23.98 is 23.976, 29.97 is 30000/1001; 24.5 is no rate an EDL has


class ExportError(ValueError):
    """The moments cannot be written in the asked format (the reason is the message): the request's
    fault, a 400 over HTTP."""


def edl_rate(fps: float) -> float | None:
    """The exact SMPTE rate `fps` stands for (29.97 -> 30000/1001), or None when an EDL cannot count in it."""
    return next((rate for rate in EDL_RATES.values() if abs(fps - rate) <= _RATE_TOLERANCE), None)


def one_line(text: str) -> str:
    """`text` with every control or line-separating character (newlines, \\r, \\v, \\f, NEL, U+2028/9,
    NUL, tabs) replaced by a space: a name or title that cannot start another line of the file."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def _location(uri: str) -> str:
    """A media reference's URL: a URL as given, an absolute path as a `file://` URL (percent-encoded),
    a relative path (what a reader without a key sees) as it is; control characters `%XX`-escaped."""
    if "://" not in uri and Path(uri).is_absolute():
        return Path(uri).resolve().as_uri()
    return "".join(quote(c, safe="") if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in uri)


class ExportItem(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    video_id: str = Field(..., max_length=128)
    start: float = Field(..., ge=0, le=1e7, description="seconds")
    end: float = Field(..., gt=0, le=1e7, description="seconds")
    name: str | None = Field(None, max_length=200, description="the clip's name (default: the video's title)")

    @model_validator(mode="after")
    def _ordered(self) -> ExportItem:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    items: list[ExportItem] = Field(..., min_length=1, max_length=1000, description="moments, in timeline order")
    format: Literal["otio", "edl"] = "otio"
    fps: float = Field(
        25.0, ge=1, le=240,
        description=f"the timeline's frame rate; an EDL's timecodes count frames at one of {', '.join(EDL_RATES)}",
    )  # fmt: skip
    padding: float = Field(0.0, ge=0, le=60, description="seconds added before and after each moment")
    title: str = Field("vidsearch moments", max_length=200)

    @field_validator("fps")
    @classmethod
    def _edl_rate(cls, fps: float, info: ValidationInfo) -> float:
        if info.data.get("format") == "edl" and edl_rate(fps) is None:
            raise ValueError(f"an EDL (CMX 3600 timecode) counts frames at {', '.join(EDL_RATES)} fps only, not {fps:g}")
        return fps

    @model_validator(mode="after")
    def _edl_events(self) -> ExportRequest:
        if self.format == "edl" and len(self.items) > EDL_MAX_EVENTS:
            raise ValueError(f"an EDL (CMX 3600) numbers its events with 3 digits: at most {EDL_MAX_EVENTS} moments, not "
                             f"{len(self.items)} (export them as otio, or in parts)")  # fmt: skip
        return self


def format_for(path: Path) -> str:
    """`otio` or `edl` from a file name; ValueError for another suffix."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"cannot export to {path}: the file name must end in .otio or .edl")
    return suffix


def export_timeline(req: ExportRequest, videos: dict[str, dict]) -> str:
    """The request's moments as OTIO JSON or a CMX 3600 EDL. `videos`: id -> {title, uri, duration}
    for every item's video (a missing one is a KeyError naming it); `uri` as the reader may see it.
    ExportError when the moments cannot be written so (the writer's reason)."""
    import opentimelineio as otio  # ~170 ms to import: only when something is exported

    rate = float(req.fps)
    if req.format == "edl":
        exact = edl_rate(rate)
        if exact is None:
            raise ExportError(f"an EDL (CMX 3600 timecode) counts frames at {', '.join(EDL_RATES)} fps only, not {rate:g}")
        rate = exact
    elif not (math.isfinite(rate) and rate >= 1):
        raise ExportError(f"the frame rate must be a finite number of at least 1 fps, not {rate:g}")
    timeline = otio.schema.Timeline(name=one_line(req.title))
    track = otio.schema.Track(name="moments", kind=otio.schema.TrackKind.Video)
    timeline.tracks.append(track)
    for item in req.items:
        if item.video_id not in videos:
            raise KeyError(f"no indexed video with id {item.video_id}")
        v = videos[item.video_id]
        duration = float(v["duration"])
        start = max(0.0, item.start - req.padding)
        end = min(duration, item.end + req.padding) if duration > 0 else item.end + req.padding
        first, last = math.floor(start * rate + 1e-6), max(math.ceil(end * rate - 1e-6), math.floor(start * rate + 1e-6) + 1)
        ref = otio.schema.ExternalReference(
            target_url=_location(str(v["uri"])),
            available_range=otio.opentime.TimeRange(otio.opentime.RationalTime(0, rate), otio.opentime.RationalTime(math.ceil(duration * rate), rate)),
        )
        clip = otio.schema.Clip(
            name=one_line(item.name or v["title"]),
            media_reference=ref,
            source_range=otio.opentime.TimeRange(otio.opentime.RationalTime(first, rate), otio.opentime.RationalTime(last - first, rate)),
            # an EDL names a source by its reel (8 characters): the video id's start, unique where file names are not
            metadata={"vidsearch": {"video_id": item.video_id, "start": item.start, "end": item.end, "padding": req.padding},
                      "cmx_3600": {"reel": item.video_id[:8]}},
        )
        track.append(clip)
    try:
        if req.format == "edl":
            return otio.adapters.write_to_string(timeline, adapter_name="cmx_3600", rate=rate)
        return otio.adapters.write_to_string(timeline, adapter_name="otio_json")
    except (ValueError, OverflowError, otio.exceptions.OTIOError) as exc:  # the writer's refusal of what it was given
        raise ExportError(f"cannot write the moments as {req.format.upper()}: {exc}") from exc
