"""Read a file's streams with ffprobe before decoding anything, so bad input fails with a reason.

ffprobe understands every container ffmpeg does and reports problems in words ("moov atom not found",
"Invalid data found when processing input"); those words go into the failure the operator sees.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

PROBE_TIMEOUT_S = 60


class MediaError(RuntimeError):
    """The file cannot be indexed; the message says why in words an operator can act on."""


@dataclass
class ProbeResult:
    duration: float
    fps: float
    width: int
    height: int
    has_audio: bool
    video_codec: str
    variable_frame_rate: bool
    n_frames: int | None


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


def ffprobe_json(path: Path) -> dict:
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffprobe gave no answer within {PROBE_TIMEOUT_S} s")
    except FileNotFoundError:
        raise MediaError("ffprobe is not installed (install ffmpeg)")
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = msg[-1] if msg else f"ffprobe exit code {proc.returncode}"
        reason = reason.replace(str(path), "").strip(": ")
        raise MediaError(f"not a readable video: {reason}")
    return json.loads(proc.stdout or b"{}")


def probe(path: Path) -> ProbeResult:
    size = path.stat().st_size
    if size == 0:
        raise MediaError("empty file (0 bytes)")
    info = ffprobe_json(path)
    streams = info.get("streams", [])
    video = [
        s
        for s in streams
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    if not video:
        raise MediaError("no video stream (audio-only file)" if has_audio else "no video stream")
    v = video[0]
    width, height = int(v.get("width") or 0), int(v.get("height") or 0)
    if width <= 0 or height <= 0:
        raise MediaError("video stream has no frame size (corrupt header?)")
    avg, real = _rate(v.get("avg_frame_rate")), _rate(v.get("r_frame_rate"))
    fps = avg or real
    n_frames = int(v["nb_frames"]) if str(v.get("nb_frames", "")).isdigit() else None
    duration = _float(v.get("duration")) or _float((info.get("format") or {}).get("duration"))
    if duration is None and n_frames and fps:
        duration = n_frames / fps
    if duration is None:
        raise MediaError("duration unknown (truncated or streaming-only file?)")
    return ProbeResult(
        duration=duration,
        fps=fps,
        width=width,
        height=height,
        has_audio=has_audio,
        video_codec=str(v.get("codec_name", "?")),
        variable_frame_rate=bool(avg and real and abs(avg - real) > 0.01 * real),
        n_frames=n_frames,
    )
