"""The decoder processes' job: probe one file, decode its sampled frames (and audio when wanted),
and read its text channels: speech (ASR with word times) and on-screen text (OCR).

Runs in a separate process (see pipeline.py): decoding a hostile file can crash a native decoder,
and this keeps such a crash from taking the indexing run with it; ASR and OCR run here too, so they
overlap with encoding where there are cores for it. A failed text channel is a warning, never a lost
video: the visual index is kept. Returns plain data only.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vidsearch.encoders.ocr import ocr_frames
from vidsearch.encoders.speech import get_recognizer, stream_audio

from .decode import DecodedFrames, decode_frames, plan_samples, read_audio
from .probe import MediaError, ProbeResult, probe


@dataclass
class DecodeJob:
    path: str
    sample_fps: float
    image_size: int
    want_audio: bool
    speech: bool = False
    speech_engine: str = "whisper"
    speech_model: str | None = None
    ocr: bool = False
    ocr_height: int = 360  # OCR reads whole frames at this height (text needs pixels)


@dataclass
class Prepared:
    job: DecodeJob
    probe: ProbeResult
    frames: DecodedFrames
    audio: np.ndarray | None
    audio_error: str | None
    spans: list = field(default_factory=list)  # TextSpan from speech and OCR
    warnings: list[str] = field(default_factory=list)


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
    audio, audio_error, warnings, spans = None, None, [], []
    if job.want_audio and info.has_audio:  # the audio tower needs the whole waveform
        try:
            audio = read_audio(path)
        except (RuntimeError, OSError) as exc:
            audio_error = str(exc)
            warnings.append(f"audio: {exc}")
    if job.speech and info.has_audio and audio_error is None:
        try:
            # without an audio tower, stream the soundtrack: hours of audio never sit in memory
            source = audio if audio is not None else stream_audio(path)
            spans += get_recognizer(job.speech_engine, job.speech_model).transcribe(source).spans
        except Exception as exc:  # noqa: BLE001 - a speech failure keeps the visual index
            warnings.append(f"speech: {exc}")
    if job.ocr:
        try:
            big = decode_frames(path, plan, info.width, info.height, min(job.ocr_height, info.height), crop=False)
            spans += ocr_frames(big.frames, big.unit_start, big.unit_end).spans
        except Exception as exc:  # noqa: BLE001 - an OCR failure keeps the visual index
            warnings.append(f"ocr: {exc}")
    return Prepared(job, info, frames, audio, audio_error, spans, warnings)
