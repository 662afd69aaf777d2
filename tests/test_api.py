"""The HTTP API over a real index: search, filters, paging, media, auth, jobs, health."""

from __future__ import annotations

import base64
import json

import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api_fixtures import API_KEY
from vidsearch.server import create_app

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def library(shared_library):
    return shared_library


@pytest.fixture(scope="module")
def client(library):
    settings, _ = library
    with TestClient(create_app(settings)) as c:
        yield c


def ids_by_title(client) -> dict[str, str]:
    return {v["title"]: v["id"] for v in client.get("/v1/videos").json()["videos"]}


def test_search_returns_videos_with_moments_and_explanations(client):
    resp = client.post("/v1/search", json={"query": "colour bars", "top_k": 4})
    assert resp.status_code == 200
    body = resp.json()
    assert len(body["results"]) == 4 and body["took_ms"] > 0
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    for r in body["results"]:
        assert r["moments"] and all(0 <= m["start"] < m["end"] <= r["video"]["duration"] + 1e-6 for m in r["moments"])
        assert abs(sum(r["frame_weights"]) - 1.0) < 1e-3 and len(r["frame_weights"]) == len(r["unit_times"])
        assert len(r["curve"]["times"]) == len(r["curve"]["values"]) > 0
        assert r["links"]["media"].endswith("/media") and "thumbnail" in r["links"]
        assert "visual" in r["channel_scores"]


def test_paging_with_cursor(client):
    first = client.post("/v1/search", json={"query": "a clip", "top_k": 2}).json()
    assert first["next_cursor"]
    second = client.post("/v1/search", json={"query": "a clip", "top_k": 2, "cursor": first["next_cursor"]}).json()
    seen = [r["video"]["id"] for r in first["results"] + second["results"]]
    assert len(set(seen)) == 4 and second["next_cursor"] is None
    other = client.post("/v1/search", json={"query": "something else", "cursor": first["next_cursor"]})
    assert other.status_code == 400 and "different query" in other.json()["detail"]
    assert client.post("/v1/search", json={"query": "x", "cursor": "%%%"}).status_code == 400
    # a cursor without a version, or with an offset that is not an integer, is not one of ours (it read
    # as "the index changed since this cursor was made (version None)", and 1.7 / true / "3" as offsets)
    made = json.loads(base64.urlsafe_b64decode(first["next_cursor"]))
    for tampered in ({k: v for k, v in made.items() if k != "v"}, {**made, "v": None}, {**made, "o": 1.7}, {**made, "o": True}, {**made, "o": "3"}):
        cursor = base64.urlsafe_b64encode(json.dumps(tampered).encode()).decode()
        resp = client.post("/v1/search", json={"query": "a clip", "top_k": 2, "cursor": cursor})
        assert resp.status_code == 400 and "cursor is not valid" in resp.json()["detail"], tampered


def test_filters(client):
    ids = ids_by_title(client)
    only = client.post("/v1/search", json={"query": "x", "filters": {"video_ids": [ids["The rgb clip"]]}}).json()
    assert [r["video"]["title"] for r in only["results"]] == ["The rgb clip"]
    long = client.post("/v1/search", json={"query": "x", "filters": {"min_duration": 7}}).json()
    assert {r["video"]["title"] for r in long["results"]} == {"The bars clip", "The hd clip"}
    meta = client.post("/v1/search", json={"query": "x", "filters": {"metadata": {"kind": "bars"}}}).json()
    assert {r["video"]["title"] for r in meta["results"]} == {"The bars clip"}
    window = client.post("/v1/search", json={"query": "x", "filters": {"time_range": {"start": 2, "end": 5}}}).json()
    for r in window["results"]:
        for m in r["moments"]:
            assert m["start"] >= 2 - 1e-6 and m["end"] <= 5 + 1e-6


def test_group_by_moment(client):
    body = client.post("/v1/search", json={"query": "x", "group_by": "moment", "top_k": 6, "max_moments": 2}).json()
    assert all(len(r["moments"]) == 1 for r in body["results"])
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True) and 4 <= len(body["results"]) <= 6
    assert len({r["video"]["id"] for r in body["results"]}) == 4  # every video has at least one moment


@pytest.mark.parametrize(
    "body, words",
    [
        ({"query": ""}, "at least 1 character"),
        ({"query": "x", "top_k": 0}, "top_k"),
        ({"query": "x", "group_by": "shot"}, "group_by"),
        ({"query": "x", "channels": {"smell": 1}}, "channels"),
        ({"query": "x", "channels": {"speech": 1}}, "not in this index"),
        ({"query": "x", "filters": {"time_range": {"start": 5, "end": 2}}}, "greater than"),
        ({"query": "x", "surprise": 1}, "surprise"),
    ],
)
def test_malformed_requests_get_4xx_that_say_why(client, body, words):
    resp = client.post("/v1/search", json=body)
    assert 400 <= resp.status_code < 500 and words in resp.json()["detail"], resp.json()


def test_media_supports_range_requests_and_thumbnails(client, library):
    _, clips = library
    vid = ids_by_title(client)["The pattern clip"]
    size = clips["pattern"].stat().st_size
    part = client.get(f"/v1/videos/{vid}/media", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.headers["content-range"] == f"bytes 100-199/{size}"
    assert part.content == clips["pattern"].read_bytes()[100:200]
    thumb = client.get(f"/v1/videos/{vid}/thumbnail", params={"t": 2.5})
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert client.get(f"/v1/videos/{vid}/thumbnail", params={"t": 60}).status_code == 400
    assert client.get("/v1/videos/nope/media").status_code == 404
    assert client.get("/v1/videos/..%2F..%2Fetc%2Fpasswd/media").status_code == 404


def test_writes_need_a_key(client, library):
    assert client.post("/v1/jobs", json={"paths": ["/tmp"]}).status_code == 401
    assert client.post("/v1/jobs", json={"paths": ["/tmp"]}, headers={"Authorization": "Bearer wrong"}).status_code == 403
    vid = next(iter(ids_by_title(client).values()))
    assert client.delete(f"/v1/videos/{vid}").status_code == 401
    gone = str(library[0].library_roots[0] / "no-such-dir")
    missing = client.post("/v1/jobs", json={"paths": [gone]}, headers=AUTH)
    assert missing.status_code == 400 and gone in missing.json()["detail"]
    assert client.get("/v1/jobs/nope").status_code == 401  # job records name server paths: a key, always
    assert client.get("/v1/jobs/nope", headers=AUTH).status_code == 404


def test_reads_can_require_a_key(library):
    settings, _ = library
    keyed = settings.model_copy(update={"read_auth": True})
    with TestClient(create_app(keyed)) as c:
        assert c.post("/v1/search", json={"query": "x"}).status_code == 401
        assert c.post("/v1/search", json={"query": "x"}, headers=AUTH).status_code == 200
        assert c.get("/healthz").status_code == 200


def test_health_ready_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["videos"] == 4 and "tiny" in ready["model"]
    client.post("/v1/search", json={"query": "x"})
    text = client.get("/metrics").text
    assert 'vidsearch_request_seconds_bucket{le="0.005",method="POST",route="/v1/search",status="200"}' in text
    assert "vidsearch_index_videos 4.0" in text
    assert client.get("/openapi.json").json()["info"]["title"] == "vidsearch"


def test_empty_index_answers_with_no_results(tmp_path):
    from vidsearch.config import load_settings

    settings = load_settings(None, db=tmp_path / "empty")
    from vidsearch.store import Store

    Store.open(settings.db, create=True)
    with TestClient(create_app(settings)) as c:
        resp = c.post("/v1/search", json={"query": "anything"})
        assert resp.status_code == 200 and resp.json()["results"] == []
        assert c.get("/readyz").status_code == 503


def test_attention_is_the_softmax_of_query_unit_similarities(client, library, tiny_backbone):
    """The random-weight tiny model has no trained head, so X-Pool is the parameter-free kind: the frame
    weights it reports are softmax(cos(query, unit) / temperature) over the video's units."""
    from vidsearch.store import Store

    settings, _ = library
    (result,) = client.post("/v1/search", json={"query": "a test pattern", "top_k": 1}).json()["results"]
    q = tiny_backbone.encode_text(["a test pattern"])[0]
    _, _, units = Store.open(settings.db).features(result["video"]["id"])
    logits = units @ (q / np.linalg.norm(q)) / settings.pool_temperature
    expected = np.exp(logits - logits.max())
    np.testing.assert_allclose(result["frame_weights"], expected / expected.sum(), atol=2e-6)
    assert len(result["frame_weights"]) == len(result["unit_times"]) == len(units)


def test_docs_work_on_a_closed_network(client):
    """Swagger UI's page loads its script and style from this server, not from a CDN."""
    page = client.get("/docs")
    assert page.status_code == 200 and "cdn." not in page.text and "https://" not in page.text
    scripts = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text)
    assert len(scripts) >= 2 and all(client.get(url).status_code == 200 for url in scripts), scripts


def test_the_index_status_brings_a_version_committed_elsewhere(tmp_path, tiny_backbone):
    """A version another process committed (`vidsearch index` in a shell) went live only when a search
    asked, so the UI, which keys its cached answers by the status's version, kept answering from the
    old one: asking the status now makes the server look for it."""
    import time

    from media import make_clip
    from vidsearch.config import Settings
    from vidsearch.indexer.pipeline import IndexRun, open_store_for

    settings = Settings(db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False, refresh_seconds=0.2)
    first = make_clip(tmp_path / "lib" / "a.mp4", seconds=1, size="96x64", rate=5, source="color=c=red", audio_hz=None)
    second = make_clip(tmp_path / "lib" / "b.mp4", seconds=1, size="96x64", rate=5, source="color=c=blue", audio_hz=None)
    IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([first])
    with TestClient(create_app(settings)) as c:
        before = c.get("/v1/index").json()["index_version"]
        IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([second])  # "another process"
        deadline, now = time.monotonic() + 10, before
        while now == before and time.monotonic() < deadline:
            time.sleep(0.3)
            now = c.get("/v1/index").json()["index_version"]
        assert now != before, "the status never brought the new version live"
