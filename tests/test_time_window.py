"""A time-range filter bounds the moments too: a search restricted to part of each video answers
with moments inside that part, never a whole unit that merely overlaps it (a probe found 12.0-12.705
for "from 12.9 s on", and 3.297-4.0 for 3-3.05 s)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from vidsearch.server import create_app


@pytest.fixture(scope="module")
def client(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("start, end", [(2.3, 4.6), (3.0, 3.05), (0.0, 0.3), (2.0, 2.5), (6.9, None), (0.45, 1.55)])
def test_moments_lie_inside_the_time_range(client, start, end):
    window = {"start": start} if end is None else {"start": start, "end": end}
    for body in ({"query": "a test pattern"}, {"query": "a test pattern", "group_by": "moment", "top_k": 10}):
        resp = client.post("/v1/search", json={**body, "min_relevance": 0, "filters": {"time_range": window}})
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        assert results, "the window holds something to find"
        stop = float("inf") if end is None else end
        for r in results:
            for m in r["moments"] + ([r["best"]] if r.get("best") else []):
                assert start - 1e-6 <= m["start"] < m["end"] <= stop + 1e-6, (window, m)


@pytest.mark.parametrize("body", [{"query": "a test pattern", "min_relevance": 0}, {"like": {"video_id": None, "start": 0, "end": 2}}])
def test_videos_with_nothing_in_the_time_range_are_no_results(client, body):
    """A window past some videos' ends returned those videos anyway, with no moment and a link to 0 s
    (by default for `like` and picture queries, which have no relevance threshold)."""
    videos = client.get("/v1/videos").json()["videos"]
    durations = sorted(v["duration"] for v in videos)
    cut = (durations[0] + durations[-1]) / 2 if durations[0] < durations[-1] else durations[-1] - 0.5
    if "like" in body:
        body = {**body, "like": {**body["like"], "video_id": videos[0]["id"]}}
    resp = client.post("/v1/search", json={**body, "top_k": 50, "filters": {"time_range": {"start": cut}}})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    longer = {v["id"] for v in videos if v["duration"] > cut}
    assert {r["video"]["id"] for r in results} <= longer, (cut, durations)
    assert all(r["moments"] for r in results)
    past_all = client.post("/v1/search", json={**body, "filters": {"time_range": {"start": durations[-1] + 100}}}).json()
    assert past_all["results"] == []
