"""Decoder processes: `python -m vidsearch.indexer.worker`, one job at a time over a pipe.

A dedicated entry point instead of multiprocessing's spawn: a spawned child re-imports the parent's
`__main__` (a benchmark script, pytest, a notebook) before it can work, which costs seconds and
memory per worker. Here a worker imports only the decoders. One job is in flight per worker, so a
crash or a hang is pinned on exactly one file; the worker is then replaced and the run goes on.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from multiprocessing.connection import Connection
from queue import SimpleQueue

from .prepare import DecodeJob, Failed, Prepared, prepare

STARTUP_TIMEOUT_S = 120.0


def job_timeout(job: DecodeJob) -> float:
    """Generous (2 minutes plus a second per MB; decoding runs far faster), but a hang ends."""
    try:
        size_mb = os.path.getsize(job.path) / 1e6
    except OSError:
        size_mb = 0.0
    return 120.0 + size_mb


class DecoderProcess:
    """One worker subprocess and the pipe to it."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vidsearch.indexer.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        self.to_child = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self.from_child = Connection(os.dup(self.proc.stdout.fileno()), writable=False)

    def run(self, job: DecodeJob, timeout: float) -> Prepared | Failed:
        try:
            self.to_child.send(job)
            if not self.from_child.poll(timeout):
                self.kill()
                return Failed(job, f"decoding took longer than {timeout:.0f} s (stuck decoder); skipped")
            return self.from_child.recv()
        except (EOFError, OSError, BrokenPipeError):
            code = self.proc.wait()
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            return Failed(job, f"the video decoder crashed on this file ({how}): corrupt or unsupported stream")

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
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()


class DecoderPool:
    """N decoder processes fed from one queue; `submit` returns a Future of Prepared | Failed.

    `paused()` lets the encoder have the CPU to itself: no new job starts and the ones running finish
    first. Where decoders and the encoder share the same cores, taking turns is faster than running
    together (torch's threads wait for each other at every barrier when one of them is preempted).
    """

    def __init__(self, workers: int):
        self._jobs: SimpleQueue = SimpleQueue()
        self._gate = threading.Condition()
        self._open = True
        self._running = 0
        self._threads = [threading.Thread(target=self._serve, daemon=True) for _ in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, job: DecodeJob) -> Future:
        fut: Future = Future()
        self._jobs.put((job, fut))
        return fut

    def _serve(self) -> None:
        worker = DecoderProcess()
        try:
            while (item := self._jobs.get()) is not None:
                job, fut = item
                if not fut.set_running_or_notify_cancel():
                    continue
                if not worker.alive:
                    worker.close()
                    worker = DecoderProcess()
                with self._gate:
                    self._gate.wait_for(lambda: self._open)
                    self._running += 1
                try:
                    result = worker.run(job, job_timeout(job))
                finally:
                    with self._gate:
                        self._running -= 1
                        self._gate.notify_all()
                fut.set_result(result)
        finally:
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

    def shutdown(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join()


def _serve_stdio() -> None:
    """Child side: read jobs from stdin, write results to the real stdout; prints go to stderr."""
    out_fd = os.dup(1)
    os.dup2(2, 1)  # a decoder library printing to stdout must not corrupt the protocol
    jobs = Connection(os.dup(0), writable=False)
    results = Connection(out_fd, readable=False)
    while True:
        try:
            job = jobs.recv()
        except EOFError:
            return
        results.send(prepare(job))


if __name__ == "__main__":
    _serve_stdio()
