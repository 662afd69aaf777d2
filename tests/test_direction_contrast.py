"""The direction contrast (search/direction_contrast.py): a query that names a direction scores units
against itself minus its reversed twin, so the moment that moves as asked beats one that only looks
right; the twin is encoded in the query's own text pass and travels to search processes with it."""

from __future__ import annotations


import numpy as np
import pytest

from media import indexed_synth_library
from vidsearch.api_models import SearchRequest
from vidsearch.lab import synth
from vidsearch.search.direction_contrast import contrast, reads_order, reversed_text

WORDS = {"left": "moves to the left", "right": "moves to the right", "up": "moves up", "down": "moves down"}
# (colour, shape, its direction alone in a 4 s video, its direction for 2 s beside a still distractor, the distractor)
PAIRS = [("red", "circle", "left", "right", "blue", "square"), ("blue", "square", "up", "down", "yellow", "star"),
         ("green", "triangle", "right", "left", "red", "circle"), ("yellow", "star", "down", "up", "green", "triangle")]  # fmt: skip


def _event(colour: str, shape: str, motion: str, start: float, end: float) -> synth.Event:
    size, margin = 64, synth.MARGIN
    far, mid = synth.WIDTH - size - margin, (synth.WIDTH - size) // 2
    path = {"left": (far, mid, margin, mid), "right": (margin, mid, far, mid), "up": (mid, far, mid, margin),
            "down": (mid, margin, mid, far), "still": (mid, mid, mid, mid)}[motion]  # fmt: skip
    return synth.Event(colour, shape, motion, "silence", "plain", "black", None, None, start, end, size, path)


@pytest.fixture(scope="module")
def moving_library(tmp_path_factory):
    """Per pair, one video of the shape moving one way for 4 s, and one of it moving the other way
    for 2 s, then a still shape of another colour: a query for the second direction has a video
    whose frames show more of the right shape (moving the wrong way) to beat."""
    root = tmp_path_factory.mktemp("moving")
    plans = []
    for k, (colour, shape, a, b, other, other_shape) in enumerate(PAIRS):
        plans.append(synth.VideoPlan(2 * k, "test", (_event(colour, shape, a, 0.0, 4.0),)))
        plans.append(synth.VideoPlan(2 * k + 1, "test", (_event(colour, shape, b, 0.0, 2.0), _event(other, other_shape, "still", 2.0, 4.0))))
    return indexed_synth_library(root, plans, 0)


def test_contrast_moves_the_query_away_from_its_twin():
    rng = np.random.default_rng(0)
    q, twin = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 16)).astype(np.float32))
    out = contrast(q, q, twin, gamma=2.0)
    assert np.isclose(np.linalg.norm(out), 1.0, atol=1e-5)
    assert out @ twin < q @ twin and out @ (q - twin) > q @ (q - twin)
    assert np.array_equal(contrast(q, q, q), q)  # nothing to contrast: the query as it was
    assert reversed_text('a ball rises; the sign says "UP"') == 'a ball sinks; the sign says "UP"'
    assert reversed_text("a red circle stays still") is None and reversed_text(None) is None
    assert not reads_order(None)


@pytest.mark.slow
def test_the_moment_that_moves_as_asked_comes_first(moving_library, monkeypatch):
    """With the contrast, each query's own video comes first in at least 6 of the 8 queries, and in
    more than without it (the same engine, contrast off: the longer wrong-way shape wins there). The
    motion channel is off here (tests/test_motion_channel.py measures it): this is the units' own doing."""
    from vidsearch.search import event_windows

    monkeypatch.setattr(event_windows, "MOTION_WEIGHT", 0.0)
    engine, names = moving_library
    assert engine.reads_order  # the shipped model's units are mixed by its temporal module

    def firsts() -> int:
        right = 0
        for k, (colour, shape, a, b, _, _) in enumerate(PAIRS):
            for motion, want in ((a, 2 * k), (b, 2 * k + 1)):
                req = SearchRequest(query=f"a {colour} {shape} {WORDS[motion]} while there is no sound", top_k=3, min_relevance=0.0)
                ranking = engine.rank(engine.plan(req))
                right += names[ranking.candidates[0].video_id] == f"synth_{want:05d}"
        return right

    with_contrast = firsts()
    engine.reads_order = False
    try:
        without = firsts()
    finally:
        engine.reads_order = True
    print(f"direction contrast: {with_contrast}/8 first with it, {without}/8 without")
    assert with_contrast >= 6 and with_contrast > without, (with_contrast, without)


@pytest.mark.slow
def test_the_twin_rides_in_the_querys_own_pass_and_travels_with_it(moving_library, monkeypatch):
    engine, _ = moving_library
    calls: list[list[str]] = []
    encode = engine.backbone.encode_text_and_sentences

    def counted(texts):
        calls.append(list(texts))
        return encode(texts)

    monkeypatch.setattr(engine.backbone, "encode_text_and_sentences", counted)
    text = "a blue square slides upward and a low tone sounds"
    plan = engine.plan(SearchRequest(query=text))
    assert calls == [[text, "a blue square slides downward and a low tone sounds"]]  # one pass, no second wait
    assert plan.event_query is not None and not np.allclose(plan.unit_query, plan.query)
    assert engine.plan(SearchRequest(query="a blue square and a low tone")).event_query is None  # no direction named

    # two texts that are each other's twins in one micro-batch: one pass answers both plans
    calls.clear()
    up, down = "a red star moves up", "a red star moves down"
    engine._encode_texts([up, down])
    engine.plan(SearchRequest(query=up))
    engine.plan(SearchRequest(query=down))
    assert calls == [[up, down]]
    if engine.text_channels is not None:  # the twin searched next has its sentence vector from that pass
        assert engine.text_channels.remembered("a blue square slides downward and a low tone sounds") is not None

    # a search process gets the twin with the query's vectors and plans without a text pass of its own
    vector, sentence, twin = engine.query_vectors(text)
    assert twin is not None
    other = "a green star heads left"
    engine.use_query_vectors(other, vector, sentence, twin)
    calls.clear()
    assert engine.plan(SearchRequest(query=other)).event_query is not None and calls == []


@pytest.mark.slow
def test_a_search_process_answers_a_direction_query_as_the_server_does(moving_library):
    """A search process has no towers (server/search_processes.py): from the server's three vectors
    (the query's, its sentence vector, its twin's) it ranks and cuts moments exactly as the server."""
    import dataclasses

    from vidsearch.search import open_engine
    from vidsearch.server.presenting import search_response

    full, _ = moving_library
    light = dataclasses.replace(full.backbone)  # a copy: the module's engine keeps its towers
    light.release_towers()
    worker = open_engine(full.settings, backbone=light)
    assert worker.reads_order
    for text in ("a green triangle moves to the left while there is no sound", "a blue square moves down while there is no sound"):
        vectors = full.query_vectors(text)
        assert vectors[2] is not None  # the twin travels with the query
        worker.use_query_vectors(text, *vectors)
        req = SearchRequest(query=text, top_k=4, min_relevance=0.0)
        want, got = search_response(full, req), search_response(worker, req)
        assert [(r.video.id, round(r.score, 6), [(m.start, m.end) for m in r.moments]) for r in got.results] == \
            [(r.video.id, round(r.score, 6), [(m.start, m.end) for m in r.moments]) for r in want.results]  # fmt: skip
