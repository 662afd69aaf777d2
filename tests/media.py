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


def _odd_parity(byte: int) -> int:
    byte &= 0x7F
    return byte | (0x80 if bin(byte).count("1") % 2 == 0 else 0)


def _cea608_codes(text: str, roll_up: bool) -> list[tuple[int, int]]:
    """The CEA-608 byte pairs (channel 1) that show `text`: a pop-on caption (load, then flip it on) or
    one roll-up line (two rows; a carriage return scrolls the last one up)."""
    chars = text.encode("ascii")
    chars += b"\x00" * (len(chars) % 2)
    body = [(chars[i], chars[i + 1]) for i in range(0, len(chars), 2)]
    if roll_up:  # RU2, CR, PAC row 15, the text
        return [(0x14, 0x25), (0x14, 0x25), (0x14, 0x2D), (0x14, 0x2D), (0x14, 0x70), (0x14, 0x70), *body]
    # RCL, ENM, PAC row 15, the text, EOC
    return [(0x14, 0x20), (0x14, 0x20), (0x14, 0x2E), (0x14, 0x2E), (0x14, 0x70), (0x14, 0x70), *body, (0x14, 0x2F), (0x14, 0x2F)]


def _a53_sei(pair: tuple[int, int]) -> bytes:
    """An H.264 SEI NAL (Annex B) carrying one CEA-608 byte pair as ATSC A/53 user data (GA94)."""
    cc = bytes([0xFC, _odd_parity(pair[0]), _odd_parity(pair[1])])  # field 1, valid, 608
    payload = bytes([0xB5, 0x00, 0x31]) + b"GA94" + bytes([0x03, 0x41, 0xFF]) + cc + bytes([0xFF])
    body = bytes([4, len(payload)]) + payload + bytes([0x80])
    out, zeros = bytearray(), 0
    for x in body:  # emulation prevention
        if zeros >= 2 and x <= 3:
            out.append(3)
            zeros = 0
        out.append(x)
        zeros = zeros + 1 if x == 0 else 0
    return b"\x00\x00\x00\x01\x06" + bytes(out)


def make_captioned_clip(path: Path, captions: list[tuple[float, str]], seconds: float = 6.0, rate: int = 30,
                        roll_up: bool = False) -> Path:  # fmt: skip
    """An H.264 MPEG transport stream whose pictures carry closed captions (CEA-608 in A/53 SEI, as
    broadcast TV does): each (time, text) is sent from that time on, a byte pair a frame. ffmpeg
    cannot write captions, so they are put into x264's stream here."""
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", f"testsrc=s=160x120:r={rate}:d={seconds}",
                          "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-pix_fmt", "yuv420p", "-f", "h264", "-"],
                         capture_output=True, check=True).stdout  # fmt: skip
    pairs: dict[int, tuple[int, int]] = {}
    for at, text in captions:
        for i, pair in enumerate(_cea608_codes(text, roll_up)):
            pairs[int(round(at * rate)) + i] = pair
    starts = [i for i in range(len(raw) - 3) if raw[i : i + 3] == b"\x00\x00\x01"]
    out, frame = bytearray(), -1
    for k, at in enumerate(starts):
        begin = at - 1 if at > 0 and raw[at - 1] == 0 else at
        end = (starts[k + 1] - 1 if raw[starts[k + 1] - 1] == 0 else starts[k + 1]) if k + 1 < len(starts) else len(raw)
        if raw[at + 3] & 0x1F in (1, 5):  # a picture's slice: its captions go before it
            frame += 1
            out += _a53_sei(pairs.get(frame, (0, 0)))
        out += raw[begin:end]
    es = path.with_suffix(".h264")
    es.write_bytes(bytes(out))
    ffmpeg("-r", str(rate), "-i", str(es), "-c", "copy", "-f", "mpegts", str(path))
    es.unlink()
    return path


def indexed_synth_library(root: Path, plans: list, seed: int):
    """Render `vidsearch synth` video plans (any style, the held-out renderer's too) into root/videos and
    index them with the shipped `tiny` model, speech and OCR off: (engine, {video id: file stem})."""
    from vidsearch.config import load_settings
    from vidsearch.encoders.backbone import load_backbone
    from vidsearch.indexer.pipeline import IndexRun, open_store_for
    from vidsearch.lab import synth
    from vidsearch.search import open_engine

    (root / "videos").mkdir()
    (root / "assets").mkdir()
    assets = synth._Assets(root / "assets")
    assets.prepare(plans, 2)
    for p in plans:
        synth.render_video(p, root, assets, seed)
    settings = load_settings(None, db=root / "db", model="tiny", speech=False, ocr=False)  # the shipped model
    backbone = load_backbone("tiny")
    IndexRun(open_store_for(settings, backbone), backbone, settings).run([root / "videos"])
    engine = open_engine(settings)
    files = engine.store.files()
    return engine, {v: Path(p).stem for p, v in zip(files["path"].to_pylist(), files["video_id"].to_pylist())}
