"""Index jobs started through the server index with the server's own settings and model: its config
file, its token merging, the model the index was built with; and a first job that fails leaves no
half-made index behind.

Each test goes in the way a user does (the app `vidsearch serve --config` builds, the UI's Library
page on a local index), so it checks the whole path from the request to the indexer.
"""

from __future__ import annotations

import os
import time

import pytest
from fastapi.testclient import TestClient

from api_fixtures import API_KEY
from media import make_clip
from vidsearch.api_models import JobInfo
from vidsearch.config import load_settings
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.server import create_app
from vidsearch.store import Store, StoreError
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
def served(tmp_path, monkeypatch):
    """The app `vidsearch serve --config lib.toml` builds (`create_app(settings from the file)`), with
    its lifespan, on an index that does not exist yet."""
    for name in [n for n in os.environ if n.startswith("VIDSEARCH_")]:
        monkeypatch.delenv(name)

    def start(toml: str) -> TestClient:
        config = tmp_path / "lib.toml"
        config.write_text(toml)
        return TestClient(create_app(load_settings(config)), headers={"Authorization": f"Bearer {API_KEY}"})

    return start


def job_done(client: TestClient, paths: list[str]) -> JobInfo:
    job = JobInfo.model_validate(client.post("/v1/jobs", json={"paths": paths}).json())
    return wait(lambda: JobInfo.model_validate(client.get(f"/v1/jobs/{job.id}").json()))


def test_a_job_indexes_with_the_settings_of_the_servers_config_file(tmp_path, served):
    clip = make_clip(tmp_path / "lib" / "clip.mp4", seconds=4, source="testsrc2", audio_hz=None)
    db = tmp_path / "db"
    toml = (f'db = "{db}"\nmodel = "tiny"\npretrained = "none"\nsample_fps = 2.0\nspeech = false\nocr = false\n'
            f'api_keys = ["{API_KEY}"]\nlibrary_roots = ["{tmp_path / "lib"}"]\n')  # fmt: skip
    with served(toml) as client:
        done = job_done(client, [str(clip.parent)])
    assert done.state == "succeeded", done.error
    (row,) = Store.open(db).videos().to_pylist()
    assert row["n_units"] == 8  # 4 s at the file's 2 frames per second, not the default 1


def test_a_first_job_that_fails_leaves_no_half_made_index(tmp_path, served):
    clip = make_clip(tmp_path / "lib" / "clip.mp4", seconds=2, audio_hz=None)
    db = tmp_path / "db"
    toml = f'db = "{db}"\nmodel = "tiny"\ncheckpoint = "{tmp_path / "missing.pt"}"\napi_keys = ["{API_KEY}"]\nlibrary_roots = ["{tmp_path / "lib"}"]\n'
    with served(toml) as client:
        done = job_done(client, [str(clip.parent)])
        assert done.state == "failed" and "missing.pt" in done.error and "does not exist" in done.error
        assert [j["id"] for j in client.get("/v1/jobs").json()] == [done.id]  # the server still remembers it
    assert not db.exists()
    with pytest.raises(StoreError, match="no index at"):
        Store.open(db)


def test_a_job_manifest_cannot_name_videos_outside_the_library_roots(tmp_path, served):
    """A manifest under a root is a job path like any other, but its lines could name any file the
    server can read (absolute paths, `../..`): those lines fail, unread, and the rest is indexed."""
    inside = make_clip(tmp_path / "lib" / "inside.mp4", seconds=2, source="testsrc2", audio_hz=None)
    private = make_clip(tmp_path / "outside" / "private.mp4", seconds=2, source="smptebars", audio_hz=None)
    manifest = tmp_path / "lib" / "man" / "list.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(f'{{"video": "../inside.mp4"}}\n{{"video": "{private}"}}\n{{"video": "../../outside/private.mp4"}}\n')
    db = tmp_path / "db"
    toml = (f'db = "{db}"\nmodel = "tiny"\npretrained = "none"\nspeech = false\nocr = false\n'
            f'api_keys = ["{API_KEY}"]\nlibrary_roots = ["{tmp_path / "lib"}"]\n')  # fmt: skip
    with served(toml) as client:
        done = job_done(client, [str(manifest)])
    assert done.state == "succeeded", done.error
    assert done.summary["indexed"] == 1 and done.summary["failed"] == 2, done.summary
    assert all("outside the server's library roots" in f["error"] for f in done.summary["failures"]), done.summary["failures"]
    assert [r["path"] for r in Store.open(db).videos().to_pylist()] == [str(inside)]
