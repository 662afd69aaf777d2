"""The Ray engine's fused actor (ray_engine.py): decode and encode in one actor per node, with the local
engine's own loop, for clusters without GPUs.

Why: where the encoder runs on the same CPUs as the decoders, separate decode and encode pools only
add cost. Every video's sampled frames would cross Ray's object store (pickled, copied, unpickled:
~540 MB for an hour of video at 1 frame/s), the encoder (a fractional-CPU actor) would get Ray's one
OpenMP thread, and the decoders and the encoder would compete for the cores instead of taking turns
(the local engine pauses its decoders while it encodes on a small node: `DecoderPool.paused`). Here
one actor owns a node: its share of the videos goes through `IndexRun`'s decode-and-encode loop
(ray_fused_run.py: decoder processes, shared encode batches, the same overlap rule and torch threads
as the local engine), and only the committable rows (~2 KB a segment) travel back to the driver.

Start-up is what Ray adds on one node, and most of it is imports in the new actor process (LanceDB
through `IndexRun`, torch, open_clip and torchvision: ~15 s of CPU, 20-30 s on a loaded 2-core
machine). So this module imports only the decoders: the model and the loop load in a background
thread while the decoder processes already work on the first videos, further ahead than usual
(`EARLY_AHEAD`), and the encoder catches up once the model is there.

Each finished video is yielded as soon as it is encoded (a streaming actor method), so the driver
commits in `flush_videos` batches as it does with the stage pools, and a killed driver
loses at most its uncommitted batch.
"""

from __future__ import annotations

import pickle
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

from vidsearch.cores import usable_cores

from .prepare import decode_job
from .remote import media_location
from .worker import DecoderPool, default_decode_workers

# decoder steps (chunks of frames) the first videos may run ahead of the encoder while the model loads:
# ~500 frames a video, ~75 MB at 224 px, for `decode_ahead` videos
EARLY_AHEAD = 8

_END = object()


def _load(settings, load_backbone):
    """The actor's model and loop, off the actor's main thread (imports included)."""
    import torch

    # Ray gives a fractional-CPU actor one OpenMP thread; this actor owns its node, as the local engine
    # owns the machine, so it takes the threads the local engine would
    torch.set_num_threads(settings.threads or usable_cores())
    from .ray_fused_run import FusedRun

    return FusedRun, load_backbone()


class FusedActor:
    """One per node: the model, loaded once; a batch of claimed videos in, one result row per video out,
    each as soon as it is ready."""

    def __init__(self, settings, load_backbone, image_size: int, sound_cues: bool = False):
        self.settings = settings
        self.image_size = image_size
        self.sound_cues = sound_cues  # read the sound cues from the speech stream (a model without an audio tower)
        self._loading = ThreadPoolExecutor(1, thread_name_prefix="vidsearch-model").submit(_load, settings, load_backbone)

    def run(self, claimed: list[dict]):
        """The claimed videos ({"source": pickled Source, "video_id"}) in; a pickled (source, content hash,
        EncodedVideo or error) out per video, as each is ready (a streaming actor method)."""
        s = self.settings
        todo = [(pickle.loads(row["source"]), row["video_id"]) for row in claimed]
        pool = DecoderPool(s.decode_workers or default_decode_workers(), s.decode_stall_seconds)
        early = [pool.stream(decode_job(s, media_location(src), self.image_size, sound_cues=self.sound_cues), EARLY_AHEAD) for src, _ in todo[: s.decode_ahead]]
        try:
            run_class, backbone = self._loading.result()
        except BaseException:
            for stream in early:
                stream.cancel()
            pool.shutdown(kill=True)
            raise
        outbox: queue.Queue = queue.Queue()
        run = run_class(backbone, s, outbox, pool, early)

        def work() -> None:
            from .pipeline import IndexRunError

            try:
                run._run_pipeline(todo)  # shuts the pool down when done
            except IndexRunError as exc:  # a decoder that cannot start: not the files' fault
                outbox.put((None, None, f"!decoder: {exc.__cause__ or exc}"))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the actor's thread below
                outbox.put(exc)
            finally:
                outbox.put(_END)

        worker = threading.Thread(target=work, name="vidsearch-fused", daemon=True)
        worker.start()
        while (got := outbox.get()) is not _END:
            if isinstance(got, BaseException):
                raise got
            yield pickle.dumps(got, protocol=5)
        worker.join()
