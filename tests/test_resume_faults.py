"""kill -9 at seeded points of a run over the media zoo, then resume: the index ends exactly as a clean
run leaves it (every file indexed once or failed once, the same rows, the same status)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pyarrow.compute as pc
import pytest

from vidsearch.store import Store

pytestmark = pytest.mark.slow
SEED = 20261202


def _index_cmd(lib, db, progress=None) -> list[str]:
    cmd = [sys.executable, "-m", "vidsearch.cli", "index", str(lib), "--db", str(db), "--model", "tiny", "--json"]
    return cmd + (["--progress-file", str(progress)] if progress else [])


def _snapshot(db) -> dict:
    """What a clean run and a resumed run must agree on."""
    proc = subprocess.run([sys.executable, "-m", "vidsearch.cli", "status", "--db", str(db), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    store = Store.open(db)
    files = sorted((r["path"], r["status"], r["video_id"]) for r in store.files().to_pylist())
    videos = store.videos(["video_id", "path", "n_units", "duration"]).to_pylist()
    per_table = {}
    for name in ("segments", "video_features", "spans"):
        ids = store.table(name).search().select(["video_id"]).limit(None).to_arrow()["video_id"]
        per_table[name] = sorted(pc.value_counts(ids).to_pylist(), key=lambda x: x["values"])
    keep = ("videos", "files", "failed", "units", "segments", "spans", "failures", "warnings")
    return {"status": {k: status[k] for k in keep}, "files": files, "videos": sorted((v["video_id"], v["n_units"]) for v in videos),
            "rows": per_table}  # fmt: skip


def test_kill_9_at_seeded_points_then_resume_equals_a_clean_run(zoo, zoo_index, tmp_path):
    clean_db, _ = zoo_index
    db = tmp_path / "db"
    env = {**os.environ, "VIDSEARCH_FLUSH_VIDEOS": "2"}  # small commits: kills land between and inside them
    rng = random.Random(SEED)
    delays = [round(rng.uniform(0.2, 6.0), 2) for _ in range(6)]
    killed = 0
    for delay in delays:
        progress = tmp_path / f"progress-{killed}.json"
        proc = subprocess.Popen(_index_cmd(zoo.library, db, progress), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 300
        while not progress.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the run has loaded its model and started on the files
        time.sleep(delay)
        if proc.poll() is not None:
            break  # finished before this kill: the rest of the run is already done
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its decoder processes, wherever they were
        proc.wait()
        killed += 1
    assert killed >= 5, f"only {killed} kills landed before the run finished (delays {delays})"
    final = subprocess.run(_index_cmd(zoo.library, db), env=env, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _snapshot(db) == _snapshot(clean_db)
