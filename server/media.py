"""Media and thumbnails: the bytes a player and a result card need, for the API and (through it) the UI.

Media is served only for indexed videos, looked up by id: no path in a request ever reaches the file
system. A thumbnail is one ffmpeg seek, cut once and kept as a JPEG in `<db>/.thumbs` (or a user
cache directory when the index is read-only), named by video, time and width, so concurrent
requests for the same frame agree on one file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from vidsearch import objectstore

__all__ = ["MEDIA_TYPES", "media_type", "thumbnail", "thumbnail_dir"]

MEDIA_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm", ".mkv": "video/x-matroska",
               ".mov": "video/quicktime", ".ogv": "video/ogg"}  # fmt: skip
END_MARGIN = 0.05  # seconds: a seek this close to the end still finds a frame


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def thumbnail_dir(db: Path) -> Path:
    """`<db>/.thumbs`; a user cache directory when the index directory cannot be written or is on
    object storage."""
    if not objectstore.is_uri(db):
        primary = Path(db) / ".thumbs"
        try:
            primary.mkdir(parents=True, exist_ok=True)
            if os.access(primary, os.W_OK):
                return primary
        except OSError:
            pass
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vidsearch" / "thumbs"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def thumbnail(video: Path, video_id: str, t: float, duration: float, cache_dir: Path, width: int = 320) -> Path | None:
    """A JPEG of the frame at `t` seconds (moved inside the video), or None when there is none."""
    t = min(max(float(t), 0.0), max(float(duration) - END_MARGIN, 0.0))
    out = cache_dir / f"{hashlib.sha1(f'{video_id}:{t:.2f}:{width}'.encode()).hexdigest()}.jpg"
    if out.is_file():
        return out
    if objectstore.is_uri(video):
        video = objectstore.presign(video, seconds=300)  # ffmpeg seeks with range requests
    elif not Path(video).is_file():
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
