"""`vidsearch index --engine ray`: the same run as `IndexRun`, with hashing, decoding and encoding fanned
out over a Ray cluster with Ray Data.

What stays on the driver, and why: discovery, the plan (skip unchanged files), the decision of which
path of a content is decoded and which are linked to it, every outcome and every commit. Those are the
contracts (content-hash keys, write-then-mark commits, a video fails alone, a killed run resumes, a
second run does no work), and keeping them in the one place that already implements them, `IndexRun`,
means the two engines cannot drift apart: this class only replaces how the work between plan and
commit is done.

The work, as three Ray Data stages, each on its own resource so each scales on its own:
1. **hash** (CPU tasks): content keys of the files to do (local files, or objects in S3: remote.py).
2. **decode** (an actor pool on CPUs): each actor owns one of our decoder processes (worker.py), so a
   decoder that crashes or stalls on a hostile file still fails that file alone, instead of killing
   a Ray worker and, after its retries, the whole dataset.
3. **encode** (an actor pool with a GPU per actor when the cluster has GPUs, else CPU actors): the
   model is loaded once per actor (with the torch or the Triton backend, as configured), frames become
   units, segments and audio tokens, the rows the driver commits.
The driver streams the encoded videos back (`iter_rows`) and commits them in `flush_videos` batches,
exactly as the local engine does, so a driver killed mid-run loses at most its uncommitted batch, and
the next run plans only what is not committed yet. This is the split NVIDIA's NeMo Curator video
pipeline uses on Ray (separate stage pools for decode and for GPU models).

Memory: a video's sampled frames travel from the decode to the encode stage as one row (150 KB a
frame at 224 px: ~540 MB for an hour at 1 frame/s), in Ray's object store, which spills to disk; the
local engine streams chunks of 64 frames instead. Chunk rows are the next step for hours-long videos.

Sizes on a small node: an actor pool that asks for whole CPUs can take every CPU and starve Ray Data's
own tasks (measured: a 2-CPU `ray.init` hangs); the pools here ask for half a CPU per actor.
"""

from __future__ import annotations

import pickle
import time

from .discover import Source
from .pipeline import IndexRun, IndexRunError, _Item, _Video, default_decode_workers
from .ray_stages import ACTOR_CPUS, DecodeActor, Decoded, hash_rows


class _EncodeActor:
    """Stage 3: the model, loaded once per actor; decoded videos in, committable rows out."""

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
                 encode_actors: int | None = None):  # fmt: skip
        """`load_backbone` builds the model inside each encode actor (the driver loads it too, for the
        index's fingerprint and the image size); by default the driver's model is shipped to the actors."""
        super().__init__(store, backbone, settings, progress)
        self._actor_loader = load_backbone
        self.decode_actors = decode_actors
        self.encode_actors = encode_actors
        self.timings: dict[str, float] = {}  # seconds per phase, for bench/ray_index.py

    def _run_pipeline(self, todo: list[Source]) -> None:
        if not todo:
            return
        t0 = time.monotonic()
        ray = _ray(self.settings.ray_address)
        import ray.data

        self.timings["connect"] = time.monotonic() - t0

        backbone = self.backbone  # load and check the fingerprint before any work is sent out
        loader = self._actor_loader or (lambda b=backbone: b)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False  # commit whatever is ready first

        def items(sources):
            return ray.data.from_items([{"source": pickle.dumps(s, protocol=5)} for s in sources])

        t0 = time.monotonic()
        hashed = items(todo).map_batches(hash_rows, batch_size=8, num_cpus=ACTOR_CPUS).take_all()
        self.timings["hash"] = time.monotonic() - t0
        claimed = self._claim(hashed)
        if not claimed:
            return
        gpus = int(ray.cluster_resources().get("GPU", 0))
        decoders = self.decode_actors or self.settings.decode_workers or default_decode_workers()
        encoders = self.encode_actors or max(1, gpus)
        ds = (
            ray.data.from_items(claimed)
            .map_batches(DecodeActor, fn_constructor_args=(self.settings, backbone.image_size), batch_size=1,
                         compute=ray.data.ActorPoolStrategy(size=decoders), num_cpus=ACTOR_CPUS)
            .map_batches(_EncodeActor, fn_constructor_args=(self.settings, loader), batch_size=1,
                         compute=ray.data.ActorPoolStrategy(size=encoders),
                         num_gpus=1 if gpus else 0, num_cpus=ACTOR_CPUS)
        )  # fmt: skip
        t0 = time.monotonic()
        for row in ds.iter_rows():
            self.timings.setdefault("first_video", time.monotonic() - t0)  # actor start-up and model load
            self.timings["all_videos"] = time.monotonic() - t0
            src, vid, result = pickle.loads(row["result"])
            if isinstance(result, str):
                if result.startswith("!decoder: "):
                    raise IndexRunError(f"{result[10:]}; nothing was recorded for the files not yet indexed, run again once fixed")
                self._fail(src, vid, result)
                self.progress.advance(videos=1)
                continue
            self.progress.advance(videos=1, frames=len(result.unit_vectors))
            self._pending.append(result)
            self._maybe_flush()

    def _claim(self, hashed: list[dict]) -> list[dict]:
        """The driver's half of the local engine's feeder: which content is decoded (once), which paths
        are linked to content indexed before or claimed in this run, which fail as copies of failures."""
        indexed = self.store.indexed_ids()
        failed_before = {} if self.settings.retry_failed else self.store.failed_content()
        claimed: list[dict] = []
        for row in hashed:
            src: Source = pickle.loads(row["source"])
            vid = row["video_id"]
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
                claimed.append({"source": row["source"], "video_id": vid})
        return claimed


def _ray(address: str | None):
    """Ray, connected: to `address` (auto, ray://...), to the cluster this process already joined, or
    to a new local one."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray
