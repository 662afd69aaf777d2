"""`vidsearch index --engine ray`: the same run as `IndexRun`, with decoding and encoding fanned out over a
Ray cluster with Ray Data.

What stays on the driver, and why: discovery, the plan (skip unchanged files), the decision of which
path of a content is decoded and which are linked to it, every outcome and every commit. Those are the
contracts (content-hash keys, write-then-mark commits, a video fails alone, a killed run resumes, a
second run does no work), and keeping them in the one place that already implements them, `IndexRun`,
means the two engines cannot drift apart: this class only replaces how the work between plan and
commit is done.

Hashing stays on the driver too, in threads that run while it connects to Ray: as a Ray stage it cost
more than it saved on one node (15-26 s of worker start-up before the first key), and it is the local
engine's own work (large objects in S3 are keyed by their ETag, unread).

The work between plan and commit, on Ray Data, one of two ways:
- **fused** (the cluster has no GPUs; ray_fused.py): one actor per node decodes and encodes its share
  with the local engine's own loop, so on CPUs the engine pays Ray's start-up, not a cost per video:
  no frames cross the object store, the decoders and the encoder take turns on the cores as locally.
- **stage pools** (the cluster has GPUs): decode on CPU actors (ray_stages.py), each owning one of our
  decoder processes, so a decoder that crashes or stalls on a hostile file still fails that file alone
  instead of killing a Ray worker and, after its retries, the whole dataset; encode on actors with a GPU
  each (with the torch or the Triton backend, as configured), frames in, committable rows out. Decode
  and encode then scale on their own, the split NVIDIA's NeMo Curator video pipeline uses on Ray.
The driver streams the encoded videos back (`iter_rows`) and commits them in `flush_videos` batches,
exactly as the local engine does, so a driver killed mid-run loses at most its uncommitted batch, and
the next run plans only what is not committed yet.

Memory (stage pools): a video's sampled frames travel from the decode to the encode stage as one row
(150 KB a frame at 224 px: ~540 MB for an hour at 1 frame/s), in Ray's object store, which spills to
disk; the local engine and the fused actor stream chunks of 64 frames instead. Chunk rows are the next
step for hours-long videos on GPU clusters.

Sizes on a small node: an actor pool that asks for whole CPUs can take every CPU and starve Ray Data's
own tasks (measured: a 2-CPU `ray.init` hangs); the actors here ask for half a CPU each (the fused
actor then sets its own torch threads: Ray would give it one).
"""

from __future__ import annotations

import pickle
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from .discover import Source
from .pipeline import IndexRun, IndexRunError, _Item, _Video, default_decode_workers
from .ray_fused import FusedActor
from .ray_stages import ACTOR_CPUS, DecodeActor, Decoded, source_key

_END = object()
HASH_THREADS = 4  # the driver's hashers: reading and hashing files (or small objects) in parallel


class _EncodeActor:
    """The stage pools' encode actor: the model, loaded once per actor; decoded videos in, committable rows out."""

    def __init__(self, settings, load_backbone):
        self.run = IndexRun(None, load_backbone(), settings)  # its encode and assemble steps, no store

    def __call__(self, batch: dict) -> dict:
        out = []
        for blob in batch["decoded"]:
            d: Decoded = pickle.loads(blob)
            if d.error is not None:
                out.append(pickle.dumps((d.source, d.video_id, d.error), protocol=5))
                continue
            video = _Video(_Item(d.source, d.video_id, None), probe=d.probe, finished=d.finished)
            try:
                video.frame_start = [c.unit_start for c in d.chunks]
                video.changes = [c.changes for c in d.chunks]
                self.run._encode_videos([video], [(video, c) for c in d.chunks])
                result = self.run._encoded(video)
            except Exception as exc:  # noqa: BLE001 - one video's failure is that video's
                result = f"the encoder failed on this video: {type(exc).__name__}: {exc}"
            out.append(pickle.dumps((d.source, d.video_id, result), protocol=5))
        return {"result": out}


class RayIndexRun(IndexRun):
    """`IndexRun` whose hashing, decoding and encoding run on Ray Data (see the module docstring)."""

    def __init__(self, store, backbone, settings, progress=None, load_backbone=None, decode_actors: int | None = None,
                 encode_actors: int | None = None, fused: bool | None = None):  # fmt: skip
        """`load_backbone` builds the model inside each encode actor (the driver loads it too, for the
        index's fingerprint and the image size); by default the driver's model is shipped to the actors."""
        super().__init__(store, backbone, settings, progress)
        self._actor_loader = load_backbone
        self.decode_actors = decode_actors
        self.encode_actors = encode_actors
        self.fused = fused  # None: fused where the cluster has no GPUs (ray_fused.py), else stage pools
        self.timings: dict[str, float] = {}  # seconds per phase, for bench/ray_index.py

    def _run_pipeline(self, todo: list[Source]) -> None:
        if not todo:
            return
        t0 = time.monotonic()
        # the model loads (and its fingerprint is checked) and the files hash while the driver connects:
        # hashlib and torch release the GIL, and ray.init wants the main thread
        with ThreadPoolExecutor(1 + HASH_THREADS) as pool:
            loading = pool.submit(lambda: self.backbone)
            hashing = pool.map(source_key, todo)
            ray = _ray(self.settings.ray_address)
            self.timings["connect"] = time.monotonic() - t0
            hashed = list(zip(todo, hashing))
            backbone = loading.result()
        self.timings["hash"] = time.monotonic() - t0  # connect, hash and model, together (wall)

        loader = self._actor_loader or (lambda b=backbone: b)
        claimed = self._claim(hashed)
        if not claimed:
            return
        gpus = int(ray.cluster_resources().get("GPU", 0))
        fused = self.fused if self.fused is not None else not gpus
        self.timings["fused"] = float(fused)
        t0 = time.monotonic()
        results = self._fused(ray, claimed, backbone, loader) if fused else self._stages(ray, claimed, backbone, loader, gpus)
        for blob in results:
            self.timings.setdefault("first_video", time.monotonic() - t0)  # actor start-up and model load
            self.timings["all_videos"] = time.monotonic() - t0
            src, vid, result = pickle.loads(blob)
            if isinstance(result, str):
                if result.startswith("!decoder: "):
                    raise IndexRunError(f"{result[10:]}; nothing was recorded for the files not yet indexed, run again once fixed")
                self._fail(src, vid, result)
                self.progress.advance(videos=1)
                continue
            self.progress.advance(videos=1, frames=len(result.unit_vectors))
            self._pending.append(result)
            self._maybe_flush()

    def _fused(self, ray, claimed: list[dict], backbone, loader) -> Iterator[bytes]:
        """No GPUs: one actor per node decodes and encodes its share with the local engine's loop
        (ray_fused.py says why); each video's rows come back as soon as they are ready. Plain actors with a
        streaming method, not Ray Data: a Ray Data worker imports its own stack before the actor's
        constructor runs (7 s of the start-up measured here), and the shares are fixed anyway. An actor
        asks for all but one CPU of the smallest node (at least half a CPU), so no two share a node."""
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        count = max(1, min(len(claimed), self.encode_actors or len(nodes)))
        cpus = max(ACTOR_CPUS, min((n["Resources"].get("CPU", 1) for n in nodes), default=1) - 1)
        remote = ray.remote(FusedActor).options(num_cpus=cpus, scheduling_strategy="SPREAD", max_restarts=0)
        actors = [remote.remote(self.settings, loader, backbone.image_size, self.decoder_reads_sound_cues) for _ in range(count)]
        try:
            yield from _merged(ray, [a.run.options(num_returns="streaming").remote(claimed[i::count]) for i, a in enumerate(actors)])
        finally:
            for a in actors:
                ray.kill(a)

    def _stages(self, ray, claimed: list[dict], backbone, loader, gpus: int) -> Iterator[bytes]:
        """GPUs: decode on CPU actors, encode on GPU actors, each pool sized on its own (Ray Data)."""
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False  # commit whatever is ready first
        decoders = self.decode_actors or self.settings.decode_workers or default_decode_workers()
        encoders = self.encode_actors or max(1, gpus)
        ds = (
            ray.data.from_items(claimed)
            .map_batches(DecodeActor, fn_constructor_args=(self.settings, backbone.image_size, self.decoder_reads_sound_cues), batch_size=1,
                         compute=ray.data.ActorPoolStrategy(size=decoders), num_cpus=ACTOR_CPUS)
            .map_batches(_EncodeActor, fn_constructor_args=(self.settings, loader), batch_size=1,
                         compute=ray.data.ActorPoolStrategy(size=encoders),
                         num_gpus=1 if gpus else 0, num_cpus=ACTOR_CPUS)
        )  # fmt: skip
        return (row["result"] for row in ds.iter_rows())

    def _claim(self, hashed: list[tuple[Source, str]]) -> list[dict]:
        """The driver's half of the local engine's feeder: which content is decoded (once), which paths
        are linked to content indexed before or claimed in this run, which fail as copies of failures."""
        indexed = self.store.indexed_ids()
        failed_before = {} if self.settings.retry_failed else self.store.failed_content()
        claimed: list[dict] = []
        for src, vid in hashed:
            if vid.startswith("!"):
                self._fail(src, None, vid[1:])
                self.progress.advance(videos=1)
                continue
            first = failed_before.get(vid)
            if first is not None and first[0] != src.key:
                self._fail(src, vid, f"same content as {first[0]}, which failed: {first[1]}")
                self.progress.advance(videos=1)
            elif vid in indexed or vid in self._first_path:
                self._link(src, vid)
            else:
                self._first_path[vid] = src.key
                claimed.append({"source": pickle.dumps(src, protocol=5), "video_id": vid})
        return claimed


def _merged(ray, streams: list) -> Iterator[bytes]:
    """The items of several actors' streaming calls, in the order they are ready (one thread each)."""
    if len(streams) == 1:
        for ref in streams[0]:
            yield ray.get(ref)
        return
    out: queue.Queue = queue.Queue()

    def pump(stream) -> None:
        try:
            for ref in stream:
                out.put(ray.get(ref))
        except BaseException as exc:  # noqa: BLE001 - raised in the driver's thread below
            out.put(exc)
        finally:
            out.put(_END)

    for stream in streams:
        threading.Thread(target=pump, args=(stream,), daemon=True).start()
    ended = 0
    while ended < len(streams):
        got = out.get()
        if got is _END:
            ended += 1
        elif isinstance(got, BaseException):
            raise got
        else:
            yield got


def _ray(address: str | None):
    """Ray, connected: to `address` (auto, ray://...), to the cluster this process already joined, or
    to a new local one."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray
