"""A moment as a playable file: `GET /v1/videos/{id}/clip?start=&end=` cuts it with ffmpeg.

Stream copy when a keyframe sits at the start (no quality lost, milliseconds of work, any length);
otherwise the moment is re-encoded (H.264 + AAC in MP4), since a copied cut must begin on a
keyframe and would start up to a GOP early, showing what came before the moment. Times are player
times (seconds from what a player shows as 0); ffmpeg's input `-ss` counts from the same origin.
Clips are cut once and kept beside the thumbnails, named by video, range and width, so a shared
link asked for again is served from disk; the two share one bound (media.trim_cache). Length is bounded (`MAX_CLIP_SECONDS`) so one request
cannot make the server re-encode an hour of video.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .media import THUMB_CACHE_BYTES, mark_used, one_maker, trim_cache

__all__ = ["ClipError", "MAX_CLIP_SECONDS", "Clip", "cut_clip", "keyframe_at"]

MAX_CLIP_SECONDS = 300.0
KEYFRAME_TOLERANCE = 0.04  # seconds: a keyframe this close to the start counts as at the start
CLIP_STEP = 0.01  # seconds: clip bounds are rounded to this (a player seeks no finer)
END_SLACK = 0.25  # seconds past the end that are forgiven (rounded times), then clamped
COPY_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


class ClipError(ValueError):
    """A range that cannot be cut (the message says what is wrong with it)."""


@dataclass(frozen=True)
class Clip:
    path: Path
    start: float
    end: float
    method: str  # "copy" | "encode"
    media_type: str


def check_range(start: float, end: float, duration: float, max_seconds: float = MAX_CLIP_SECONDS) -> tuple[float, float]:
    """The range to cut, or ClipError saying why it cannot be: start inside the video, end after
    start, end at most the duration (a quarter second over is clamped), length at most `max_seconds`."""
    if start >= duration:
        raise ClipError(f"start={start:g} is at or past the end of the video ({duration:.2f} s)")
    if end <= start:
        raise ClipError(f"end={end:g} must be after start={start:g}")
    if end > duration + END_SLACK:
        raise ClipError(f"end={end:g} is past the end of the video ({duration:.2f} s)")
    end = min(end, duration)
    if end - start > max_seconds:
        raise ClipError(f"a clip is at most {max_seconds:g} s long; {start:g}-{end:g} is {end - start:.1f} s")
    return start, end


def _probe(args: list[str], timeout: float = 30, pass_fds: tuple[int, ...] = ()) -> str:
    proc = subprocess.run(["ffprobe", "-v", "error", *args], capture_output=True, text=True, timeout=timeout, pass_fds=pass_fds)
    return proc.stdout if proc.returncode == 0 else ""


def keyframe_at(video: Path | str, t: float, tolerance: float = KEYFRAME_TOLERANCE, pass_fds: tuple[int, ...] = ()) -> bool:
    """Whether the video stream has a keyframe within `tolerance` of player time `t`."""
    offset = _probe(["-show_entries", "format=start_time", "-of", "csv=p=0", str(video)], pass_fds=pass_fds).strip()
    origin = float(offset) if offset not in ("", "N/A") else 0.0
    lo, hi = max(t - 5.0, 0.0) + origin, t + tolerance + origin
    out = _probe(["-select_streams", "v:0", "-skip_frame", "nokey", "-show_entries", "frame=best_effort_timestamp_time",
                  "-of", "csv=p=0", "-read_intervals", f"{lo:.3f}%{hi:.3f}", str(video)], pass_fds=pass_fds)  # fmt: skip
    times = [float(x) - origin for x in (v.strip(",") for v in out.split()) if x not in ("", "N/A")]
    return any(abs(x - t) <= tolerance for x in times)


def cut_clip(video: Path | str, video_id: str, start: float, end: float, cache_dir: Path, *,
             suffix: str | None = None, pass_fds: tuple[int, ...] = (), cache_bytes: int = THUMB_CACHE_BYTES) -> Clip:
    """The moment [start, end] of `video` as a file (cached); ClipError when ffmpeg cannot cut it.
    `video` may name an inherited descriptor (`/proc/self/fd/N`, with `pass_fds`: the server's checked
    opening of the indexed file) or a URL; `suffix` is then the indexed file's."""
    suffix = (suffix if suffix is not None else Path(str(video)).suffix).lower()
    # to CLIP_STEP: ranges a millisecond apart are one clip (one cut, one cached file), not one each
    start = round(start / CLIP_STEP) * CLIP_STEP
    end = max(round(end / CLIP_STEP) * CLIP_STEP, start + CLIP_STEP)
    copy = suffix in COPY_CONTAINERS and keyframe_at(video, start, pass_fds=pass_fds)
    for method in (("copy", "encode") if copy else ("encode",)):
        ext = suffix if method == "copy" else ".mp4"
        name = hashlib.sha1(f"{video_id}:{start:.3f}:{end:.3f}:{method}".encode()).hexdigest()
        out = Path(cache_dir) / f"{name}{ext}"
        with one_maker(out):  # concurrent requests for this clip: one cut
            if out.is_file():
                mark_used(out)
                made = True
            else:
                made = _run_ffmpeg(video, start, end, method, out, COPY_CONTAINERS.get(ext, "mp4"), pass_fds)
                if made:
                    trim_cache(Path(cache_dir), cache_bytes, keep=out)
        if made:
            media = {"mp4": "video/mp4", "mov": "video/quicktime", "matroska": "video/x-matroska", "webm": "video/webm"}[COPY_CONTAINERS.get(ext, "mp4")]
            return Clip(out, start, end, method, media)
    raise ClipError(f"ffmpeg could not cut {start:g}-{end:g} s of video {video_id}")


def _run_ffmpeg(video: Path | str, start: float, end: float, method: str, out: Path, fmt: str, pass_fds: tuple[int, ...] = ()) -> bool:
    codecs = (["-c", "copy", "-avoid_negative_ts", "make_zero"] if method == "copy" else
              ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"])  # fmt: skip
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.{id(out)}.tmp{out.suffix}")  # concurrent callers never share one
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start:.3f}", "-i", str(video), "-t", f"{end - start:.3f}",
           "-map", "0:v:0", "-map", "0:a:0?", "-sn", "-dn", *codecs,
           *(["-movflags", "+faststart"] if fmt in ("mp4", "mov") else []), "-f", fmt, str(tmp)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=max(60.0, 4 * (end - start)), pass_fds=pass_fds)
    except (OSError, subprocess.TimeoutExpired):
        tmp.unlink(missing_ok=True)
        return False
    if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(out)
    return True
