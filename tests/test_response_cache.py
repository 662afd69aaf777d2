"""Repeated searches on the live index version are answered from the response cache
(server/response_cache.py), never across versions, and never changed by what a caller does with them."""

from __future__ import annotations

from types import SimpleNamespace

from fastapi.testclient import TestClient

from api_fixtures import API_KEY
from vidsearch.api_models import SearchRequest, SearchResponse
from vidsearch.server import create_app
from vidsearch.server.response_cache import ResponseCache

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def without_took(body: dict) -> dict:
    return {k: v for k, v in body.items() if k != "took_ms"}


def test_a_repeated_search_is_answered_from_the_cache_as_it_was_computed(shared_library):
    settings, _ = shared_library
    request = {"query": "colour bars", "top_k": 3}
    with TestClient(create_app(settings.model_copy(update={"response_cache": 0}))) as plain:
        want_open = plain.post("/v1/search", json=request).json()
        want_keyed = plain.post("/v1/search", json=request, headers=AUTH).json()
    with TestClient(create_app(settings)) as c:
        cache = c.app.state.vidsearch.responses
        first = c.post("/v1/search", json=request).json()  # computed, then rewritten for this viewer
        keyed = c.post("/v1/search", json=request, headers=AUTH).json()  # from the cache, another viewer
        again = c.post("/v1/search", json=request).json()
        assert cache.misses == 1 and cache.hits == 2
        other = c.post("/v1/search", json={**request, "top_k": 2}).json()
        assert cache.misses == 2 and len(other["results"]) == 2
    assert without_took(first) == without_took(want_open) == without_took(again)
    assert without_took(keyed) == without_took(want_keyed)  # the first viewer's rewrite did not stick


def test_a_new_index_version_is_never_answered_from_the_old_one():
    engine = SimpleNamespace(snapshot=SimpleNamespace(version="v1"))
    computed = []

    def compute():
        computed.append(engine.snapshot.version)
        return SearchResponse(query="q", group_by="video", results=[], index_version=engine.snapshot.version, took_ms=5.0)

    cache = ResponseCache(size=2)
    req = SearchRequest(query="q")
    assert cache(engine, req, compute).index_version == "v1"
    assert cache(engine, req, compute).index_version == "v1" and computed == ["v1"]
    engine.snapshot.version = "v2"
    assert cache(engine, req, compute).index_version == "v2" and computed == ["v1", "v2"]
    for q in ("a", "b", "c"):  # least recently used out past `size`
        cache(engine, SearchRequest(query=q), compute)
    assert len(cache._entries) == 2
    assert cache(engine, req, compute) is not cache(engine, req, compute)  # each caller its own copy


def test_repeats_skip_the_worker_threads_and_new_searches_take_turns(shared_library, monkeypatch):
    """A repeated request is answered on the event loop, without queueing for a search thread; new
    ones run on at most `search_threads` threads at once, however many arrive together."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from vidsearch.server import search as search_route

    settings, _ = shared_library
    active, peak, computed = 0, 0, []
    lock = threading.Lock()
    real = search_route._answer

    def counting(engine, req, state, key):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            time.sleep(0.05)  # long enough for the other requests to arrive meanwhile
            computed.append(req.query)
            return real(engine, req, state, key)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(search_route, "_answer", counting)
    with TestClient(create_app(settings.model_copy(update={"search_threads": 1}))) as c:
        assert c.app.state.vidsearch.settings.search_threads == 1
        with ThreadPoolExecutor(6) as pool:
            bodies = list(pool.map(lambda i: c.post("/v1/search", json={"query": f"colour bars {i}", "top_k": 2}), range(6)))
        assert all(r.status_code == 200 for r in bodies) and peak == 1 and len(computed) == 6
        again = c.post("/v1/search", json={"query": "colour bars 3", "top_k": 2})
        assert again.status_code == 200 and len(computed) == 6  # from the cache, no thread asked
        assert without_took(again.json()) == without_took(bodies[3].json())
