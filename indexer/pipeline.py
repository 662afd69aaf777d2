"""The indexing run: discover → hash → (decoder processes: probe, frame chunks, text channels) → encode → commit.

Decoding runs in separate processes (worker.py) and streams each video as chunks of frames, so the
encoder never waits on the disk when there is a core to decode on, memory stays bounded whatever a
video's length, and a decoder crash or hang costs one file, not the run. Frames of several short videos
share encoder batches. Commits are batched (`flush_videos`) and follow the store's write-then-mark
order, so `kill -9` at any point loses at most the uncommitted batch, which the next run redoes.

**A video fails alone.** Every stage that handles one video (decoding, encoding, the audio tower,
embedding its text, committing) fails that video, recorded in `files` with its reason, and never the
batch or the run: a shared encoder batch or commit that fails is retried video by video. Only what
would fail every file for a reason that is not the file's (decoders that cannot start, a store that
refuses every write) stops the run, with what was committed kept.

**Deletes last.** A file the user deleted stays out of later runs over its folder (its `files` row is
marked `deleted`) until it is named again: `vidsearch index path/to/file.mp4`, or `--restore` for a folder.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from vidsearch import objectstore
from vidsearch.config import Settings
from vidsearch.cores import usable_cores
from vidsearch.encoders.sentence import get_sentence_encoder, span_table  # cheap: MiniLM loads on first use
from vidsearch.encoders.silhouettes import frame_silhouettes, unit_silhouettes
from vidsearch.encoders.sound_cues import SoundCueReader, silent_rows
from vidsearch.encoders.speech import SAMPLE_RATE as SPEECH_RATE
from vidsearch.encoders.speech import stream_audio
from vidsearch.encoders.temporal import CUE_MIN_STRENGTH, frame_cues_and_strength, per_unit_mean, unit_where_cues
from vidsearch.store import EncodedVideo, Store, local_path, metadata_json, path_key, readable_name

from .container_text import container_spans
from .discover import LIST_ERROR, READ_ERROR, Source, discover, where_key
from .hashing import content_hash
from .prepare import Chunk, DecodeJob, Failed, Finished, Started, Working, decode_job, tapped
from .remote import media_location, object_hash
from .probe import MediaError, ProbeResult, probe
from .segment import make_segments, pool_segments
from .sidecar import closed_caption_spans, embedded_subtitle_spans, find_subtitles, kept_warnings, metadata_spans, sidecar_spans, subtitle_spans, unique_subtitles
from .worker import DecoderPool, DecoderStartError, JobStream, default_decode_workers

FLUSH_SECONDS = 10.0


_DONE = object()


POLL_SECONDS = 0.5  # how often a waiting run asks its Progress whether to stop


class IndexRunError(RuntimeError):
    """The run cannot go on for a reason that is not one file's; everything committed so far is kept."""


@dataclass
class RunSummary:
    indexed: int = 0
    skipped: int = 0
    failed: int = 0
    removed: int = 0
    linked: int = 0  # new paths whose content was already indexed (no encoding)
    excluded: int = 0  # files a user deleted, left out (name them again to bring them back)
    skipped_failed: int = 0  # of `skipped`: files that failed before and did not change (--retry-failed)
    gone: int = 0  # indexed files under the given folders that no longer exist (`index` keeps them; `reindex` drops them)
    units: int = 0
    video_seconds: float = 0.0
    elapsed: float = 0.0
    failures: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)  # indexed, with a part lost (damaged stretch, text channel)
    spans: int = 0

    def as_dict(self) -> dict:
        return {**self.__dict__, "elapsed": round(self.elapsed, 3), "video_seconds": round(self.video_seconds, 3)}


def _covered_by(roots: list[Path]) -> Callable[[str], bool]:
    """Whether a stored path lies under `roots`: inside a folder given, or a file or object named."""
    local = [r for r in roots if not objectstore.is_uri(r)]
    dirs = tuple(os.path.join(os.path.abspath(r), "") for r in local if Path(r).is_dir())
    dirs += tuple(objectstore.normalize(r).rstrip("/") + "/" for r in roots if objectstore.is_uri(r))
    singles = {os.path.abspath(r) for r in local if not Path(r).is_dir()} | {objectstore.normalize(r) for r in roots if objectstore.is_uri(r)}
    return lambda p: local_path(p).startswith(dirs) or local_path(p) in singles


class Progress:
    """What the pipeline reports as it goes; the CLI renders it as a rich progress bar. `heartbeat`
    (a decoder is working) and `poll` (the run is waiting) let an owner stop the run: they may raise,
    and the run then ends as after any error, keeping what it committed (server jobs: cancel, stall)."""

    def start(self, total_videos: int) -> None: ...
    def advance(self, videos: int = 0, frames: int = 0) -> None: ...
    def heartbeat(self) -> None: ...
    def poll(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class _Item:
    source: Source
    video_id: str
    stream: JobStream | None  # None: content already indexed, or being indexed from another path


@dataclass(eq=False)  # identity: a video is itself, whatever it holds
class _Video:
    """One video on its way through the encoder: its probe, what came back so far, what is left."""

    item: _Item
    probe: ProbeResult | None = None
    frame_start: list[np.ndarray] = field(default_factory=list)  # sampled frames (shots are cut between them)
    changes: list[np.ndarray] = field(default_factory=list)
    unit_vectors: list[np.ndarray] = field(default_factory=list)  # encoded units (frames, or merged groups)
    unit_start: list[np.ndarray] = field(default_factory=list)
    unit_end: list[np.ndarray] = field(default_factory=list)
    unit_cues: list[np.ndarray] = field(default_factory=list)  # where what moved is, per unit (motion channel)
    unit_shapes: list[np.ndarray] = field(default_factory=list)  # the outline of what moved, per unit (shape channel)
    waiting: int = 0  # frames in the encoder buffer
    finished: Finished | None = None
    failed: bool = False


@dataclass
class _EncodeBuffer:
    """Frames waiting for the encoder, from one or several videos, in order."""

    chunks: list[tuple[_Video, Chunk]] = field(default_factory=list)
    done: list[_Video] = field(default_factory=list)  # finished videos whose last frames are in here

    @property
    def frames(self) -> int:
        return sum(len(c.frames) for _, c in self.chunks)

    def add(self, video: _Video, chunk: Chunk) -> None:
        self.chunks.append((video, chunk))
        video.waiting += len(chunk.frames)

    def drop(self, video: _Video) -> None:
        self.chunks = [(v, c) for v, c in self.chunks if v is not video]
        self.done = [v for v in self.done if v is not video]
        video.waiting = 0


class IndexRun:
    """One `vidsearch index` / `reindex` run over a store with a loaded backbone."""

    def __init__(
        self,
        store: Store,
        backbone,
        settings: Settings,
        progress: Progress | None = None,
        audio_encoder: Callable[[Iterable[np.ndarray]], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
    ):
        """`backbone` is a loaded model, or a function that loads one: then it is loaded only when a file
        needs encoding (a run with nothing to do does not pay the model's start-up), and checked then
        against the model the index was built with."""
        self.store = store
        if hasattr(backbone, "encode_units"):
            self._backbone, self._load = backbone, None
        else:
            self._backbone, self._load = None, backbone
        self.settings = settings
        self.progress = progress or Progress()
        # optional hooks: a duck-typed progress (the CLI's bar) need not define them
        self._poll = getattr(self.progress, "poll", lambda: None)
        self._heartbeat = getattr(self.progress, "heartbeat", lambda: None)
        self._audio_encoder = audio_encoder
        self.summary = RunSummary()
        self._pending: list[EncodedVideo] = []
        self._pending_files: list[dict] = []
        self._last_flush = time.monotonic()
        self._turns = contextlib.nullcontext
        self._outcome: dict[str, tuple[str, str | None]] = {}  # content hash -> (status, error) in this run
        self._parked: dict[str, list[Source]] = {}  # copies waiting for their content's outcome
        self._first_path: dict[str, str] = {}  # content hash -> the path being indexed for it
        self._links: list[tuple[Source, str]] = []  # linked paths: their manifest text and live path, at the flush
        self._roots: list[str] | None = None  # a server job's library roots (run)
        self._linked_videos: set[str] = set()  # videos a path was linked to in this run (their subtitles, _sync_subtitles)
        self._current: JobStream | None = None

    @property
    def batch_size(self) -> int:
        """Frames per tower call: the setting, or the default for where the tower runs (a GPU wants
        larger batches; encoders.default_batch_size)."""
        if self.settings.batch_size:
            return self.settings.batch_size
        from vidsearch.encoders.backbone import default_batch_size  # torch is loaded with the model by now

        return default_batch_size(self.backbone)

    @property
    def backbone(self):
        if self._backbone is None:
            self._backbone = self._load()
            self.store.use_fingerprint(self._backbone.fingerprint)
        return self._backbone

    @property
    def audio_encoder(self) -> Callable | None:
        if self._audio_encoder is None:
            tower = getattr(self.backbone, "audio_tower", None)
            if tower is not None:  # a trained checkpoint brings its audio tower
                from vidsearch.encoders.audio import audio_tokens_stream  # imports torch: only once a model is loaded

                self._audio_encoder = partial(audio_tokens_stream, tower=tower)
        return self._audio_encoder

    # -- planning ------------------------------------------------------------------------------
    def plan(self, sources: list[Source], named: set[str] | None = None, restore: bool = False) -> list[Source]:
        """Sources that changed since the last run (by path, size and mtime); the rest are skipped. Files a
        user deleted stay out unless named on the command line (`named`) or `restore` is set. A file that
        failed because it could not be read (permissions, an I/O error: the file system, not the content)
        is tried again every run, since fixing that changes neither its size nor its mtime."""
        files = self.store.files()
        indexed = self.store.indexed_ids()
        named = named or set()
        known = {
            p: (s, m, st, v, e)
            for p, s, m, st, v, e in zip(
                files["path"].to_pylist(),
                files["size"].to_pylist(),
                files["mtime"].to_pylist(),
                files["status"].to_pylist(),
                files["video_id"].to_pylist(),
                files["error"].to_pylist(),
            )
        }
        todo = []
        for src in sources:
            seen = known.get(src.key)
            if seen is not None and seen[2] == "deleted" and not (restore or src.key in named):
                self.summary.excluded += 1
                continue
            unchanged = seen is not None and seen[0] == src.size and seen[1] == src.mtime
            failed_for_good = unchanged and seen[2] == "failed" and not self.settings.retry_failed and not (seen[4] or "").startswith(READ_ERROR)
            if failed_for_good or (unchanged and seen[2] == "indexed" and seen[3] in indexed):
                self.summary.skipped += 1
                self.summary.skipped_failed += int(failed_for_good)
            else:
                todo.append(src)
        return todo

    def gone_files(self, roots: list[Path], keep: set[str], files=None) -> list[str]:
        """What `prune` forgets: stored files under `roots` (folders walked, files named) that the walk
        did not find (`keep`: what it found and what it could not use), and local files not on disk.
        `files`: the `files` table when the caller has read it."""
        covered = _covered_by(roots)
        files = self.store.files() if files is None else files
        return [
            p
            for p in files["path"].to_pylist()
            if p not in keep and (covered(p) or (not objectstore.is_uri(p) and not os.path.lexists(local_path(p))))
        ]

    def count_gone(self, roots: list[Path], found: set[str]) -> int:
        """Indexed local files under `roots` that are no longer on disk (`found`: what the walk found,
        not looked at again): an `index` run keeps them (a folder on a drive that is not mounted must
        not empty the index) and says how many there are, since search still returns them; `reindex`
        drops them. Objects are not counted (no cheap "does it exist")."""
        covered = _covered_by(roots)
        files = self.store.files()
        return sum(
            1
            for p, st in zip(files["path"].to_pylist(), files["status"].to_pylist())
            if st == "indexed" and p not in found and not objectstore.is_uri(p) and covered(p) and not os.path.lexists(local_path(p))
        )

    def prune(self, roots: list[Path], keep: set[str]) -> None:
        """Forget files under `roots` that are gone, and the videos no file points at any more: now where the
        walk found no new path, else at the end of the run, once the files that moved have been linked."""
        files = self.store.files()
        gone = self.gone_files(roots, keep, files)
        self.store.forget_files(gone)
        known = set(files["path"].to_pylist())
        if not any(path not in known for path in keep):
            # no path is new, so nothing moved: the videos no file points at go now, not at the end of the run
            # (a long run, or one stopped, served them with dead paths meanwhile)
            self.summary.removed += self._drop_unreferenced()
        # otherwise they go after this run's files are planned and linked (run): a moved or renamed file is
        # then linked to its content, not decoded and encoded again
        self._follow_live_paths(set(gone))

    def _follow_live_paths(self, gone: set[str]) -> None:
        """A video whose stored path (the `uri` search returns) was forgotten takes a path still indexed for
        its content, and its title follows when it was only that file's name."""
        if not gone:
            return
        videos = self.store.videos(["video_id", "path"])
        stale = {v: p for v, p in zip(videos["video_id"].to_pylist(), videos["path"].to_pylist()) if p in gone}
        if not stale:
            return
        files = self.store.files()
        live: dict[str, str] = {}
        for path, vid, status in sorted(zip(files["path"].to_pylist(), files["video_id"].to_pylist(), files["status"].to_pylist())):
            if status == "indexed" and vid in stale:
                live.setdefault(vid, path)
        for vid, path in live.items():
            try:
                self._repoint(vid, path)
            except Exception as exc:  # noqa: BLE001 - the video stays searchable under its old path
                self.summary.warnings.append({"path": path, "warning": f"could not make this the video's path: {type(exc).__name__}: {exc}"})

    def _settle_video_paths(self) -> None:
        """Every video's stored path (the `uri` search returns, what thumbnails and the player open) holds
        that video's content. Files that swap or shift names (episodes renumbered, `v2` saved over
        `final`) left a video at a path that now holds other content, titled by that path: search opened
        the wrong file under the wrong title, and no later run repaired it since both paths existed. Such
        a video takes a path the `files` table says holds its content, and its title follows."""
        if not (self.summary.indexed or self.summary.linked or self.summary.removed):
            return  # nothing moved in this run
        files = self.store.files()
        holds = {p: v for p, v, st in zip(files["path"].to_pylist(), files["video_id"].to_pylist(), files["status"].to_pylist())
                 if st == "indexed"}  # fmt: skip
        paths_of: dict[str, list[str]] = {}
        for path, video_id in sorted(holds.items()):
            paths_of.setdefault(video_id, []).append(path)
        for row in self.store.video_rows():
            video_id, path = row["video_id"], row["path"]
            if holds.get(path) == video_id or not paths_of.get(video_id):
                continue
            try:
                self._repoint(video_id, paths_of[video_id][0], row)
            except Exception as exc:  # noqa: BLE001 - the video stays searchable under its old path
                self.summary.warnings.append({"path": paths_of[video_id][0], "warning": f"could not make this the video's path: {type(exc).__name__}: {exc}"})

    def _repoint(self, video_id: str, key: str, row: dict | None = None) -> None:
        """Point a video at another path of its content; a title that was the old file's name follows."""
        if row is None:
            rows = self.store.video_rows(video_id)
            if not rows:
                return
            row = rows[0]
        old_title, title = row["title"], row["title"]
        if old_title == _name_title(row["path"]):
            title = _name_title(key)
        self.store.update_video(video_id, path=key, title=title)
        row["path"], row["title"] = key, title
        if title != old_title:
            self._retitle_spans(video_id, old_title, title)

    def _retitle_spans(self, video_id: str, old: str, new: str) -> None:
        """The `metadata` span that holds a video's old title holds its new one."""
        old_text, new_text = " ".join(old.split()), " ".join(new.split())
        rows = [r for r in self.store.span_rows(video_id, "metadata") if r["text"] == old_text]
        if not rows:
            return
        from vidsearch.encoders.sentence import TextSpan

        spans = [TextSpan("metadata", r["start"], r["end"], new_text) for r in rows[:1]]
        self.store.replace_spans([r["span_id"] for r in rows], span_table(video_id, spans, get_sentence_encoder()))
        self.summary.spans += len(spans)

    def _drop_unreferenced(self) -> int:
        return self.store.purge_videos(self.store.indexed_ids() - self.store.referenced_ids())

    # -- running -------------------------------------------------------------------------------
    def run(self, paths: list[Path], prune: bool = False, restore: bool = False, roots: list[str] | None = None,
            locked: bool = False) -> RunSummary:  # fmt: skip
        """Index `paths`. `roots`: a server job's library roots, which what the paths lead to (manifest
        entries, symbolic links) must not leave (discover); None for the CLI, whose operator names what
        it indexes. `locked`: the caller holds the index's write lock already (a server job holds it
        from before it looks at the index to after it has cleaned up)."""
        t0 = time.monotonic()
        self._roots = roots  # subtitle files beside the videos are held to them too
        with contextlib.nullcontext() if locked else self.store.write_lock():
            self.store.remove_orphans()
            sources, problems = discover(paths, follow_symlinks=self.settings.follow_symlinks, roots=roots)
            self._report_problems(problems)
            self._clear_solved_problems(paths, problems)
            if prune:
                self.prune(paths, {s.key for s in sources} | {w for w, _ in problems})
            else:
                self.summary.gone = self.count_gone(paths, {s.key for s in sources})
            named = {objectstore.normalize(p) if objectstore.is_uri(p) else path_key(os.path.abspath(p)) for p in paths if not Path(p).is_dir()}
            todo = self.plan(sources, named, restore)
            self.progress.start(len(todo))
            try:
                self._run_pipeline(todo)
            finally:
                self._flush()
                self._settle_parked()
                self.progress.stop()
            self.summary.removed += self._drop_unreferenced()  # old content of changed files, and of files gone
            self._settle_video_paths()
            self._sync_subtitles([s for s in sources if s.uri is None])
            self._sync_manifest_text([s for s in sources if s.title is not None or s.metadata])
            if self.summary.spans:
                self.store.index_text()
            self.store.record_channels(speech=self.settings.speech, ocr=self.settings.ocr, engine=self.settings.speech_engine,
                                       ocr_engine=self.settings.ocr_engine)  # fmt: skip
            self.store.optimize()
        self.summary.elapsed = time.monotonic() - t0
        return self.summary

    def _sync_subtitles(self, local: list[Source]) -> None:
        """Subtitle files are read with their video, so a video that did not change never read one added
        or edited beside it later, nor one beside a copy linked to it. For such videos (a subtitle file
        newer than the path's record, or a path linked in this run) the `subtitle` spans are made again
        from the subtitle files beside every path of the content. A failure is a warning on that path."""
        if not local:
            return
        files = self.store.files()
        rows = {p: (v, st, u) for p, v, st, u in zip(files["path"].to_pylist(), files["video_id"].to_pylist(),
                                                     files["status"].to_pylist(), files["updated_at"].to_pylist())}  # fmt: skip
        errors = dict(zip(files["path"].to_pylist(), files["error"].to_pylist()))  # an indexed file's warnings stay
        stale: dict[str, list[Source]] = {}
        for src in local:
            video_id, status, recorded = rows.get(src.key, (None, None, None))
            if status != "indexed" or video_id is None:
                continue
            subs = find_subtitles(src.path, self._roots)
            try:
                newest = max((p.stat().st_mtime for p, _ in subs), default=None)
            except OSError:
                newest = None
            if newest is not None and (newest > (recorded or 0.0) or video_id in self._linked_videos):
                stale.setdefault(video_id, []).append(src)
        for video_id, srcs in stale.items():
            try:
                self._resubtitle(video_id, [p for p, (v, st, _) in rows.items() if v == video_id and st == "indexed" and not objectstore.is_uri(p)])
                self._record_files([self._file_row(s, video_id, "indexed", errors.get(s.key)) for s in srcs])  # read now
            except Exception as exc:  # noqa: BLE001 - the video keeps the subtitles it had
                self.summary.warnings.append({"path": srcs[0].key, "warning": f"subtitles could not be read again: {type(exc).__name__}: {exc}"})

    def _sync_manifest_text(self, given: list[Source]) -> None:
        """A manifest's title, description and tags, edited for a file that did not change, reach its
        video on the next run (the file is not encoded again): the videos row and its `metadata` spans are
        made again from the manifest's row. A failure is a warning on that path."""
        if not given:
            return
        files = self.store.files()
        video_of = {p: v for p, v, st in zip(files["path"].to_pylist(), files["video_id"].to_pylist(), files["status"].to_pylist())
                    if st == "indexed"}  # fmt: skip
        videos = self.store.videos(["video_id", "title", "metadata", "duration"]).to_pylist()  # one read, not one per row
        stored = {r["video_id"]: r for r in videos}
        for src in given:
            row = stored.get(video_of.get(src.key))
            if row is None:
                continue
            title = src.title or row["title"]  # a manifest row without a title keeps the one the video has
            if row["title"] == title and row["metadata"] == metadata_json(src.metadata):
                continue
            video_id = row["video_id"]
            try:
                self.store.update_video(video_id, title=title, metadata=metadata_json(src.metadata))
                have = self.store.span_rows(video_id, "metadata")
                spans = metadata_spans(title, src.metadata, row["duration"]) + self._container_spans(src, title, row["duration"])
                self.store.replace_spans([r["span_id"] for r in have], span_table(video_id, spans, get_sentence_encoder()) if spans else None)
                self.summary.spans += len(spans)
            except Exception as exc:  # noqa: BLE001 - the video keeps the text it had
                self.summary.warnings.append({"path": src.key, "warning": f"the manifest's new title or metadata could not be stored: {type(exc).__name__}: {exc}"})

    def _container_spans(self, src: Source, title: str, duration: float) -> list:
        """The file's own tags and chapters again (`container_spans`), for metadata spans made anew; none
        where it cannot be probed now (an object, a file gone)."""
        if src.uri is not None:
            return []
        try:
            return container_spans(probe(local_path(src.key)), title, duration)
        except MediaError:
            return []

    def _resubtitle(self, video_id: str, paths: list[str]) -> None:
        rows = self.store.video_rows(video_id)
        if not rows:
            return
        duration = rows[0]["duration"]
        found, notes = [], []
        with kept_warnings(notes):  # a subtitle file read in part, or not at all: in the run's summary
            for path in sorted(paths):
                found += subtitle_spans(local_path(path), duration, self._roots, rows[0].get("fps"))
        self.summary.warnings += [{"path": sorted(paths)[0], "warning": n} for n in dict.fromkeys(notes)]
        if paths:  # the content's own tracks are among its subtitle spans too: read them again with the files
            own = local_path(sorted(paths)[0])
            try:
                info = probe(own)
                found += embedded_subtitle_spans(own, info.text_subtitles, duration)[0]
                if info.closed_captions:  # a whole decode: a server job's watchdog hears it going
                    found += closed_caption_spans(own, info.stream_index, duration, on_progress=lambda _t: self._heartbeat())[0]
            except MediaError:
                pass
        spans = unique_subtitles(found)
        seen = {(sp.start, sp.end, sp.text) for sp in spans}
        have = self.store.span_rows(video_id, "subtitle")
        if {(r["start"], r["end"], r["text"]) for r in have} == seen:
            return
        self.store.replace_spans([r["span_id"] for r in have], span_table(video_id, spans, get_sentence_encoder()) if spans else None)
        self.summary.spans += len(spans)

    def _clear_solved_problems(self, paths: list[Path], problems: list[tuple[str, str]]) -> None:
        """Forget the recorded "cannot list folder" failures of folders under `paths` that were listed
        this time (permissions fixed): `status` listed them after the fix, and only a reindex cleared them."""
        roots = [local_path(where_key(p)) for p in paths if not objectstore.is_uri(p) and Path(p).is_dir()]
        if not roots:
            return
        under = tuple(r.rstrip(os.sep) + os.sep for r in roots)
        files = self.store.files()
        now = {w for w, _ in problems}
        solved = [
            p
            for p, st, e in zip(files["path"].to_pylist(), files["status"].to_pylist(), files["error"].to_pylist())
            if st == "failed" and (e or "").startswith(LIST_ERROR) and p not in now
            and (local_path(p) in roots or local_path(p).startswith(under))
        ]  # fmt: skip
        self.store.forget_files(solved)

    def _report_problems(self, problems: list[tuple[str, str]]) -> None:
        """Record what discovery could not use. A problem already recorded, word for word, is not a new
        failure: it counts as skipped (unchanged), like a failed file that did not change, and stays listed
        by `status`."""
        if not problems:
            return
        files = self.store.files()
        known = {p: e for p, e, st in zip(files["path"].to_pylist(), files["error"].to_pylist(), files["status"].to_pylist()) if st == "failed"}
        for where, problem in problems:
            if known.get(path_key(where)) == readable_name(problem):
                self.summary.skipped += 1
            else:
                self._fail_path(where, problem)

    def _run_pipeline(self, todo: list[Source]) -> None:
        if not todo:
            return
        import torch  # here, not at the top: a run with nothing to do never pays its import (~2-3 s)

        _limit_malloc_arenas()

        # the encoder's threads: as set, else torch's default (one per core it sees) cut to the
        # cores this process may use (a container's CPU quota is invisible to torch)
        torch.set_num_threads(self.settings.threads or min(torch.get_num_threads(), usable_cores()))
        self.backbone  # load (and check) the model before any decoder starts
        pool = self._decoder_pool()
        self._turns = pool.paused if not self._overlap() else contextlib.nullcontext
        items: queue.Queue = queue.Queue(maxsize=self.settings.decode_ahead)
        stop = threading.Event()
        feeder = threading.Thread(target=self._feed, args=(todo, pool, items, stop), daemon=True)
        feeder.start()
        completed = False
        try:
            self._consume(items)
            completed = True
        finally:
            if self._current is not None:
                self._current.cancel()
            stop.set()
            while feeder.is_alive():  # unblock a feeder waiting on a full queue
                _cancel_queued(items)
                feeder.join(0.05)
            _cancel_queued(items)
            pool.shutdown(kill=not completed)

    def _decoder_pool(self) -> DecoderPool:
        """This run's decoder processes (the Ray engine's fused actor hands in the pool it started decoding
        with while its model loaded: ray_fused.py)."""
        return DecoderPool(self.settings.decode_workers or default_decode_workers(), self.settings.decode_stall_seconds)

    def _feed(self, todo: list[Source], pool: DecoderPool, items: queue.Queue, stop: threading.Event) -> None:
        """Hash each file and queue its decode; content already indexed (or claimed by an earlier file of
        this run) is linked without decoding, once that content's outcome is known."""
        indexed = self.store.indexed_ids()
        failed_before = {} if self.settings.retry_failed else self.store.failed_content()
        claimed: set[str] = set()
        try:
            for src in todo:
                if stop.is_set():
                    return
                try:
                    vid = content_hash(src.path) if src.uri is None else object_hash(src)
                except (OSError, objectstore.ObjectStoreError) as exc:
                    items.put((src, None, f"{READ_ERROR}: {getattr(exc, 'strerror', None) or exc}"))
                    continue
                first = failed_before.get(vid)
                if first is not None and first[0] != src.key:  # this content failed before, at another path
                    items.put((src, vid, f"same content as {first[0]}, which failed: {first[1]}"))
                    continue
                if vid in indexed or vid in claimed:
                    items.put(_Item(src, vid, None))
                    continue
                claimed.add(vid)
                items.put(_Item(src, vid, pool.stream(self._job(src))))
        finally:
            items.put(_DONE)

    @property
    def decoder_reads_sound_cues(self) -> bool:
        """Whether the decoders read the sound cues from the soundtrack they stream for speech: the
        model has no audio tower whose stream the indexer would read them from (both engines ask)."""
        return bool(self.settings.sound_cues) and self.audio_encoder is None

    def _job(self, src: Source) -> DecodeJob:
        return decode_job(self.settings, media_location(src), self.backbone.image_size, sound_cues=self.decoder_reads_sound_cues)

    def _consume(self, items: queue.Queue) -> None:
        buf = _EncodeBuffer()
        while True:
            self._poll()  # between items, and every POLL_SECONDS while the feeder hashes a large file
            try:
                got = items.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if got is _DONE:
                break
            if isinstance(got, tuple):  # (source, content hash or None, error) from the feeder
                self._fail(*got)
                self.progress.advance(videos=1)
                continue
            item: _Item = got
            if item.stream is None:
                self._link(item.source, item.video_id)
                continue
            self._first_path[item.video_id] = item.source.key
            self._current = item.stream
            video = _Video(item)
            try:
                for reply in item.stream:
                    if isinstance(reply, Started):
                        video.probe = reply.probe
                    elif isinstance(reply, Chunk):
                        buf.add(video, reply)
                        video.frame_start.append(reply.unit_start)
                        video.changes.append(reply.changes)
                        if buf.frames >= self.batch_size:
                            self._encode(buf)
                    elif isinstance(reply, Finished):
                        video.finished = reply
                        if video.waiting:
                            buf.done.append(video)
                        else:
                            self._complete(video)
                    elif isinstance(reply, Failed):
                        buf.drop(video)
                        self._fail_video(video, reply.error)
                    elif isinstance(reply, Working):
                        self._heartbeat()
                    else:  # pragma: no cover - a protocol bug
                        raise TypeError(f"unexpected decoder reply {type(reply).__name__}")
                    self._poll()
            except DecoderStartError as exc:
                raise IndexRunError(f"{exc}; nothing was recorded for the files not yet indexed, run again once fixed") from exc
            if video.finished is not None and items.empty():
                self._encode(buf)  # nothing else is ready: do not hold frames back
        self._encode(buf)

    def _overlap(self) -> bool:
        """Run decoders during encoding only where they do not take the encoder's cores."""
        mode = self.settings.overlap
        if mode != "auto":
            return mode == "on"
        if getattr(self.backbone, "device", None) is not None and self.backbone.device.type != "cpu":
            return True
        import torch

        workers = self.settings.decode_workers or default_decode_workers()
        return usable_cores() >= torch.get_num_threads() + workers

    # -- encoding ------------------------------------------------------------------------------
    def _encode(self, buf: _EncodeBuffer) -> None:
        """Encode the buffered frames of several videos in shared batches, then hand the units back per
        video. If the shared batch fails, each video is encoded alone, so one bad video fails alone."""
        chunks, done = buf.chunks, buf.done
        buf.chunks, buf.done = [], []
        if chunks:
            videos = list(dict.fromkeys(v for v, _ in chunks))
            try:
                self._encode_videos(videos, chunks)
            except Exception:  # noqa: BLE001 - find the video that broke the batch
                for video in videos:
                    try:
                        self._encode_videos([video], [(v, c) for v, c in chunks if v is video])
                    except Exception as exc:  # noqa: BLE001
                        self._fail_video(video, f"the encoder failed on this video: {type(exc).__name__}: {exc}")
            self.progress.advance(frames=sum(len(c.frames) for _, c in chunks))
        for video in done:
            if not video.failed:
                self._complete(video)

    def _encode_videos(self, videos: list[_Video], chunks: list[tuple[_Video, Chunk]]) -> None:
        index = {v: i for i, v in enumerate(videos)}
        frames = np.concatenate([c.frames for _, c in chunks])
        starts = np.concatenate([c.unit_start for _, c in chunks])
        ends = np.concatenate([c.unit_end for _, c in chunks])
        owner = np.repeat([index[v] for v, _ in chunks], [len(c.frames) for _, c in chunks])
        with self._turns():
            cue, strength, change = frame_cues_and_strength(frames, owner, with_change=True)  # read once: the head, cues, outlines
            vectors, u_start, u_end, u_owner = self.backbone.encode_units(frames, starts, ends, owner, self.batch_size, cues=cue)
            cues = unit_where_cues(frames, starts, ends, owner, u_start, u_owner, (cue, strength))  # the motion channel reads these
            shapes = unit_silhouettes(frame_silhouettes(change, strength >= CUE_MIN_STRENGTH),
                                      lambda v: per_unit_mean(v, starts, ends, owner, u_start, u_owner))  # the shape channel's
        bounds = np.searchsorted(u_owner, np.arange(len(videos) + 1))  # units come back grouped by video
        for i, video in enumerate(videos):
            a, b = bounds[i], bounds[i + 1]
            video.unit_vectors.append(vectors[a:b])
            video.unit_start.append(u_start[a:b])
            video.unit_end.append(u_end[a:b])
            video.unit_cues.append(cues[a:b])
            video.unit_shapes.append(shapes[a:b])
            video.waiting = 0

    def _complete(self, video: _Video) -> None:
        """All of a video's frames are encoded: segments, audio tokens and rows for the next commit."""
        try:
            self._pending.append(self._encoded(video))
        except Exception as exc:  # noqa: BLE001 - a bug on one video's data must cost only that video
            self._fail_video(video, f"could not assemble the index rows: {type(exc).__name__}: {exc}")
            return
        self.progress.advance(videos=1)
        self._maybe_flush()

    def _encoded(self, video: _Video) -> EncodedVideo:
        s, info, item, finished = self.settings, video.probe, video.item, video.finished
        assert info is not None and finished is not None
        vectors = np.concatenate(video.unit_vectors)
        unit_start, unit_end = np.concatenate(video.unit_start), np.concatenate(video.unit_end)
        frame_start, changes = np.concatenate(video.frame_start), np.concatenate(video.changes)
        seg_duration = float(unit_end.max())  # the decodable part (all of it, unless the file ends early)
        segs = make_segments(seg_duration, changes, frame_start, s.window_seconds, s.window_stride, s.shot_threshold)
        warnings = list(finished.warnings)
        audio = self._audio(video, warnings)
        src = item.source
        title = src.title or _name_title(src.key)  # the file's name (readable where it is not valid UTF-8); _repoint reads it so
        # subtitle files are looked for next to a local video only (an object's neighbours are not listed)
        with kept_warnings(warnings):  # a subtitle file read in part, or not at all: kept with the video, not only logged
            text = sidecar_spans(src.path, title, src.metadata, info.duration, self._roots, info.fps) if src.uri is None else metadata_spans(title, src.metadata, info.duration)
        text += container_spans(info, title, info.duration)  # the file's own tags and named chapters
        spans = [sp for sp in (*finished.spans, *text) if sp.source != "subtitle"]
        spans += unique_subtitles(sp for sp in (*finished.spans, *text) if sp.source == "subtitle")  # own track and sidecar: once
        return EncodedVideo(
            video={
                "video_id": item.video_id,
                "path": src.key,
                "title": title,
                "metadata": metadata_json(src.metadata),
                "duration": info.duration,
                "fps": info.fps,
                "width": info.width,
                "height": info.height,
                "size_bytes": src.size,
                "has_audio": info.has_audio,
                "n_units": len(vectors),
                "decoder": finished.decoder,
            },
            unit_start=unit_start,
            unit_end=unit_end,
            unit_vectors=vectors,
            unit_cues=np.concatenate(video.unit_cues),
            unit_shapes=np.concatenate(video.unit_shapes),
            seg_kind=segs.kind,
            seg_start=segs.start,
            seg_end=segs.end,
            seg_vectors=pool_segments(segs, unit_start, unit_end, vectors),
            audio_start=audio[0],
            audio_end=audio[1],
            audio_vectors=audio[2],
            sound_cues=audio[3],
            files=[self._file_row(src, item.video_id, "indexed", "; ".join(warnings) or None)],
            spans=spans,
        )

    def _audio(self, video: _Video, warnings: list[str]) -> tuple:
        """Audio tokens from the soundtrack (where the model has an audio tower) and its sound cues
        (encoders/sound_cues.py: for every model, the sound channel's), both read from one stream from
        ffmpeg (bounded memory); a failure is a warning and the visual index is kept."""
        info, cues = video.probe, self.settings.sound_cues
        if info is None:
            return None, None, None, None
        if not info.has_audio:  # no soundtrack: silent, which a query for silence should find
            return None, None, None, silent_rows(info.duration) if cues else None
        encoder = self.audio_encoder
        if encoder is None and not cues:
            return None, None, None, None
        if encoder is None and video.finished is not None and video.finished.sound is not None:
            return None, None, None, video.finished.sound  # read by the decoder from its speech stream
        failed: list[Exception] = []
        try:
            with self._turns():
                rate = getattr(getattr(self.backbone, "audio_tower", None), "sample_rate", None) if encoder is not None else None  # CLAP: 48 kHz
                reader = SoundCueReader(rate or SPEECH_RATE)
                audio = stream_audio(media_location(video.item.source), rate or SPEECH_RATE, stream=info.audio_stream)
                if cues:
                    audio = tapped(audio, reader.feed, failed)
                if encoder is not None:
                    starts, ends, vectors = encoder(audio)
                else:
                    collections.deque(audio, maxlen=0)  # the cues only
                    vectors = ()
        except Exception as exc:  # noqa: BLE001 - the visual index is kept
            warnings.append(f"audio: {exc}")
            return None, None, None, None
        sound = None
        try:
            if failed:
                raise failed[0]
            if cues:
                sound = reader.rows()
                sound[:, 0] += info.audio_start
        except Exception as exc:  # noqa: BLE001 - the audio tokens and the visual index are kept
            warnings.append(f"sound cues: {type(exc).__name__}: {exc}")
        if not len(vectors):
            return None, None, None, sound
        return starts + info.audio_start, ends + info.audio_start, vectors, sound

    # -- outcomes ------------------------------------------------------------------------------
    def _link(self, src: Source, video_id: str) -> None:
        """A path whose content is indexed, or is being indexed from another path in this run."""
        outcome = self._outcome.get(video_id)
        if outcome is None and video_id in self._first_path:
            self._parked.setdefault(video_id, []).append(src)  # settled when that content commits or fails
            return
        if outcome is not None and outcome[0] == "failed":
            self._fail(src, video_id, f"same content as {self._first_path.get(video_id, 'another file')}, which failed: {outcome[1]}")
        else:
            self._pending_files.append(self._file_row(src, video_id, "indexed", None))
            self._links.append((src, video_id))
            self._linked_videos.add(video_id)
            self.summary.linked += 1
        self.progress.advance(videos=1)
        self._maybe_flush()

    def _apply_links(self) -> None:
        """What a linked path brings besides its `files` row, once its content is committed: the text a
        manifest gives it (title, description, tags: `metadata` spans, and the title where the video had only
        a file name), and a live path for a video whose stored path no longer exists (a moved file). A
        failure here is a warning on that path; the link stands."""
        links, self._links = self._links, []
        if not links:
            return
        rows: dict[str, dict] = {}
        for src, video_id in links:
            manifest = src.title is not None or bool(src.metadata)
            if not manifest and video_id in self._first_path:
                continue  # indexed in this run from a path that exists: nothing to apply
            try:
                if video_id not in rows:
                    found = self.store.video_rows(video_id)
                    if not found:
                        continue
                    rows[video_id] = found[0]
                row = rows[video_id]
                if not objectstore.is_uri(row["path"]) and not os.path.lexists(local_path(row["path"])):
                    self._repoint(video_id, src.key, row)
                if manifest:
                    self._link_metadata(src, video_id, row)
            except Exception as exc:  # noqa: BLE001 - the link itself is recorded
                warning = f"linked to content already indexed, but its manifest text or path could not be applied: {type(exc).__name__}: {exc}"
                self.summary.warnings.append({"path": src.key, "warning": warning})
                for f in self._pending_files:
                    if f["path"] == src.key and f["status"] == "indexed":
                        f["error"] = warning

    def _link_metadata(self, src: Source, video_id: str, row: dict) -> None:
        """A manifest row for content indexed under another path: its text becomes the video's too."""
        meta = row["metadata"] if isinstance(row["metadata"], dict) else {}
        merged = {**src.metadata, **meta}  # what the video had wins; the manifest adds what it lacked
        values: dict = {}
        if merged != meta:
            values["metadata"] = metadata_json(merged)
            row["metadata"] = merged
        if src.title and row["title"] == _name_title(row["path"]):
            values["title"] = row["title"] = src.title  # a file name gives way to a manifest's title
        if values:
            self.store.update_video(video_id, **values)
        spans = metadata_spans(src.title, src.metadata, row["duration"])
        have = {r["text"] for r in self.store.span_rows(video_id, "metadata")}
        spans = [sp for sp in spans if sp.text not in have]
        if spans:
            self.store.replace_spans([], span_table(video_id, spans, get_sentence_encoder()))
            self.summary.spans += len(spans)

    def _resolve(self, video_id: str, status: str, error: str | None = None) -> None:
        self._outcome[video_id] = (status, error)
        for src in self._parked.pop(video_id, []):
            self._link(src, video_id)

    def _settle_parked(self) -> None:
        """Copies whose content has an outcome are recorded; the rest (a run that stopped) are left for
        the next run, unrecorded."""
        for video_id in [v for v in self._parked if v in self._outcome]:
            self._resolve(video_id, *self._outcome[video_id])
        self._parked.clear()
        self._apply_links()
        files, self._pending_files = self._pending_files, []
        self._record_files(files)

    def _fail_video(self, video: _Video, error: str) -> None:
        if video.failed:
            return
        video.failed = True
        self._fail(video.item.source, video.item.video_id, error)
        self.progress.advance(videos=1)

    def _fail(self, src: Source, video_id: str | None, error: str) -> None:
        self._pending_files.append(self._file_row(src, video_id, "failed", error))
        self.summary.failed += 1
        self.summary.failures.append({"path": src.key, "error": error})
        if video_id is not None and video_id in self._first_path and self._first_path[video_id] == src.key:
            self._resolve(video_id, "failed", error)
        self._maybe_flush()

    def _fail_path(self, where: str, error: str) -> None:
        self._record_files([{"path": where, "size": 0, "mtime": 0.0, "video_id": None, "status": "failed", "error": error}])
        self.summary.failed += 1
        self.summary.failures.append({"path": where, "error": error})

    def _record_files(self, rows: list[dict]) -> None:
        """Write `files` rows; if the batch is refused, row by row, so one row that cannot be stored costs
        that file only (listed in the summary with why), never the others or the run."""
        if not rows:
            return
        try:
            self.store.record_files(rows)
            return
        except Exception:  # noqa: BLE001 - find the row that broke the batch
            pass
        errors = []
        for row in rows:
            try:
                self.store.record_files([row])
            except Exception as exc:  # noqa: BLE001
                errors.append((row, exc))
        # every row refused, for a reason that is not a row's data (a full disk, permissions): the index is
        # the problem, and encoding on would be lost work
        if len(errors) == len(rows) and (len(rows) > 1 or not isinstance(errors[0][1], (ValueError, TypeError))):
            raise IndexRunError(f"the index at {self.store.path} refused every write ({type(errors[0][1]).__name__}: {errors[0][1]}); what was committed before is kept")
        for row, exc in errors:
            if row["status"] == "failed":
                continue  # already listed with its reason
            self.summary.failed += 1
            self.summary.failures.append({"path": readable_name(str(row["path"])),
                                          "error": f"could not be recorded in the index: {type(exc).__name__}: {exc}"})  # fmt: skip

    @staticmethod
    def _file_row(src: Source, video_id: str | None, status: str, error: str | None) -> dict:
        return {"path": src.key, "size": src.size, "mtime": src.mtime, "video_id": video_id or None,
                "status": status, "error": error}  # fmt: skip

    # -- committing ----------------------------------------------------------------------------
    def _maybe_flush(self) -> None:
        if len(self._pending) >= self.settings.flush_videos or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self._flush()

    def _flush(self) -> None:
        """Commit the pending videos (vectors and spans, then their visibility rows), then files that only
        point at content already committed, so a `files` row never names a video that is not visible."""
        batch, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        if batch:
            self._embed_spans(batch)
            try:
                self.store.commit(batch)
                committed = batch
            except Exception:  # noqa: BLE001 - retry one by one, so one bad video fails alone
                committed = self._commit_each(batch)
            for v in committed:
                self.summary.indexed += 1
                self.summary.units += len(v.unit_vectors)
                self.summary.video_seconds += v.video["duration"]
                if v.files[0]["error"]:
                    self.summary.warnings.append({"path": v.files[0]["path"], "warning": v.files[0]["error"]})
                self._resolve(v.video["video_id"], "indexed")
        self._apply_links()
        files, self._pending_files = self._pending_files, []
        self._record_files(files)

    def _commit_each(self, batch: list[EncodedVideo]) -> list[EncodedVideo]:
        self.store.purge_videos([v.video["video_id"] for v in batch])  # what the failed batch wrote
        committed, errors = [], []
        for v in batch:
            try:
                self.store.commit([v])
                committed.append(v)
            except Exception as exc:  # noqa: BLE001
                self.store.purge_videos([v.video["video_id"]])
                errors.append((v, exc))
        if errors and not committed and len(batch) > 1:
            raise IndexRunError(f"the index at {self.store.path} refused every write ({type(errors[0][1]).__name__}: {errors[0][1]}); what was committed before is kept")
        for v, exc in errors:
            src = v.files[0]
            self._fail(Source.from_key(src["path"], src["size"], src["mtime"]), v.video["video_id"],
                       f"could not be written to the index: {type(exc).__name__}: {exc}")  # fmt: skip
        return committed

    def _embed_spans(self, batch: list[EncodedVideo]) -> None:
        """Timed text -> `spans` rows with sentence vectors (the encoder loads on first use only). A video
        whose text cannot be embedded keeps its visual index, with a warning."""
        todo = [v for v in batch if v.spans]
        if not todo:
            return
        encoder = get_sentence_encoder()
        for v in todo:
            try:
                v.span_rows = span_table(v.video["video_id"], v.spans, encoder)
                self.summary.spans += v.span_rows.num_rows
            except Exception as exc:  # noqa: BLE001
                v.span_rows = None
                warning = f"text channels: could not embed {len(v.spans)} spans: {type(exc).__name__}: {exc}"
                row = v.files[0]
                row["error"] = "; ".join(filter(None, [row.get("error"), warning]))


def _name_title(key: str) -> str:
    """The title a file's name gives a video (what `_encoded` uses when a manifest gives none)."""
    return readable_name(PurePosixPath(local_path(key)).stem)


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena; with the feeder, decoder-pool and torch threads of a
    long run that held freed memory and let the indexer's peak grow with a video's length. Two arenas
    (MALLOC_ARENA_MAX, set for the decoders too) keep it flat. Not glibc: nothing to do."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _cancel_queued(items: queue.Queue) -> None:
    """Empty the queue of decoded items, cancelling their decodes (a run that stopped)."""
    while True:
        try:
            got = items.get_nowait()
        except queue.Empty:
            return
        if isinstance(got, _Item) and got.stream is not None:
            got.stream.cancel()


def open_store_for(settings: Settings, backbone, rebuild: bool = False) -> Store:
    if rebuild:
        store = Store.open(settings.db, None, create=True)
        store.rebuild(backbone.fingerprint)
        return store
    return Store.open(settings.db, backbone.fingerprint, create=True)
