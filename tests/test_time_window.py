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
