"""How a synthetic video looks and sounds, apart from what it shows: the knobs of domain randomisation.

A model trained on one rendering of "a red circle moves left with a low tone" learns that rendering
(the exact sprite, the three backdrops, a pure sine at 220 Hz), not colours, shapes, motions and
sounds. `vidsearch synth --style random` varies everything a caption does not name: how each shape is
drawn (flat, outlined, shaded, turned, a gradient, dark bands, a soft edge, speckles; half of them
rotated by any angle), its size and how far and fast it travels, colour shades, backdrop colours and
textures, frame rate, blur, camera shake, sensor noise and compression, and the timbre, level and pitch
of tones (sine to sawtooth, a random organ, vibrato), the rhythm, grouping, colour, level and reverb of
claps, and a room tone under everything.

Every choice comes from a generator seeded by ``(seed, video, event, style)``, drawn after the
event's meaning is fixed, so the same plan in another style keeps the same ground truth and captions.
The ``plain`` style is the original renderer (its values are the defaults below), and ``heldout`` is
a second renderer (lab/synth_heldout.py) that training never sees, kept for model selection.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

STYLES: tuple[str, ...] = ("plain", "random", "heldout")

# Frame rates whose frame period divides 0.5 s, so event boundaries (multiples of 0.5 s) fall on frames.
RANDOM_FPS: tuple[int, ...] = (10, 12, 20, 24)
SPRITE_VARIANTS: tuple[str, ...] = ("flat", "outline", "shaded", "turned", "gradient", "striped", "soft", "speckled")
RANDOM_TEXTURES: tuple[str, ...] = ("checker", "stripes", "noise", "grid", "gradient", "blobs")
TIMBRES: tuple[str, ...] = ("sine", "harmonics", "square", "triangle", "sawtooth", "organ")
CLAP_COLOURS: tuple[str, ...] = ("white", "bright", "dull")  # the noise of a clap: flat, high-passed, low-passed


@dataclass(frozen=True)
class VideoLook:
    """Per-video rendering knobs (the defaults are the plain renderer's)."""

    fps: int = 10
    crf: int = 23
    noise: int = 0  # ffmpeg `noise` strength (temporal), 0 = off
    blur: float = 0.0  # gaussian blur sigma in pixels, 0 = off
    shake: int = 0  # hand-held camera: the frame jumps up to this many pixels each frame, 0 = steady
    timbre: str = "sine"
    tone_level: float = 0.3
    pitch: float = 1.0  # multiplier on the tone's frequency
    vibrato: float = 0.0  # relative depth of a ~5.5 Hz pitch wobble, 0 = steady
    timbre_seed: int = 0  # the "organ" timbre's partial weights
    clap_every: float = 0.5
    clap_decay: float = 0.012
    clap_group: int = 1  # claps per hit ("clap", "clap-clap", ...)
    clap_colour: str = "white"
    clap_level: float = 0.7
    clap_tail: float = 0.0  # decay (s) of a reverberant tail after each clap, 0 = dry
    room_tone: float = 0.0  # level of a quiet noise bed under the whole soundtrack


@dataclass(frozen=True)
class EventLook:
    """Per-event drawing knobs; size and path live on the event itself (they are ground truth)."""

    variant: str = "flat"
    angle: float = 0.0  # degrees: "turned" sprites' tilt, "gradient"/"striped" sprites' pattern direction
    turn: float = 0.0  # degrees the shape is rotated by, whatever its variant (a triangle pointing any way)
    shade: tuple[int, int, int] = (0, 0, 0)  # added to the palette colour (kept near it)
    backdrop_seed: int = 0  # scale and tint of a random texture, or the plain colour


def video_look(seed: int, index: int, style: str) -> VideoLook:
    if style != "random":
        return VideoLook()
    rng = random.Random(f"synth:{seed}:{index}:look")
    return VideoLook(
        fps=rng.choice(RANDOM_FPS),
        crf=rng.randint(18, 36),
        noise=rng.choice((0, 0, rng.randint(3, 14))),
        blur=rng.choice((0.0, 0.0, round(rng.uniform(0.4, 1.4), 2))),
        shake=rng.choice((0, 0, rng.randint(1, 4))),
        timbre=rng.choice(TIMBRES),
        tone_level=round(rng.uniform(0.08, 0.4), 3),
        # "low" is 176-275 Hz, "middle" 528-825, "high" 1408-2200: another renderer's idea of a low
        # tone still falls inside, and the classes never meet
        pitch=round(rng.uniform(0.8, 1.25), 4),
        vibrato=round(rng.choice((0.0, 0.0, rng.uniform(0.003, 0.015))), 4),
        timbre_seed=rng.randint(1, 10**6),
        clap_every=round(rng.uniform(0.25, 1.0), 3),
        clap_decay=round(rng.uniform(0.004, 0.02), 4),
        clap_group=rng.choice((1, 1, 2, 3)),
        clap_colour=rng.choice(CLAP_COLOURS),
        clap_level=round(rng.uniform(0.3, 0.9), 3),
        clap_tail=round(rng.choice((0.0, rng.uniform(0.02, 0.08))), 3),
        room_tone=round(rng.choice((0.0, rng.uniform(0.001, 0.02))), 4),
    )


def event_look(seed: int, index: int, k: int, style: str) -> EventLook:
    if style != "random":
        return EventLook()
    rng = random.Random(f"synth:{seed}:{index}:{k}:look")
    variant = rng.choice(SPRITE_VARIANTS)
    return EventLook(
        variant=variant,
        # "turned" rotates the shape; "gradient" and "striped" run their pattern along this angle
        angle=round(rng.uniform(-30, 30), 1) if variant == "turned" else round(rng.uniform(0, 180), 1) if variant in ("gradient", "striped") else 0.0,
        shade=tuple(rng.randint(-18, 18) for _ in range(3)),
        backdrop_seed=rng.randint(1, 10**6),
        turn=round(rng.choice((0.0, rng.uniform(0, 360))), 1),
    )


def random_geometry(seed: int, index: int, k: int, motion: str, width: int, height: int, margin: int) -> tuple[int, tuple[int, int, int, int]]:
    """A size from 20 to 96 px and a path that keeps the motion's direction but covers 45-100% of
    the frame from a random start, so speed and position vary as well. Small sizes (from 20 px,
    was 40) because another renderer draws smaller shapes: the held-out renderer's triangles fill
    ~60% of their 44-100 px box (28-63 px in a 240 px frame)."""
    rng = random.Random(f"synth:{seed}:{index}:{k}:geometry")
    size = rng.randint(20, 96)
    lo, hi_x, hi_y = margin, width - size - margin, height - size - margin
    x, y = rng.randint(lo, hi_x), rng.randint(lo, hi_y)

    def span(hi: int) -> tuple[int, int]:
        length = int((hi - lo) * rng.uniform(0.45, 1.0))
        a = rng.randint(lo, hi - length)
        return a, a + length

    if motion in ("left", "right"):
        a, b = span(hi_x)
        return size, ((b, y, a, y) if motion == "left" else (a, y, b, y))
    if motion in ("up", "down"):
        a, b = span(hi_y)
        return size, ((x, b, x, a) if motion == "up" else (x, a, x, b))
    return size, (x, y, x, y)


def random_plain_colour(backdrop_seed: int) -> str:
    """A dark, low-saturation colour (luminance <= ~80): plain, and never a shape's colour."""
    rng = random.Random(backdrop_seed)
    base = rng.randint(12, 70)
    return "0x" + "".join(f"{min(255, max(0, base + rng.randint(-10, 10))):02x}" for _ in range(3))
