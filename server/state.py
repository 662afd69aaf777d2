"""What the routes share for the life of the app: the settings, the search engine, the job manager and
the Prometheus metrics.

The engine is opened by the app's lifespan, before the first request, so the first search does not
pay for loading the model and /readyz tells the truth from the start. An index that cannot be opened
yet (empty, not built, a model that does not load) leaves the engine absent with the reason in
`engine_error`. It is tried again when an index job finishes; and, when there was no index to open,
at most every `refresh_seconds` as requests need it (a `vidsearch index` run in a shell may build
one meanwhile). A model that failed to load is not retried per request: that costs seconds each.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import anyio
from prometheus_client import CollectorRegistry, Gauge, Histogram

from vidsearch.config import Settings
from vidsearch.cores import usable_cores
from vidsearch.encoders import ModelLoadError
from vidsearch.fingerprint import FingerprintMismatch
from vidsearch.indexer import JobManager
from vidsearch.search import SearchEngine, open_engine
from vidsearch.store import Store, StoreError

from .media import thumbnail_dir
from .response_cache import ResponseCache
from .search_processes import SearchProcesses

__all__ = ["Metrics", "ServerState"]

log = logging.getLogger(__name__)


class Metrics:
    """The app's own Prometheus registry (several apps in one process never share counters)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "vidsearch_request_seconds", "Request latency", ["route", "method", "status"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.videos = Gauge("vidsearch_index_videos", "Videos visible to search", registry=self.registry)
        self.segments = Gauge("vidsearch_index_segments", "Segment vectors in the coarse index", registry=self.registry)


class ServerState:
    """The app's shared state (`request.app.state.vidsearch`); safe to use from any request thread."""

    def __init__(self, settings: Settings, engine: SearchEngine | None = None, serving: bool = False):
        self.settings = settings
        # a long-lived server (`vidsearch serve`) pays a few seconds once, in the background, for cheaper queries
        self.fast_queries = settings.query_runtime == "onnx" or (serving and settings.query_runtime == "auto")
        self.serving = serving
        self._engine = engine
        self._engine_lock = threading.Lock()
        self._last_try: float | None = None
        self._retry = True  # whether a request may try again (no index yet) or not (the model failed)
        self.engine_error: str | None = None
        self.metrics = Metrics()
        self.responses = ResponseCache(settings.response_cache)
        self._slots: tuple | None = None
        self.processes: SearchProcesses | None = None  # `search_processes` workers, once the index opens
        self.jobs = JobManager(settings, backbone=self._backbone, on_progress=self.refresh, on_finish=self._job_finished)
        self._thumbs = None

    def search_slots(self) -> anyio.CapacityLimiter:
        """How many searches compute at once (`search_threads`, default one per core); waiting ones
        are let in first come, first served. One limiter per event loop (an in-process app or a test
        client may run the app on a loop of its own)."""
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._slots = (loop, anyio.CapacityLimiter(self.settings.search_threads or usable_cores()))
        return self._slots[1]

    # -- the engine ------------------------------------------------------------------------------
    def open(self, backbone=None) -> SearchEngine | None:
        """Open the engine now (the lifespan does, and a finished job); records why when it cannot."""
        with self._engine_lock:
            if self._engine is None:
                self._last_try = time.monotonic()
                try:
                    self._engine = open_engine(self.settings, backbone=backbone)
                    self.engine_error = None
                    if self.fast_queries:
                        self._engine.start_query_runtime()
                        threading.Thread(target=self._engine.warm_text_channels, name="warm-text-channels", daemon=True).start()
                    # worker processes for `vidsearch serve` only (an in-process app, e.g. the UI's local mode, has one user)
                    if self.settings.search_processes and self.serving and self.processes is None:
                        self.processes = SearchProcesses(self.settings, self.settings.search_processes)
                except StoreError as exc:
                    self.engine_error, self._retry = str(exc), True
                except FingerprintMismatch as exc:
                    self.engine_error, self._retry = str(exc), False
                except ModelLoadError as exc:  # its message says what to do: one line, not a traceback of the model stack
                    self.engine_error, self._retry = f"{type(exc).__name__}: {exc}", False
                    log.error("could not open the search engine: %s", exc)
                except Exception as exc:  # noqa: BLE001 - model load problems are reported by /readyz
                    self.engine_error, self._retry = f"{type(exc).__name__}: {exc}", False
                    log.exception("could not open the search engine")
        return self._engine

    def engine(self) -> SearchEngine | None:
        """The engine, or None with `engine_error` saying why (see the module docstring for retries)."""
        if self._engine is None and (
            self._last_try is None or (self._retry and time.monotonic() - self._last_try >= self.settings.refresh_seconds)
        ):
            self.open()
        return self._engine

    def search_pool(self) -> SearchProcesses | None:
        """The search workers when they are ready to answer; None: answer on this process's threads."""
        pool = self.processes
        return pool if pool is not None and pool.ready else None

    def close(self) -> None:
        """The app stops: stop the search workers."""
        if self.processes is not None:
            self.processes.close()

    @property
    def loaded_engine(self) -> SearchEngine | None:
        """The engine if it is open, without trying to open it (for metrics)."""
        return self._engine

    def _backbone(self):
        engine = self._engine
        return engine.backbone if engine is not None else None

    def refresh(self, now: bool = False) -> None:
        """The index changed: look for the new version in the background, never on the caller's
        thread (a job's progress: at most every refresh_seconds; `now`: a delete, at once)."""
        engine = self._engine
        if engine is not None:
            engine.refresh_soon(now=now)

    def _job_finished(self, backbone) -> None:
        if self._engine is None:
            self.open(backbone)  # the first job built the index: serve it with the model it used
        else:
            self._engine.refresh(wait=False)

    # -- the store and the thumbnail cache --------------------------------------------------------
    def store(self) -> Store:
        """The index for reading, without a model (an empty index has none); StoreError when there is none."""
        engine = self.engine()
        return engine.store if engine is not None else Store.open(self.settings.db)

    @property
    def thumbs(self):
        if self._thumbs is None:
            self._thumbs = thumbnail_dir(self.settings.db)
        return self._thumbs
