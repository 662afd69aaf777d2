"""Read a file's streams with ffprobe before decoding anything, so bad input fails with a reason.

ffprobe understands every container ffmpeg does and reports problems in words ("moov atom not found",
"Invalid data found when processing input"); those words go into the failure the operator sees.

Two facts from the probe shape everything downstream:
- **Player time.** A player shows the earliest timestamp of the file as 0 (broadcast transport streams
  start at 1.4 s or hours in). Every time we store is seconds from that point: `video_start` and
  `audio_start` say where each stream begins on that clock.
- **Display size.** Phones store portrait video as landscape frames plus a rotation, and DV, DVD, HDV
  and broadcast video store non-square pixels (a sample aspect ratio: 720x480 shown at 16:9 is 853x480);
  `width` and `height` are what a viewer sees, and the decoders scale and turn frames to match.
- **Which streams.** A file may hold several video and audio tracks; the ones described are the ones
  a player picks (the track flagged default, else the first), and the decoders read those.

Files that are not media at all are rejected before ffprobe opens them: an HLS or ffconcat playlist
saved under a video name would make ffmpeg read whatever files it lists, inside the library or not.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

PROBE_TIMEOUT_S = 60

# Demuxers that read other files or URLs named inside the file: never opened from a library.
PLAYLIST_FORMATS = {"hls", "applehttp", "concat", "dash", "webm_dash_manifest", "mpd", "smil", "playlist"}
# Text signatures of playlists and manifests, checked on the first bytes before ffprobe runs.
PLAYLIST_SIGNATURES = (b"#EXTM3U", b"ffconcat", b"#EXT-X-", b"<?xml", b"<MPD", b"<smil", b"[playlist]", b"file '", b"file \"")
STILL_IMAGE_CODECS = {"mjpeg", "png", "bmp", "tiff", "webp", "jpeg2000", "ppm", "pgm", "gif"}
# subtitle codecs that hold text (ffmpeg converts them to SRT); bitmap ones (PGS, DVD, DVB) would need OCR
TEXT_SUBTITLE_CODECS = {"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text", "microdvd", "subviewer", "jacosub", "realtext", "sami", "stl",
                        "eia_608"}  # the last: a QuickTime closed-caption track (c608), decoded to text by ffmpeg
# Containers whose `duration` is read from their header, where it is the end timestamp of the
# timeline (MP4/MOV `mvhd` counts an initial empty edit; Matroska's Duration counts from timestamp 0),
# not the length from the first timestamp as ffmpeg computes it for streams without an index (TS, PS).
END_TIMESTAMP_DURATION_FORMATS = {"mov", "mp4", "matroska", "webm"}


class MediaError(RuntimeError):
    """The file cannot be indexed; the message says why in words an operator can act on."""


@dataclass
class ProbeResult:
    duration: float  # seconds of player time
    fps: float
    width: int  # as displayed (sample aspect ratio and rotation applied)
    height: int
    has_audio: bool
    video_codec: str
    variable_frame_rate: bool
    n_frames: int | None
    rotation: int = 0  # degrees counter-clockwise the decoded picture must turn to be upright (0/90/180/270)
    video_start: float = 0.0  # where the video stream starts, in player time
    audio_start: float = 0.0  # where the audio stream read (`audio_stream`) starts, in player time
    format_name: str = ""
    stream_index: int = -1  # ffprobe's index of the video stream described (and decoded); -1: the first
    video_streams: int = 1  # video streams a decoder could pick (cover art aside): over 1, only PyAV picks ours
    audio_stream: int = 0  # which audio stream is read (ffmpeg's `-map 0:a:N`): the default-flagged one, else the first
    coded_width: int = 0  # the pictures as stored (before the sample aspect ratio and rotation); 0: unknown
    coded_height: int = 0
    text_subtitles: tuple[int, ...] = ()  # subtitle streams that hold text, as ffmpeg's `-map 0:s:N` counts them
    closed_captions: bool = False  # the video stream's pictures carry closed captions (TV recordings: CEA-608/708)
    tags: tuple[tuple[str, str], ...] = ()  # the container's own tags (title, comment, ...), keys lower case
    chapters: tuple[tuple[float, float, str], ...] = ()  # (start, end, title) in player time, titled ones only

    @property
    def coded_size(self) -> tuple[int, int]:
        """(width, height) of the pictures as stored, before the sample aspect ratio and rotation."""
        if self.coded_width and self.coded_height:
            return self.coded_width, self.coded_height
        return (self.height, self.width) if self.rotation in (90, 270) else (self.width, self.height)


def _rate(text: str | None) -> float:
    try:
        value = Fraction(text or "0")
        return float(value) if value > 0 else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0


def _float(value) -> float | None:
    try:
        out = float(value)
        return out if out == out and out > 0 else None  # not NaN, positive
    except (TypeError, ValueError):
        return None


def _time(value) -> float | None:
    try:
        out = float(value)
        return out if out == out else None
    except (TypeError, ValueError):
        return None


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def is_url(path) -> bool:
    """An http(s) URL (a presigned object in S3): ffprobe, decord and PyAV read it with range requests."""
    return isinstance(path, str) and path.startswith(("http://", "https://"))


def _head(path, n: int) -> bytes:
    if is_url(path):
        import urllib.request

        try:
            with urllib.request.urlopen(urllib.request.Request(path, headers={"Range": f"bytes=0-{n - 1}"}), timeout=60) as r:
                return r.read(n)
        except OSError as exc:
            raise MediaError(f"cannot read the object: {exc}") from exc
    with open(path, "rb") as fh:
        return fh.read(n)


def _ffmpeg_input(path) -> str:
    return path if is_url(path) else str(Path(path).absolute())


def check_regular_file(path: Path) -> int:
    """The file's size; a clear error for what is not a regular file (a FIFO or /dev/zero would hang a decoder)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError("file disappeared before it could be read")
    except OSError as exc:
        raise MediaError(f"cannot read file: {exc.strerror or exc}")
    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"not a regular file ({file_kind(st.st_mode)})")
    return st.st_size


def reject_playlist(path: Path) -> None:
    """Refuse text playlists and manifests by their first bytes, before any demuxer can follow them."""
    head = _head(path, 64).lstrip(b"\xef\xbb\xbf \t\r\n")
    if any(head.startswith(sig) for sig in PLAYLIST_SIGNATURES):
        raise MediaError("a playlist or manifest (HLS/ffconcat/DASH), not a video file: not opened, since it would read other files")


def ffprobe_json(path: Path) -> dict:
    """ffprobe's JSON for the file, plus `captioned`: the indexes of the video streams whose pictures
    carry closed captions (CEA-608/708 in the pictures' user data, as TV recordings do). ffprobe's JSON
    field for it (`closed_captions`) stays 0 in ffmpeg 5 (it asks a decoder that decoded nothing), while
    its summary of the file (`-v info`) names "Closed Captions" from the frames it did decode."""
    cmd = ["ffprobe", "-v", "info", "-hide_banner", "-print_format", "json", "-show_format", "-show_streams", "-show_chapters",
           _ffmpeg_input(path)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffprobe gave no answer within {PROBE_TIMEOUT_S} s")
    except FileNotFoundError:
        raise MediaError("ffprobe is not installed (install ffmpeg)")
    if proc.returncode != 0:
        reason = failure_line(proc, "ffprobe").replace(_ffmpeg_input(path), "").strip(": ")
        raise MediaError(f"not a readable video: {reason}")
    info = json.loads(proc.stdout or b"{}")
    info["captioned"] = [int(m.group(1)) for m in _CAPTIONED.finditer(proc.stderr.decode("utf-8", "replace"))]
    return info


# a video stream in ffprobe's summary whose pictures carry closed captions:
# "  Stream #0:0[0x100]: Video: h264 (...), yuv420p(progressive), 320x240, Closed Captions, 30 fps"
_CAPTIONED = re.compile(r"^\s*Stream #\d+:(\d+)\S*: Video: [^\n]*\bClosed Captions\b", re.MULTILINE)


def failure_line(proc: subprocess.CompletedProcess, tool: str = "ffmpeg") -> str:
    """Why an ffmpeg/ffprobe run failed, in one line: the last line it wrote to stderr (where
    `-v error` leaves the cause), else its exit code."""
    lines = (proc.stderr or b"").decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"{tool} exited with {proc.returncode}"


def rotation_of(stream: dict) -> int:
    """Counter-clockwise degrees to turn decoded pictures upright: the display matrix, else the old
    `rotate` tag (which counts clockwise)."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]) / 90.0)) * 90 % 360
    tag = (stream.get("tags") or {}).get("rotate")
    if tag is not None:
        try:
            return -int(round(float(tag) / 90.0)) * 90 % 360
        except ValueError:
            return 0
    return 0


# Sample aspect ratios outside this range are damaged headers, not lenses (an anamorphic lens is 2:1 at most)
SAR_RANGE = (0.2, 5.0)


def _default_first(streams: list[dict]) -> dict:
    """The stream a player picks among `streams`: the first flagged `default`, else the first."""
    return next((s for s in streams if (s.get("disposition") or {}).get("default")), streams[0])


def main_video(video: list[dict]) -> dict:
    """The video stream a player shows: an MKV may carry its cover art as a first, unflagged one-frame
    MJPEG/PNG stream, and a dashcam or screen recorder a second camera. Prefer a stream whose codec is
    not a picture codec, then the one flagged default, then the first. The decoders read this stream
    (decord cannot be told which, so a file with several goes to PyAV: decode._decoders)."""
    def still(s: dict) -> bool:
        return str(s.get("codec_name")) in STILL_IMAGE_CODECS - {"gif"}

    return _default_first([s for s in video if not still(s)] or video)


def main_audio(audio: list[dict]) -> int:
    """Which audio stream (0-based among the audio streams, as ffmpeg's `-map 0:a:N` counts) a player
    plays: the one flagged default (a dub's original-language track is often the second), else the first."""
    return audio.index(_default_first(audio)) if audio else 0


def _pictures(streams: list[dict]) -> list[dict]:
    """The video streams that are not cover art (attached pictures)."""
    return [s for s in streams if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")]


def player_maps(streams: list[dict], audio: bool = True) -> list[str]:
    """ffmpeg `-map` arguments for the streams the index was made from (ffprobe's `streams`): the video
    stream `probe` describes and, with `audio`, the audio stream it reads (optional: `?`). The server
    cuts thumbnails and clips with them, so a dashcam's second camera or a dub's other track never
    shows where the index read the first (ffmpeg's own pick is the largest picture)."""
    video, sound = _pictures(streams), [s for s in streams if s.get("codec_type") == "audio"]
    maps = ["-map", f"0:{main_video(video).get('index', 0)}"] if video else ["-map", "0:v:0"]
    if audio:
        maps += ["-map", f"0:a:{main_audio(sound)}?"]
    return maps


def _tag_seconds(text: str | None) -> float | None:
    """Seconds from a Matroska DURATION tag ("00:00:04.000000000"); None where there is none or it is odd."""
    try:
        h, m, sec = str(text).split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except (ValueError, TypeError):
        return None


def sample_aspect(text: str | None) -> Fraction:
    """A stream's sample (pixel) aspect ratio from ffprobe's "N:D"; 1 where it is unset ("0:1", "N/A"),
    malformed, or outside SAR_RANGE."""
    try:
        num, den = (int(x) for x in str(text).split(":"))
        sar = Fraction(num, den)
    except (ValueError, ZeroDivisionError):
        return Fraction(1)
    return sar if SAR_RANGE[0] <= sar <= SAR_RANGE[1] else Fraction(1)


def display_size(coded_w: int, coded_h: int, sar: str | None, rotation: int) -> tuple[int, int]:
    """(width, height) as a player shows the pictures: pixels made square by widening or narrowing them
    (the height is kept, as ffmpeg's `scale=iw*sar:ih` and players do), then turned by the rotation."""
    width = max(1, int(round(coded_w * sample_aspect(sar))))
    return (coded_h, width) if rotation in (90, 270) else (width, coded_h)


def probe(path: Path | str) -> ProbeResult:
    if not is_url(path) and check_regular_file(path) == 0:
        raise MediaError("empty file (0 bytes)")
    reject_playlist(path)
    info = ffprobe_json(path)
    fmt = info.get("format") or {}
    format_name = str(fmt.get("format_name", ""))
    if PLAYLIST_FORMATS & set(format_name.split(",")):
        raise MediaError(f"a playlist ({format_name}), not a video file")
    streams = info.get("streams", [])
    video = _pictures(streams)
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    subtitles = [s for s in streams if s.get("codec_type") == "subtitle"]
    if not video:
        if audio:
            # the format says whether it is sound at all: a text file of "G"s (a transport stream's sync
            # byte) was read as AMR-WB speech and reported as an "audio-only file"
            raise MediaError(f"no video stream (audio-only file, read as {format_name or 'unknown format'})")
        if not streams:
            raise MediaError("no video stream (the file holds no streams at all: an empty container)")
        kinds = sorted({str(s.get("codec_type") or "unknown") for s in streams})
        raise MediaError(f"no video stream (only {', '.join(kinds)} streams)")
    v = main_video(video)
    coded_w, coded_h = int(v.get("width") or 0), int(v.get("height") or 0)
    if coded_w <= 0 or coded_h <= 0:
        raise MediaError("video stream has no frame size (corrupt header?)")
    n_frames = int(v["nb_frames"]) if str(v.get("nb_frames", "")).isdigit() else None
    codec = str(v.get("codec_name", "?"))
    if codec in STILL_IMAGE_CODECS and (n_frames == 1 or format_name.endswith("_pipe") or format_name == "image2"):
        raise MediaError(f"a still image ({codec}), not a video")
    avg, real = _rate(v.get("avg_frame_rate")), _rate(v.get("r_frame_rate"))
    fps = avg or real
    if n_frames == 0 and all(str(s.get("nb_frames", "")) == "0" for s in video):
        raise MediaError("the video stream holds no frames" + (" (only its audio has content)" if audio else ""))
    # Player time 0 is the earliest start of any stream (what ffmpeg reports as the file's start).
    origin = _time(fmt.get("start_time"))
    v_start = _time(v.get("start_time"))
    origin = origin if origin is not None else (v_start or 0.0)
    fmt_duration = _float(fmt.get("duration"))
    v_duration = _float(v.get("duration"))
    # ... where it is the end (an MP4 with B-frames and no edit list starts at 0.08 s and says its length:
    # its video stream, 0.08 s + 60 s, ends past that)
    ends_there = v_duration is None or fmt_duration is None or fmt_duration >= (v_start or 0.0) + v_duration - 0.05
    if fmt_duration is not None and origin > 1e-3 and fmt_duration > origin and ends_there and set(format_name.split(",")) & END_TIMESTAMP_DURATION_FORMATS:
        # an MP4/MKV whose timestamps start late (`-output_ts_offset`, an MKV remuxed from broadcast TS):
        # its header duration is where the timeline ends; what a player shows is the part after `origin`
        fmt_duration -= origin
    # Matroska keeps a track's length in a DURATION tag (its end timestamp where the track starts late:
    # taken as a length here, which can only overstate where the track ends)
    ends = [max((_time(st.get("start_time")) or 0.0) - origin, 0.0) + length for st in (v, *audio)
            if (length := _float(st.get("duration")) or _tag_seconds((st.get("tags") or {}).get("DURATION")))]
    if fmt_duration is not None and ends and max(ends) > 0:
        if fmt_duration > 2 * max(ends) + 60:
            # a container length far past the end of the picture and the sound is another track's wrapped
            # timestamp (a DVD subtitle track said 1193 hours of a 4 s clip)
            fmt_duration = max(ends)
    duration = fmt_duration or _float(v.get("duration"))
    if duration is None and n_frames and fps:
        duration = n_frames / fps
    if duration is None:
        if format_name in ("h264", "hevc", "mpegvideo", "m4v", "rawvideo"):  # a camera's bare stream: no timestamps to tell its length
            raise MediaError(f"a raw {format_name} stream with no container: its length is unknown (remux it: ffmpeg -i FILE -c copy FILE.mp4)")
        raise MediaError("duration unknown (truncated or streaming-only file?)")
    a_index = main_audio(audio)
    a_start = _time(audio[a_index].get("start_time")) if audio else None
    rotation = rotation_of(v)
    width, height = display_size(coded_w, coded_h, v.get("sample_aspect_ratio"), rotation)
    return ProbeResult(
        duration=duration,
        fps=fps,
        width=width,
        height=height,
        has_audio=bool(audio),
        video_codec=codec,
        variable_frame_rate=bool(avg and real and abs(avg - real) > 0.01 * real),
        n_frames=n_frames,
        rotation=rotation,
        video_start=max(0.0, (v_start if v_start is not None else origin) - origin),
        audio_start=max(0.0, (a_start if a_start is not None else origin) - origin),
        format_name=format_name,
        stream_index=int(v.get("index", -1)),
        video_streams=len(video),
        audio_stream=a_index,
        coded_width=coded_w,
        coded_height=coded_h,
        text_subtitles=tuple(i for i, sub in enumerate(subtitles) if str(sub.get("codec_name")) in TEXT_SUBTITLE_CODECS),
        closed_captions=int(v.get("index", -1)) in info.get("captioned", ()) or bool(v.get("closed_captions")),
        tags=tuple((str(k).lower(), str(t)) for k, t in (fmt.get("tags") or {}).items() if str(t).strip()),
        chapters=_chapters(info.get("chapters") or [], origin, duration),
    )


def _chapters(chapters: list[dict], origin: float, duration: float) -> tuple[tuple[float, float, str], ...]:
    """Titled chapters as (start, end, title) in player time, cut to the video (ffprobe gives them on
    the file's timeline; an MKV's or MP4's named chapters are a human-written table of contents)."""
    out = []
    for ch in chapters:
        title = " ".join(str((ch.get("tags") or {}).get("title", "")).split())
        start, end = _time(ch.get("start_time")), _time(ch.get("end_time"))
        if not title or start is None:
            continue
        start = min(max(start - origin, 0.0), duration)
        end = min(max((end if end is not None else duration + origin) - origin, start), duration)
        if end > start:
            out.append((start, end, title))
    return tuple(out)
