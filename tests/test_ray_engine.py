"""The Ray engine (`--engine ray`) on a local Ray cluster started here (`ray.init(num_cpus=2)`): the same
rows as the local engine on the same library (a bad file fails alone, a copy is linked), with the fused
actor and with the stage pools, a second run does no work, and a driver killed with SIGKILL mid-run
resumes with every video indexed once (which also needs the fused actor to hand back each video as soon
as it is encoded: the driver commits one at a time and is killed after its first commit)."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.compute as pc
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'vidsearch[ray]')")
pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'vidsearch[ray]')")

from media import make_library  # noqa: E402

from vidsearch.config import Settings  # noqa: E402
from vidsearch.encoders.backbone import load_backbone  # noqa: E402
from vidsearch.indexer.pipeline import IndexRun, open_store_for  # noqa: E402
from vidsearch.indexer.ray_engine import RayIndexRun  # noqa: E402
from vidsearch.store import Store  # noqa: E402

pytestmark = pytest.mark.slow


# how each encode actor loads its model (a partial of an installed function: the actors can import it)
tiny = functools.partial(load_backbone, "tiny", pretrained="none")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A 2-CPU Ray cluster for this module (the actor pools ask for half a CPU each: MACHINE-NOTES)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(tmp_path_factory.mktemp("ray")))
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("raylib")
    clips = make_library(root / "lib", 4, seconds=2.0)
    (root / "lib" / "broken.mp4").write_text("this is not a video\n")
    (root / "lib" / "copy.mp4").write_bytes(clips[0].read_bytes())
    return root / "lib"


def _settings(db, **kw) -> Settings:
    return Settings(db=db, model="tiny", pretrained="none", speech=False, ocr=False, **kw)


def _rows(db) -> dict:
    store = Store.open(db)
    files = sorted((r["path"], r["status"], r["video_id"], r["error"]) for r in store.files().to_pylist())
    videos = sorted((r["video_id"], r["path"], r["n_units"], r["duration"]) for r in store.videos(["video_id", "path", "n_units", "duration"]).to_pylist())
    segs = store.segments(["video_id", "kind", "start", "end", "vector"]).to_pylist()
    segs.sort(key=lambda r: (r["video_id"], r["kind"], r["start"], r["end"]))
    return {"files": files, "videos": videos, "segments": segs}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "stages"])
def test_same_rows_as_the_local_engine(cluster, library, tiny_backbone, tmp_path, fused):
    """Both ways the engine runs: one fused decode-and-encode actor per node (no GPUs, the default
    here) and separate decode and encode pools (what a cluster with GPUs gets)."""
    local = IndexRun(open_store_for(_settings(tmp_path / "local"), tiny_backbone), tiny_backbone, _settings(tmp_path / "local")).run([library])
    s = _settings(tmp_path / "ray", engine="ray")
    run = RayIndexRun(open_store_for(s, tiny_backbone), tiny_backbone, s, load_backbone=tiny, fused=fused)
    distributed = run.run([library])
    assert run.timings["fused"] == fused
    assert (distributed.indexed, distributed.linked, distributed.failed) == (local.indexed, local.linked, local.failed) == (4, 1, 1)
    assert "broken.mp4" in distributed.failures[0]["path"]
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert a["files"] == b["files"] and a["videos"] == b["videos"]
    assert [(r["video_id"], r["kind"], r["start"], r["end"]) for r in a["segments"]] == [
        (r["video_id"], r["kind"], r["start"], r["end"]) for r in b["segments"]
    ]
    va, vb = np.array([r["vector"] for r in a["segments"]]), np.array([r["vector"] for r in b["segments"]])
    assert np.abs(va - vb).max() < 1e-3  # same model, same frames: the same vectors (batching aside)

    again = RayIndexRun(open_store_for(s, tiny_backbone), tiny_backbone, s, load_backbone=tiny, fused=fused).run([library])
    assert (again.indexed, again.linked, again.skipped) == (0, 0, 6)  # the failed file is not retried either


def test_driver_killed_mid_run_resumes(cluster, tmp_path, tiny_backbone):
    lib = tmp_path / "lib"
    clips = make_library(lib, 24, seconds=2.0)  # enough that a fast machine cannot finish between two looks
    db = tmp_path / "db"
    # the driver joins this module's cluster, commits every video on its own, and is killed after the first
    env = {**os.environ, "VIDSEARCH_FLUSH_VIDEOS": "1", "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "vidsearch.cli", "index", str(lib), "--db", str(db), "--model", "tiny", "--pretrained", "none",
           "--no-speech", "--no-ocr", "--engine", "ray", "--ray-address", cluster, "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    committed, deadline = 0, time.monotonic() + 400
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                committed = len(Store.open(db).indexed_ids())
            except Exception:  # noqa: BLE001 - the index is being created
                continue
            if committed:
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert committed > 0, f"nothing was committed before the deadline: {proc.stderr.read().decode()[-2000:]}"
    assert committed < len(clips), f"the run finished all {len(clips)} before the kill landed; nothing to resume"

    s = _settings(db, engine="ray")
    resumed = RayIndexRun(open_store_for(s, tiny_backbone), tiny_backbone, s, load_backbone=tiny).run([lib])
    store = Store.open(db)
    assert len(store.indexed_ids()) == len(clips) and resumed.failed == 0
    # a video whose rows were committed but whose file was not yet marked when the kill landed is linked
    # (write-then-mark), not encoded again
    assert resumed.indexed + resumed.skipped + resumed.linked == len(clips)
    assert resumed.skipped + resumed.linked >= committed, (resumed, committed)  # none committed before is encoded again
    # each video once: its segments were written by exactly one run
    clean = tmp_path / "clean"
    IndexRun(open_store_for(_settings(clean), tiny_backbone), tiny_backbone, _settings(clean)).run([lib])
    counts = lambda d: sorted(pc.value_counts(Store.open(d).segments(["video_id"])["video_id"]).to_pylist(), key=lambda x: x["values"])  # noqa: E731
    assert counts(db) == counts(clean)
