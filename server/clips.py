"""A moment as a playable file: `GET /v1/videos/{id}/clip?start=&end=` cuts it with ffmpeg.

Stream copy when a keyframe sits at the start (no quality lost, milliseconds of work, any length);
otherwise the moment is re-encoded (H.264 + AAC in MP4), since a copied cut must begin on a
keyframe and would start up to a GOP early, showing what came before the moment. Times are player
times (seconds from what a player shows as 0); ffmpeg's input `-ss` counts from the same origin.
Clips are cut once and kept beside the thumbnails, named by video, range and width, so a shared
link asked for again is served from disk; the two share one bound (media.trim_cache). Length is bounded (`MAX_CLIP_SECONDS`) so one request
cannot make the server re-encode an hour of video. A new cut runs in one of the server's ffmpeg
slots (media.ffmpeg_slot, taken by the route) and is stopped when its client goes away (`stop`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .media import THUMB_CACHE_BYTES, Layout, last_frame_start, mark_used, media_layout, one_maker, run_tool, trim_cache

__all__ = ["ClipError", "MAX_CLIP_SECONDS", "Clip", "NoFrames", "cached_clip", "check_range", "cut_clip", "keyframe_at", "uncut_media_type"]

MAX_CLIP_SECONDS = 300.0
KEYFRAME_TOLERANCE = 0.04  # seconds: a keyframe this close to the start counts as at the start
CLIP_STEP = 0.01  # seconds: clip bounds are rounded to this (a player seeks no finer)
END_SLACK = 0.25  # seconds past the end that are forgiven (rounded times), then clamped
COPY_SLACK = 0.75  # seconds a stream copy may run past the range (it ends on a packet, with its audio); more: it began early
# in every cached clip's name: a change to how clips are cut renames them, so a server upgraded in place
# never serves what the old code cut (2: a WebM copied from an earlier keyframe, or an empty file, were
# cached as clips; 3: the indexed tracks, not ffmpeg's first); the old files age out of the cache (media.trim_cache)
CUT_VERSION = 3
COPY_CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


class ClipError(ValueError):
    """A range that cannot be cut (the message says what is wrong with it)."""


class NoFrames(ClipError):
    """The range holds no frame that can be decoded (a truncated or damaged stretch): a 404, as a
    thumbnail there is."""


@dataclass(frozen=True)
class Clip:
    path: Path
    start: float
    end: float
    method: str  # "copy" | "encode"
    media_type: str


def check_range(start: float, end: float, duration: float, max_seconds: float = MAX_CLIP_SECONDS, *,
                fps: float | None = None) -> tuple[float, float]:  # fmt: skip
    """The range to cut, or ClipError saying why it cannot be: start inside the video, end after
    start, end at most the duration (a quarter second over is clamped), length at most `max_seconds`.
    A start inside the last frame's interval (`fps`: the video's rate) is moved back to that frame, as
    a thumbnail there is (media.thumbnail_key): ffmpeg's exact seek drops a frame that starts before
    the seek point, so "the last 50 ms" of a moment ending at the video's end cut no frame at all, a 404
    that called the file damaged."""
    if start >= duration:
        raise ClipError(f"start={start:g} is at or past the end of the video ({duration:.2f} s)")
    last = last_frame_start(duration, fps)
    if start > last:  # down to CLIP_STEP (cut_clip rounds to it), so never past the frame's start
        start = math.floor(last / CLIP_STEP + 1e-6) * CLIP_STEP
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


def keyframe_at(video: Path | str, t: float, tolerance: float = KEYFRAME_TOLERANCE, pass_fds: tuple[int, ...] = (),
                stream: str = "v:0") -> bool:  # fmt: skip
    """Whether the video stream (`stream`: an ffprobe stream specifier, the clip's mapped one) has a
    keyframe within `tolerance` of player time `t`.

    Read from the container's packet flags (`K`), not by decoding with `-skip_frame nokey`: decoders
    that ignore that option (VP9's, and others) return every frame, so every start "had a keyframe"
    and a WebM clip was copied from its previous keyframe, showing what came before the moment. Only
    packets from a seek to just before `t` (the demuxer lands on the keyframe at or before it) to just
    after are read, and none is decoded, so this stays a few milliseconds on any length of video."""
    offset = _probe(["-show_entries", "format=start_time", "-of", "csv=p=0", str(video)], pass_fds=pass_fds).strip()
    origin = float(offset) if offset not in ("", "N/A") else 0.0
    lo, hi = max(t - tolerance, 0.0) + origin, t + tolerance + origin
    out = _probe(["-select_streams", stream, "-show_entries", "packet=pts_time,dts_time,flags", "-of", "json",
                  "-read_intervals", f"{lo:.3f}%{hi:.3f}", str(video)], pass_fds=pass_fds)  # fmt: skip
    return any(abs(x - origin - t) <= tolerance for x in _keyframe_times(out))


def _keyframe_times(probe_json: str) -> list[float]:
    """The times of the keyframe packets in ffprobe's JSON packet list (pts, else dts; none when the
    probe failed)."""
    try:
        packets = json.loads(probe_json or "{}").get("packets", [])
    except ValueError:
        return []
    times = []
    for p in packets:
        at = p.get("pts_time", p.get("dts_time"))
        if "K" in p.get("flags", "") and at not in (None, "N/A"):
            times.append(float(at))
    return times


def _steps(start: float, end: float) -> tuple[float, float]:
    """The range rounded to CLIP_STEP: ranges a millisecond apart are one clip (one cut, one cached
    file), not one each."""
    start = round(start / CLIP_STEP) * CLIP_STEP
    return start, max(round(end / CLIP_STEP) * CLIP_STEP, start + CLIP_STEP)


def _cache_path(cache_dir: Path, video_id: str, start: float, end: float, method: str, suffix: str) -> Path:
    ext = suffix if method == "copy" else ".mp4"
    return Path(cache_dir) / f"{hashlib.sha1(f'{video_id}:{start:.3f}:{end:.3f}:{method}:{CUT_VERSION}'.encode()).hexdigest()}{ext}"


def _clip(path: Path, start: float, end: float, method: str) -> Clip:
    fmt = COPY_CONTAINERS.get(path.suffix, "mp4")
    media = {"mp4": "video/mp4", "mov": "video/quicktime", "matroska": "video/x-matroska", "webm": "video/webm"}[fmt]
    return Clip(path, start, end, method, media)


def uncut_media_type(suffix: str) -> str | None:
    """The Content-Type a clip of a file with this suffix has however it is cut (an MP4 copied or
    encoded, anything encoded is MP4), or None where copy or encode decides it (a MOV, MKV or WebM
    copied stays one): what HEAD can say of a clip not cut yet."""
    suffix = suffix.lower()
    copied = _clip(Path(f"clip{suffix}"), 0.0, 0.0, "copy").media_type if suffix in COPY_CONTAINERS else None
    encoded = _clip(Path("clip.mp4"), 0.0, 0.0, "encode").media_type
    return encoded if copied in (None, encoded) else None


def cached_clip(video_id: str, start: float, end: float, cache_dir: Path, suffix: str) -> Clip | None:
    """The clip of [start, end] if it was cut before (marked used), else None: no probe, no ffmpeg, so
    a route serves it without waiting for an ffmpeg slot."""
    start, end = _steps(start, end)
    for method in ("copy", "encode"):
        path = _cache_path(cache_dir, video_id, start, end, method, suffix.lower())
        if path.is_file():
            mark_used(path)
            return _clip(path, start, end, method)
    return None


def cut_clip(video: Path | str, video_id: str, start: float, end: float, cache_dir: Path, *,
             suffix: str | None = None, pass_fds: tuple[int, ...] = (), cache_bytes: int = THUMB_CACHE_BYTES,
             stop: Callable[[], bool] | None = None) -> Clip:  # fmt: skip
    """The moment [start, end] of `video` as a file (cached); ClipError when ffmpeg cannot cut it.
    `video` may name an inherited descriptor (`/proc/self/fd/N`, with `pass_fds`: the server's checked
    opening of the indexed file) or a URL; `suffix` is then the indexed file's. `stop`: whether the
    request's client has gone (ffmpeg is then killed and media.Abandoned raised)."""
    suffix = (suffix if suffix is not None else Path(str(video)).suffix).lower()
    start, end = _steps(start, end)

    def cached(method: str) -> Path:
        return _cache_path(cache_dir, video_id, start, end, method, suffix)

    # a clip cut before is served without a probe; a new one probes the file once (media_layout)
    methods = [m for m in ("copy", "encode") if cached(m).is_file()][:1]
    layout: Layout | None = None
    if not methods:
        layout = media_layout(str(video), pass_fds)
        video_stream = layout.video_map[1].removeprefix("0:")  # "N" (ffprobe's index) or "v:0"
        copy = suffix in COPY_CONTAINERS and keyframe_at(video, start, pass_fds=pass_fds, stream=video_stream)
        methods = ["copy", "encode"] if copy else ["encode"]
    empty = False
    for method in methods:
        ext = suffix if method == "copy" else ".mp4"
        out = cached(method)
        with one_maker(out):  # concurrent requests for this clip: one cut
            if out.is_file():
                mark_used(out)
                made = True
            else:
                layout = layout or media_layout(str(video), pass_fds)
                made = _run_ffmpeg(video, start, end, method, out, COPY_CONTAINERS.get(ext, "mp4"), layout, pass_fds, stop)
                if made == "empty":
                    empty, made = True, False
                if made:
                    trim_cache(Path(cache_dir), cache_bytes, keep=out)
        if made:
            return _clip(out, start, end, method)
    if empty:
        raise NoFrames(f"no frame in {start:g}-{end:g} s of video {video_id}: that stretch of the file cannot be decoded "
                       "(truncated or damaged; GET /v1/index lists its warning)")  # fmt: skip
    raise ClipError(f"ffmpeg could not cut {start:g}-{end:g} s of video {video_id}")


def _run_ffmpeg(video: Path | str, start: float, end: float, method: str, out: Path, fmt: str, layout: Layout,
                pass_fds: tuple[int, ...] = (), stop: Callable[[], bool] | None = None) -> bool | str:  # fmt: skip
    """Cut into `out` (through a temporary file): True when it holds the clip, "empty" when ffmpeg
    succeeded but wrote no frame (a stretch that cannot be decoded: ffmpeg exits 0 with a header-only
    file, which was served as a 262-byte MP4), False when ffmpeg failed; media.Abandoned when `stop`
    said the client had gone."""
    codecs = (["-c", "copy", "-avoid_negative_ts", "make_zero"] if method == "copy" else
              ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k"])  # fmt: skip
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.{id(out)}.tmp{out.suffix}")  # concurrent callers never share one
    before, after = layout.seek(start) if method == "encode" else (["-ss", f"{start:.3f}"], [])  # a copy starts on its keyframe
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", *before, "-i", str(video), *after, "-t", f"{end - start:.3f}",
           *layout.maps(), "-sn", "-dn", *codecs,
           *(["-movflags", "+faststart"] if fmt in ("mp4", "mov") else []), "-f", fmt, str(tmp)]  # fmt: skip
    try:
        status = run_tool(cmd, timeout=max(60.0, 4 * (end - start)), pass_fds=pass_fds, stop=stop)
    except BaseException:  # Abandoned: no half-written file left behind
        tmp.unlink(missing_ok=True)
        raise
    if status != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        return False
    frames, seconds = _cut_length(tmp)
    if not frames:
        tmp.unlink(missing_ok=True)
        return "empty"
    if method == "copy" and seconds is not None and seconds > end - start + COPY_SLACK:
        # the demuxer's seek landed on an earlier keyframe (Matroska seeks by its cues, which need not list
        # every keyframe): the clip would show what came before the moment; it is re-encoded instead
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(out)
    return True


def _cut_length(path: Path) -> tuple[bool, float | None]:
    """Whether a cut file has a video stream with at least one frame (or, where the container does not
    count them, a duration above zero), and its duration in seconds where known."""
    out = _probe(["-select_streams", "v:0", "-show_entries", "stream=nb_frames,duration:format=duration", "-of", "json", str(path)])
    try:
        info = json.loads(out or "{}")
    except ValueError:
        return False, None
    streams = info.get("streams") or []
    if not streams:
        return False, None
    text = streams[0].get("duration", info.get("format", {}).get("duration"))
    seconds = float(text) if text not in (None, "N/A") else None
    frames = streams[0].get("nb_frames")
    if frames not in (None, "N/A"):
        return int(frames) > 0, seconds
    return seconds is not None and seconds > 0, seconds
