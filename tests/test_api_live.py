"""A real server on a loopback port: searches keep being answered, with no error, while an index
job and a delete run against the same index, and results switch to the new version when it commits."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from api_fixtures import API_KEY, LiveServer, build_library
from media import make_clip
from vidsearch.client import ApiError, VidsearchClient
from vidsearch.server import create_app


@pytest.mark.slow
def test_searches_during_index_job_and_delete_never_fail(tmp_path, tiny_backbone):
    settings, _ = build_library(tmp_path, tiny_backbone)
    new_dir = tmp_path / "new"
    for i, src in enumerate(["testsrc", "yuvtestsrc", "pal75bars"]):
        make_clip(new_dir / f"new_{i}.mp4", seconds=3, source=src, audio_hz=None)

    with LiveServer(create_app(settings)) as server, VidsearchClient(server.url, API_KEY) as client:
        before = {v.id for v in client.videos().videos}
        assert len(before) == 4
        log: list[tuple[int, str, set[str], float]] = []
        stop = threading.Event()

        def search_loop():
            with httpx.Client(base_url=server.url, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/v1/search", json={"query": "a test pattern", "top_k": 50})
                    ids = {x["video"]["id"] for x in r.json()["results"]} if r.status_code == 200 else set()
                    version = r.json().get("index_version", "") if r.status_code == 200 else ""
                    log.append((r.status_code, version, ids, time.monotonic()))

        loop = threading.Thread(target=search_loop)
        loop.start()
        try:
            job = client.create_job([str(new_dir)])
            assert job.state == "queued"
            victim = sorted(before)[0]
            done = client.wait_for_job(job.id, timeout=300)
            assert done.state == "succeeded", done.error
            assert done.summary["indexed"] == 3 and done.progress.done == 3
            deleted_at = time.monotonic()
            assert client.delete_video(victim)["removed"] == 1
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                latest = client.search("a test pattern", top_k=50)
                if {r.video.id for r in latest.results} == (before | _ids_of(client)) - {victim}:
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # keep searching a little after the switch
        finally:
            stop.set()
            loop.join()

        statuses = [s for s, *_ in log]
        assert len(log) > 20 and set(statuses) == {200}, f"failed requests: {[s for s in statuses if s != 200]}"
        sizes = [len(ids) for _, _, ids, _ in log]
        assert sizes[0] == 4 and max(sizes) == 7 and sizes[-1] == 6  # old, then new, then after the delete
        assert len({v for _, v, _, _ in log}) >= 3  # the versions switched while searches went on
        # once the delete returned and a newer version was served, the victim never came back
        served_after = [ids for _, v, ids, t in log if t > deleted_at and victim not in ids]
        first_clean = next(i for i, (_, _, ids, t) in enumerate(log) if t > deleted_at and victim not in ids)
        assert served_after and all(victim not in ids for _, _, ids, _ in log[first_clean:])
        with pytest.raises(ApiError) as exc:
            client.video(victim)
        assert exc.value.status == 404


def _ids_of(client: VidsearchClient) -> set[str]:
    return {v.id for v in client.videos().videos}
