"""Recent search responses, per index version: the same request on the same version is answered again
without planning, ranking or cutting moments.

Why: people repeat searches (the next page, the UI rerunning, a popular phrase), and a response is a
pure function of the request and the index version the engine serves (the model, the calibration and
the settings are fixed for an engine's life). Under bench/api_load.py's mix, a repeated phrase cost
~38 ms of server CPU (text-channel queries, moments, presentation) although its query vector was
cached; from here it costs the HTTP round. An entry is used only while its version is the live one,
so a new index version is never answered from the old one; old entries age out of the LRU.

Each caller gets a shallow copy with its own `took_ms`: callers replace fields (the route rewrites
each result's video record for the viewer) and must not change the cached object.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from vidsearch.api_models import SearchRequest, SearchResponse

__all__ = ["ResponseCache"]


class ResponseCache:
    """`cache(engine, req, compute)` -> a SearchResponse, from the cache when `req` was answered on
    the engine's live version; `size` entries, least recently used out; safe across threads."""

    def __init__(self, size: int = 256):
        self.size = size
        self._entries: OrderedDict[tuple, SearchResponse] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __call__(self, engine, req: SearchRequest, compute: Callable[[], SearchResponse]) -> SearchResponse:
        key = self.key(engine, req)
        hit = self.get(engine, key)
        return hit if hit is not None else self.compute(key, compute)

    def key(self, engine, req: SearchRequest) -> tuple:
        """What `req` is kept under (computed once per request: it hashes the whole request)."""
        # by digest: a request may carry a 10 MB picture, which the cache must not keep
        return (id(engine), hashlib.sha256(req.model_dump_json().encode()).digest())

    def get(self, engine, key: tuple) -> SearchResponse | None:
        """The response kept under `key` if it was answered on the engine's live version (a copy), or
        None. Cheap: the server asks it on its event loop before queueing a search for a thread."""
        if self.size <= 0:
            return None
        t0 = time.perf_counter()
        version = engine.snapshot.version
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and hit.index_version == version:
                self._entries.move_to_end(key)
                self.hits += 1
                return hit.model_copy(update={"took_ms": round((time.perf_counter() - t0) * 1000, 3)})
        return None

    def compute(self, key: tuple, compute: Callable[[], SearchResponse]) -> SearchResponse:
        """`compute()`, kept under `key` for the next time its request is asked on this version."""
        resp = compute()
        if self.size <= 0:
            return resp
        with self._lock:
            self.misses += 1
            self._entries[key] = resp
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return resp.model_copy()
