"""Speech and on-screen text as search channels, end to end: flite speech and drawtext at known
times are indexed (Whisper, Tesseract, MiniLM) and found by paraphrase, with the right moment."""

from __future__ import annotations

import pytest

from media import make_clip, make_spoken_clip, make_text_clip, speech_seconds
from vidsearch.api_models import SearchRequest
from vidsearch.config import load_settings
from vidsearch.indexer.pipeline import IndexRun, open_store_for
from vidsearch.search import SearchEngine, TextChannels
from vidsearch.server import search_response

REVENUE = "the quarterly revenue grew by ten percent"
PLANTS = "please remember to water the plants on friday"
BRIEFING = "ANNUAL SAFETY BRIEFING"


def overlap(a, b) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


@pytest.fixture(scope="module")
def text_index(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("text")
    lib = root / "lib"
    make_spoken_clip(lib / "earnings.mp4", REVENUE, at=3.0, colour="navy")
    make_spoken_clip(lib / "chores.mp4", PLANTS, at=2.0, colour="darkgreen")
    make_text_clip(lib / "briefing.mp4", BRIEFING, start=4.0, end=8.0)
    make_clip(lib / "bars.mp4", seconds=6, source="smptebars", audio_hz=None)
    settings = load_settings(None, db=root / "db", model="tiny", pretrained="none", speech=True, ocr=True)
    summary = IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([lib])
    assert summary.indexed == 4 and summary.failed == 0
    store = open_store_for(settings, tiny_backbone)
    engine = SearchEngine(store, tiny_backbone, settings, text_channels=TextChannels.for_store(store))
    return engine, summary


def by_title(engine, query, **kw):
    resp = search_response(engine, SearchRequest(query=query, **kw))
    return resp.results


def test_spans_are_indexed_per_source(text_index):
    engine, summary = text_index
    assert set(engine.text_channels.sources()) >= {"speech", "ocr", "metadata"}
    stats = engine.store.stats()
    assert stats["channels"]["speech"] and stats["channels"]["ocr"] and stats["spans"] == summary.spans > 4


def test_paraphrase_of_speech_finds_the_video_and_the_spoken_moment(text_index):
    engine, _ = text_index
    results = by_title(engine, "sales went up ten percent this quarter")
    assert results[0].video.title == "earnings"
    spoken = (3.0, 3.0 + speech_seconds(REVENUE))
    assert any(h.source == "speech" and overlap((h.start, h.end), spoken) > 0 for h in results[0].spans)
    assert overlap((results[0].moments[0].start, results[0].moments[0].end), spoken) > 0
    assert "speech" in results[0].channel_scores


def test_on_screen_text_finds_the_video_and_when_it_is_shown(text_index):
    engine, _ = text_index
    results = by_title(engine, "the yearly safety briefing")
    assert results[0].video.title == "briefing"
    ocr = [h for h in results[0].spans if h.source == "ocr"]
    assert ocr and "SAFETY" in ocr[0].text.upper()
    assert overlap((ocr[0].start, ocr[0].end), (4.0, 8.0)) >= 3.0
    assert overlap((results[0].moments[0].start, results[0].moments[0].end), (4.0, 8.0)) > 0


def test_channels_can_be_chosen_and_weighted(text_index):
    engine, _ = text_index
    speech_only = by_title(engine, "water the plants", channels={"speech": 1.0})
    assert speech_only[0].video.title == "chores" and set(speech_only[0].channel_scores) == {"speech"}
    visual_only = search_response(engine, SearchRequest(query="water the plants", channels={"visual": 1.0}))
    assert all(set(r.channel_scores) == {"visual"} for r in visual_only.results) and not visual_only.results[0].spans


def test_unrelated_speech_does_not_disturb_a_visual_query(text_index):
    """No span is about the query, so no text channel votes: the ranking is the visual one."""
    engine, _ = text_index
    query = "zebra crossing"  # shares no words with, and means nothing like, any span
    fused = search_response(engine, SearchRequest(query=query, top_k=10))
    visual = search_response(engine, SearchRequest(query=query, top_k=10, channels={"visual": 1.0}))
    assert [r.video.id for r in fused.results] == [r.video.id for r in visual.results]
    assert all(set(r.channel_scores) <= {"visual", "audio"} for r in fused.results)


def test_span_vectors_in_memory_answer_as_lancedb_does(text_index, monkeypatch):
    """The nearest spans from the version's matrix in memory (span_vectors.py) are LanceDB's: the
    same spans, scores and hits per channel, with and without a filter on videos."""
    import numpy as np

    engine, _ = text_index
    channels = engine.text_channels
    assert channels.span_vectors() is not None and len(channels.span_vectors()) == engine.store.stats()["spans"]
    sources = channels.sources()
    some = np.asarray(sorted(engine.snapshot.ids)[:2])
    asked = [("sales went up ten percent this quarter", None), ("the yearly safety briefing", None),
             ("water the plants", some)]  # fmt: skip
    in_memory = [channels.search_many(sources, q, 10, allowed) for q, allowed in asked]
    monkeypatch.setattr(channels, "span_vectors", lambda: None)  # LanceDB's vector query, as before
    from_lancedb = [channels.search_many(sources, q, 10, allowed) for q, allowed in asked]
    for mem, ldb in zip(in_memory, from_lancedb):
        for source in sources:
            ids_m, scores_m, hits_m = mem[source]
            ids_l, scores_l, hits_l = ldb[source]
            assert ids_m.tolist() == ids_l.tolist()
            np.testing.assert_allclose(scores_m, scores_l, atol=1e-5)
            assert {v: [(h.start, h.end, h.text) for h in hs] for v, hs in hits_m.items()} == \
                   {v: [(h.start, h.end, h.text) for h in hs] for v, hs in hits_l.items()}  # fmt: skip
    assert any(len(m[s][0]) for m in in_memory for s in sources)  # something was found at all


def test_span_words_in_memory_match_lancedb_full_text(text_index):
    """BM25 over the spans in memory (span_words.py) reads words as LanceDB's full-text index does:
    the same spans match (stop words, case and stems alike), best first in the same order; accents are
    folded on both sides here (LanceDB folds none in the query), so "Fridáy" finds "Friday"."""
    import numpy as np

    engine, _ = text_index
    channels = engine.text_channels
    spans = channels.span_vectors()
    assert spans is not None and spans.words is not None
    sources = channels.sources()
    queries = ["sales went up ten percent this quarter", "the yearly SAFETY briefing", "watering plants",
               "friday revenue", "the and of", "zebra", "percent 10 grew"]  # fmt: skip
    for q in queries:
        mem = spans.search_words(q, sources, None, 200)
        ldb = channels.table.search(q, query_type="fts").select(["span_id", "_score"]).limit(200).to_arrow()
        assert sorted(mem["span_id"].to_pylist()) == sorted(ldb["span_id"].to_pylist()), q
        if mem.num_rows > 1:  # best first, as LanceDB ranks them (the scores' scale may differ)
            order = {s: i for i, s in enumerate(ldb["span_id"].to_pylist())}
            ranks = np.array([order[s] for s in mem["span_id"].to_pylist()])
            ties = np.diff(mem["_score"].to_numpy()) > -1e-6
            assert np.all((np.diff(ranks) > 0) | ties), q
    accented = spans.search_words("Fridáy", sources, None, 200)
    assert [PLANTS in t.lower() for t in accented["text"].to_pylist()] == [True]


def test_a_quoted_phrase_matches_the_text_channels_as_its_words():
    from vidsearch.search.text_channels import channel_text

    assert channel_text('"time to go home"') == channel_text(" \u201ctime to go home\u201d ") == "time to go home"
    assert channel_text("'WIN'") == "WIN"
    for kept in ('a sign that reads "WIN"', '"WIN" and "EXIT"', '""', "time to go home", '"unclosed'):
        assert channel_text(kept) == kept  # only a query that is one quoted phrase


def test_quoting_the_words_said_does_not_lower_their_match(text_index):
    """`"time to go home"` matched its own speech at 0.73 instead of 0.92 (its relevance 75% -> 43%):
    the quotes moved the query's sentence vector; the text channels now read the phrase inside."""
    engine, _ = text_index
    plain = by_title(engine, REVENUE.lower())[0]
    quoted = by_title(engine, f'"{REVENUE.lower()}"')[0]
    assert plain.video.title == quoted.video.title == "earnings"
    assert quoted.channel_scores["speech"] == pytest.approx(plain.channel_scores["speech"], abs=1e-4)
