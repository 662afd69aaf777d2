"""Searches computed in worker processes (`search_processes`), each with its own interpreter and GIL.

Why: under load the server was bound by Python's GIL with a core to spare. A new query holds the GIL
for most of its ~17 ms of CPU (moments, ranking, presentation, the text channels), and the event
loop's HTTP work needs it too, so a second thread added little. Here the HTTP server (this process:
routes, the response cache, index jobs and their records) hands each new search to a pool of
processes that each opened the same index with the same model; their answers come back pickled.
The query text is encoded here, not in the workers: the text tower's pass runs outside the GIL
(ONNX Runtime) and concurrent requests' texts share one pass (search/batching.py), which a worker
answering one request at a time could not do; its weights are read once per batch, not per query.

Each worker keeps its own snapshot. A request carries the index version the server serves, and a
worker on another version looks for the newest committed one before answering (`engine.refresh`), so
a worker never answers from an older version than the server's; cursors name the version they were
made on and are checked by the worker as they are in-process. Searches are answered by threads until the
pool is ready. A worker that cannot open the index (its model does not load) is reported by `/readyz`
and the pool is closed (threads answer); a pool that broke (a worker killed, also while it loaded) is
replaced, and its requests answered by threads meanwhile.
Workers exit with the server: each watches its parent and leaves when the parent is gone. A pool that
lost workers more than MAX_RESTARTS times is given up, and threads answer.

Costs: each worker holds its own snapshot (the coarse index: ~1 GB per million segments as float32),
feature cache and the model's heads; it frees the frame and text towers once loaded (it never
encodes: `ClipBackbone.release_towers`). `/readyz` reports the workers' resident memory.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from vidsearch.api_models import SearchRequest, SearchResponse
from vidsearch.config import Settings
from vidsearch.cores import usable_cores

__all__ = ["SearchProcesses", "WorkerUnavailable"]

log = logging.getLogger(__name__)

MAX_RESTARTS = 5  # a pool whose workers keep dying (out of memory...) is given up: threads answer


class WorkerUnavailable(RuntimeError):
    """A worker has no engine (it could not open the index); the server answers in-process."""


# -- in the worker process -----------------------------------------------------------------------
_engine = None
_error: str | None = None
_started = None  # a barrier of the pool's size: each worker answers exactly one hello


def _start_worker(settings: Settings, threads: int, parent: int, started) -> None:
    """The pool's initializer: leave with the parent, then open the index (errors are kept, not raised:
    a raising initializer breaks the whole pool)."""
    global _engine, _error, _started
    _started = started
    # Ctrl-C and a stop signal are the server's to handle (it stops the workers); a worker that died of
    # them would break the pool in the middle of the server's own shutdown
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()
    try:
        import torch

        torch.set_num_threads(threads)  # the workers share the cores: no oversubscribed OpenMP pools
        from vidsearch.search import open_engine

        # no ONNX copy of the text tower (the server encodes the texts); the coarse index is saved by
        # the server alone; and a worker looks for a new version only when the server serves one
        # (workers that each followed the store on their own would drift apart: a page's cursor made
        # on one worker's version would be refused by another's)
        settings = settings.model_copy(update={"ann_saved": False, "refresh_seconds": float("inf"), "threads": threads})
        engine = open_engine(settings)
        engine.warm_text_channels()  # where they have a MiniLM of their own: now, not in the first search
        # the server encodes the query texts and answers pictures itself: the frame and text towers
        # would only sit in this process's memory (~410 MB for ViT-B-32 here)
        release = getattr(engine.backbone, "release_towers", None)
        if release is not None:
            release()
        gc.collect()
        _return_freed_memory()
        gc.freeze()  # see app.py: the model's and libraries' objects are never collected
        _engine = engine
    except Exception as exc:  # noqa: BLE001 - reported to the server by `_hello`
        _error = f"{type(exc).__name__}: {exc}"


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim). Freed tensors stay in the
    heap otherwise: ViT-B-32's released towers (~410 MB) lowered the resident memory by 95 MB, and by
    420 MB after the trim. A no-op where the C library has no malloc_trim."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)  # the server is gone (killed): nobody will ask this worker anything


def _hello() -> dict:
    """Who this worker is and whether it can answer (sent once per worker at start: each waits for the
    others, so the first one ready does not take every hello while the rest still load)."""
    try:
        _started.wait(timeout=900)
    except threading.BrokenBarrierError:  # a worker never came: the hellos say who did
        pass
    return {"pid": os.getpid(), "error": _error, "version": _engine.snapshot.version if _engine is not None else None,
            "towers": _engine is not None and getattr(_engine.backbone, "model", None) is not None}  # fmt: skip


def _answer(req: SearchRequest, version: str, vectors: tuple | None) -> SearchResponse:
    """One search, on `version` or a newer one (see the module docstring); `vectors`: the query
    text's vectors, encoded by the server (engine.query_vectors)."""
    from .presenting import search_response

    engine = _engine
    if engine is None:
        raise WorkerUnavailable(_error or "the worker has no engine")
    if (vectors is None and req.query is not None) or req.image is not None:
        raise WorkerUnavailable("a worker does not encode (its towers are released): answered by the server")
    if engine.snapshot.version != version or _cursor_version(req) not in (None, engine.snapshot.version):
        # the server is on another version, or the cursor was made by a worker that is (the store
        # moved on twice while the server looked once): look for the newest committed one
        try:
            engine.refresh(wait=True)
        except Exception:  # noqa: BLE001 - as in the server: the last good snapshot answers
            logging.getLogger(__name__).exception("index refresh failed; still serving version %s", engine.snapshot.version)
    from vidsearch.encoders.backbone import TowersReleased

    if vectors is not None and req.query is not None:
        engine.use_query_vectors(req.query, *vectors)
    try:
        return search_response(engine, req)
    except TowersReleased as exc:  # a search that needs an encoder after all: the server answers it
        raise WorkerUnavailable(str(exc)) from exc


def _cursor_version(req: SearchRequest) -> str | None:
    """The index version a request's cursor was made on (None: no cursor, or not one of ours: the
    search itself says what is wrong with it)."""
    if not req.cursor:
        return None
    from vidsearch.search import SearchError

    from .presenting import decode_cursor, request_key

    try:
        return decode_cursor(req.cursor, request_key(req))[1]
    except SearchError:
        return None


# -- in the server -------------------------------------------------------------------------------
class SearchProcesses:
    """A pool of `n` search workers over the index in `settings.db`. `ready` once every worker opened
    the index; `answer(req, version)` is awaited on the event loop (requests wait in arrival order)."""

    def __init__(self, settings: Settings, n: int):
        self.settings, self.n = settings, n
        self.ready = False
        self.error: str | None = None
        self.pids: list[int] = []
        self.restarts = 0
        self.answered = 0  # searches the workers answered (the rest of a server's were answered by threads)
        self.towers_released = False  # every worker freed its frame and text towers (it never encodes)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self._start()

    def _start(self) -> None:
        threads = max(1, usable_cores() // self.n)
        context = multiprocessing.get_context("spawn")  # never fork a process with torch's threads running
        pool = ProcessPoolExecutor(
            self.n,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self.settings, threads, os.getpid(), context.Barrier(self.n)),
        )
        self._pool, self.ready, self.pids = pool, False, []
        # n hellos at once start n workers (a pool starts one per waiting task); each answers after its initializer
        hellos = [pool.submit(_hello) for _ in range(self.n)]
        threading.Thread(target=self._await_hellos, args=(pool, hellos), name="search-processes", daemon=True).start()

    def _await_hellos(self, pool: ProcessPoolExecutor, hellos: list[Future]) -> None:
        t0 = time.monotonic()
        try:
            answers = [f.result() for f in hellos]
        except BrokenProcessPool as exc:  # a worker died while it loaded (memory?): try again, a few times
            self._replace(pool, exc)
            return
        errors = {a["error"] for a in answers if a["error"]}
        with self._lock:
            if pool is not self._pool:
                return
            if errors:  # e.g. the model does not load: threads answer for good (the same error shows there)
                self.error = "; ".join(sorted(errors))
                log.error("search workers cannot answer, threads do: %s", self.error)
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)  # nothing to keep their memory for
                return
        self.towers_released = not any(a["towers"] for a in answers)
        self.pids, self.error, self.ready = sorted({a["pid"] for a in answers}), None, True
        log.info("%d search processes ready in %.1f s", self.n, time.monotonic() - t0)

    async def answer(self, req: SearchRequest, version: str, vectors: tuple | None = None) -> SearchResponse:
        """The response from a worker; WorkerUnavailable when the pool broke (it is restarted, and the
        caller answers this request itself). `vectors`: the query text's (vector, sentence vector, reversed
        twin's vector), engine.query_vectors."""
        pool = self._pool
        if pool is None:
            raise WorkerUnavailable(self.error or "no search workers")
        try:
            future = pool.submit(_answer, req, version, vectors)
        except (BrokenProcessPool, RuntimeError) as exc:  # RuntimeError: shut down meanwhile
            self._replace(pool, exc)
            raise WorkerUnavailable(str(exc)) from exc
        try:
            resp = await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            self._replace(pool, exc)
            raise WorkerUnavailable(str(exc)) from exc
        self.answered += 1
        return resp

    def _replace(self, broken: ProcessPoolExecutor, exc: Exception) -> None:
        with self._lock:
            if self._closed or broken is not self._pool:
                return
            self.ready = False
            broken.shutdown(wait=False, cancel_futures=True)
            if self.restarts >= MAX_RESTARTS:
                self.error = f"search workers died {self.restarts + 1} times (last: {exc}); searches are answered by threads"
                log.error(self.error)
                self._pool = None
                return
            log.error("a search worker died (%s); starting the pool again", exc)
            self.restarts += 1
            self._start()

    def status(self) -> dict:
        """For /readyz: how many workers, whether they answer, their resident memory."""
        out: dict = {"processes": self.n, "ready": self.ready, "answered": self.answered, "restarts": self.restarts}
        if self.error:
            out["error"] = self.error
        if self.pids:
            out["pids"] = self.pids
            out["rss_mb"] = [_rss_mb(pid) for pid in self.pids]
            out["towers_released"] = self.towers_released
        return out

    def close(self) -> None:
        """Stop the workers (the app's shutdown)."""
        with self._lock:
            self._closed = True
            pool, self._pool, self.ready = self._pool, None, False
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 10
        for p in processes:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(2)


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return round(next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024, 1)
    except (OSError, StopIteration):
        return None
