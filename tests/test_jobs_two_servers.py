"""Two servers on one index (behind a load balancer) share its jobs: a job started on one is found,
listed and cancelled through the other, and a job submitted while another process writes to the index
waits, queued, for its turn instead of failing on the write lock (a probe found 404s and an instant
"another vidsearch process is writing")."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from test_server_hardening import AUTH, long_clip, small_library, wait_job  # noqa: F401 - fixtures
from vidsearch.indexer.pipeline import IndexRun
from vidsearch.server import create_app


@pytest.fixture
def paced_encoding(monkeypatch):
    """Each encoder batch waits 0.3 s first (in this process, where both servers' job threads run): the
    long job is still running when the other server's cancel lands, however fast this machine
    encodes. Unpaced, a warm process indexed the whole clip in ~2 s, before the cancel, and the test
    failed about one run in two."""
    real = IndexRun._encode

    def paced(self, buf):
        if buf.frames:
            time.sleep(0.3)
        return real(self, buf)

    monkeypatch.setattr(IndexRun, "_encode", paced)


@pytest.mark.slow
def test_servers_on_one_index_share_its_jobs(small_library, long_clip, paced_encoding):  # noqa: F811
    settings, clips = small_library
    dense = settings.model_copy(update={"sample_fps": 30.0})
    with TestClient(create_app(dense), headers=AUTH) as a, TestClient(create_app(dense), headers=AUTH) as b:
        first = a.post("/v1/jobs", json={"paths": [str(long_clip.parent)]}).json()
        assert wait_job(a, first["id"], until=("running",))["state"] == "running"
        seen = b.get(f"/v1/jobs/{first['id']}")  # started on A after B opened the index
        assert seen.status_code == 200 and seen.json()["state"] == "running", seen.text
        assert first["id"] in {j["id"] for j in b.get("/v1/jobs").json()}

        second = b.post("/v1/jobs", json={"paths": [str(clips["keep"])]}).json()
        time.sleep(2.0)
        waiting = b.get(f"/v1/jobs/{second['id']}").json()
        assert waiting["state"] == "queued", waiting  # waits for A's job to stop writing, does not fail

        stopping = b.delete(f"/v1/jobs/{first['id']}")  # asked of B, for A's job
        assert stopping.status_code == 200
        stopped = wait_job(a, first["id"], timeout=60)
        assert stopped["state"] == "cancelled" and stopped["summary"]["indexed"] == 0  # what it committed: nothing yet
        assert wait_job(b, first["id"], timeout=10)["state"] == "cancelled"

        done = wait_job(b, second["id"], timeout=120)
        assert done["state"] == "succeeded", done
        assert a.get(f"/v1/jobs/{second['id']}").json()["state"] == "succeeded"
