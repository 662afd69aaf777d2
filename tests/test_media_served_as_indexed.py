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


COLOURS = ["red", "green", "blue", "yellow", "white", "black"]


def _colour_steps(path, extra: list[str]) -> None:
    """One second of each of COLOURS at 10 frames/s, keyframes as `extra` says."""
    inputs = [a for c in COLOURS for a in ("-f", "lavfi", "-i", f"color={c}:s=96x64:r=10:d=1")]
    graph = "".join(f"[{i}:v]" for i in range(len(COLOURS))) + f"concat=n={len(COLOURS)}:v=1[v]"
    ffmpeg(*inputs, "-filter_complex", graph, "-map", "[v]", *H264, *extra, str(path))


def _mean_rgb(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=float).mean(axis=(0, 1))


def test_a_transport_stream_thumbnail_shows_the_asked_time(tmp_path):
    """A transport stream has no index: ffmpeg's seek landed on the next keyframe (4.8 s here), so a
    thumbnail at 1.5 s showed 4.8 s, and later times none at all."""
    (tmp_path / "cache").mkdir()
    path = tmp_path / "broadcast.ts"
    _colour_steps(path, ["-g", "48", "-f", "mpegts"])
    for t, colour in ((1.5, (0, 128, 0)), (3.5, (255, 255, 0)), (5.5, (0, 0, 0))):
        with opened(path) as f:
            jpeg = thumbnail(f, "ts", t, 160, tmp_path / "cache")
        assert jpeg is not None, t
        assert np.abs(_mean_rgb(jpeg) - colour).max() < 40, (t, _mean_rgb(jpeg))


def test_a_copied_clip_never_starts_before_the_range(tmp_path):
    """A stream copy whose seek lands on an earlier keyframe (the keyframe counted as at 2.0 s sits at
    2.023 s, so a seek to 2.0 takes the one at 0.023 s: a 3.5 s clip for 1.5 s) would show what came
    before the moment: such a cut is re-encoded instead."""
    steps, with_audio = tmp_path / "steps.mp4", tmp_path / "with audio.mp4"
    _colour_steps(steps, ["-g", "20"])  # keyframes every 2 s
    ffmpeg("-i", str(steps), "-f", "lavfi", "-i", "sine=d=6", "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac",
           "-shortest", str(with_audio))  # fmt: skip
    path = tmp_path / "remux.mkv"  # a remux: the video starts 23 ms after the audio (AAC priming), keyframes at 2.023 s...
    ffmpeg("-i", str(with_audio), "-c", "copy", str(path))
    (tmp_path / "clips").mkdir()
    with opened(path) as f:
        clip = cut_clip(f.proc_path, "mkv", 2.0, 3.5, tmp_path / "clips", suffix=".mkv", pass_fds=(f.fd,))
    seconds = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(clip.path)],
                                   capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert seconds <= 1.5 + 0.75, (clip.method, seconds)
    first = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip.path), "-frames:v", "1", "-f", "image2pipe", "-c:v", "mjpeg", "-"],
                           capture_output=True, check=True).stdout  # fmt: skip
    assert np.abs(_mean_rgb(first) - (0, 0, 255)).max() < 40, _mean_rgb(first)  # blue: the third second
