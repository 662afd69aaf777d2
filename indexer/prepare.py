"""The decoder processes' job: probe one file, decode its sampled frames (and audio when wanted).

Runs in a separate process (see pipeline.py): decoding a hostile file can crash a native decoder,
and this keeps such a crash from taking the indexing run with it. Returns plain data only.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .decode import DecodedFrames, decode_frames, plan_samples, read_audio
from .probe import MediaError, ProbeResult, probe


@dataclass
class DecodeJob:
    path: str
    sample_fps: float
    image_size: int
    want_audio: bool


@dataclass
class Prepared:
    job: DecodeJob
    probe: ProbeResult
    frames: DecodedFrames
    audio: np.ndarray | None
    audio_error: str | None


@dataclass
class Failed:
    job: DecodeJob
    error: str


def prepare(job: DecodeJob) -> Prepared | Failed:
    path = Path(job.path)
    try:
        info = probe(path)
        plan = plan_samples(info.duration, job.sample_fps)
        frames = decode_frames(path, plan, info.width, info.height, job.image_size)
    except (MediaError, RuntimeError, OSError) as exc:
        return Failed(job, str(exc))
    except Exception as exc:  # noqa: BLE001 - anything else is a bug, but must not stop the run
        return Failed(job, f"unexpected {type(exc).__name__}: {exc} ({traceback.format_exc(limit=2)})")
    audio, audio_error = None, None
    if job.want_audio and info.has_audio:
        try:
            audio = read_audio(path)
        except (RuntimeError, OSError) as exc:
            audio_error = str(exc)
    return Prepared(job, info, frames, audio, audio_error)
