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


FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def make_spoken_clip(path: Path, sentence: str, at: float, seconds: float = 10.0, colour: str = "navy", voice: str = "awb") -> Path:
    """A plain clip whose soundtrack says `sentence` starting `at` seconds in (flite, 44.1 kHz AAC)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wav = path.with_suffix(".speech.wav")
    subprocess.run(["flite", "-voice", voice, "-t", sentence, "-o", str(wav)], check=True)
    delay = int(at * 1000)
    ffmpeg(
        "-f", "lavfi", "-i", f"color=c={colour}:size=320x240:rate=10:duration={seconds}",
        "-i", str(wav),
        "-filter_complex", f"[1:a]adelay={delay}|{delay},apad,aresample=44100[a]",
        "-map", "0:v", "-map", "[a]", "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "44100", str(path),
    )  # fmt: skip
    wav.unlink()
    return path


def speech_seconds(sentence: str, voice: str = "awb") -> float:
    """How long flite takes to say it (to know the spoken interval)."""
    import tempfile
    import wave

    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        subprocess.run(["flite", "-voice", voice, "-t", sentence, "-o", tmp.name], check=True)
        with wave.open(tmp.name) as w:
            return w.getnframes() / w.getframerate()


def make_text_clip(path: Path, text: str, start: float, end: float, seconds: float = 10.0) -> Path:
    """A plain clip showing `text` on screen between `start` and `end` seconds (drawtext)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    safe = text.replace(":", r"\:").replace("'", "")
    ffmpeg(
        "-f", "lavfi", "-i", f"color=c=gray:size=640x360:rate=10:duration={seconds}",
        "-vf", f"drawtext=fontfile={FONT}:text='{safe}':fontsize=28:fontcolor=black:box=1:boxcolor=white:"
               f"x=(w-text_w)/2:y=(h-text_h)/2:enable='between(t,{start},{end})'",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path),
    )  # fmt: skip
    return path
