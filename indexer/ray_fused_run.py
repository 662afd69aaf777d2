"""The local engine's decode-and-encode loop inside the Ray engine's fused actor (ray_fused.py).

Kept apart from the actor's module because it imports `IndexRun` (and through it LanceDB and the text
encoders: seconds of imports), which the actor loads in the background while its first videos decode.
"""

from __future__ import annotations

import queue

from .pipeline import _DONE, IndexRun, _Item
from .worker import DecoderPool, JobStream


class FusedRun(IndexRun):
    """`IndexRun`'s decode-and-encode loop over videos the driver has already claimed; each outcome goes
    to `outbox` as (source, content hash, EncodedVideo or error) instead of into a store. The decoder
    pool, and the streams of the first videos, come from the actor: they started before the model was
    loaded."""

    def __init__(self, backbone, settings, outbox: queue.Queue, pool: DecoderPool, early: list[JobStream]):
        super().__init__(None, backbone, settings)
        self._outbox, self._pool, self._early = outbox, pool, early

    def _decoder_pool(self) -> DecoderPool:
        return self._pool

    def _feed(self, todo, pool, items, stop) -> None:
        handed = 0
        try:
            for src, vid in todo:
                if stop.is_set():
                    return
                stream = self._early[handed] if handed < len(self._early) else pool.stream(self._job(src))
                items.put(_Item(src, vid, stream))
                handed += 1
        finally:
            for stream in self._early[handed:]:  # a run that stopped: their decoders must not wait on a reader
                stream.cancel()
            items.put(_DONE)

    def _complete(self, video) -> None:
        try:
            result = self._encoded(video)
        except Exception as exc:  # noqa: BLE001 - a bug on one video's data must cost only that video
            result = f"could not assemble the index rows: {type(exc).__name__}: {exc}"
        self._outbox.put((video.item.source, video.item.video_id, result))

    def _fail_video(self, video, error: str) -> None:
        if not video.failed:
            video.failed = True
            self._outbox.put((video.item.source, video.item.video_id, error))

