"""Decode only the frames we sample (seek, not decode-everything), and the audio as 16 kHz mono.

This module runs inside the decoder processes, so it never imports torch: a worker stays small, and a
decoder that crashes on a hostile file takes only its own process down. decord seeks and scales in
ffmpeg (frames arrive already at the encoder's size); PyAV is the fallback for files decord cannot
read. Times come from the container's timestamps, so variable-frame-rate video is sampled by time.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_RATE = 16000


@dataclass
class SamplePlan:
    """Which instants to sample and the span each sampled unit stands for."""

    times: np.ndarray  # (K,) seconds, sample instants
    span_start: np.ndarray  # (K,)
    span_end: np.ndarray  # (K,)


def plan_samples(duration: float, fps: float) -> SamplePlan:
    """One sample in the middle of every 1/fps interval; at least one, even for a 1-frame video."""
    n = max(1, int(np.ceil(duration * fps - 1e-6)))
    k = np.arange(n, dtype=np.float64)
    start = k / fps
    end = np.minimum((k + 1) / fps, max(duration, 1e-3))
    times = np.minimum((start + end) / 2, max(duration - 1e-3, 0.0))
    return SamplePlan(times=times, span_start=start, span_end=end)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """Output size with the short side at `short_side`, aspect kept, even numbers for the scaler."""
    if width <= height:
        w, h = short_side, int(round(height * short_side / width))
    else:
        w, h = int(round(width * short_side / height)), short_side
    return max(w, short_side), max(h, short_side)


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(frames[:, top : top + size, left : left + size])


def frames_for_times(frame_starts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each time (the last frame that started at or before it)."""
    idx = np.searchsorted(frame_starts, times, side="right") - 1
    return np.clip(idx, 0, len(frame_starts) - 1)


def _merge_repeats(idx: np.ndarray, plan: SamplePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples that land on the same frame become one unit spanning all of them."""
    uniq, first = np.unique(idx, return_index=True)
    starts = np.minimum.reduceat(plan.span_start, first)
    ends = np.maximum.reduceat(plan.span_end, first)
    return uniq, starts, ends


@dataclass
class DecodedFrames:
    frames: np.ndarray  # (T, S, S, 3) uint8
    unit_start: np.ndarray  # (T,)
    unit_end: np.ndarray  # (T,)
    decoder: str


def decode_decord(path: Path, plan: SamplePlan, width: int, height: int, size: int, crop: bool = True) -> DecodedFrames:
    import decord

    w, h = scaled_size(width, height, size)
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), width=w, height=h, num_threads=1)
    n = len(vr)
    if n == 0:
        raise RuntimeError("decord found no frames")
    frame_starts = vr.get_frame_timestamp(np.arange(n))[:, 0]
    idx, starts, ends = _merge_repeats(frames_for_times(frame_starts, plan.times), plan)
    frames = vr.get_batch(idx.tolist()).asnumpy()
    return DecodedFrames(center_crop(frames, size) if crop else frames, starts, ends, "decord")


def decode_pyav(path: Path, plan: SamplePlan, width: int, height: int, size: int, crop: bool = True) -> DecodedFrames:
    """Sequential decode keeping the frame on screen at each sample time (robust where seeking is not)."""
    import av

    w, h = scaled_size(width, height, size)
    kept: list[np.ndarray] = []  # decoded frames that some sample landed on
    owner = np.full(len(plan.times), -1, dtype=np.int64)  # sample -> index into kept
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        j, prev = 0, None
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else 0.0
            if prev is not None and j < len(plan.times) and plan.times[j] < t:
                kept.append(prev)
                while j < len(plan.times) and plan.times[j] < t:
                    owner[j] = len(kept) - 1
                    j += 1
            if j >= len(plan.times):
                break
            prev = frame.to_ndarray(width=w, height=h, format="rgb24")
        if j < len(plan.times) and prev is not None:
            kept.append(prev)
            owner[j:] = len(kept) - 1
    if not kept:
        raise RuntimeError("PyAV decoded no frames")
    idx, starts, ends = _merge_repeats(owner, plan)
    frames = np.stack(kept)[idx]
    return DecodedFrames(center_crop(frames, size) if crop else frames, starts, ends, "pyav")


def decode_frames(path: Path, plan: SamplePlan, width: int, height: int, size: int, crop: bool = True) -> DecodedFrames:
    """Frames with the short side at `size`; centre-cropped square for the encoder, whole for OCR."""
    errors = []
    for decoder in (decode_decord, decode_pyav):
        try:
            return decoder(path, plan, width, height, size, crop)
        except Exception as exc:  # noqa: BLE001 - each decoder fails in its own words
            errors.append(f"{decoder.__name__.removeprefix('decode_')}: {str(exc).strip() or type(exc).__name__}")
    raise RuntimeError("could not decode frames (" + "; ".join(errors) + ")")


def read_audio(path: Path, rate: int = AUDIO_RATE) -> np.ndarray:
    """The first audio stream as float32 mono at `rate` Hz (ffmpeg resamples and downmixes)."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn", "-ac", "1",
           "-ar", str(rate), "-f", "f32le", "pipe:1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, timeout=3600)
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"audio could not be decoded: {msg[-1] if msg else proc.returncode}")
    return np.frombuffer(proc.stdout, dtype=np.float32).copy()
