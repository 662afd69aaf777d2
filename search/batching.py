"""Micro-batches of query texts: concurrent searches with new texts share one text-tower pass.

Why: under load, many requests arrive with texts the query cache has not seen, and each would run
the text tower alone; a transformer pass over eight short texts costs little more than over one on a
CPU (the fixed per-call work dominates), so batching them raises throughput without adding more than
`wait_ms` to any request. The first caller to arrive leads: it waits `wait_ms` for others to join,
encodes what has gathered (at most `max_batch` at a time) and hands each caller its own vector.
Callers that arrive while it encodes form the next batch, led by the first of them: a leader runs one
batch and hands over. (A leader that ran every next batch itself never returned while texts kept
arriving faster than a pass took: under load on busy cores its own request waited seconds.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

__all__ = ["QueryBatcher"]


class _Waiter:
    """One caller's text, its result, and the signal that wakes it (its vector, or its turn to lead)."""

    __slots__ = ("text", "result", "wake", "lead")

    def __init__(self, text: str):
        self.text, self.result, self.wake, self.lead = text, Future(), threading.Event(), False


class QueryBatcher:
    """`batcher(text)` -> vector, encoding concurrent calls together with `encode_many(texts)`."""

    def __init__(self, encode_many: Callable[[list[str]], Sequence[np.ndarray]], wait_ms: float = 2.0, max_batch: int = 32):
        self._encode_many = encode_many
        self.wait = max(0.0, wait_ms) / 1000.0
        self.max_batch = max(1, max_batch)
        self._pending: list[_Waiter] = []
        self._leading = False
        self._lock = threading.Lock()
        self.batches = self.texts = 0  # counters, for tests and metrics

    def __call__(self, text: str) -> np.ndarray:
        if self.wait == 0.0:
            self.batches += 1
            self.texts += 1
            return np.asarray(self._encode_many([text])[0], dtype=np.float32)
        me = _Waiter(text)
        with self._lock:
            self._pending.append(me)
            me.lead = not self._leading
            self._leading = True
        if me.lead:
            time.sleep(self.wait)  # let concurrent callers join this batch
        while True:
            if me.lead:
                me.lead = False
                self._run_one_batch()
            if me.result.done():
                return me.result.result()
            me.wake.wait()  # its vector, or its turn to lead the next batch
            me.wake.clear()

    def _run_one_batch(self) -> None:
        """Encode the oldest pending texts (up to max_batch), then hand the lead to the next waiting
        caller, if any; whatever happens, every caller of the batch is answered and woken."""
        with self._lock:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        try:
            if batch:
                self.batches += 1
                self.texts += len(batch)
                vectors = list(self._encode_many([w.text for w in batch]))
                if len(vectors) != len(batch):
                    raise RuntimeError(f"the text tower returned {len(vectors)} vectors for {len(batch)} texts")
                for w, vec in zip(batch, vectors):
                    w.result.set_result(np.asarray(vec, dtype=np.float32))
        except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the error
            for w in batch:
                if not w.result.done():
                    w.result.set_exception(exc)
        finally:
            for w in batch:
                w.wake.set()
            with self._lock:
                if self._pending:
                    nxt = self._pending[0]
                    nxt.lead = True
                    nxt.wake.set()
                else:
                    self._leading = False
