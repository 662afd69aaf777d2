"""Decoder processes: one job at a time over a pipe, one step per request.

A dedicated entry point instead of multiprocessing's spawn: a spawned child re-imports the parent's
`__main__` (a benchmark script, pytest, a notebook) before it can work, which costs seconds and
memory per worker. Here a worker imports only the decoders, from exactly the import path its parent
used (never the working directory: a folder holding a `vidsearch/` checkout must not shadow the
installed package). A worker says "ready" once it has imported them, so a worker that cannot start is
reported as that, not as a corrupt file.

The protocol is pull-based: the indexer sends a job, then "next" for each step (probe, a chunk of
frames, a piece of the text channels); the worker does that step and replies. So a worker uses the CPU
only when the indexer asks (the encoder and the decoders can take turns on a small machine), and
memory holds one chunk per worker, whatever the video's length; the exception is speech, transcribed
on a thread of its own beside the frames (`prepare.SpeechThread`), which takes no turns. While a step
runs the worker sends heartbeats with its progress; a step whose progress stops for `stall_seconds`,
or a file that outlives its budget (which grows with the video's duration and the channels it runs),
is killed and fails alone, with a message that names the stage that was slow. One job is in flight per
worker, so a crash or a hang is pinned on exactly one file; the worker is then replaced and the run
goes on.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from multiprocessing.connection import Connection

from vidsearch.cores import usable_cores

from .prepare import Chunk, DecodeJob, Failed, Finished, Started, Working, assemble, prepare_steps

STARTUP_TIMEOUT_S = 120.0
HEARTBEAT_S = 2.0
DEFAULT_STALL_S = 120.0
PATH_ENV = "VIDSEARCH_WORKER_SYS_PATH"
_BOOT = (
    "import os, sys; sys.path[:] = [p for p in os.environ['" + PATH_ENV + "'].split(os.pathsep) if p]; "
    "from vidsearch.indexer.worker import _serve_stdio; _serve_stdio()"
)
Reply = Started | Chunk | Working | Finished | Failed


def default_decode_workers() -> int:
    return max(1, min(4, usable_cores()))


class DecoderStartError(RuntimeError):
    """Decoder processes cannot start: every file would fail for a reason that is not the file's."""


def job_budget(job: DecodeJob, duration: float) -> float:
    """Seconds one file may take in all: far more than decoding needs, growing with the video's length
    and the channels that read it (ASR and OCR cost up to a few tenths of a second per second)."""
    per_second = 0.5 + (1.5 if job.speech else 0.0) + (1.5 if job.ocr else 0.0)
    return 300.0 + duration * per_second


def _stderr_tail(fh, limit: int = 600) -> str:
    fh.seek(0)
    text = fh.read().decode("utf-8", "replace").strip()
    return text[-limit:].strip() if text else ""


class DecoderProcess:
    """One worker subprocess and the pipe to it."""

    def __init__(self, start_timeout: float = STARTUP_TIMEOUT_S):
        self.stderr = tempfile.TemporaryFile()
        here = os.getcwd()
        path = os.pathsep.join(os.path.abspath(p or here) for p in sys.path)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            # one malloc arena per thread (glibc's default) let a 2-hour video's OCR and ASR threads hold
            # ~150 MB of freed memory; two arenas keep the worker's peak flat with duration (measured)
            env={"MALLOC_ARENA_MAX": "2", **os.environ, "OMP_NUM_THREADS": "1", PATH_ENV: path},
        )
        self.to_child = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.from_child = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.in_job = False
        try:
            if not self.from_child.poll(start_timeout):
                self.kill()
                raise DecoderStartError(f"a decoder process did not start within {start_timeout:.0f} s")
            self.from_child.recv()
        except (EOFError, OSError) as exc:
            code = self.proc.wait()
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            tail = _stderr_tail(self.stderr)
            self.close()
            raise DecoderStartError(f"the decoder process could not start ({how}){': ' + tail if tail else ''}") from exc

    def steps(self, job: DecodeJob, running: Callable, stall_seconds: float) -> Iterator[Reply]:
        """Send `job`, then run its steps one by one (each inside `running()`), yielding each reply."""
        t0 = time.monotonic()
        deadline = t0 + job_budget(job, 0.0)
        self.to_child.send(job)
        self.in_job = True
        while True:
            with running():
                reply = self._step(job, stall_seconds, deadline, t0)
            if isinstance(reply, Started):
                deadline = t0 + job_budget(job, reply.probe.duration)
            if isinstance(reply, (Finished, Failed)):
                self.in_job = False
            yield reply
            if not self.in_job:
                return

    def _step(self, job: DecodeJob, stall_seconds: float, deadline: float, t0: float) -> Reply:
        try:
            self.to_child.send("next")
            last_move, seen, where = time.monotonic(), None, Working("starting")
            while True:
                now = time.monotonic()
                wait = min(last_move + stall_seconds, deadline) - now
                if wait <= 0 or not self.from_child.poll(wait):
                    self.kill()
                    now = time.monotonic()
                    if now >= deadline:
                        return Failed(job, f"took longer than its budget of {deadline - t0:.0f} s (while {where.describe()}); skipped")
                    return Failed(job, f"no progress for {stall_seconds:.0f} s while {where.describe()} (stuck decoder?); skipped")
                kind, payload = self.from_child.recv()
                if kind == "beat":
                    if (payload.stage, payload.done) != seen:
                        seen, last_move, where = (payload.stage, payload.done), time.monotonic(), payload
                    continue
                return payload if payload is not None else Failed(job, "the decoder ended without a result")
        except (EOFError, OSError, BrokenPipeError):
            code = self.proc.wait()
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            return Failed(job, f"the video decoder crashed on this file ({how}): corrupt or unsupported stream")

    def abandon(self) -> None:
        """Stop the job in flight (between steps); the worker waits for the next one."""
        if self.in_job and self.alive:
            with contextlib.suppress(OSError, BrokenPipeError):
                self.to_child.send("stop")
        self.in_job = False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        for conn in (self.to_child, self.from_child):
            conn.close()
        if self.proc.stdin:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.stderr.close()


class JobStream:
    """The replies of one job, in order. Bounded: a worker only decodes the next step once the indexer
    has taken enough of the previous ones, so a fast decoder cannot fill memory."""

    def __init__(self, job: DecodeJob, maxsize: int = 2):
        self.job = job
        self.cancelled = False
        self._queue: queue.Queue = queue.Queue(maxsize)

    def put(self, reply) -> bool:
        while not self.cancelled:
            try:
                self._queue.put(reply, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[Reply]:
        while True:
            reply = self._queue.get()
            if isinstance(reply, DecoderStartError):
                raise reply
            yield reply
            if isinstance(reply, (Finished, Failed)):
                return

    def cancel(self) -> None:
        self.cancelled = True


class _Collected:
    """A stream assembled into one `Prepared` (short clips: training data), resolving a Future."""

    def __init__(self, job: DecodeJob):
        self.job, self.cancelled, self.future = job, False, Future()
        self.info, self.chunks = None, []

    def put(self, reply) -> bool:
        if isinstance(reply, DecoderStartError):
            self.future.set_exception(reply)
        elif isinstance(reply, Failed):
            self.future.set_result(reply)
        elif isinstance(reply, Started):
            self.info = reply.probe
        elif isinstance(reply, Chunk):
            self.chunks.append(reply)
        elif isinstance(reply, Finished):
            self.future.set_result(assemble(self.job, self.info, self.chunks, reply))
        return True


class DecoderPool:
    """N decoder processes fed from one queue.

    `stream(job)` returns the job's replies as they come (the indexer); `submit(job)` a Future of the
    whole `Prepared | Failed` (training data). `paused()` lets the encoder have the CPU to itself but
    for the decoders' speech threads (see prepare.SpeechThread: measured beside the encoder at the
    same CPU): no new step starts and the ones running finish first. Where decoders and the encoder
    share the same cores, taking turns is faster than running together (torch's threads wait for each other at every
    barrier when one of them is preempted).
    """

    def __init__(self, workers: int, stall_seconds: float = DEFAULT_STALL_S):
        self.stall_seconds = stall_seconds
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._gate = threading.Condition()
        self._open = True
        self._running = 0
        self._procs: set[DecoderProcess] = set()
        self._threads = [threading.Thread(target=self._serve, daemon=True) for _ in range(workers)]
        for t in self._threads:
            t.start()

    def stream(self, job: DecodeJob, ahead: int = 2) -> JobStream:
        """The job's replies as they come; its decoder runs at most `ahead` steps ahead of the reader."""
        out = JobStream(job, ahead)
        self._jobs.put(out)
        return out

    def submit(self, job: DecodeJob) -> Future:
        out = _Collected(job)
        self._jobs.put(out)
        return out.future

    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        with self._gate:
            self._gate.wait_for(lambda: self._open)
            self._running += 1
        try:
            yield
        finally:
            with self._gate:
                self._running -= 1
                self._gate.notify_all()

    def _serve(self) -> None:
        worker: DecoderProcess | None = None
        try:
            while (out := self._jobs.get()) is not None:
                if out.cancelled:
                    continue
                if worker is not None and not worker.alive:
                    self._procs.discard(worker)
                    worker.close()
                    worker = None
                if worker is None:
                    try:
                        worker = DecoderProcess()
                    except DecoderStartError as exc:
                        out.put(exc)
                        continue
                    self._procs.add(worker)
                for reply in worker.steps(out.job, self._step, self.stall_seconds):
                    if not out.put(reply):
                        worker.abandon()
                        break
        finally:
            if worker is not None:
                self._procs.discard(worker)
                worker.close()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with self._gate:
            self._open = False
            self._gate.wait_for(lambda: self._running == 0)
        try:
            yield
        finally:
            with self._gate:
                self._open = True
                self._gate.notify_all()

    def shutdown(self, kill: bool = False) -> None:
        """Stop the workers once their jobs end; `kill` ends the jobs in flight too (a run that stopped)."""
        if kill:
            for proc in list(self._procs):
                proc.kill()
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()


def _serve_stdio() -> None:
    """Child side: read jobs and step requests from stdin, write replies to the real stdout."""
    out_fd = os.dup(1)
    os.dup2(2, 1)  # a decoder library printing to stdout must not corrupt the protocol
    requests = Connection(os.dup(0), writable=False)
    replies = Connection(out_fd, readable=False)
    replies.send(("ready", os.getpid()))
    while True:
        try:
            job = requests.recv()
        except EOFError:
            return
        progress = Working("")
        steps = prepare_steps(job, progress)
        while True:
            try:
                request = requests.recv()
            except EOFError:
                return
            if request != "next":
                steps.close()
                break
            box: list = []

            def advance() -> None:
                try:
                    box.append(next(steps))
                except StopIteration:
                    box.append(None)
                except BaseException as exc:  # noqa: BLE001 - a bug in a step fails the file, not the worker
                    box.append(Failed(job, f"unexpected {type(exc).__name__}: {exc}"))

            runner = threading.Thread(target=advance, daemon=True)
            runner.start()
            while runner.is_alive():
                runner.join(HEARTBEAT_S)
                if runner.is_alive():
                    replies.send(("beat", Working(progress.stage, progress.done, progress.total)))
            reply = box[0]
            replies.send(("step", reply))
            if reply is None or isinstance(reply, (Finished, Failed)):
                steps.close()  # whatever the job still runs (its speech thread) ends with it
                break
