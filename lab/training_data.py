"""Decode a caption dataset once into arrays the trainer can sample from (frames, audio, captions).

Training needs pixels, not stored vectors, so it decodes with the indexer's own decoders (same
sampling, same crop, same sizes as indexing, so a model is trained on what it will see). The arrays
are cached next to the data, keyed by what they depend on, so a resumed or repeated run starts at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidsearch.indexer.prepare import DecodeJob, Prepared
from vidsearch.indexer.worker import DecoderPool

from .datasets import read_jsonl


@dataclass
class TrainingSet:
    frames: np.ndarray  # (F, S, S, 3) uint8, all videos' sampled frames
    frame_offsets: np.ndarray  # (V + 1,) video v owns frames[offsets[v]:offsets[v+1]]
    unit_start: np.ndarray  # (F,) seconds
    unit_end: np.ndarray  # (F,)
    audio: np.ndarray  # (N,) float16 16 kHz mono, all videos concatenated
    audio_offsets: np.ndarray  # (V + 1,)
    durations: np.ndarray  # (V,)
    videos: list[str]
    cap_video: np.ndarray  # (C,) index of the caption's video
    cap_text: list[str]
    cap_start: np.ndarray  # (C,) seconds (0 when the caption covers the whole video)
    cap_end: np.ndarray  # (C,)

    def save(self, path: Path) -> None:
        np.savez(path, **{k: (np.array(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()})

    @classmethod
    def load(cls, path: Path) -> TrainingSet:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        data["videos"] = data["videos"].tolist()
        data["cap_text"] = data["cap_text"].tolist()
        return cls(**data)


def _cache_key(jsonl: Path, fps: float, size: int) -> str:
    h = hashlib.sha256(Path(jsonl).read_bytes())
    h.update(json.dumps({"fps": fps, "size": size, "v": 1}).encode())
    return h.hexdigest()[:16]


def load_training_set(
    jsonl: Path, sample_fps: float, image_size: int, workers: int = 2, progress=None, cache: bool = True
) -> TrainingSet:
    jsonl = Path(jsonl)
    cache_path = jsonl.parent / f".{jsonl.stem}.{_cache_key(jsonl, sample_fps, image_size)}.npz"
    if cache and cache_path.is_file():
        return TrainingSet.load(cache_path)
    items = read_jsonl(jsonl)
    pool = DecoderPool(workers)
    try:
        futures = [pool.submit(DecodeJob(str(it.video), sample_fps, image_size, want_audio=True)) for it in items]
        frames, starts, ends, audio, durations, videos = [], [], [], [], [], []
        cap_video, cap_text, cap_start, cap_end = [], [], [], []
        for it, fut in zip(items, futures):
            res = fut.result()
            if progress is not None:
                progress()
            if not isinstance(res, Prepared):
                raise RuntimeError(f"{it.video}: {res.error}")
            v = len(videos)
            videos.append(str(it.video))
            frames.append(res.frames.frames)
            starts.append(res.frames.unit_start)
            ends.append(res.frames.unit_end)
            wave = res.audio if res.audio is not None else np.zeros(0, np.float32)
            audio.append(wave.astype(np.float16))
            durations.append(res.probe.duration)
            for c in it.captions:
                cap_video.append(v)
                cap_text.append(c.text)
                cap_start.append(0.0 if c.start is None else c.start)
                cap_end.append(res.probe.duration if c.end is None else c.end)
    finally:
        pool.shutdown()
    counts = [len(f) for f in frames]
    a_counts = [len(a) for a in audio]
    ts = TrainingSet(
        frames=np.concatenate(frames),
        frame_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        unit_start=np.concatenate(starts).astype(np.float32),
        unit_end=np.concatenate(ends).astype(np.float32),
        audio=np.concatenate(audio) if audio else np.zeros(0, np.float16),
        audio_offsets=np.concatenate([[0], np.cumsum(a_counts)]).astype(np.int64),
        durations=np.asarray(durations, dtype=np.float32),
        videos=videos,
        cap_video=np.asarray(cap_video, dtype=np.int64),
        cap_text=cap_text,
        cap_start=np.asarray(cap_start, dtype=np.float32),
        cap_end=np.asarray(cap_end, dtype=np.float32),
    )
    if cache:
        ts.save(cache_path)
    return ts


def concat_training_sets(sets: list[TrainingSet]) -> TrainingSet:
    """Several decoded datasets as one (e.g. a domain-randomised corpus plus one in the original
    look), in the order given; each keeps its own decode cache."""
    if len(sets) == 1:
        return sets[0]
    frame_counts = [len(t.frames) for t in sets]
    audio_counts = [len(t.audio) for t in sets]
    video_counts = [len(t.videos) for t in sets]

    def offsets(parts: list[np.ndarray], sizes: list[int]) -> np.ndarray:
        base = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return np.concatenate([parts[0][:1]] + [o[1:] + b for o, b in zip(parts, base)]).astype(np.int64)

    return TrainingSet(
        frames=np.concatenate([t.frames for t in sets]),
        frame_offsets=offsets([t.frame_offsets for t in sets], frame_counts),
        unit_start=np.concatenate([t.unit_start for t in sets]),
        unit_end=np.concatenate([t.unit_end for t in sets]),
        audio=np.concatenate([t.audio for t in sets]),
        audio_offsets=offsets([t.audio_offsets for t in sets], audio_counts),
        durations=np.concatenate([t.durations for t in sets]),
        videos=[v for t in sets for v in t.videos],
        cap_video=np.concatenate([t.cap_video + b for t, b in zip(sets, np.concatenate([[0], np.cumsum(video_counts)[:-1]]))]).astype(np.int64),
        cap_text=[c for t in sets for c in t.cap_text],
        cap_start=np.concatenate([t.cap_start for t in sets]),
        cap_end=np.concatenate([t.cap_end for t in sets]),
    )

