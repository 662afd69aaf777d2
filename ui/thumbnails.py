"""Thumbnails for local mode, where no API is there to cut them: one ffmpeg seek per frame, kept on
disk under the same names the API uses, so a frame is cut once whichever of the two asked first."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path


def frame_jpeg(video: Path, video_id: str, t: float, duration: float, cache_dir: Path, width: int = 320) -> Path | None:
    """A JPEG of the frame at `t` seconds (clamped into the video), or None when there is none."""
    t = min(max(float(t), 0.0), max(float(duration) - 0.05, 0.0))
    out = cache_dir / f"{hashlib.sha1(f'{video_id}:{t:.2f}:{width}'.encode()).hexdigest()}.jpg"
    if out.is_file():
        return out
    if not video.is_file():
        return None
    tmp = out.with_name(f"{out.stem}.{os.getpid()}.{id(out)}.tmp.jpg")  # concurrent callers never share a temp file
    try:
        proc = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{t:.3f}", "-i", str(video), "-frames:v", "1",
             "-vf", f"scale={width}:-2", "-q:v", "4", str(tmp)],
            capture_output=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        return None
    tmp.replace(out)
    return out
