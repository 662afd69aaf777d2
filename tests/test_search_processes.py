"""`vidsearch serve --search-processes N`: new searches are computed by worker processes, each with its
own interpreter (server/search_processes.py). They answer as the server itself would, follow new index
versions, survive a worker's death, and leave with the server."""

from __future__ import annotations

import os
import signal
import sys
import time

import httpx
import pytest

from api_fixtures import API_KEY, ServerProcess, build_library, free_port
from vidsearch.client import VidsearchClient
from vidsearch.server import local_client

TEXTS = ["colour bars", "a test pattern with a tone", "red green blue", "moving numbers", "a bright pattern"]


def _workers_ready(r: httpx.Response) -> bool:
    return r.status_code == 200 and bool(r.json().get("search_processes", {}).get("ready"))


def _ranked(body: dict) -> list[tuple[str, float]]:
    return [(x["video"]["id"], x["score"]) for x in body["results"]]


def test_an_engine_whose_towers_are_released_answers_from_given_vectors(shared_library, tiny_backbone):
    """What a search process keeps (server/search_processes.py): with the frame and text towers freed,
    an engine answers a search from the vectors the server encoded, as the full engine does, keeps the
    index's fingerprint, and says clearly that it does not encode."""
    import dataclasses

    from vidsearch.api_models import SearchRequest
    from vidsearch.encoders.backbone import TowersReleased
    from vidsearch.search import open_engine
    from vidsearch.server.presenting import search_response

    settings = shared_library[0].model_copy(update={"ann_saved": False})  # the shared library stays as it is
    light = dataclasses.replace(tiny_backbone)  # a copy: the session's backbone keeps its towers
    light.release_towers()
    assert light.model is None and tiny_backbone.model is not None
    assert light.fingerprint == tiny_backbone.fingerprint and light.dim == tiny_backbone.dim
    with pytest.raises(TowersReleased, match="does not encode"):
        light.encode_text(["colour bars"])
    full, worker = open_engine(settings, backbone=tiny_backbone), open_engine(settings, backbone=light)
    for text in TEXTS:
        worker.use_query_vectors(text, *full.query_vectors(text))
        req = SearchRequest(query=text, top_k=4)
        want, got = search_response(full, req), search_response(worker, req)
        assert [(r.video.id, round(r.score, 6)) for r in got.results] == [(r.video.id, round(r.score, 6)) for r in want.results]


@pytest.mark.slow
def test_search_processes_answer_like_the_server_follow_versions_and_survive_a_dead_worker(tmp_path, tiny_backbone):
    settings, _ = build_library(tmp_path, tiny_backbone)
    with local_client(settings) as client:  # the same searches, answered in this process by threads
        want = {t: [(r.video.id, r.score) for r in client.search(t, top_k=4).results] for t in TEXTS}
    port = free_port()
    command = [sys.executable, "-m", "vidsearch.cli", "serve", "--db", str(settings.db), "--model", "tiny", "--pretrained", "none",
               "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY, "--library-root", str(tmp_path),
               "--search-processes", "2"]  # fmt: skip
    env = {**os.environ, "VIDSEARCH_SPEECH": "false", "VIDSEARCH_OCR": "false", "VIDSEARCH_REFRESH_SECONDS": "0.2"}
    server = ServerProcess("vidsearch serve", command, f"http://127.0.0.1:{port}", "/readyz", tmp_path / "serve.log", env=env,
                           timeout=300, is_ready=_workers_ready)  # fmt: skip
    with server, httpx.Client(base_url=server.url, timeout=60) as http:
        status = http.get("/readyz").json()["search_processes"]
        first_pids = status["pids"]
        assert status["processes"] == 2 and len(first_pids) == 2 and status["answered"] == 0
        assert all(mb > 0 for mb in status["rss_mb"]) and status["towers_released"]

        # the workers' answers are the server's own (the query encoded by the server, ONNX or torch: same
        # vectors to ~1e-4, so the same order)
        for text in TEXTS:
            got = _ranked(http.post("/v1/search", json={"query": text, "top_k": 4}).json())
            assert [v for v, _ in got] == [v for v, _ in want[text]], text
            assert max(abs(a - b) for (_, a), (_, b) in zip(got, want[text])) < 1e-3
        assert http.get("/readyz").json()["search_processes"]["answered"] == len(TEXTS)

        # pages: a cursor made by one worker is read by whichever answers the next page
        page1 = http.post("/v1/search", json={"query": "anything at all", "top_k": 2}).json()
        page2 = http.post("/v1/search", json={"query": "anything at all", "top_k": 2, "cursor": page1["next_cursor"]}).json()
        ids = [r["video"]["id"] for r in page1["results"] + page2["results"]]
        assert len(ids) == 4 and len(set(ids)) == 4

        # a delete: the workers serve the new version, and the deleted video never comes back
        with VidsearchClient(server.url, API_KEY) as api:
            victim = ids[0]
            assert api.delete_video(victim)["removed"] == 1
        deadline = time.monotonic() + 30
        while victim in [r["video"]["id"] for r in http.post("/v1/search", json={"query": "anything at all", "top_k": 10}).json()["results"]]:
            assert time.monotonic() < deadline, "the deleted video is still served"
            time.sleep(0.2)
        for i in range(6):
            body = http.post("/v1/search", json={"query": f"after the delete {i}", "top_k": 10}).json()
            assert victim not in [r["video"]["id"] for r in body["results"]] and len(body["results"]) == 3

        # a worker killed: no request fails (threads answer while the pool starts again)
        os.kill(first_pids[0], signal.SIGKILL)
        for i in range(6):
            r = http.post("/v1/search", json={"query": f"while a worker is down {i}", "top_k": 3})
            assert r.status_code == 200 and len(r.json()["results"]) == 3, r.text
        deadline = time.monotonic() + 180
        while not _workers_ready(ready := http.get("/readyz")):
            assert time.monotonic() < deadline, f"the pool did not start again: {ready.text}"
            time.sleep(0.5)
        status = ready.json()["search_processes"]
        assert status["restarts"] == 1 and not set(status["pids"]) & set(first_pids)
        answered = status["answered"]
        assert http.post("/v1/search", json={"query": "after the restart", "top_k": 3}).status_code == 200
        assert http.get("/readyz").json()["search_processes"]["answered"] == answered + 1
        last_pids = status["pids"]

    # the server stopped: its workers are gone too
    deadline = time.monotonic() + 20
    while any(os.path.exists(f"/proc/{pid}") for pid in first_pids + last_pids):
        assert time.monotonic() < deadline, "search workers outlived the server"
        time.sleep(0.2)
