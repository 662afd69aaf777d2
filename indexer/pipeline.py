"""The indexing run: discover → hash → (decoder processes: probe, decode) → encode → commit.

Decoding runs ahead of encoding in separate processes (worker.py; a bounded queue of futures gives
backpressure), so the encoder never waits on the disk when there is a core to decode on, and a decoder
crash or hang costs one file, not the run. Frames of several short videos share encoder batches. Commits are
batched (`flush_videos`) and follow the store's write-then-mark order, so `kill -9` at any point
loses at most the uncommitted batch, which the next run redoes.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from vidsearch.config import Settings
from vidsearch.encoders.audio import audio_tokens
from vidsearch.encoders.sentence import get_sentence_encoder, span_table  # cheap: MiniLM loads on first use
from vidsearch.store import EncodedVideo, Store, metadata_json

from .discover import Source, discover
from .hashing import content_hash
from .prepare import DecodeJob, Failed, Prepared
from .segment import make_segments, pool_segments
from .sidecar import sidecar_spans
from .worker import DecoderPool

FLUSH_SECONDS = 10.0


def default_decode_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))
_DONE = object()


@dataclass
class RunSummary:
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    removed: int = 0
    linked: int = 0  # new paths whose content was already indexed (no encoding)
    units: int = 0
    video_seconds: float = 0.0
    elapsed: float = 0.0
    failures: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)  # indexed, but a text channel failed
    spans: int = 0

    def as_dict(self) -> dict:
        return {**self.__dict__, "elapsed": round(self.elapsed, 3), "video_seconds": round(self.video_seconds, 3)}


class Progress:
    """What the pipeline reports as it goes; the CLI renders it as a rich progress bar."""

    def start(self, total_videos: int) -> None: ...
    def advance(self, videos: int = 0, frames: int = 0) -> None: ...
    def stop(self) -> None: ...


@dataclass
class _Item:
    source: Source
    video_id: str
    future: Future | None  # None: content already indexed, only the path is new


class IndexRun:
    """One `vidsearch index` / `reindex` run over a store with a loaded backbone."""

    def __init__(
        self,
        store: Store,
        backbone,
        settings: Settings,
        progress: Progress | None = None,
        audio_encoder: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    ):
        self.store = store
        self.backbone = backbone
        self.settings = settings
        self.progress = progress or Progress()
        tower = getattr(backbone, "audio_tower", None)
        if audio_encoder is None and tower is not None:  # a trained checkpoint brings its audio tower
            audio_encoder = partial(audio_tokens, tower=tower)
        self.audio_encoder = audio_encoder
        self.summary = RunSummary()
        self._pending: list[EncodedVideo] = []
        self._pending_files: list[dict] = []
        self._last_flush = time.monotonic()
        self._turns = contextlib.nullcontext

    # -- planning ------------------------------------------------------------------------------
    def plan(self, sources: list[Source]) -> list[Source]:
        """Sources that changed since the last run (by path, size and mtime); the rest are skipped."""
        files = self.store.files()
        indexed = self.store.indexed_ids()
        known = {
            p: (s, m, st, v)
            for p, s, m, st, v in zip(
                files["path"].to_pylist(),
                files["size"].to_pylist(),
                files["mtime"].to_pylist(),
                files["status"].to_pylist(),
                files["video_id"].to_pylist(),
            )
        }
        todo = []
        for src in sources:
            seen = known.get(src.key)
            unchanged = seen is not None and seen[0] == src.size and seen[1] == src.mtime
            if unchanged and (seen[2] == "failed" or seen[3] in indexed):
                self.summary.skipped += 1
            else:
                todo.append(src)
        return todo

    def prune(self, roots: list[Path], sources: list[Source]) -> None:
        """Forget files under `roots` that are gone, and videos no file points at any more."""
        found = {s.key for s in sources}
        dirs = [str(Path(r).resolve()) + os.sep for r in roots if Path(r).is_dir()]
        singles = {str(Path(r).resolve()) for r in roots if not Path(r).is_dir()}
        files = self.store.files()
        gone = [
            p
            for p in files["path"].to_pylist()
            if p not in found and (any(p.startswith(d) for d in dirs) or p in singles or not Path(p).exists())
        ]
        self.store.delete_files(gone)
        self.summary.removed += self._drop_unreferenced()

    def _drop_unreferenced(self) -> int:
        files = self.store.files()
        referenced = set(v for v, st in zip(files["video_id"].to_pylist(), files["status"].to_pylist()) if st == "indexed")
        return self.store.delete_videos(self.store.indexed_ids() - referenced)

    # -- running -------------------------------------------------------------------------------
    def run(self, paths: list[Path], prune: bool = False) -> RunSummary:
        t0 = time.monotonic()
        if self.settings.threads:
            torch.set_num_threads(self.settings.threads)
        with self.store.write_lock():
            self.store.remove_orphans()
            sources, problems = discover(paths)
            for where, problem in problems:
                self._fail_path(where, problem)
            if prune:
                self.prune(paths, sources)
            todo = self.plan(sources)
            self.progress.start(len(todo))
            try:
                self._run_pipeline(todo)
            finally:
                self._flush()
                self.progress.stop()
            self.summary.removed += self._drop_unreferenced()  # old content of changed files
            if self.summary.spans:
                self.store.index_text()
            self.store.record_channels(speech=self.settings.speech, ocr=self.settings.ocr, engine=self.settings.speech_engine)
            self.store.optimize()
        self.summary.elapsed = time.monotonic() - t0
        return self.summary

    def _run_pipeline(self, todo: list[Source]) -> None:
        if not todo:
            return
        pool = DecoderPool(self.settings.decode_workers or default_decode_workers())
        self._turns = pool.paused if not self._overlap() else contextlib.nullcontext
        items: queue.Queue = queue.Queue(maxsize=self.settings.decode_ahead)
        stop = threading.Event()
        feeder = threading.Thread(target=self._feed, args=(todo, pool, items, stop), daemon=True)
        feeder.start()
        try:
            self._consume(items)
        finally:
            stop.set()
            while feeder.is_alive():  # unblock a feeder waiting on a full queue
                try:
                    items.get_nowait()
                except queue.Empty:
                    feeder.join(0.05)
            pool.shutdown()

    def _feed(self, todo: list[Source], pool: DecoderPool, items: queue.Queue, stop: threading.Event) -> None:
        """Hash each file and queue its decode; content already indexed is linked without decoding."""
        indexed = self.store.indexed_ids()
        claimed: set[str] = set()
        want_audio = self.audio_encoder is not None
        try:
            for src in todo:
                if stop.is_set():
                    return
                try:
                    vid = content_hash(src.path)
                except OSError as exc:
                    items.put((src, f"cannot read file: {exc}"))
                    continue
                if vid in indexed or vid in claimed:
                    items.put(_Item(src, vid, None))
                    continue
                claimed.add(vid)
                job = self._job(src, want_audio)
                items.put(_Item(src, vid, pool.submit(job)))
        finally:
            items.put(_DONE)

    def _job(self, src: Source, want_audio: bool) -> DecodeJob:
        s = self.settings
        return DecodeJob(str(src.path), s.sample_fps, self.backbone.image_size, want_audio,
                         speech=s.speech, speech_engine=s.speech_engine, speech_model=s.speech_model, ocr=s.ocr)  # fmt: skip

    def _consume(self, items: queue.Queue) -> None:
        ready: list[tuple[_Item, Prepared]] = []
        while True:
            got = items.get()
            if got is _DONE:
                break
            if isinstance(got, tuple):  # (source, error) from the feeder
                self._fail(got[0], None, got[1])
                self.progress.advance(videos=1)
                continue
            item: _Item = got
            if item.future is None:
                self._link(item)
                continue
            result = item.future.result()
            if isinstance(result, Failed):
                self._fail(item.source, item.video_id, result.error)
                self.progress.advance(videos=1)
                continue
            ready.append((item, result))
            frames = sum(len(p.frames.frames) for _, p in ready)
            if frames >= self.settings.batch_size or items.empty():
                self._encode(ready)
                ready = []
        self._encode(ready)

    def _overlap(self) -> bool:
        """Run decoders during encoding only where they do not take the encoder's cores."""
        mode = self.settings.overlap
        if mode != "auto":
            return mode == "on"
        if getattr(self.backbone, "device", None) is not None and self.backbone.device.type != "cpu":
            return True
        workers = self.settings.decode_workers or default_decode_workers()
        return (os.cpu_count() or 1) >= torch.get_num_threads() + workers

    def _encode(self, ready: list[tuple[_Item, Prepared]]) -> None:
        """Encode the frames of several videos in shared batches, then split them back per video."""
        if not ready:
            return
        frames = np.concatenate([p.frames.frames for _, p in ready])
        starts = np.concatenate([p.frames.unit_start for _, p in ready])
        ends = np.concatenate([p.frames.unit_end for _, p in ready])
        owner = np.repeat(np.arange(len(ready)), [len(p.frames.frames) for _, p in ready])
        with self._turns():
            vectors, u_start, u_end, u_owner = self.backbone.encode_units(frames, starts, ends, owner, self.settings.batch_size)
        bounds = np.searchsorted(u_owner, np.arange(len(ready) + 1))  # units come back grouped by video
        for i, (item, prep) in enumerate(ready):
            a, b = bounds[i], bounds[i + 1]
            self._add_encoded(item, prep, vectors[a:b], u_start[a:b], u_end[a:b])
        self.progress.advance(videos=len(ready), frames=len(frames))

    def _add_encoded(self, item: _Item, prep: Prepared, vectors: np.ndarray, unit_start: np.ndarray, unit_end: np.ndarray) -> None:
        s, info, fr = self.settings, prep.probe, prep.frames
        segs = make_segments(info.duration, fr.frames, fr.unit_start, s.window_seconds, s.window_stride, s.shot_threshold)
        audio = (None, None, None)
        if self.audio_encoder is not None and prep.audio is not None and len(prep.audio):
            audio = self.audio_encoder(prep.audio)
        src = item.source
        spans = list(prep.spans) + sidecar_spans(src.path, src.title or src.path.stem, src.metadata, info.duration)
        if prep.warnings:
            self.summary.warnings.append({"path": src.key, "warning": "; ".join(prep.warnings)})
        self._pending.append(
            EncodedVideo(
                video={
                    "video_id": item.video_id,
                    "path": src.key,
                    "title": src.title or src.path.stem,
                    "metadata": metadata_json(src.metadata),
                    "duration": info.duration,
                    "fps": info.fps,
                    "width": info.width,
                    "height": info.height,
                    "size_bytes": src.size,
                    "has_audio": info.has_audio,
                    "n_units": len(vectors),
                    "decoder": fr.decoder,
                },
                unit_start=unit_start,
                unit_end=unit_end,
                unit_vectors=vectors,
                seg_kind=segs.kind,
                seg_start=segs.start,
                seg_end=segs.end,
                seg_vectors=pool_segments(segs, unit_start, unit_end, vectors),
                audio_start=audio[0],
                audio_end=audio[1],
                audio_vectors=audio[2],
                files=[self._file_row(src, item.video_id, "indexed", "; ".join(prep.warnings) or None)],
                spans=spans,
            )
        )
        self.summary.indexed += 1
        self.summary.units += len(vectors)
        self.summary.video_seconds += info.duration
        self._maybe_flush()

    def _link(self, item: _Item) -> None:
        self._pending_files.append(self._file_row(item.source, item.video_id, "indexed", None))
        self.summary.linked += 1
        self.progress.advance(videos=1)
        self._maybe_flush()

    def _fail(self, src: Source, video_id: str | None, error: str) -> None:
        self._pending_files.append(self._file_row(src, video_id, "failed", error))
        self.summary.failed += 1
        self.summary.failures.append({"path": src.key, "error": error})
        self._maybe_flush()

    def _fail_path(self, where: str, error: str) -> None:
        self.store.record_files([{"path": where, "size": 0, "mtime": 0.0, "video_id": None, "status": "failed", "error": error}])
        self.summary.failed += 1
        self.summary.failures.append({"path": where, "error": error})

    @staticmethod
    def _file_row(src: Source, video_id: str | None, status: str, error: str | None) -> dict:
        return {"path": src.key, "size": src.size, "mtime": src.mtime, "video_id": video_id or None,
                "status": status, "error": error}  # fmt: skip

    def _maybe_flush(self) -> None:
        if len(self._pending) >= self.settings.flush_videos or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self._flush()

    def _flush(self) -> None:
        # videos first (vectors and spans, then their visibility rows); then files that only point at
        # content already committed, so a `files` row never names a video that is not visible.
        self._embed_spans(self._pending)
        self.store.commit(self._pending)
        self.store.record_files(self._pending_files)
        self._pending, self._pending_files = [], []
        self._last_flush = time.monotonic()


    def _embed_spans(self, batch: list[EncodedVideo]) -> None:
        """Timed text -> `spans` rows with sentence vectors (the encoder loads on first use only)."""
        todo = [v for v in batch if v.spans]
        if not todo:
            return
        encoder = get_sentence_encoder()
        for v in todo:
            v.span_rows = span_table(v.video["video_id"], v.spans, encoder)
            self.summary.spans += v.span_rows.num_rows


def open_store_for(settings: Settings, backbone, rebuild: bool = False) -> Store:
    if rebuild:
        store = Store.open(settings.db, None, create=True)
        store.rebuild(backbone.fingerprint)
        return store
    return Store.open(settings.db, backbone.fingerprint, create=True)
