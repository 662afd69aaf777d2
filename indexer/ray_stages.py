"""The Ray engine's CPU work (ray_engine.py): content keys (hashed by the driver), and decoding in
actors that each own one of our decoder processes (the stage pools).

Kept apart from ray_engine.py so Ray's workers for the decode stage import only the decoders (no torch,
no LanceDB: a worker that starts in a fraction of a second), as the local engine's decoder processes do.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

from vidsearch import objectstore

from .discover import READ_ERROR, Source
from .prepare import Chunk, Failed, Finished, Started, Working, decode_job
from .remote import media_location, source_hash
from .worker import DecoderPool, DecoderStartError

ACTOR_CPUS = 0.5  # per actor: whole CPUs per actor can starve Ray Data's own tasks on a small node


@dataclass
class Decoded:
    """One video as the decode stage hands it to the encode stage."""

    source: Source
    video_id: str
    probe: object = None
    chunks: list | None = None
    finished: Finished | None = None
    error: str | None = None


def source_key(src: Source) -> str:
    """The content key of a source, or "!" and why it cannot be read. The driver hashes (in threads, while
    it connects to Ray): a Ray stage for it cost more than it saved on one node (worker start-up before
    the first hash), and large objects in S3 are keyed by their ETag without being read (remote.py)."""
    try:
        return source_hash(src)
    except (OSError, objectstore.ObjectStoreError) as exc:
        return f"!{READ_ERROR}: " + str(getattr(exc, "strerror", None) or exc)


class DecodeActor:
    """The stage pools' decode actor: one decoder process of its own (crash and stall isolation, as locally)."""

    def __init__(self, settings, image_size: int, sound_cues: bool = False):
        self.settings = settings
        self.image_size = image_size
        self.sound_cues = sound_cues  # read the sound cues from the speech stream (a model without an audio tower)
        self.pool = DecoderPool(1, settings.decode_stall_seconds)

    def __call__(self, batch: dict) -> dict:
        out = []
        for blob, vid in zip(batch["source"], batch["video_id"]):
            src: Source = pickle.loads(blob)
            out.append(pickle.dumps(self._decode(src, vid), protocol=5))
        return {"decoded": out}

    def _decode(self, src: Source, vid: str) -> Decoded:
        s = self.settings
        got = Decoded(src, vid, chunks=[])
        try:
            job = decode_job(s, media_location(src), self.image_size, sound_cues=self.sound_cues)
            for reply in self.pool.stream(job):
                if isinstance(reply, Started):
                    got.probe = reply.probe
                elif isinstance(reply, Chunk):
                    got.chunks.append(reply)
                elif isinstance(reply, Finished):
                    got.finished = reply
                elif isinstance(reply, Failed):
                    got.error, got.chunks = reply.error, None
                elif not isinstance(reply, Working):  # pragma: no cover - a protocol bug
                    raise TypeError(f"unexpected decoder reply {type(reply).__name__}")
        except DecoderStartError as exc:  # not the file's fault: stop the run (the driver re-raises)
            got.error, got.chunks = f"!decoder: {exc}", None
        except objectstore.ObjectStoreError as exc:
            got.error, got.chunks = str(exc), None
        return got
