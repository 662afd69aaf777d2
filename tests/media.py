"""Test media made with ffmpeg (lavfi sources), so no media is shipped in git."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def make_clip(
    path: Path,
    seconds: float = 4.0,
    size: str = "320x240",
    rate: int = 25,
    source: str = "testsrc",
    audio_hz: int | None = 440,
    extra: tuple[str, ...] = (),
) -> Path:
    """A short H.264 clip; `source` is any lavfi video source (testsrc, color=c=red, mandelbrot...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sep = ":" if "=" in source else "="
    args = ["-f", "lavfi", "-i", f"{source}{sep}size={size}:rate={rate}:duration={seconds}"]
    if audio_hz:
        args += ["-f", "lavfi", "-i", f"sine=frequency={audio_hz}:duration={seconds}", "-c:a", "aac", "-shortest"]
    ffmpeg(*args, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra, str(path))
    return path


def make_two_colour_clip(path: Path, first: str, second: str, seconds_each: float = 2.0, rates=(25, 25), vfr=False) -> Path:
    """A clip that cuts from one colour to another at `seconds_each` (a known shot boundary)."""
    a, b = rates
    ffmpeg(
        "-f", "lavfi", "-i", f"color=c={first}:size=320x240:rate={a}:duration={seconds_each}",
        "-f", "lavfi", "-i", f"color=c={second}:size=320x240:rate={b}:duration={seconds_each}",
        "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]",
        *(["-fps_mode", "vfr"] if vfr else []),
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path),
    )  # fmt: skip
    return path


def make_audio_only(path: Path, seconds: float = 2.0) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=300:duration={seconds}", "-c:a", "aac", str(path))
    return path


def make_truncated(src: Path, path: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def make_library(root: Path, n: int, seconds: float = 3.0) -> list[Path]:
    """n distinct short clips (different lavfi patterns and colours, so no two share content)."""
    root.mkdir(parents=True, exist_ok=True)
    sources = ["testsrc", "testsrc2", "smptebars", "rgbtestsrc", "smptehdbars", "yuvtestsrc"]
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        p = root / f"clip_{i:03d}.mp4"
        # drawtext-free variation: the index is burned in as a frame offset of the pattern
        ffmpeg(
            "-f", "lavfi", "-i", f"{src}=size=160x120:rate=10:duration={seconds + (i % 3)}",
            "-vf", f"hue=h={i * 17 % 360}", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            str(p),
        )  # fmt: skip
        out.append(p)
    return out


def have_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None
