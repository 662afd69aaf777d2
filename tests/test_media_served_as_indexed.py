"""Thumbnails and clips show what the index read: the video track a player shows (not ffmpeg's own
pick, the largest picture), the default audio track, and square pixels (an anamorphic frame was served
squeezed, at its stored width)."""

from __future__ import annotations

import io
import os
import subprocess

import numpy as np
from PIL import Image

from media import ffmpeg
from vidsearch.server.clips import cut_clip
from vidsearch.server.library import IndexedFile
from vidsearch.server.media import thumbnail

H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def opened(path):
    fd = os.open(path, os.O_RDONLY)
    return IndexedFile(fd, os.fstat(fd), path.name)


def test_thumbnails_and_clips_come_from_the_track_a_player_shows(tmp_path):
    """Track 0 is red, track 1 a larger green one, neither flagged default (an MKV; MP4 flags its
    first): the index reads the first, as a player shows it; ffmpeg left to itself picks the largest."""
    path = tmp_path / "two cameras.mkv"
    (tmp_path / "cache").mkdir()
    ffmpeg("-f", "lavfi", "-i", "color=red:s=160x120:r=10:d=3", "-f", "lavfi", "-i", "color=green:s=640x480:r=10:d=3",
           "-map", "0:v", "-map", "1:v", *H264, "-disposition:v:0", "0", "-disposition:v:1", "0", "-default_mode", "passthrough", str(path))  # fmt: skip
    with opened(path) as f:
        jpeg = thumbnail(f, "v2", 1.0, 320, tmp_path / "cache")
    r, g, _ = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=float).mean(axis=(0, 1))
    assert r > 150 and g < 80, (r, g)
    (tmp_path / "clips").mkdir()
    with opened(path) as f:
        clip = cut_clip(f.proc_path, "v2", 0.5, 1.5, tmp_path / "clips", suffix=".mkv", pass_fds=(f.fd,))
    size = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=width,height", "-of", "csv=p=0", str(clip.path)],
                          capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    assert size == ["160,120"], size  # the red track alone


def test_an_anamorphic_frame_is_shown_with_square_pixels(tmp_path):
    path = tmp_path / "anamorphic.mp4"
    (tmp_path / "cache").mkdir()
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=2", "-vf", "setsar=2/1", *H264, str(path))  # displays 320x120
    with opened(path) as f:
        jpeg = thumbnail(f, "v1", 0.5, 320, tmp_path / "cache")
    assert Image.open(io.BytesIO(jpeg)).size == (320, 120)  # was 320x240: the stored 4:3, squeezed


def test_a_cover_picture_stream_first_is_not_the_thumbnail(tmp_path):
    """An MKV whose first video stream is an unflagged one-frame cover (MJPEG): the index reads the
    real video (the second), and so must thumbnails and clips."""
    (tmp_path / "cache").mkdir()
    cover = tmp_path / "cover.jpg"
    ffmpeg("-f", "lavfi", "-i", "color=blue:s=160x120:d=0.1", "-frames:v", "1", str(cover))
    path = tmp_path / "with cover.mkv"
    ffmpeg("-i", str(cover), "-f", "lavfi", "-i", "color=red:s=160x120:r=10:d=3", "-map", "0:v", "-map", "1:v",
           "-c:v:0", "mjpeg", "-c:v:1", "libx264", "-preset", "ultrafast", "-pix_fmt:v:1", "yuv420p",
           "-disposition:v:0", "0", "-disposition:v:1", "0", "-default_mode", "passthrough", str(path))  # fmt: skip
    with opened(path) as f:
        jpeg = thumbnail(f, "v3", 1.0, 320, tmp_path / "cache")
    r, _, b = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=float).mean(axis=(0, 1))
    assert r > 150 and b < 80, (r, b)
