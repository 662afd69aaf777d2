"""A synthetic multi-event video corpus whose every event we know, to train and evaluate the encoders.

Real libraries cannot tell us *why* a model misses a query. Here each video is 2-4 events in a row; an
event is a coloured shape moving (or still) over a plain or textured backdrop, with a sound (a low,
middle or high tone, claps, or silence) and sometimes spoken words (flite) or on-screen words
(drawtext). The corpus is built to give each part of the search stack work that only it can do:

* **audio fusion**: some events differ from another event *only in their sound* ("sound-only
  pairs"), and every caption names the sound, so a purely visual model cannot tell them apart;
* **text-conditioned frame attention**: most videos reuse a colour or a shape across their events,
  so the mean over a video's frames is ambiguous and the query has to pick the right frames;
* **generalisation of the text side**: train captions come from ``TRAIN_PHRASING`` and test
  captions from ``TEST_PHRASING``, a held-out set of templates and synonyms ("ball" for circle,
  "drifts" for moves, "whistle" for tone, the sound named first), so a test query is never a
  sentence the model saw in training.

Everything is decided by :func:`plan` from ``(videos, seed)`` before any pixel is drawn, so tests
and evaluation code can inspect the ground truth without rendering. Rendering is one ffmpeg process
per video (lavfi backdrops, PNG sprites made once with numpy, ``overlay`` with time expressions,
``drawtext``), with the soundtrack mixed in numpy; videos render in a thread pool, since the work
happens in the ffmpeg child processes.

Files written under OUT: ``videos/*.mp4`` (224x224 at 10 fps in the plain style; see
lab/synth_looks.py and lab/synth_heldout.py for the others; H.264 + AAC 44.1 kHz),
``train.jsonl`` / ``test.jsonl`` (``{"video": "videos/x.mp4", "captions": [{"text", "start",
"end"}]}``, paths relative to OUT), ``events.jsonl`` (the full structured ground truth, one event a
line) and ``synth.json`` (the parameters, so a corpus found on disk can be reproduced).
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import wave
import zlib
from collections import defaultdict
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Callable, Optional

import numpy as np
import typer

from vidsearch.cores import usable_cores

from .synth_looks import RANDOM_TEXTURES, STYLES, EventLook, VideoLook, event_look, random_geometry, random_plain_colour, video_look

# --------------------------------------------------------------------------------------------------
# The world: what an event can be
# --------------------------------------------------------------------------------------------------

WIDTH = HEIGHT = 224
FPS = 10
SAMPLE_RATE = 44100
# Multiples of the frame period, so event boundaries fall exactly on frames.
DURATIONS: tuple[float, ...] = (2.0, 2.5, 3.0, 3.5, 4.0)
SPEECH_MIN_DURATION = 3.0  # a short phrase needs ~1.5-2 s after its 0.25 s lead-in
SPEECH_LEAD_IN = 0.25

# Saturated colours (and white) far from the neutral dark backdrops, so the shape is the only
# strongly coloured thing in a frame. Names start with a consonant: templates say "a {subject}".
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 90, 235),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "purple": (150, 60, 210),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down", "still")
SOUNDS: tuple[str, ...] = ("low", "middle", "high", "clap", "silence")
TONE_HZ: dict[str, float] = {"low": 220.0, "middle": 660.0, "high": 1760.0}
SPRITE_SIZES: tuple[int, ...] = (56, 64, 72)
MARGIN = 6

# Backdrops stay neutral and dark (luminance <= ~90) so colour checks and models see the shape.
PLAIN_BACKDROPS: dict[str, str] = {"black": "0x121212", "charcoal": "0x262626", "slate": "0x383838"}
TEXTURES: tuple[str, ...] = ("checker", "stripes", "noise", "grid")

SPOKEN_ABOUT: tuple[str, ...] = ("look at the {colour} {shape}", "here comes the {colour} {shape}", "watch the {colour} {shape}")
SPOKEN_OTHER: tuple[str, ...] = (
    "the revenue grew",
    "good morning everyone",
    "the train is late",
    "please open the door",
    "welcome to the show",
    "time to go home",
    "the meeting starts now",
    "turn on the lights",
)
ON_SCREEN: tuple[str, ...] = ("STOP", "HELLO", "SALE", "NEWS", "GOAL", "EXIT", "OPEN", "LIVE", "WIN", "DANGER")
SPEECH_RATE = 0.25
ON_SCREEN_RATE = 0.2
PLAIN_RATE = 0.5

# How a later event in a video relates to an earlier one. Sharing is the norm ("most videos share
# colours or shapes"); "sound_only" copies everything visible and changes only the sound.
SHARED_VIDEO_RATE = 0.85
VARIATIONS: dict[str, float] = {"sound_only": 0.25, "same_colour": 0.3, "same_shape": 0.3, "same_both": 0.15}


# --------------------------------------------------------------------------------------------------
# Phrasing: the train and the held-out test vocabularies
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phrasing:
    """One way of talking about events: templates plus the words that fill their slots.

    Slots: ``{subject}`` ("red circle", used after "a"/"the"), ``{motion}`` (a verb phrase),
    ``{sound}`` (a noun phrase), ``{sound_clause}`` (a clause), ``{backdrop}`` (a prepositional
    phrase) and ``{extra}`` (speech / on-screen words, empty when the event has none). Every
    template names the sound, so a sound-only pair is always told apart by its captions.
    """

    templates: tuple[str, ...]
    nouns: dict[str, tuple[str, ...]]
    motions: dict[str, tuple[str, ...]]
    sounds: dict[str, tuple[tuple[str, str], ...]]  # (noun phrase, clause)
    backdrops: dict[str, tuple[str, ...]]
    speech: tuple[str, ...]  # with {words}
    on_screen: tuple[str, ...]  # with {words}


# Training captions: subject first, plain words ("circle", "moves", "tone"), plus synonyms and sentence
# shapes of their own ("orb", "heads left", "a bass note", the sound named first) so the text projection
# learns what words mean rather than one way of saying them. None of the content words of
# TEST_PHRASING below appear here that were not already in the first round's training phrasing
# (tests/test_synth.py checks), so test.jsonl stays a held-out phrasing.
TRAIN_PHRASING = Phrasing(
    templates=(
        "a {subject} {motion} while {sound_clause}{extra}",
        "a {subject} {motion} with {sound}{extra}",
        "the {subject} {motion} {backdrop} as {sound_clause}{extra}",
        "a {subject} {backdrop} {motion}; {sound_clause}{extra}",
        "while {sound_clause}, a {subject} {motion}{extra}",
        "{sound_clause}; meanwhile the {subject} {motion}{extra}",
        "we see a {subject} {backdrop} that {motion}, and {sound_clause}{extra}",
        "a {subject} {motion}, with {sound} on the soundtrack{extra}",
    ),
    nouns={
        "circle": ("circle", "dot", "orb", "round figure"),
        "square": ("square", "tile", "quadrilateral", "square figure"),
        "triangle": ("triangle", "wedge", "pyramid", "triangular figure"),
        "star": ("star", "starburst", "pointy star", "star figure"),
    },
    motions={
        "left": ("moves left", "slides to the left", "moves to the left", "heads left", "shifts left", "moves westward"),
        "right": ("moves right", "slides to the right", "moves to the right", "heads right", "shifts right", "moves eastward"),
        "up": ("moves up", "rises", "slides upward", "ascends", "goes up", "heads toward the top"),
        "down": ("moves down", "falls", "slides downward", "descends", "goes down", "heads toward the bottom"),
        "still": ("stays still", "sits still", "stays in place", "does not move", "is stationary", "stays put"),
    },
    sounds={
        "low": (("a low tone", "a low tone sounds"), ("a low note", "a low note plays"), ("a bass note", "a bass note hums"),
                ("a low hum", "a low hum plays"), ("a low-frequency tone", "a low-frequency tone sounds")),
        "middle": (("a middle tone", "a middle tone sounds"), ("a medium note", "a medium note plays"),
                   ("a moderate tone", "a moderate tone sounds"), ("an intermediate note", "an intermediate note plays"),
                   ("a medium-frequency tone", "a medium-frequency tone sounds")),
        "high": (("a high tone", "a high tone sounds"), ("a high note", "a high note plays"), ("a treble note", "a treble note plays"),
                 ("a piercing tone", "a piercing tone sounds"), ("a high-frequency tone", "a high-frequency tone sounds")),
        "clap": (("a clap", "someone claps"), ("clapping", "clapping is heard"), ("applause", "people applaud"),
                 ("a smack", "a smack sounds"), ("slapping", "something slaps")),
        "silence": (("no sound", "there is no sound"), ("silence", "everything is silent"), ("total silence", "the scene is hushed"),
                    ("a mute soundtrack", "the soundtrack is mute"), ("no tone", "no tone plays")),
    },
    backdrops={
        "plain": ("on a plain background", "on a flat background", "on a uniform background", "over a single-colour background"),
        "textured": ("on a textured background", "on a patterned background", "on a cluttered background", "over a textured background"),
    },
    speech=(', and a voice says "{words}"', '; someone says "{words}"', ', and someone speaks: "{words}"'),
    on_screen=(', with the word "{words}" on screen', '; the text "{words}" is shown', ', with the label "{words}" displayed'),
)

# Held-out test captions: synonyms training never uses ("ball", "box", "glides", "drifts", "beep",
# "whistle"), the sound named first, and other sentence shapes. Colour words are shared: they are
# the label itself, not a phrasing.
TEST_PHRASING = Phrasing(
    templates=(
        "{sound_clause} as a {subject} {motion}{extra}",
        "a {subject} {motion} and {sound_clause}{extra}",
        "{backdrop}, the {subject} {motion} while {sound_clause}{extra}",
        "there is a {subject} that {motion}; {sound_clause}{extra}",
        "the {subject} {motion}, accompanied by {sound}{extra}",
    ),
    nouns={
        "circle": ("ball", "disc", "circle"),
        "square": ("box", "block", "square"),
        "triangle": ("three-sided shape", "triangle"),
        "star": ("five-pointed star", "star shape", "star"),
    },
    motions={
        "left": ("glides leftward", "drifts to the left", "travels left"),
        "right": ("glides rightward", "drifts to the right", "travels right"),
        "up": ("drifts upward", "climbs", "floats up"),
        "down": ("drifts downward", "sinks", "drops"),
        "still": ("is motionless", "rests without moving", "holds its position"),
    },
    sounds={
        "low": (("a deep beep", "a deep beep rings out"), ("a low whistle", "a low whistle is heard")),
        "middle": (("a mid-pitched beep", "a mid-pitched beep rings out"), ("a medium whistle", "a medium whistle is heard")),
        "high": (("a shrill beep", "a shrill beep rings out"), ("a high-pitched whistle", "a high-pitched whistle is heard")),
        "clap": (("a burst of noise", "a noise burst crackles"), ("a hand clap", "hands clap")),
        "silence": (("no audio", "nothing can be heard"), ("no sound at all", "it is completely quiet")),
    },
    backdrops={
        "plain": ("against a solid backdrop", "over an empty backdrop"),
        "textured": ("against a busy backdrop", "over a patterned backdrop"),
    },
    speech=(', with a voice saying "{words}"', '; the spoken words are "{words}"'),
    on_screen=(', under the caption "{words}"', '; "{words}" is written on the screen'),
)

PHRASINGS: dict[str, Phrasing] = {"train": TRAIN_PHRASING, "test": TEST_PHRASING}
PARAPHRASES = 4  # captions per training event in train.jsonl (distinct draws from TRAIN_PHRASING)


# --------------------------------------------------------------------------------------------------
# The plan: every decision, made before rendering
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One event's ground truth, plus where its sprite travels (top-left corner, pixels)."""

    colour: str
    shape: str
    motion: str
    sound: str
    background: str  # "plain" | "textured": what captions may say
    backdrop: str  # the concrete one: a PLAIN_BACKDROPS name or a TEXTURES name
    spoken: Optional[str]
    onscreen: Optional[str]
    start: float
    end: float
    size: int
    path: tuple[int, int, int, int]  # x0, y0, x1, y1
    caption: str = ""  # in the phrasing of the video's split
    captions: dict[str, str] = field(default_factory=dict)  # {"train": ..., "test": ...}
    paraphrases: tuple[str, ...] = ()  # more training-phrasing captions of the event (train.jsonl lists them)
    sound_dependent: bool = False
    look: EventLook = field(default_factory=EventLook)  # how it is drawn (never what it shows)

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def visual_key(self) -> str:
        """What a viewer with the sound off can tell apart; equal keys differ at most in sound."""
        return f"{self.colour}|{self.shape}|{self.motion}|{self.background}|{self.onscreen or ''}"

    @property
    def speech_start(self) -> Optional[float]:
        return round(self.start + SPEECH_LEAD_IN, 3) if self.spoken else None


@dataclass(frozen=True)
class VideoPlan:
    index: int
    split: str  # "train" | "test"
    events: tuple[Event, ...]
    style: str = "plain"  # lab/synth_looks.py: "plain", "random" (domain randomised) or "heldout"
    look: VideoLook = field(default_factory=VideoLook)

    @property
    def name(self) -> str:
        return f"synth_{self.index:05d}"

    @property
    def video(self) -> str:
        """Path relative to the corpus folder, as the JSONL files write it."""
        return f"videos/{self.name}.mp4"

    @property
    def duration(self) -> float:
        return self.events[-1].end


def plan(videos: int, seed: int, test_fraction: float = 0.2, style: str = "plain") -> list[VideoPlan]:
    """Every video's events, split and captions, without rendering.

    Video ``i``'s content depends only on ``(seed, i)``, so a larger corpus with the same seed starts
    with the smaller one's videos (only the split may differ). ``style`` changes how videos look and
    sound (lab/synth_looks.py), never what happens in them: the captions of a seed are the same in
    every style.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}: choose one of {', '.join(STYLES)}")
    if videos < 1:
        raise ValueError("videos must be at least 1")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    test_ids = _test_split(videos, seed, test_fraction)
    plans = []
    for i in range(videos):
        split = "test" if i in test_ids else "train"
        events = tuple(_caption(ev, seed, i, k, split) for k, ev in enumerate(_plan_events(i, seed)))
        if style == "random":
            events = tuple(_restyle(ev, seed, i, k, style) for k, ev in enumerate(events))
        plans.append(VideoPlan(i, split, events, style, video_look(seed, i, style)))
    return _mark_sound_dependent(plans)


def _test_split(videos: int, seed: int, test_fraction: float) -> set[int]:
    order = list(range(videos))
    random.Random(f"synth:{seed}:split").shuffle(order)
    n_test = round(videos * test_fraction)
    if test_fraction > 0 and videos >= 2:
        n_test = min(max(n_test, 1), videos - 1)  # a split with no test video is a silent bug
    return set(order[:n_test])


def _plan_events(index: int, seed: int) -> list[Event]:
    rng = random.Random(f"synth:{seed}:{index}")
    count = rng.randint(2, 4)
    shared = rng.random() < SHARED_VIDEO_RATE
    events: list[Event] = []
    start = 0.0
    for _ in range(count):
        look = _unique_look(rng, events, shared)
        duration = rng.choice(DURATIONS)
        if look["spoken"]:
            duration = max(duration, SPEECH_MIN_DURATION)
        events.append(Event(**look, start=start, end=start + duration))
        start += duration
    return events


def _unique_look(rng: random.Random, events: list[Event], shared: bool) -> dict:
    """A new event's look, never a repeat of an earlier event of the same video (else its caption
    would point at two moments)."""
    seen = {(e.colour, e.shape, e.motion, e.sound) for e in events}
    for _ in range(50):
        look = _variation(rng, events) if events and shared else _fresh_look(rng)
        if look["sound"] == "silence":
            look["spoken"] = None  # "nothing can be heard" and "a voice says" cannot both be true
        if (look["colour"], look["shape"], look["motion"], look["sound"]) not in seen:
            return look
    return look  # pragma: no cover - 50 collisions in a row would need a tiny vocabulary


def _fresh_look(rng: random.Random) -> dict:
    colour, shape, motion = rng.choice(list(COLOURS)), rng.choice(SHAPES), rng.choice(MOTIONS)
    plain = rng.random() < PLAIN_RATE
    backdrop = rng.choice(list(PLAIN_BACKDROPS)) if plain else rng.choice(TEXTURES)
    size = rng.choice(SPRITE_SIZES)
    return {
        "colour": colour,
        "shape": shape,
        "motion": motion,
        "sound": rng.choice(SOUNDS),
        "background": "plain" if plain else "textured",
        "backdrop": backdrop,
        "spoken": _spoken(rng, colour, shape),
        "onscreen": rng.choice(ON_SCREEN) if rng.random() < ON_SCREEN_RATE else None,
        "size": size,
        "path": _sprite_path(rng, motion, size),
    }


def _variation(rng: random.Random, events: list[Event]) -> dict:
    """A look that shares something with an earlier event of the video."""
    base = rng.choice(events)
    kind = rng.choices(list(VARIATIONS), weights=list(VARIATIONS.values()))[0]
    look = _fresh_look(rng)
    if kind == "sound_only":
        keep = ("colour", "shape", "motion", "background", "backdrop", "onscreen", "size", "path")
        look.update({k: getattr(base, k) for k in keep})
        look["sound"] = rng.choice([s for s in SOUNDS if s != base.sound])
        look["spoken"] = None  # the only difference is the sound itself
        return look
    if kind in ("same_colour", "same_both"):
        look["colour"] = base.colour
    if kind in ("same_shape", "same_both"):
        look["shape"] = base.shape
    if kind == "same_colour" and look["shape"] == base.shape:
        look["shape"] = rng.choice([s for s in SHAPES if s != base.shape])
    if kind == "same_shape" and look["colour"] == base.colour:
        look["colour"] = rng.choice([c for c in COLOURS if c != base.colour])
    if kind == "same_both" and look["motion"] == base.motion:
        look["motion"] = rng.choice([m for m in MOTIONS if m != base.motion])
        look["path"] = _sprite_path(rng, look["motion"], look["size"])
    look["spoken"] = _respeak(look["spoken"], look["colour"], look["shape"])
    return look


def _spoken(rng: random.Random, colour: str, shape: str) -> Optional[str]:
    if rng.random() >= SPEECH_RATE:
        return None
    if rng.random() < 0.5:
        return rng.choice(SPOKEN_ABOUT).format(colour=colour, shape=shape)
    return rng.choice(SPOKEN_OTHER)


def _respeak(spoken: Optional[str], colour: str, shape: str) -> Optional[str]:
    """Speech about the event must name the event's final colour and shape, not the draft's."""
    if spoken is None or spoken in SPOKEN_OTHER:
        return spoken
    for template in SPOKEN_ABOUT:
        prefix = template.split("{")[0]
        if spoken.startswith(prefix):
            return template.format(colour=colour, shape=shape)
    return spoken  # pragma: no cover


def _sprite_path(rng: random.Random, motion: str, size: int) -> tuple[int, int, int, int]:
    """Start and end corners: moving sprites cross most of the frame, still ones sit anywhere."""
    lo, hi_x, hi_y = MARGIN, WIDTH - size - MARGIN, HEIGHT - size - MARGIN
    x, y = rng.randint(lo, hi_x), rng.randint(lo, hi_y)
    if motion == "left":
        return hi_x, y, lo, y
    if motion == "right":
        return lo, y, hi_x, y
    if motion == "up":
        return x, hi_y, x, lo
    if motion == "down":
        return x, lo, x, hi_y
    return x, y, x, y


def _restyle(event: Event, seed: int, video: int, k: int, style: str) -> Event:
    """Randomised size, path and drawing for an event whose meaning is already fixed. A sound-only
    variation keeps the look of the event it copies only in meaning: it is drawn anew, as a second
    recording of the same scene would be."""
    size, path = random_geometry(seed, video, k, event.motion, WIDTH, HEIGHT, MARGIN)
    look = event_look(seed, video, k, style)
    backdrop = event.backdrop
    if event.background == "plain":
        backdrop = random_plain_colour(look.backdrop_seed)
    else:
        backdrop = random.Random(look.backdrop_seed).choice(RANDOM_TEXTURES)
    return replace(event, size=size, path=path, look=look, backdrop=backdrop)


def _caption(event: Event, seed: int, video: int, k: int, split: str) -> Event:
    captions = {
        style: caption_text(event, PHRASINGS[style], random.Random(f"synth:{seed}:{video}:{k}:{style}"))
        for style in PHRASINGS
    }
    more = (caption_text(event, TRAIN_PHRASING, random.Random(f"synth:{seed}:{video}:{k}:train:{j}")) for j in range(1, PARAPHRASES))
    paraphrases = tuple(dict.fromkeys(c for c in more if c != captions["train"]))
    return replace(event, caption=captions[split], captions=captions, paraphrases=paraphrases)


def _mark_sound_dependent(plans: list[VideoPlan]) -> list[VideoPlan]:
    """Flag events that share their visual key with an event of another sound in the same split:
    the queries only audio fusion can answer."""
    sounds: dict[tuple[str, str], set[str]] = defaultdict(set)
    for p in plans:
        for e in p.events:
            sounds[(p.split, e.visual_key)].add(e.sound)
    return [
        replace(p, events=tuple(replace(e, sound_dependent=len(sounds[(p.split, e.visual_key)]) > 1) for e in p.events))
        for p in plans
    ]


# --------------------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------------------


def slot_options(event: Event, phrasing: Phrasing) -> dict[str, list[str]]:
    """Every word choice a phrasing allows for this event, slot by slot."""
    extras = [""]
    if event.spoken or event.onscreen:
        speech = [s.format(words=event.spoken) for s in phrasing.speech] if event.spoken else [""]
        screen = [s.format(words=event.onscreen) for s in phrasing.on_screen] if event.onscreen else [""]
        extras = [a + b for a, b in itertools.product(speech, screen)]
    sounds = phrasing.sounds[event.sound]
    return {
        "template": list(phrasing.templates),
        "subject": [f"{event.colour} {n}" for n in phrasing.nouns[event.shape]],
        "motion": list(phrasing.motions[event.motion]),
        "sound": [noun for noun, _ in sounds],
        "sound_clause": [clause for _, clause in sounds],
        "backdrop": list(phrasing.backdrops[event.background]),
        "extra": extras,
    }


def caption_text(event: Event, phrasing: Phrasing, rng: random.Random) -> str:
    """One caption: a random choice in every slot."""
    options = slot_options(event, phrasing)
    chosen = {slot: rng.choice(values) for slot, values in options.items()}
    return chosen.pop("template").format(**chosen)


def all_captions(event: Event, phrasing: Phrasing) -> set[str]:
    """Every caption a phrasing can write for the event: what "held out" is checked against."""
    options = slot_options(event, phrasing)
    slots = [s for s in options if s != "template"]
    out = set()
    for values in itertools.product(*(options[s] for s in slots)):
        filled = dict(zip(slots, values))
        out.update(t.format(**filled) for t in options["template"])
    return out


# --------------------------------------------------------------------------------------------------
# Assets: sprites and textures as PNGs (made once per run with numpy)
# --------------------------------------------------------------------------------------------------


def write_png(path: Path, pixels: np.ndarray) -> Path:
    """A PNG from an (H, W, 3|4) uint8 array, without an imaging library."""
    h, w, c = pixels.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), pixels.reshape(h, w * c)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 6 if c == 4 else 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def shape_mask(shape: str, size: int, supersample: int = 4, inset: int = 0) -> np.ndarray:
    """Coverage in [0, 1] of a shape in a size x size box; supersampled so edges are smooth.
    ``inset`` pixels shrink the shape about its centre (the inside of an outline)."""
    n = size * supersample
    coords = (np.arange(n) + 0.5) / n * 2 - 1
    x, y = np.meshgrid(coords, coords)
    if inset:
        scale = size / max(size - 2 * inset, 1)
        x, y = x * scale, y * scale
    if shape == "circle":
        inside = x**2 + y**2 <= 0.92**2
    else:
        inside = _inside_polygon(x, y, _polygon(shape))
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def _polygon(shape: str) -> np.ndarray:
    if shape == "square":
        return np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)])
    if shape == "triangle":
        return np.array([(0.0, -0.92), (0.95, 0.8), (-0.95, 0.8)])
    if shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 0.98, 0.42)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles) + 0.08], axis=1)
    raise ValueError(f"unknown shape {shape!r}")


def _inside_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over the grid (one pass per edge)."""
    inside = np.zeros(x.shape, bool)
    for (xi, yi), (xj, yj) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (yi > y) != (yj > y)
        x_at = (xj - xi) * (y - yi) / (yj - yi + 1e-12) + xi
        inside ^= crosses & (x < x_at)
    return inside


def sprite_pixels(colour: str, shape: str, size: int, look: EventLook | None = None) -> np.ndarray:
    """RGBA sprite. The plain look is a flat fill; the randomised ones draw the same shape in the
    same colour family: a darker outline, a lit-from-above shading, turned by an angle, a gradient or
    dark bands along an angle, a soft (blurred) edge, or a speckled fill; any of them rotated by
    ``look.turn`` degrees."""
    look = look or EventLook()
    rotation = (look.angle if look.variant == "turned" else 0.0) + look.turn
    rotated = bool(rotation) and shape != "circle"
    coverage = _turned_mask(shape, size, rotation) if rotated else shape_mask(shape, size)
    alpha = np.round(coverage * 255).astype(np.uint8)
    base = np.clip(np.array(COLOURS[colour], np.float32) + np.array(look.shade, np.float32), 0, 255)
    rgb = np.broadcast_to(base, (size, size, 3)).copy()
    if look.variant == "outline":
        inset = max(2, size // 12)
        inner = _turned_mask(shape, size, rotation, inset=inset) if rotated else shape_mask(shape, size, inset=inset)
        edge = np.clip(coverage - inner, 0, 1)[..., None]
        rgb = rgb * (1 - 0.55 * edge)
    elif look.variant == "shaded":
        light = np.linspace(1.12, 0.8, size, dtype=np.float32)[:, None, None]
        rgb = rgb * light
    elif look.variant in ("gradient", "striped"):
        yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
        a = np.deg2rad(look.angle)
        along = (np.cos(a) * xx + np.sin(a) * yy).astype(np.float32)  # -0.7..0.7 across the box
        if look.variant == "gradient":
            rgb = rgb * (0.95 + 0.45 * along)[..., None]
        else:  # dark bands about a sixth of the box wide
            rgb = rgb * np.where(np.floor(along * 6) % 2 == 0, 1.0, 0.62).astype(np.float32)[..., None]
    elif look.variant == "soft":  # a blurred edge, as a defocused or motion-smeared object has
        k = max(3, size // 10) | 1
        pad = np.pad(coverage, k)
        kernel = np.ones(k) / k
        pad = np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), 0, np.apply_along_axis(lambda r: np.convolve(r, kernel, "same"), 1, pad))
        alpha = np.round(pad[k:-k, k:-k] * 255).astype(np.uint8)
    elif look.variant == "speckled":
        grain = np.random.default_rng([size, len(shape), int(base.sum())]).normal(0, 0.12, (size, size, 1)).astype(np.float32)
        rgb = rgb * (1 + grain)
    return np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), alpha])


def _turned_mask(shape: str, size: int, angle: float, supersample: int = 4, inset: int = 0) -> np.ndarray:
    n = size * supersample
    coords = (np.arange(n) + 0.5) / n * 2 - 1
    x, y = np.meshgrid(coords, coords)
    if inset:
        scale = size / max(size - 2 * inset, 1)
        x, y = x * scale, y * scale
    a = np.deg2rad(angle)
    xr, yr = np.cos(a) * x + np.sin(a) * y, -np.sin(a) * x + np.cos(a) * y
    inside = _inside_polygon(xr / 0.92, yr / 0.92, _polygon(shape))  # shrunk a little: corners stay in the box
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


def texture_pixels(name: str, seed: int = 0) -> np.ndarray:
    """Grey textures with a fixed seed: a backdrop's look is part of the ground truth. A non-zero
    ``seed`` (randomised style) varies the scale, the contrast and a faint tint."""
    if seed:
        return _random_texture(name, seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    if name == "checker":
        grey = np.where(((xx // 28) + (yy // 28)) % 2 == 0, 30, 62)
    elif name == "stripes":
        grey = np.where(((xx + yy) // 14) % 2 == 0, 24, 66)
    elif name == "noise":
        coarse = np.random.default_rng(1234).integers(18, 90, size=(HEIGHT // 16 + 1, WIDTH // 16 + 1))
        grey = np.kron(coarse, np.ones((16, 16), int))[:HEIGHT, :WIDTH]
    elif name == "grid":
        grey = np.where((xx % 32 < 3) | (yy % 32 < 3), 86, 26)
    else:
        raise ValueError(f"unknown texture {name!r}")
    return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)


def _random_texture(name: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    lo = rng.uniform(14, 40)
    hi = lo + rng.uniform(20, 50)
    cell = int(rng.integers(10, 40))
    if name == "checker":
        pattern = ((xx // cell) + (yy // cell)) % 2
    elif name == "stripes":
        theta = rng.uniform(0, np.pi)
        pattern = ((np.cos(theta) * xx + np.sin(theta) * yy) // (cell / 2)) % 2
    elif name == "noise":
        k = max(2, cell // 2)
        coarse = rng.random((HEIGHT // k + 1, WIDTH // k + 1))
        pattern = np.kron(coarse, np.ones((k, k)))[:HEIGHT, :WIDTH]
    elif name == "grid":
        width = int(rng.integers(2, 5))
        pattern = ((xx % cell < width) | (yy % cell < width)).astype(np.float32)
    elif name == "gradient":
        theta = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(theta) * xx + np.sin(theta) * yy
        pattern = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
        pattern += 0.25 * np.sin(ramp / rng.uniform(6, 14))  # banding, so it reads as texture
    elif name == "blobs":  # smooth random field: a natural-looking, out-of-focus backdrop
        coarse = rng.random((6, 6))
        up = np.kron(coarse, np.ones((HEIGHT // 5 + 1, WIDTH // 5 + 1)))[:HEIGHT, :WIDTH]
        k = np.ones(25) / 25
        up = np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), 1, up)
        pattern = np.apply_along_axis(lambda c: np.convolve(c, k, mode="same"), 0, up)
        pattern += 0.15 * rng.random((HEIGHT, WIDTH))
    else:
        raise ValueError(f"unknown texture {name!r}")
    grey = lo + (hi - lo) * np.clip(pattern, 0, 1.3) / 1.3
    tint = rng.uniform(-6, 6, size=3)
    return np.clip(grey[..., None] + tint, 0, 255).astype(np.uint8)


class _Assets:
    """Sprites and textures a run needs, written once to a scratch folder and shared by workers."""

    def __init__(self, root: Path):
        self.root = root

    def sprite(self, colour: str, shape: str, size: int, look: EventLook | None = None) -> Path:
        if look is None or look == EventLook():
            return self.root / f"sprite_{colour}_{shape}_{size}.png"
        key = zlib.crc32(repr(look).encode())
        return self.root / f"sprite_{colour}_{shape}_{size}_{key:08x}.png"

    def texture(self, name: str, seed: int = 0) -> Path:
        return self.root / (f"texture_{name}.png" if not seed else f"texture_{name}_{seed}.png")

    def speech(self, text: str) -> Path:
        return self.root / f"speech_{zlib.crc32(text.encode()):08x}.wav"

    def prepare(self, plans: list[VideoPlan], jobs: int) -> None:
        events = [e for p in plans if p.style != "heldout" for e in p.events]  # the held-out renderer draws its own
        for colour, shape, size, look in sorted({(e.colour, e.shape, e.size, e.look) for e in events}, key=repr):
            write_png(self.sprite(colour, shape, size, look), sprite_pixels(colour, shape, size, look))
        for name, seed in sorted({(e.backdrop, e.look.backdrop_seed) for e in events if e.background == "textured"}):
            write_png(self.texture(name, seed), texture_pixels(name, seed))
        phrases = sorted({e.spoken for p in plans for e in p.events if e.spoken})
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda t: _flite(t, self.speech(t)), phrases))


# --------------------------------------------------------------------------------------------------
# Sound: the whole soundtrack of a video, mixed in numpy
# --------------------------------------------------------------------------------------------------

TONE_LEVEL = 0.3
TONE_UNDER_SPEECH = 0.12  # the tone stays audible but does not mask the words
CLAP_LEVEL = 0.7
SPEECH_PEAK = 0.7
FADE_SECONDS = 0.01


def soundtrack(video: VideoPlan, assets: Optional[_Assets] = None, seed: int = 0) -> np.ndarray:
    """Mono float32 samples at SAMPLE_RATE covering the video exactly."""
    total = _samples(video.duration)
    out = np.zeros(total, np.float32)
    for k, e in enumerate(video.events):
        a, b = _samples(e.start), _samples(e.end)
        out[a:b] += _event_sound(e, b - a, np.random.default_rng([seed, video.index, k]), video.look)
        if e.spoken and assets is not None:
            _mix_speech(out, read_wav(assets.speech(e.spoken)), e)
    if video.look.room_tone:
        bed = np.cumsum(np.random.default_rng([seed, video.index, 99]).normal(size=total))  # brown noise
        bed -= np.convolve(bed, np.ones(441) / 441, mode="same")  # without its drift
        out += (video.look.room_tone * bed / (np.abs(bed).max() + 1e-9)).astype(np.float32)
    return np.clip(out, -1.0, 1.0)


def _samples(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def _event_sound(e: Event, n: int, rng: np.random.Generator, look: VideoLook | None = None) -> np.ndarray:
    look = look or VideoLook()
    if e.sound in TONE_HZ:
        level = TONE_UNDER_SPEECH if e.spoken else look.tone_level
        t = np.arange(n) / SAMPLE_RATE
        return _faded(level * tone_wave(TONE_HZ[e.sound] * look.pitch, t, look.timbre, look.vibrato, look.timbre_seed))
    if e.sound == "clap":
        return _claps(n, rng, every=look.clap_every, decay=look.clap_decay, group=look.clap_group,
                      colour=look.clap_colour, level=look.clap_level, tail=look.clap_tail)  # fmt: skip
    return np.zeros(n)


def tone_wave(hz: float, t: np.ndarray, timbre: str = "sine", vibrato: float = 0.0, seed: int = 0) -> np.ndarray:
    """A tone of pitch ``hz`` in one of several timbres, peak ~1; the fundamental stays the
    strongest partial, so "low / middle / high" is still the pitch a listener hears. ``vibrato``
    wobbles the pitch by that fraction at 5.5 Hz; "organ" draws its partials' weights from ``seed``."""
    if vibrato:
        phase = 2 * np.pi * np.cumsum(hz * (1 + vibrato * np.sin(2 * np.pi * 5.5 * t))) / SAMPLE_RATE
    else:
        phase = 2 * np.pi * hz * t
    if timbre == "sine":
        return np.sin(phase)
    if timbre == "organ":
        weights = np.random.default_rng(seed).uniform(0.0, 0.8, 7)
        partials = [(1, 1.0)] + [(k, float(w)) for k, w in zip(range(2, 9), weights)]
    else:
        partials = {"harmonics": [(1, 1.0), (2, 0.5), (3, 0.25)],
                    "square": [(k, 1.0 / k) for k in (1, 3, 5, 7)],
                    "triangle": [(k, (-1) ** (i) / k**2) for i, k in enumerate((1, 3, 5))],
                    "sawtooth": [(k, 1.0 / k) for k in range(1, 13)]}[timbre]  # fmt: skip
    nyquist = SAMPLE_RATE / 2
    x = sum(a * np.sin(k * phase) for k, a in partials if k * hz < nyquist)
    return x / np.abs(x).max()


def _faded(x: np.ndarray, seconds: float = FADE_SECONDS) -> np.ndarray:
    """Short ramps at both ends: an abrupt start or stop is a click that smears the spectrum."""
    k = min(int(seconds * SAMPLE_RATE), len(x) // 2)
    if k:
        ramp = np.linspace(0.0, 1.0, k)
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def _claps(n: int, rng: np.random.Generator, every: float = 0.5, length: float = 0.06, decay: float = 0.012, group: int = 1,
           colour: str = "white", level: float = CLAP_LEVEL, tail: float = 0.0) -> np.ndarray:  # fmt: skip
    """Clap-like bursts: white noise with a fast exponential decay, twice a second by default. The
    randomised look varies the rhythm, claps per hit (``group``, 0.15 s apart), the noise's colour
    ("bright": high-passed, "dull": low-passed), the level and a reverberant ``tail``."""
    out = np.zeros(n)
    m = int((length + 4 * tail) * SAMPLE_RATE)
    envelope = np.exp(-np.arange(m) / (decay * SAMPLE_RATE))
    if tail:
        envelope = np.maximum(envelope, 0.25 * np.exp(-np.arange(m) / (tail * SAMPLE_RATE)))
    gap = int(0.15 * SAMPLE_RATE)
    for start in range(int(0.05 * SAMPLE_RATE), n - m - (group - 1) * gap, int(every * SAMPLE_RATE)):
        for j in range(group):
            if colour == "bright":
                noise = 0.7 * np.diff(rng.uniform(-1, 1, m + 1))
            elif colour == "dull":
                noise = 1.8 * np.convolve(rng.uniform(-1, 1, m), np.ones(6) / 6, "same")
            else:
                noise = rng.uniform(-1, 1, m)
            s = start + j * gap
            out[s : s + m] += level * envelope * noise
    return out


def _mix_speech(out: np.ndarray, voice: np.ndarray, e: Event) -> None:
    """Lay the voice in at the event's speech start; a phrase too long for its event is cut there."""
    a, end = _samples(e.start + SPEECH_LEAD_IN), _samples(e.end) - _samples(0.05)
    voice = voice[: max(end - a, 0)].copy()
    peak = float(np.abs(voice).max()) if voice.size else 0.0
    if peak > 0:
        out[a : a + voice.size] += _faded(voice * (SPEECH_PEAK / peak), 0.02).astype(np.float32)


def read_wav(path: Path) -> np.ndarray:
    """Mono float samples resampled to SAMPLE_RATE (flite writes 16 kHz)."""
    with wave.open(str(path)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float64) / 32768.0
    mono = pcm.reshape(-1, channels).mean(axis=1)
    if rate == SAMPLE_RATE or mono.size == 0:
        return mono
    t_out = np.arange(int(mono.size * SAMPLE_RATE / rate)) / SAMPLE_RATE
    return np.interp(t_out, np.arange(mono.size) / rate, mono)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    pcm = np.round(np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return path


def _flite(text: str, path: Path) -> Path:
    if shutil.which("flite") is None:
        raise SynthError("spoken events need flite (apt-get install -y flite)")
    _run(["flite", "-voice", "awb", "-t", text, "-o", str(path)])
    return path


# --------------------------------------------------------------------------------------------------
# Rendering: one ffmpeg process per video
# --------------------------------------------------------------------------------------------------


class SynthError(RuntimeError):
    """A tool the corpus needs is missing or failed; the message says which and how to fix it."""


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SynthError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}): {' / '.join(tail)}")


@functools.cache
def font_file() -> Optional[str]:
    """DejaVu Sans where Debian puts it, else whatever fontconfig calls sans (None: let drawtext
    ask fontconfig itself)."""
    dejavu = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if dejavu.exists():
        return str(dejavu)
    if shutil.which("fc-match"):
        found = subprocess.run(["fc-match", "-f", "%{file}", "sans"], capture_output=True, text=True).stdout.strip()
        if found and Path(found).exists():
            return found
    return None


def ffmpeg_command(video: VideoPlan, assets: _Assets, wav: Path, target: Path) -> list[str]:
    """Inputs: per event a backdrop and a looping sprite, then the soundtrack; the filter graph
    overlays each sprite along its path, adds on-screen words, and concatenates the events.

    One encoder thread: x264's output depends on its thread count, and byte-identical files for a
    seed matter (the indexer keys videos by content hash). Parallelism comes from the pool instead.
    """
    inputs: list[str] = []
    chains: list[str] = []
    look, fps = video.look, video.look.fps
    for k, e in enumerate(video.events):
        inputs += _backdrop_input(e, assets, fps)
        inputs += ["-loop", "1", "-framerate", str(fps), "-i", str(assets.sprite(e.colour, e.shape, e.size, e.look))]
        chains.append(f"[{2 * k}:v][{2 * k + 1}:v]{_overlay(e)}{_drawtext(e)},setsar=1[e{k}]")
    n = len(video.events)
    labels = "".join(f"[e{k}]" for k in range(n))
    degrade = (f",gblur=sigma={look.blur}" if look.blur else "") + (f",noise=alls={look.noise}:allf=t" if look.noise else "")
    if look.shake:  # a hand-held camera: each frame cut from a randomly shifted window, scaled back
        s = look.shake
        degrade += f",crop=w=iw-{2 * s}:h=ih-{2 * s}:x='{s}+{s}*(2*random(1)-1)':y='{s}+{s}*(2*random(2)-1)',scale={WIDTH}:{HEIGHT}"
    graph = ";".join(chains) + f";{labels}concat=n={n}:v=1:a=0{degrade},format=yuv420p[v]"
    return [
        "ffmpeg", "-nostdin", "-v", "error", "-y", *inputs, "-i", str(wav),
        "-filter_complex", graph, "-filter_complex_threads", "1",
        "-map", "[v]", "-map", f"{2 * n}:a",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", str(look.crf), "-g", str(2 * fps), "-r", str(fps),
        "-threads", "1",
        "-c:a", "aac", "-b:a", "96k", "-ar", str(SAMPLE_RATE),
        "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-movflags", "+faststart", "-f", "mp4", str(target),
    ]  # fmt: skip


def _backdrop_input(e: Event, assets: _Assets, fps: int = FPS) -> list[str]:
    if e.background == "plain":
        colour = PLAIN_BACKDROPS.get(e.backdrop, e.backdrop)  # a name, or a randomised "0xRRGGBB"
        return ["-f", "lavfi", "-i", f"color=c={colour}:s={WIDTH}x{HEIGHT}:r={fps}:d={e.duration}"]
    texture = assets.texture(e.backdrop, e.look.backdrop_seed)
    return ["-loop", "1", "-framerate", str(fps), "-t", str(e.duration), "-i", str(texture)]


def _overlay(e: Event) -> str:
    x0, y0, x1, y1 = e.path
    d = e.duration
    return f"overlay=x='{x0}+({x1 - x0})*t/{d}':y='{y0}+({y1 - y0})*t/{d}':shortest=1:eval=frame"


def _drawtext(e: Event) -> str:
    """Black words on a light grey box at the bottom: legible for OCR, and not a shape colour."""
    if not e.onscreen:
        return ""
    font = font_file()
    where = f"fontfile='{font}'" if font else "font=Sans"
    return (
        f",drawtext={where}:text='{e.onscreen}':fontsize=26:fontcolor=black:box=1:boxcolor=0xb4b4b4:"
        "boxborderw=6:x=(w-text_w)/2:y=h-text_h-14"
    )


def render_video(video: VideoPlan, out: Path, assets: _Assets, seed: int) -> Path:
    """Write one video; it appears under its final name only when complete."""
    target = out / video.video
    partial = target.with_name(target.name + ".part")
    wav = assets.root / f"{video.name}.wav"
    if video.style == "heldout":
        from .synth_heldout import heldout_soundtrack, render_heldout

        write_wav(wav, heldout_soundtrack(video, assets, seed))
        try:
            render_heldout(video, wav, partial, seed)
            os.replace(partial, target)
        finally:
            wav.unlink(missing_ok=True)
            partial.unlink(missing_ok=True)
        return target
    write_wav(wav, soundtrack(video, assets, seed))
    try:
        _run(ffmpeg_command(video, assets, wav, partial))
        os.replace(partial, target)
    finally:
        wav.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------------------------------
# Files: the JSONL views of a plan
# --------------------------------------------------------------------------------------------------


def caption_record(video: VideoPlan, phrasing: str | None = None) -> dict:
    """A video's line in train/test.jsonl: its captions in its split's phrasing (or the one named).
    A training video lists each event's paraphrases too (the trainer draws one caption per step)."""
    captions = []
    for e in video.events:
        texts = [e.captions[phrasing] if phrasing else e.caption]
        if phrasing is None and video.split == "train":
            texts += e.paraphrases
        captions += [{"text": t, "start": e.start, "end": e.end} for t in texts]
    return {"video": video.video, "captions": captions}


def event_records(video: VideoPlan) -> list[dict]:
    keep = ("colour", "shape", "motion", "sound", "background", "backdrop", "spoken", "onscreen", "start", "end")
    return [
        {
            "video": video.video,
            "split": video.split,
            "event": k,
            **{name: getattr(e, name) for name in keep},
            "tone_hz": TONE_HZ.get(e.sound),
            "speech_start": e.speech_start,
            "size": e.size,
            "path": list(e.path),
            "caption": e.caption,
            "captions": e.captions,
            "paraphrases": list(e.paraphrases),
            "visual_key": e.visual_key,
            "sound_dependent": e.sound_dependent,
        }
        for k, e in enumerate(video.events)
    ]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(out: Path, plans: list[VideoPlan], params: dict) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        split: _write_jsonl(out / f"{split}.jsonl", [caption_record(p) for p in plans if p.split == split])
        for split in ("train", "test")
    }
    # the test videos captioned the way training words things: the gap between this file's scores
    # and test.jsonl's is what held-out phrasing costs the text tower
    files["test_seen_phrasing"] = _write_jsonl(
        out / "test_seen_phrasing.jsonl", [caption_record(p, "train") for p in plans if p.split == "test"]
    )
    files["events"] = _write_jsonl(out / "events.jsonl", [r for p in plans for r in event_records(p)])
    files["params"] = out / "synth.json"
    files["params"].write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    return files


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


@dataclass
class SynthSummary:
    out: Path
    videos: int
    train_videos: int
    test_videos: int
    events: int
    sound_dependent_events: int
    video_seconds: float
    files: dict[str, str]
    files_written: int
    elapsed: float
    jobs: int

    @property
    def videos_per_second(self) -> float:
        return self.videos / self.elapsed if self.elapsed > 0 else 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        d["video_seconds"] = round(self.video_seconds, 3)
        d["elapsed"] = round(self.elapsed, 3)
        d["videos_per_second"] = round(self.videos_per_second, 3)
        return d


def default_jobs() -> int:
    return usable_cores()


def generate(
    out: Path,
    videos: int,
    seed: int,
    jobs: int | None = None,
    test_fraction: float = 0.2,
    progress: bool = True,
    on_video: Optional[Callable[[int, int], None]] = None,
    style: str = "plain",
) -> SynthSummary:
    """Plan, render every video in a pool of ``jobs`` workers, then write the JSONL files.

    The same ``(videos, seed, test_fraction)`` gives byte-identical files whatever ``jobs`` is.
    ``on_video(done, total)`` is called after each video, for callers that draw their own progress.
    Videos left in ``out/videos`` by an earlier, larger run are not removed (no list names them).
    """
    _require_ffmpeg()
    t0 = time.monotonic()
    out = Path(out)
    jobs = jobs or default_jobs()
    plans = plan(videos, seed, test_fraction, style)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vidsearch-synth-") as scratch:
        assets = _Assets(Path(scratch))
        assets.prepare(plans, jobs)
        _render_all(plans, out, assets, seed, jobs, progress, on_video)
    params = {
        "generator": "vidsearch.synth", "videos": videos, "seed": seed, "test_fraction": test_fraction, "style": style,
        "width": WIDTH, "height": HEIGHT, "fps": FPS, "sample_rate": SAMPLE_RATE,
    }  # fmt: skip
    files = write_jsonl(out, plans, params)  # last: a caption list never names a missing video
    events = [e for p in plans for e in p.events]
    return SynthSummary(
        out=out,
        videos=len(plans),
        train_videos=sum(p.split == "train" for p in plans),
        test_videos=sum(p.split == "test" for p in plans),
        events=len(events),
        sound_dependent_events=sum(e.sound_dependent for e in events),
        video_seconds=sum(p.duration for p in plans),
        files={**{k: str(v) for k, v in files.items()}, "videos": str(out / "videos")},
        files_written=len(files) + len(plans),
        elapsed=time.monotonic() - t0,
        jobs=jobs,
    )


def _require_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None:
        raise SynthError("rendering needs ffmpeg (apt-get install -y ffmpeg)")


def _render_all(plans, out, assets, seed, jobs, progress, on_video) -> None:
    lock = threading.Lock()
    done = 0
    with _ProgressBar(progress, len(plans)) as advance, ThreadPoolExecutor(max_workers=jobs) as pool:

        def one(p: VideoPlan) -> None:
            nonlocal done
            render_video(p, out, assets, seed)
            with lock:
                done += 1
                advance()
                if on_video:
                    on_video(done, len(plans))

        futures = [pool.submit(one, p) for p in plans]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in finished if f.exception() is not None]
        if failed:
            for f in futures:
                f.cancel()
            raise failed[0].exception()


class _ProgressBar:
    """A rich bar on stderr, or nothing: stdout stays clean for ``--json``."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TextColumn("videos"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True),
        )  # fmt: skip
        self.bar.start()
        task = self.bar.add_task("synth", total=self.total)
        return lambda: self.bar.update(task, advance=1)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()


# --------------------------------------------------------------------------------------------------
# The command (registered by the CLI as `vidsearch synth`)
# --------------------------------------------------------------------------------------------------


def synth_command(
    out: Annotated[Path, typer.Argument(help="Folder for videos/, train.jsonl, test.jsonl, events.jsonl.", show_default=False)],
    videos: Annotated[int, typer.Option("--videos", min=1, help="How many videos to render.")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same corpus.")] = 0,
    jobs: Annotated[Optional[int], typer.Option("--jobs", min=1, help="Videos rendered at once (default: one per core).")] = None,
    test_fraction: Annotated[float, typer.Option("--test-fraction", min=0.0, max=0.99, help="Share of videos in test.jsonl.")] = 0.2,
    style: Annotated[str, typer.Option("--style", help="plain (the original look), random (domain randomised: "
                                       "for training) or heldout (a second renderer training never sees: for model selection).")] = "plain",
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a summary line.")] = False,
) -> None:
    """Render a synthetic multi-event corpus with known ground truth (train/test captions, events)."""
    from rich.console import Console

    err = Console(stderr=True)
    try:
        summary = generate(out, videos, seed, jobs, test_fraction, progress=not json_out and err.is_terminal, style=style)
    except (SynthError, ValueError, OSError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if json_out:
        print(json.dumps(summary.as_dict(), ensure_ascii=False))
        return
    Console().print(
        f"[green]rendered {summary.videos} videos[/] ({summary.train_videos} train, {summary.test_videos} test) · "
        f"{summary.events} events, {summary.sound_dependent_events} sound-dependent · "
        f"{summary.video_seconds:.0f} s of video in {summary.elapsed:.1f} s "
        f"({summary.videos_per_second:.2f} videos/s, {summary.jobs} jobs) → {out}",
        highlight=False,
    )
