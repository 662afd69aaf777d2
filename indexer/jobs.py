"""Index and reindex jobs, for a process that serves the index (the HTTP server, and through it the UI).

Jobs run one at a time, in order, on a thread of this process, as an `IndexRun` with the server's
own settings, so a job indexes with exactly what the server was started with: its config file,
its model and weights, its token merging, its sampling and channels.

**In-process, not a subprocess** (the indexer's decision, and why):
- the part of indexing that can crash on a hostile file, decoding, already runs in decoder
  processes (`worker.py`), so a bad file costs that file, never the server;
- the model is the one the server has loaded for the same index (same fingerprint): a job does not
  load a second copy (~2-5 s and hundreds of MB for ViT-B-32), and cannot pick another one;
- progress and the summary are typed values from the pipeline's callbacks (`JobProgress`,
  `RunSummary`), not lines parsed from a child's stdout and a file of keys written elsewhere;
- the store's write lock still keeps one writer per index (a `vidsearch index` run in a shell and
  a job exclude each other), and searches keep reading the last committed version meanwhile.
A job survives the client that asked for it; it does not survive the server: it is a thread of the
server's process, and its decoder processes end with their pipes. Each record names its owner (host,
pid, process start: `ownership.py`), so the next server on the index marks failed only jobs whose
owner is gone, never those of another server still running on the same index; indexing resumes where
a failed job stopped.

**Jobs end.** `cancel(id)` drops a queued job, or stops a running one at its next step (the pipeline
polls between decoder replies and while it waits for one); a running job that reports no progress
for `job_stall_seconds` is stopped the same way and marked failed. What a stopped job committed stays.

**Several servers on one index** (behind a load balancer) share its jobs through those records: a
job started on one is found on the others (`get` and `list` read the records other servers keep up to
date), and a job submitted while another process writes to the index waits, queued, for its turn
instead of failing on the write lock.

Job records are kept in `<db>/.jobs/<id>.json`, so they outlive a restart. While there is no index
yet they stay in memory: a first job that fails (an offline model, a bad path) leaves no directory
behind that would look like a broken index. They are kept for a while, not forever: the newest
`keep_finished` finished jobs (200) stay, older finished ones are dropped, records and memory, at
start, as each job ends and as jobs are listed (every listing read every record, and a key holder or
a polling UI made them grow without bound: 4.9 MB for 112 jobs); a queued or running job is never
dropped. A job's paths are kept once each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from vidsearch.api_models import JobInfo, JobProgress
from vidsearch.config import Settings
from vidsearch.encoders import ModelLoadError, backend_options, load_backbone, model_spec
from vidsearch.fingerprint import FingerprintMismatch
from vidsearch.index_lock import writer_busy
from vidsearch import objectstore
from vidsearch.store import Store, StoreError, WriterBusy, index_write_lock

from .ownership import is_gone, this_process
from .pipeline import IndexRun, IndexRunError, Progress, open_store_for

__all__ = ["JobManager", "JobTracker"]

log = logging.getLogger(__name__)
REPORT_SECONDS = 0.25  # progress is recorded (and the server told) at most this often
WAIT_SECONDS = 0.5  # how often a queued job looks whether another process still writes to the index
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what a record's file name may be (ids are read from requests)
FINISHED = ("succeeded", "failed", "cancelled")
# failures whose message says what to do; anything else is reported with its type and logged
EXPLAINED = (ModelLoadError, StoreError, FingerprintMismatch, FileNotFoundError, IndexRunError)


class JobStopped(Exception):
    """A job was cancelled, or stalled: raised inside the run at its next step."""

    def __init__(self, reason: str, cancelled: bool):
        super().__init__(reason)
        self.cancelled = cancelled


class JobTracker(Progress):
    """The pipeline's progress callbacks, kept as a `JobProgress` and reported as they come;
    `request_stop()` from another thread makes the run raise `JobStopped` at its next `poll()` or
    `heartbeat()` (never from `start`/`advance`: those are also called while a stopping run records
    what it finished, which must not be cut short)."""

    def __init__(self, report: Callable[[JobProgress], None]):
        self.progress = JobProgress()
        self._report = report
        self._last = 0.0
        self.active_at = time.monotonic()  # the last sign of progress (for the stall timeout)
        self._stop: JobStopped | None = None

    def request_stop(self, reason: str, cancelled: bool) -> None:
        self._stop = self._stop or JobStopped(reason, cancelled)

    @property
    def stop(self) -> JobStopped | None:
        """The stop asked for (a cancel, or the stall watchdog), if any."""
        return self._stop

    def poll(self) -> None:
        if self._stop is not None:
            raise self._stop

    def heartbeat(self) -> None:
        self.active_at = time.monotonic()
        self.poll()

    def start(self, total_videos: int) -> None:
        self.progress = self.progress.model_copy(update={"total": total_videos})
        self._send(force=True)
        self.active_at = time.monotonic()

    def advance(self, videos: int = 0, frames: int = 0) -> None:
        p = self.progress
        self.progress = p.model_copy(update={"done": p.done + videos, "frames": p.frames + frames})
        self._send()
        self.active_at = time.monotonic()

    def stop(self) -> None:
        self._send(force=True)

    def _send(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= REPORT_SECONDS:
            self._last = now
            self._report(self.progress)


class JobManager:
    """Queues jobs and runs them on one worker thread; `get`/`list` are safe from any thread.

    `backbone()` returns the model the server has open for this index (None when it has none yet);
    `on_progress()` is called as a job commits batches (the server looks for the new version);
    `on_finish(backbone)` after a job succeeded, with the model it used (a server that had no index
    can open one with it).
    """

    keep_finished = 200  # finished jobs whose records are kept (the newest); queued and running ones always are

    def __init__(
        self,
        settings: Settings,
        backbone: Callable[[], object | None] = lambda: None,
        on_progress: Callable[[], None] | None = None,
        on_finish: Callable[[object], None] | None = None,
    ):
        self.settings = settings
        self.db = Path(settings.db)
        self.dir = self.db / ".jobs"
        self._backbone = backbone
        self.on_progress = on_progress or (lambda: None)
        self.on_finish = on_finish or (lambda backbone: None)
        self._jobs: dict[str, JobInfo] = {}
        self._mine: set[str] = set()  # jobs submitted to this process (the others are read from their records)
        self._lock = threading.Lock()
        self._queue: queue.Queue[str] = queue.Queue()
        self._owner = this_process()
        self._running: tuple[str, JobTracker] | None = None
        self._load()
        self._worker = threading.Thread(target=self._run_forever, name="vidsearch-jobs", daemon=True)
        self._worker.start()
        self._watchdog = threading.Thread(target=self._watch, name="vidsearch-jobs-watchdog", daemon=True)
        self._watchdog.start()

    # -- records ---------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.dir.is_dir():
            return
        for f in self.dir.glob("*.json"):
            job = self._read_record(f)
            if job is not None:
                self._jobs[job.id] = job
        self._prune()

    def _read_record(self, f: Path) -> JobInfo | None:
        """A job as its record says, None where there is none (or it cannot be read); a queued or running
        job whose owner process is gone reads as failed (the server that ran it stopped)."""
        try:
            record = json.loads(f.read_text())
            owner = record.pop("_owner", None)
            job = JobInfo.model_validate(record)
        except (OSError, ValueError):
            return None
        if job.state in ("queued", "running") and is_gone(owner):  # the server that ran it is gone
            job = job.model_copy(update={"state": "failed", "error": "the server stopped before the job finished; submit it again (indexing resumes where it stopped)", "finished_at": time.time()})
        return job

    def _others(self, job_id: str | None = None) -> None:
        """Bring other servers' jobs (on the same index) up to date from their records: one job, or all.
        Jobs of this process are its own to tell, from memory."""
        if not self.dir.is_dir():
            return
        if job_id is not None:
            files = [self.dir / f"{job_id}.json"] if JOB_ID.fullmatch(job_id) else []
        else:
            files = list(self.dir.glob("*.json"))
        for f in files:
            if f.stem in self._mine:
                continue
            with self._lock:
                known = self._jobs.get(f.stem)
            if known is not None and known.state in FINISHED:
                continue  # a finished job's record does not change
            job = self._read_record(f)
            if job is not None:
                with self._lock:
                    self._jobs[job.id] = job

    def _save(self, job: JobInfo) -> None:
        """Persist a record, only inside an index directory that exists (see the module docstring)."""
        if not self.db.is_dir():
            return
        self.dir.mkdir(exist_ok=True)
        tmp = self.dir / f"{job.id}.tmp"
        tmp.write_text(json.dumps({**job.model_dump(mode="json"), "_owner": self._owner}))
        os.replace(tmp, self.dir / f"{job.id}.json")

    def _update(self, job_id: str, **changes) -> JobInfo:
        with self._lock:
            job = self._jobs[job_id].model_copy(update=changes)
            self._jobs[job_id] = job
        self._save(job)
        return job

    def _prune(self) -> None:
        """Drop the finished jobs past the `keep_finished` that finished last, from memory and from disk
        (another server's too: a finished record no longer changes, and each server prunes its own
        memory). By when they finished, not when they were made: a long job's result was deleted the
        moment it finished where 200 jobs made after it had finished first, and its waiter got a 404."""
        with self._lock:
            finished = sorted((j for j in self._jobs.values() if j.state in FINISHED), key=lambda j: -(j.finished_at or j.created_at))
            dropped = [j.id for j in finished[self.keep_finished :]]
            for job_id in dropped:
                del self._jobs[job_id]
                self._mine.discard(job_id)
        for job_id in dropped:
            if self.dir.is_dir():
                (self.dir / f"{job_id}.json").unlink(missing_ok=True)
                self._cancel_file(job_id).unlink(missing_ok=True)

    def submit(self, kind: str, paths: list[str]) -> JobInfo:
        """Queue a job; its paths once each, in the order given (a request may name 1000, and the
        record kept each of them, repeats included)."""
        paths = list(dict.fromkeys(paths))
        job = JobInfo(id=uuid.uuid4().hex[:12], kind=kind, paths=paths, state="queued", created_at=time.time())
        with self._lock:
            self._jobs[job.id] = job
            self._mine.add(job.id)
        self._save(job)
        self._queue.put(job.id)
        return job

    def cancel(self, job_id: str) -> JobInfo | None:
        """Cancel a queued job now, or ask a running one to stop (it is marked cancelled when it has);
        None for an unknown id; a finished job as it is. Another server's job (on the same index) is asked
        through a file beside its record, which its server looks for every second (`_watch`)."""
        self._others(job_id)
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in ("queued", "running"):
                return job
            if job_id not in self._mine:
                self._cancel_file(job_id).touch()
                return job
            if self._running is not None and self._running[0] == job_id:
                self._running[1].request_stop("cancelled by a client", cancelled=True)
                return job
            if job.state == "running":  # not started by this process's runner after all: nothing to stop here
                return job
            job = self._jobs[job_id] = job.model_copy(update={"state": "cancelled", "error": "cancelled by a client", "finished_at": time.time()})
        self._save(job)
        return job

    def _cancel_file(self, job_id: str) -> Path:
        return self.dir / f"{job_id}.cancel"

    def _cancel_asked(self) -> None:
        """Act on cancellations other servers were asked for: the running job stops at its next step,
        a queued one is cancelled now."""
        if not self.dir.is_dir():
            return
        for f in self.dir.glob("*.cancel"):
            if f.stem in self._mine:
                f.unlink(missing_ok=True)
                self.cancel(f.stem)
            else:  # another server's: left to it, unless its job has ended (or its server is gone)
                record = self._read_record(self.dir / f"{f.stem}.json")
                if record is None or record.state in FINISHED:
                    f.unlink(missing_ok=True)

    def _watch(self, every: float = 1.0) -> None:
        """Stop a running job that has shown no progress for `job_stall_seconds`, and act on cancellations
        asked of other servers."""
        limit = self.settings.job_stall_seconds
        while True:
            time.sleep(min(every, limit / 4))
            try:
                self._cancel_asked()
            except OSError:
                log.exception("jobs: reading cancellations")
            running = self._running
            if running is not None and time.monotonic() - running[1].active_at > limit:
                running[1].request_stop(f"no progress for {limit:g} s (job_stall_seconds): stopped; what was committed is kept", cancelled=False)

    def get(self, job_id: str) -> JobInfo | None:
        self._others(job_id)
        with self._lock:
            return self._jobs.get(job_id)

    def list(self, state: str | None = None, limit: int | None = None) -> list[JobInfo]:
        """Jobs, newest first: those in `state` (any when None), at most `limit` of them."""
        self._others()
        self._prune()  # what other servers' jobs added since this one's last job ended
        with self._lock:
            jobs = sorted((j for j in self._jobs.values() if state is None or j.state == state), key=lambda j: -j.created_at)
        return jobs[:limit] if limit is not None else jobs

    # -- running -----------------------------------------------------------------------------------
    def _run_forever(self) -> None:
        while True:
            job_id = self._queue.get()
            try:
                self._run(job_id)
            except Exception as exc:  # noqa: BLE001 - a job runner bug must not kill the runner
                log.exception("job %s: runner error", job_id)
                self._update(job_id, state="failed", error=f"job runner error: {exc}", finished_at=time.time())
            self._prune()

    def _model(self, stored) -> object:
        """The server's model for this index when it has one open, else the one rule's choice."""
        backbone = self._backbone()
        if backbone is not None:
            return backbone
        s = self.settings
        return load_backbone(**model_spec(s, stored), precision=s.precision, device=s.device, **backend_options(s))

    def job_roots(self) -> list[str]:
        """The library roots a job may read under (the server's `library_roots`; none configured: no job
        gets this far, since check_job_paths refuses them all)."""
        return [str(r) for r in self.settings.library_roots]

    def _stored_fingerprint(self):
        try:
            return Store.open(self.db).stored_fingerprint()
        except StoreError:  # no index yet
            return None

    def _run(self, job_id: str) -> None:
        """Run a queued job once no other process writes to the index (another server's job, a `vidsearch
        index` in a shell): it waits queued, cancellable, and goes back to waiting if another writer took
        the lock between the look and its start."""
        while True:
            while writer_busy(self.db):
                with self._lock:
                    if not self._queued(job_id):  # cancelled while it waited
                        return
                time.sleep(WAIT_SECONDS)
            tracker = JobTracker(lambda p: self._progress(job_id, p))
            with self._lock:  # a cancel sees the job either queued or running, never in between
                if not self._queued(job_id):  # cancelled while it waited
                    return
                job = self._jobs[job_id] = self._jobs[job_id].model_copy(update={"state": "running"})
                self._running = (job_id, tracker)
            self._save(job)
            try:
                finished = self._index(job, tracker)
            except BaseException:
                self._running = None
                raise
            with self._lock:  # a cancel sees the job stopping (its tracker) or queued again, never neither
                self._running = None
                if finished:
                    return
                if tracker.stop is not None:  # stopped before it started: it did nothing
                    stop = tracker.stop
                    job = self._jobs[job_id] = self._jobs[job_id].model_copy(update={
                        "state": "cancelled" if stop.cancelled else "failed", "error": str(stop), "finished_at": time.time()})
                    self._save(job)
                    return
                job = self._jobs[job_id] = self._jobs[job_id].model_copy(update={"state": "queued"})
            self._save(job)

    def _queued(self, job_id: str) -> bool:
        """Whether a job still waits to run (under the lock): one cancelled while queued may also have been
        pruned since (`_prune`), and its id is still in the queue."""
        job = self._jobs.get(job_id)
        return job is not None and job.state == "queued"

    def _index(self, job: JobInfo, tracker: JobTracker) -> bool:
        """Run the job and record how it ended; False (nothing recorded) where another process held the
        write lock: the job waits for its turn again. The lock is held from before the job looks at the
        index to after a failed first job has removed what it made, so that removal never takes another
        writer's files (an index made by a `vidsearch index` that started while this job loaded its model)."""
        remote = objectstore.is_uri(str(self.settings.db))
        created = not remote and not self.db.exists()
        if created:
            self.db.mkdir(parents=True, exist_ok=True)
        try:
            with contextlib.nullcontext() if remote else index_write_lock(self.db):
                return self._index_locked(job, tracker, None if created or remote else set(os.listdir(self.db)))
        except WriterBusy:
            return False

    def _index_locked(self, job: JobInfo, tracker: JobTracker, existing: set[str] | None) -> bool:
        job_id = job.id
        stored = self._stored_fingerprint() if existing is not None else None
        had_index = stored is not None
        run = None
        try:
            backbone = self._model(stored)
            store = open_store_for(self.settings, backbone)
            run = IndexRun(store, backbone, self.settings, progress=tracker)
            # a job's paths lie under the library roots (server/library.check_job_paths); so must what
            # they lead to: a manifest under a root must not name files elsewhere on the server's disk
            summary = run.run([Path(p) for p in job.paths], prune=job.kind == "reindex", roots=self.job_roots(), locked=True)
        except Exception as exc:  # noqa: BLE001 - every failure is the job's, reported on it
            if not had_index:
                self._remove_new(existing)
            # what a stopped job committed stays, and its summary says what that was
            done = {"db": str(self.settings.db), **run.summary.as_dict()} if run is not None and had_index else None
            if isinstance(exc, JobStopped) and exc.cancelled:
                self._update(job_id, state="cancelled", error=str(exc), summary=done, progress=tracker.progress, finished_at=time.time())
                return True
            if isinstance(exc, (JobStopped, *EXPLAINED)):
                reason = str(exc)
            else:
                log.exception("job %s failed", job_id)
                reason = f"{type(exc).__name__}: {exc}"
            self._update(job_id, state="failed", error=reason, summary=done, progress=tracker.progress, finished_at=time.time())
            return True
        result = {"db": str(self.settings.db), "fingerprint": backbone.fingerprint.id, **summary.as_dict()}
        self._update(job_id, state="succeeded", summary=result, progress=tracker.progress, finished_at=time.time())
        self.on_finish(backbone)
        return True

    def _progress(self, job_id: str, progress: JobProgress) -> None:
        self._update(job_id, progress=progress)
        self.on_progress()

    def _remove_new(self, existing: set[str] | None) -> None:
        """Undo what a failed first job created: no half-made index is left behind."""
        if existing is None:
            shutil.rmtree(self.db, ignore_errors=True)
            return
        for name in set(os.listdir(self.db)) - existing:
            target = self.db / name
            shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
