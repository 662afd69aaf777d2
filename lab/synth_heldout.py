"""A second renderer for the synthetic corpus, that training never sees: the held-out generator.

Selecting models on the renderer they were trained on rewards learning that renderer. This one shows
the same events (the plan of lab/synth.py: colours, shapes, motions, sounds, backdrops, captions) made
another way, in other code: frames composited in numpy and piped to ffmpeg (the training renderer
overlays PNG sprites in an ffmpeg filter graph), at 240x240 and 12, 25 or 30 fps; shapes drawn as
signed-distance fields with soft edges, hatched, radial or two-tone fills, drop shadows and a slow
spin; eased motion with a sideways wobble and a hand-held camera shake; backdrops of woven, ringed,
brick and dotted patterns or vignetted dark colours, with film grain; tones with a sawtooth-like
timbre, vibrato and an attack/release envelope at slightly other pitches; claps in pairs with a
reverberant tail; a room-noise bed. On-screen words are drawn with Pillow, light on a dark band at
the top. Nothing here is imported by training code.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import numpy as np

from . import synth

SIZE = 240
FPS_CHOICES = (12, 25, 30)
FILLS = ("hatch", "radial", "two_tone", "shadow", "glow")
TEXTURES = ("weave", "rings", "bricks", "dots")


# -- geometry and drawing --------------------------------------------------------------------------


def _event_rng(seed: int, video: int, k: int) -> random.Random:
    return random.Random(f"heldout:{seed}:{video}:{k}")


def _sdf_mask(shape: str, size: int, angle: float, softness: float) -> np.ndarray:
    """Coverage of a shape in a size x size box from a (pseudo) signed distance, with soft edges."""
    c = (np.arange(size) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(c, c)
    a = np.deg2rad(angle)
    x, y = np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y
    if shape == "circle":
        d = np.sqrt(x**2 + y**2) - 0.82
    elif shape == "square":
        q = np.abs(np.stack([x, y])) - 0.6
        d = np.sqrt((np.maximum(q, 0) ** 2).sum(0)) + np.minimum(q.max(0), 0) - 0.1  # rounded corners
    elif shape == "triangle":
        # equilateral, pointing up: the max of three half-plane distances
        ys = y - 0.15
        n = [(0.0, 1.0), (np.sqrt(3) / 2, -0.5), (-np.sqrt(3) / 2, -0.5)]
        d = np.max([nx * x + ny * -ys for nx, ny in n], axis=0) - 0.42
    elif shape == "star":
        r = np.sqrt(x**2 + y**2)
        theta = np.arctan2(y, x) + np.pi / 2
        u = (theta * 5 / (2 * np.pi)) % 1.0
        spike = np.abs(u * 2 - 1)  # 1 at a point, 0 between two points
        d = r - (0.36 + 0.55 * spike**1.5)  # five sharp points
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.clip(0.5 - d / softness, 0.0, 1.0)


def _sprite(colour: str, shape: str, size: int, fill: str, angle: float, rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    """(rgb float [S, S, 3], alpha [S, S]) for a shape in its colour family, drawn in one fill style."""
    softness = 0.12 if fill == "glow" else 0.03
    alpha = _sdf_mask(shape, size, angle, softness)
    base = np.clip(np.array(synth.COLOURS[colour], np.float32) + np.array([rng.randint(-22, 22) for _ in range(3)]), 0, 255)
    rgb = np.broadcast_to(base, (size, size, 3)).astype(np.float32).copy()
    yy, xx = np.mgrid[0:size, 0:size] / size
    if fill == "hatch":
        stripes = (((xx + yy) * rng.uniform(5, 9)) % 1.0) < 0.5
        rgb[stripes] *= 0.72
    elif fill == "radial":
        r = np.sqrt((xx - 0.4) ** 2 + (yy - 0.35) ** 2)
        rgb *= np.clip(1.25 - 0.7 * r, 0.6, 1.25)[..., None]
    elif fill == "two_tone":
        rgb[yy > 0.5] *= 0.7
    return np.clip(rgb, 0, 255), alpha


def _backdrop(kind: str, background: str, rng: random.Random) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    tint = np.array([rng.uniform(0.8, 1.2) for _ in range(3)], np.float32)
    if background == "plain":
        level = rng.uniform(15, 60)
        r = np.sqrt((xx - SIZE / 2) ** 2 + (yy - SIZE / 2) ** 2) / (SIZE * 0.7)
        grey = level * (1.0 - 0.35 * r**2)  # vignette
    else:
        lo, hi = rng.uniform(15, 35), rng.uniform(55, 90)
        f = rng.uniform(0.08, 0.2)
        if kind == "weave":
            p = 0.5 + 0.25 * np.sin(xx * f) + 0.25 * np.sin(yy * f)
        elif kind == "rings":
            cx, cy = rng.uniform(0, SIZE), rng.uniform(0, SIZE)
            p = 0.5 + 0.5 * np.sin(np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) * f * 1.5)
        elif kind == "bricks":
            h = int(rng.uniform(14, 26))
            w = 2 * h
            row = (yy // h).astype(int)
            shifted = xx + (row % 2) * (w / 2)
            p = ((yy % h > 2) & (shifted % w > 2)).astype(np.float32)
        else:  # dots
            s = int(rng.uniform(12, 24))
            p = (((xx % s) - s / 2) ** 2 + ((yy % s) - s / 2) ** 2 < (s / 4) ** 2).astype(np.float32)
        grey = lo + (hi - lo) * p
    return np.clip(grey[..., None] * tint, 0, 110).astype(np.float32)


def _ease(u: np.ndarray | float) -> np.ndarray | float:
    return u * u * (3 - 2 * u)  # smoothstep: starts and stops gently


class _EventScene:
    """Everything needed to draw one event's frames."""

    def __init__(self, e: synth.Event, seed: int, video: int, k: int):
        rng = _event_rng(seed, video, k)
        self.e = e
        self.size = rng.randint(44, 100)
        self.fill = rng.choice(FILLS)
        self.angle0 = rng.uniform(-20, 20)
        self.spin = rng.uniform(-25, 25) if e.shape != "circle" else 0.0  # degrees per second
        self.wobble = rng.uniform(0, 6)
        self.backdrop = _backdrop(rng.choice(TEXTURES), e.background, rng)
        lo, hi = 4, SIZE - self.size - 4
        travel = rng.uniform(0.5, 0.95) * (hi - lo)
        a = rng.uniform(lo, hi - travel)
        x, y = rng.uniform(lo, hi), rng.uniform(lo, hi)
        m = e.motion
        self.x0, self.y0, self.x1, self.y1 = {
            "left": (a + travel, y, a, y), "right": (a, y, a + travel, y),
            "up": (x, a + travel, x, a), "down": (x, a, x, a + travel), "still": (x, y, x, y),
        }[m]  # fmt: skip
        self.rng = rng
        self._sprites: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.text = _text_band(e.onscreen) if e.onscreen else None

    def sprite(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        angle = int(round(self.angle0 + self.spin * t))  # whole degrees: a few sprites per event
        if angle not in self._sprites:
            self._sprites[angle] = _sprite(self.e.colour, self.e.shape, self.size, self.fill, angle, random.Random(hash((self.fill, self.size))))
        return self._sprites[angle]

    def draw(self, t: float, canvas: np.ndarray) -> None:
        """Composite the event at ``t`` seconds into its start onto ``canvas`` (float RGB)."""
        u = _ease(min(max(t / self.e.duration, 0.0), 1.0))
        x = self.x0 + (self.x1 - self.x0) * u
        y = self.y0 + (self.y1 - self.y0) * u
        side = self.wobble * np.sin(2 * np.pi * 0.7 * t)
        if self.e.motion in ("left", "right"):
            y += side
        elif self.e.motion in ("up", "down"):
            x += side
        rgb, alpha = self.sprite(t)
        xi, yi = int(round(min(max(x, 0), SIZE - self.size))), int(round(min(max(y, 0), SIZE - self.size)))
        region = canvas[yi : yi + self.size, xi : xi + self.size]
        if self.fill == "shadow":
            sx, sy = min(xi + 5, SIZE - self.size), min(yi + 5, SIZE - self.size)
            canvas[sy : sy + self.size, sx : sx + self.size] *= (1 - 0.6 * alpha)[..., None]
            region = canvas[yi : yi + self.size, xi : xi + self.size]
        region[:] = region * (1 - alpha[..., None]) + rgb * alpha[..., None]
        if self.text is not None:
            band, mask = self.text
            h = band.shape[0]
            canvas[6 : 6 + h] = canvas[6 : 6 + h] * (1 - mask[..., None]) + band * mask[..., None]


def _text_band(words: str) -> tuple[np.ndarray, np.ndarray]:
    """Light words on a dark band, drawn with Pillow (the training renderer uses ffmpeg's drawtext)."""
    from PIL import Image, ImageDraw, ImageFont

    font_path = synth.font_file()
    font = ImageFont.truetype(font_path, 24) if font_path else ImageFont.load_default()
    img = Image.new("RGB", (SIZE, 34), (20, 20, 24))
    draw = ImageDraw.Draw(img)
    w = draw.textlength(words, font=font)
    draw.text(((SIZE - w) / 2, 3), words, fill=(235, 235, 225), font=font)
    band = np.asarray(img, np.float32)
    return band, np.full(band.shape[:2], 0.85, np.float32)


# -- sound ----------------------------------------------------------------------------------------


def heldout_soundtrack(video: synth.VideoPlan, assets, seed: int) -> np.ndarray:
    sr = synth.SAMPLE_RATE
    total = int(round(video.duration * sr))
    out = np.zeros(total, np.float32)
    for k, e in enumerate(video.events):
        rng = np.random.default_rng([seed, video.index, k, 7])
        a, b = int(round(e.start * sr)), int(round(e.end * sr))
        n = b - a
        if e.sound in synth.TONE_HZ:
            hz = synth.TONE_HZ[e.sound] * rng.uniform(0.96, 1.04)
            t = np.arange(n) / sr
            phase = 2 * np.pi * np.cumsum(hz * (1 + 0.008 * np.sin(2 * np.pi * 5 * t))) / sr  # vibrato
            wave = sum(np.sin(j * phase) / j for j in range(1, 7) if j * hz < sr / 2)
            env = np.minimum(1.0, np.minimum(t / 0.03, (n / sr - t) / 0.08))
            level = 0.1 if e.spoken else rng.uniform(0.15, 0.35)
            out[a:b] += (level * wave / np.abs(wave).max() * np.clip(env, 0, 1)).astype(np.float32)
        elif e.sound == "clap":
            out[a:b] += _clap_pairs(n, rng).astype(np.float32)
        if e.spoken and assets is not None:
            synth._mix_speech(out, synth.read_wav(assets.speech(e.spoken)), e)
    bed = np.random.default_rng([seed, video.index, 123]).normal(size=total)
    bed = np.convolve(bed, np.ones(8) / 8, mode="same")  # muffled: room noise, not hiss
    out += (0.004 * bed / (np.abs(bed).max() + 1e-9)).astype(np.float32)
    return np.clip(out, -1.0, 1.0)


def _clap_pairs(n: int, rng: np.random.Generator) -> np.ndarray:
    sr = synth.SAMPLE_RATE
    out = np.zeros(n)
    burst = int(0.03 * sr)
    tail = np.exp(-np.arange(int(0.18 * sr)) / (0.05 * sr))
    t = int(rng.uniform(0.05, 0.2) * sr)
    while t < n - int(0.4 * sr):
        for offset in (0, int(rng.uniform(0.12, 0.2) * sr)):  # "clap-clap"
            s = t + offset
            noise = np.diff(rng.uniform(-1, 1, burst + 1))  # brighter than white noise
            hit = np.convolve(noise * np.exp(-np.arange(burst) / (0.006 * sr)), tail[: burst * 4] * 0.25 + np.r_[1, np.zeros(burst * 4 - 1)])
            m = min(len(hit), n - s)
            out[s : s + m] += 0.55 * hit[:m] / (np.abs(hit).max() + 1e-9)
        t += int(rng.uniform(0.6, 0.9) * sr)
    return out


# -- the video ------------------------------------------------------------------------------------


def render_heldout(video: synth.VideoPlan, wav: Path, target: Path, seed: int) -> Path:
    """Composite every frame in numpy and pipe them to ffmpeg with the soundtrack."""
    rng = random.Random(f"heldout:{seed}:{video.index}")
    fps = rng.choice(FPS_CHOICES)
    crf = rng.randint(20, 34)
    grain = rng.uniform(2, 7)
    shake = rng.uniform(0, 2.5)
    scenes = [_EventScene(e, seed, video.index, k) for k, e in enumerate(video.events)]
    n_frames = int(round(video.duration * fps))
    noise = np.random.default_rng([seed, video.index, 5])
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE}x{SIZE}", "-r", str(fps), "-i", "-",
        "-i", str(wav), "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-threads", "1",
        "-c:a", "aac", "-b:a", "96k", "-ar", str(synth.SAMPLE_RATE), "-shortest",
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-movflags", "+faststart", "-f", "mp4", str(target),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        k = 0
        for i in range(n_frames):
            t = (i + 0.5) / fps
            while k < len(scenes) - 1 and t >= video.events[k].end:
                k += 1
            scene = scenes[k]
            canvas = scene.backdrop.copy()
            scene.draw(t - scene.e.start, canvas)
            if shake:
                dx, dy = (int(v) for v in np.round(noise.normal(0, shake, 2)))
                canvas = np.roll(canvas, (dy, dx), axis=(0, 1))
            canvas += noise.normal(0, grain, canvas.shape[:2])[..., None]
            proc.stdin.write(np.clip(canvas, 0, 255).astype(np.uint8).tobytes())
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise synth.SynthError(f"ffmpeg failed on the held-out renderer: {err.strip()[-300:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    return target
