"""Micro-batches of query texts: concurrent searches with new texts share one text-tower pass.

Why: under load, many requests arrive with texts the query cache has not seen, and each would run
the text tower alone; a transformer pass over eight short texts costs little more than over one on a
CPU (the fixed per-call work dominates), so batching them raises throughput without adding more than
`wait_ms` to any request. The first caller to arrive leads: it waits `wait_ms` for others to join,
encodes what has gathered (at most `max_batch` at a time) and hands each caller its own vector;
callers that arrive while it encodes form the next batch, which the leader also runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

__all__ = ["QueryBatcher"]


class QueryBatcher:
    """`batcher(text)` -> vector, encoding concurrent calls together with `encode_many(texts)`."""

    def __init__(self, encode_many: Callable[[list[str]], Sequence[np.ndarray]], wait_ms: float = 2.0, max_batch: int = 32):
        self._encode_many = encode_many
        self.wait = max(0.0, wait_ms) / 1000.0
        self.max_batch = max_batch
        self._pending: list[tuple[str, Future]] = []
        self._leading = False
        self._lock = threading.Lock()
        self.batches = self.texts = 0  # counters, for tests and metrics

    def __call__(self, text: str) -> np.ndarray:
        if self.wait == 0.0:
            self.batches += 1
            self.texts += 1
            return np.asarray(self._encode_many([text])[0], dtype=np.float32)
        done: Future = Future()
        with self._lock:
            self._pending.append((text, done))
            lead = not self._leading
            self._leading = self._leading or lead
        if lead:
            time.sleep(self.wait)  # let concurrent callers join this batch
            self._drain()
        return done.result()

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                if not batch:
                    self._leading = False
                    return
            self.batches += 1
            self.texts += len(batch)
            try:
                vectors = self._encode_many([text for text, _ in batch])
            except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the error
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            for (_, fut), vec in zip(batch, vectors):
                fut.set_result(np.asarray(vec, dtype=np.float32))
