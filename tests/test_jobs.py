"""Index jobs started through the server index with the server's own settings and model: its config
file, its token merging, the model the index was built with; and a first job that fails leaves no
half-made index behind.

Each test goes in the way a user does (`vidsearch serve --config`, the UI's Library page on a local
index), so it checks the whole path from the request to the indexer, not one function.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from api_fixtures import API_KEY, ServerProcess, free_port
from media import make_clip
from vidsearch.client import VidsearchClient
from vidsearch.config import load_settings
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.store import Store
from vidsearch.ui.backend import UiConfig, open_backend


def wait(poll, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while True:
        job = poll()
        if job.state in ("succeeded", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.3)


def test_a_library_page_job_on_a_token_merged_index_keeps_its_merging(tmp_path):
    """`vidsearch ui --db DIR` has no model flags: the index's own model, merging included, must be used."""
    from vidsearch.encoders.backbone import load_backbone

    first = make_clip(tmp_path / "lib" / "first.mp4", seconds=3, source="testsrc", audio_hz=None)
    second = make_clip(tmp_path / "more" / "second.mp4", seconds=3, source="smptebars", audio_hz=None)
    settings = load_settings(None, db=tmp_path / "db", model="tiny", pretrained="none", token_merging="recommended", speech=False, ocr=False)
    merged = load_backbone("tiny", "none", merging="recommended")
    IndexRun(open_store_for(settings, merged), merged, settings).run([first])
    assert Store.open(settings.db).stored_fingerprint().merging != "off"

    backend = open_backend(UiConfig(api_url=None, db=settings.db))  # local mode, as the Library page has it
    job = backend.start_job([str(second.parent)], "index")
    done = wait(lambda: backend.job(job.id))
    assert done.state == "succeeded", done.error
    assert done.summary["indexed"] == 1 and done.summary["fingerprint"] == merged.fingerprint.id
    assert Store.open(settings.db).stats()["videos"] == 2


@pytest.fixture
def served(tmp_path):
    """`vidsearch serve --config lib.toml` on an index that does not exist yet."""

    def start(toml: str) -> ServerProcess:
        config = tmp_path / "lib.toml"
        config.write_text(toml)
        port = free_port()
        command = [sys.executable, "-m", "vidsearch.cli", "serve", "--config", str(config), "--port", str(port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("VIDSEARCH_")}
        return ServerProcess("vidsearch serve", command, f"http://127.0.0.1:{port}", "/healthz", tmp_path / "serve.log", env=env, timeout=120)

    return start


@pytest.mark.slow
def test_a_job_indexes_with_the_settings_of_the_servers_config_file(tmp_path, served):
    clip = make_clip(tmp_path / "lib" / "clip.mp4", seconds=4, source="testsrc2", audio_hz=None)
    db = tmp_path / "db"
    toml = (f'db = "{db}"\nmodel = "tiny"\npretrained = "none"\nsample_fps = 2.0\nspeech = false\nocr = false\n'
            f'api_keys = ["{API_KEY}"]\n')  # fmt: skip
    with served(toml) as server, VidsearchClient(server.url, API_KEY) as client:
        done = client.wait_for_job(client.create_job([str(clip.parent)]).id, timeout=300)
    assert done.state == "succeeded", done.error
    (row,) = Store.open(db).videos().to_pylist()
    assert row["n_units"] == 8  # 4 s at the file's 2 frames per second, not the default 1


@pytest.mark.slow
def test_a_first_job_that_fails_leaves_no_half_made_index(tmp_path, served):
    clip = make_clip(tmp_path / "lib" / "clip.mp4", seconds=2, audio_hz=None)
    db = tmp_path / "db"
    toml = f'db = "{db}"\nmodel = "tiny"\ncheckpoint = "{tmp_path / "missing.pt"}"\napi_keys = ["{API_KEY}"]\n'
    with served(toml) as server, VidsearchClient(server.url, API_KEY) as client:
        done = client.wait_for_job(client.create_job([str(clip.parent)]).id, timeout=300)
        assert done.state == "failed" and "missing.pt" in done.error and "does not exist" in done.error
        assert [j.id for j in client.jobs()] == [done.id]  # the server still remembers it
    assert not db.exists()
    status = subprocess.run([sys.executable, "-m", "vidsearch.cli", "status", "--db", str(db)], capture_output=True, text=True)
    assert status.returncode == 2 and "no index at" in status.stderr
