"""Unit tests of the query server's pure-logic parts: moments, rank fusion, the coarse ANN index."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.search.coarse import CoarseIndex
from vidsearch.search.fusion import reciprocal_rank_fusion
from vidsearch.search.moments import Moment, localize_moments, localize_moments_many, nms, temporal_iou


# --------------------------------------------------------------------------------------------------
# moments


def _frames(duration: float, fps: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    starts = np.arange(0.0, duration, 1.0 / fps)
    return starts, starts + 1.0 / fps


def _bumps(starts: np.ndarray, ends: np.ndarray, intervals, base=0.12, height=0.2, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    mid = (starts + ends) / 2
    rel = base + noise * rng.standard_normal(mid.shape)
    for (a, b), h in zip(intervals, (height, height * 0.8, height * 0.6)):
        rel = rel + h * ((mid >= a) & (mid < b))
    return rel


def test_two_separated_bumps_give_two_moments_covering_them():
    s, e = _frames(120, fps=2)
    truth = [(20.0, 30.0), (70.0, 85.0)]
    res = localize_moments(s, e, _bumps(s, e, truth))
    assert len(res.moments) == 2
    windows = np.array([[m.start, m.end] for m in res.moments])
    iou = temporal_iou(windows, np.array(truth))
    assert iou.max(axis=0).min() >= 0.5, iou  # each true interval matched
    assert iou.max(axis=1).min() >= 0.5, iou  # each moment is a true interval
    assert res.moments[0].score >= res.moments[1].score
    assert all(m.peak >= m.score for m in res.moments)
    # the curve is returned on a regular grid for the timeline
    assert res.curve.times.shape == res.curve.values.shape
    assert np.allclose(np.diff(res.curve.times), res.curve.step)
    assert res.curve.times[0] > 0 and res.curve.times[-1] < 120


def test_all_negative_similarities_localise_the_same_windows():
    s, e = _frames(120, fps=2)
    rel = _bumps(s, e, [(20.0, 30.0), (70.0, 85.0)])
    pos = localize_moments(s, e, rel)
    neg = localize_moments(s, e, rel - 0.9)  # every cosine below zero
    assert (neg.curve.raw < 0).all()
    assert [(m.start, m.end) for m in pos.moments] == [(m.start, m.end) for m in neg.moments]


def test_nms_drops_overlapping_lower_scored_duplicate():
    windows = np.array([[10.0, 20.0], [11.0, 21.0], [40.0, 50.0], [12.0, 19.0]])
    scores = np.array([0.9, 0.8, 0.5, 0.95])
    keep = nms(windows, scores, iou=0.5)
    # [12,19] (best) suppresses [10,20] (IoU 0.7) and [11,21] (IoU 0.7); [40,50] is distinct
    assert keep.tolist() == [3, 2]
    assert nms(windows, scores, iou=0.75).tolist() == [3, 0, 2]
    assert nms(windows, scores, iou=0.5, max_keep=1).tolist() == [3]
    assert nms(np.empty((0, 2)), np.empty(0)).size == 0


def test_multiscale_candidates_are_thinned_by_nms():
    s, e = _frames(60)
    rel = np.zeros(60)
    rel[20:30] = np.hanning(12)[1:-1]  # one smooth bump: every alpha cuts a nested window
    res = localize_moments(s, e, rel, alpha=(0.3, 0.5, 0.7), smoothing="none", nms_iou=0.3)
    assert len(res.moments) == 1
    assert 20 <= res.moments[0].start and res.moments[0].end <= 30


def test_temporal_iou_pairwise():
    a = np.array([[0.0, 10.0], [5.0, 15.0]])
    b = np.array([[0.0, 10.0], [10.0, 20.0], [2.0, 2.0]])
    expected = np.array([[1.0, 0.0, 0.0], [5 / 15, 5 / 15, 0.0]])
    assert np.allclose(temporal_iou(a, b), expected)


def test_flat_curve_is_one_whole_video_moment():
    s, e = _frames(30)
    res = localize_moments(s, e, np.full(30, 0.27))
    assert res.flat
    assert res.moments == [Moment(0.0, 30.0, pytest.approx(0.27), pytest.approx(0.27))]


def test_single_unit():
    res = localize_moments([3.0], [7.5], [-0.4])
    assert len(res.moments) == 1
    m = res.moments[0]
    assert (m.start, m.end) == (3.0, 7.5)
    assert m.score == pytest.approx(-0.4) and m.peak == pytest.approx(-0.4)


def test_point_units_get_a_width():
    t = np.arange(20.0)
    rel = np.where((t >= 5) & (t < 9), 0.5, 0.1)
    res = localize_moments(t, t, rel)  # end == start: sampled instants, not spans
    assert len(res.moments) == 1
    assert temporal_iou([[res.moments[0].start, res.moments[0].end]], [[5.0, 9.0]])[0, 0] >= 0.5


def test_merged_wide_units_weigh_by_duration():
    # one merged unit spanning 4 s at 1.0, a 1 s unit at 0.6, then 25 one-second units at 0.0
    starts = np.concatenate([[0.0, 4.0], np.arange(5.0, 30.0)])
    ends = np.concatenate([[4.0, 5.0], np.arange(6.0, 31.0)])
    rel = np.concatenate([[1.0, 0.6], np.zeros(25)])
    res = localize_moments(starts, ends, rel, smoothing="none")
    assert len(res.moments) == 1
    m = res.moments[0]
    assert m.start == pytest.approx(0.0) and m.end == pytest.approx(5.0, abs=0.3)
    # duration-weighted mean: (4 * 1.0 + 1 * 0.6) / 5, not the per-unit mean (1.0 + 0.6) / 2
    assert m.score == pytest.approx(0.92, abs=0.02)
    # the grid counts time, not units: the wide unit holds 4/31 of the curve
    assert np.mean(res.curve.raw > 0.9) == pytest.approx(4 / 31, abs=0.02)


def test_text_hits_light_up_a_moment_on_a_flat_visual_curve():
    s, e = _frames(60)
    res = localize_moments(s, e, np.full(60, 0.2), hits=[[31.0, 35.5, 0.3]])
    assert len(res.moments) == 1
    assert temporal_iou([[res.moments[0].start, res.moments[0].end]], [[31.0, 35.5]])[0, 0] >= 0.7


# --------------------------------------------------------------------------------------------------
# fusion


def test_sound_tells_apart_two_events_that_look_the_same():
    """Two events show the same thing (identical frame vectors); only the second has the queried sound.
    Frames alone cannot choose; the audio evidence moves the moment onto the right event, and a
    soundtrack that matches nothing (gate shut) leaves the frame-only moments as they were."""
    import torch

    from vidsearch.encoders.fusion import FusionHead
    from vidsearch.search import audio_hits
    from vidsearch.search.features import VideoFeatures

    d = 8
    q = np.eye(d, dtype=np.float32)[0]
    look = (np.eye(d, dtype=np.float32)[0] + np.eye(d, dtype=np.float32)[1]) / np.sqrt(2)
    other = np.eye(d, dtype=np.float32)[2]
    starts, ends = _frames(12.0)
    vectors = np.stack([look if (0 <= t < 4 or 6 <= t < 10) else other for t in starts])
    a_start = np.arange(0.0, 12.0, 0.5)
    a_end = a_start + 0.5
    sound = np.stack([q if 6 <= t < 10 else np.eye(d, dtype=np.float32)[3] for t in a_start])
    head = FusionHead(d)
    with torch.no_grad():
        head.audio_weight.fill_(1.0)
    f = VideoFeatures(starts, ends, vectors, a_start, a_end, sound)

    hits = audio_hits(head, q, f)
    assert hits.shape == (len(a_start), 3)
    assert np.all(hits[(a_start >= 6) & (a_start < 10), 2] > 0) and np.all(hits[(a_start < 6) | (a_start >= 10), 2] <= 0)
    frames_only = localize_moments(starts, ends, vectors @ q)
    with_sound = localize_moments(starts, ends, vectors @ q, hits)
    assert temporal_iou([[with_sound.moments[0].start, with_sound.moments[0].end]], [[6.0, 10.0]])[0, 0] >= 0.7
    assert len({(m.start, m.end) for m in frames_only.moments[:2]}) == 2  # a tie between the two looks

    silent = VideoFeatures(starts, ends, vectors, a_start, a_end, np.tile(np.eye(d, dtype=np.float32)[3], (len(a_start), 1)))
    assert np.allclose(audio_hits(head, q, silent)[:, 2], 0.0, atol=1e-3)  # nothing sounds like the query
    assert audio_hits(None, q, f).shape == (0, 3) and audio_hits(head, q, VideoFeatures(starts, ends, vectors)).shape == (0, 3)


def test_weighted_rrf_matches_hand_computed_values():
    visual = ["a", "b", "c"]
    speech = ["c", "d", "a", "c"]  # the repeated "c" counts once, at rank 1
    fused = reciprocal_rank_fusion(
        {"visual": visual, "speech": speech},
        weights={"visual": 1.0, "speech": 2.0},
        k=60,
        scores={"visual": [0.31, 0.29, 0.2], "speech": [12.0, 9.5, 3.0, 1.0]},
    )
    expected = {
        "a": 1 / 61 + 2 / 63,
        "b": 1 / 62,
        "c": 1 / 63 + 2 / 61,
        "d": 2 / 62,
    }
    order = sorted(expected, key=expected.get, reverse=True)
    assert fused.ids.tolist() == order == ["c", "a", "d", "b"]
    assert np.allclose(fused.scores, [expected[i] for i in order])
    assert np.allclose(fused.contributions.sum(axis=1), fused.scores)
    # per-channel ranks and scores, 0 / NaN where the channel did not rank the id
    assert fused.ranks.tolist() == [[3, 1], [1, 3], [0, 2], [2, 0]]
    assert fused.channel_scores[0].tolist() == [0.2, 12.0]
    assert np.isnan(fused.channel_scores[3, 1])
    assert fused.explain(2) == {"speech": {"rank": 2, "score": 9.5, "contribution": pytest.approx(2 / 62)}}


def test_rrf_edge_cases():
    assert len(reciprocal_rank_fusion({"visual": [], "speech": []})) == 0
    tie = reciprocal_rank_fusion({"x": ["p", "q"], "y": ["q", "p"]})
    assert tie.scores[0] == pytest.approx(tie.scores[1])
    assert tie.ids.tolist() == ["p", "q"]  # tie broken by first appearance
    assert reciprocal_rank_fusion({"x": [5, 3, 9]}, limit=2).ids.tolist() == [5, 3]


# --------------------------------------------------------------------------------------------------
# coarse index


def _clustered(n: int, d: int, n_clusters: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


N, D, SEGMENTS_PER_VIDEO = 20_000, 128, 10


@pytest.fixture(scope="module")
def corpus():
    x = _clustered(N + 200, D, 200, seed=1)
    base, queries = x[:N], x[N:]
    ids = np.char.add("seg", np.arange(N).astype(str))
    videos = np.char.add("vid", (np.arange(N) // SEGMENTS_PER_VIDEO).astype(str))
    exact = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :10]
    return base, queries, ids, videos, exact


@pytest.fixture(scope="module")
def hnsw(corpus):
    base, _, ids, videos, _ = corpus
    return CoarseIndex.build(base, ids, videos, kind="hnsw", source_version=7)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / t.size for f, t in zip(found, exact)]))


def test_flat_index_returns_exact_top_k(corpus):
    base, queries, ids, videos, exact = corpus
    index = CoarseIndex.build(base[:5000], ids[:5000], videos[:5000])  # auto: small -> exact
    assert index.kind == "flat"
    hits = index.search(queries[:20], k=10)
    truth = np.argsort(-(queries[:20] @ base[:5000].T), axis=1)[:, :10]
    assert (hits.positions == truth).all()
    assert (hits.ids == ids[:5000][truth]).all()
    assert (hits.video_ids == videos[:5000][truth]).all()
    assert np.allclose(hits.scores, np.take_along_axis(queries[:20] @ base[:5000].T, truth, axis=1), atol=1e-5)


def test_hnsw_recall_at_10(corpus, hnsw):
    _, queries, _, _, exact = corpus
    assert hnsw.kind == "hnsw"
    assert _recall(hnsw.search(queries, k=10).positions, exact) >= 0.95


def test_hnsw_keeps_float16_vectors_at_float32_recall(corpus, hnsw, tmp_path):
    """The default HNSW keeps its vectors as float16: about 60% of the float32 index's bytes at 256-d
    here, recall@10 within a point of it, and the same after a save and load."""
    base, queries, ids, videos, exact = corpus
    full = CoarseIndex.build(base, ids, videos, kind="hnsw", hnsw_storage="flat", source_version=7)
    assert hnsw.build_params["storage"] == "fp16" and full.build_params["storage"] == "flat"
    half, whole = _recall(hnsw.search(queries, k=10).positions, exact), _recall(full.search(queries, k=10).positions, exact)
    assert half >= 0.95 and abs(half - whole) <= 0.01, (half, whole)
    sizes = {}
    for name, index in (("fp16", hnsw), ("flat", full)):
        index.save(tmp_path / name)
        sizes[name] = sum(f.stat().st_size for f in (tmp_path / name).iterdir())
    assert sizes["fp16"] < 0.75 * sizes["flat"], sizes
    loaded = CoarseIndex.load(tmp_path / "fp16")
    assert (loaded.search(queries, k=10).ids == hnsw.search(queries, k=10).ids).all()
    with pytest.raises(ValueError, match="hnsw_storage"):
        CoarseIndex.build(base[:100], ids[:100], videos[:100], kind="hnsw", hnsw_storage="pq")


@pytest.mark.parametrize("use_selector", [True, False], ids=["selector", "overfetch"])
def test_removed_videos_never_come_back(corpus, use_selector):
    base, queries, ids, videos, _ = corpus
    n = 4000
    for kind in ("flat", "hnsw", "ivfpq"):
        index = CoarseIndex.build(base[:n], ids[:n], videos[:n], kind=kind, nlist=32, pq_m=8)
        index.use_selector = use_selector  # over-fetch is what GPU indexes use
        top = index.search(queries, k=20).video_ids
        gone = np.unique(top[:, :5])  # the videos queries like most
        removed = index.remove_videos(gone)
        assert removed == np.isin(videos[:n], gone).sum()
        hits = index.search(queries, k=50)
        assert not np.isin(hits.video_ids, gone).any(), kind
        assert hits.valid.all()  # masking did not cost results
        # filters at query time stack with removals
        also = np.unique(hits.video_ids[:, 0])
        hits2 = index.search(queries, k=10, exclude_videos=also)
        assert not np.isin(hits2.video_ids, np.concatenate([gone, also])).any()
        only = index.search(queries, k=10, only_videos=[videos[0], gone[0]])
        assert set(only.video_ids[only.valid]) <= {videos[0]}
    # k larger than what is left: padded, never a removed row
    small = CoarseIndex.build(base[:30], ids[:30], videos[:30])
    small.use_selector = use_selector
    small.remove_videos(["vid0", "vid1"])
    hits = small.search(queries[:3], k=25)
    assert hits.valid.sum(axis=1).tolist() == [10, 10, 10]
    assert set(hits.video_ids[hits.valid]) == {"vid2"}
    assert np.isneginf(hits.scores[~hits.valid]).all()
    # re-adding a removed video brings back only its new rows
    small.add(base[:2], ["seg0-new", "seg1-new"], ["vid0", "vid0"])
    again = small.search(base[:1], k=30)
    assert "seg0-new" in again.ids[0] and "seg0" not in again.ids[0]


def test_save_load_round_trip_keeps_results_and_version(corpus, hnsw, tmp_path):
    _, queries, _, _, _ = corpus
    hnsw.remove_videos(["vid3", "vid4"])
    before = hnsw.search(queries, k=10)
    hnsw.save(tmp_path / "coarse")
    assert CoarseIndex.read_manifest(tmp_path / "coarse")["source_version"] == 7
    loaded = CoarseIndex.load(tmp_path / "coarse")
    after = loaded.search(queries, k=10)
    assert loaded.kind == "hnsw" and loaded.source_version == 7 and loaded.n_live == hnsw.n_live
    assert (after.ids == before.ids).all() and (after.video_ids == before.video_ids).all()
    assert np.allclose(after.scores, before.scores)
    assert not loaded.is_stale(7) and loaded.is_stale(8)
    assert not np.isin(after.video_ids, ["vid3", "vid4"]).any()


def test_ivfpq_with_exact_refinement(corpus):
    base, queries, ids, videos, _ = corpus
    base, ids, videos = base[:8000], ids[:8000], videos[:8000]
    exact = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    index = CoarseIndex.build(base, ids, videos, kind="ivfpq", pq_m=8)
    assert index.build_params["refine"] == "flat"
    hits = index.search(queries, k=10)
    assert _recall(hits.positions, exact) >= 0.9
    # refined scores are exact inner products
    true = np.take_along_axis(queries @ base.T, hits.positions, axis=1)
    assert np.allclose(hits.scores, true, atol=1e-5)


def test_auto_kind_follows_size_and_memory():
    assert CoarseIndex._choose_kind(10_000, 256, None, False, 50_000, 5_000_000, 32, "flat")[0] == "flat"
    assert CoarseIndex._choose_kind(500_000, 256, None, False, 50_000, 5_000_000, 32, "flat")[0] == "hnsw"
    assert CoarseIndex._choose_kind(500_000, 256, 300 << 20, False, 50_000, 5_000_000, 32, "auto") == (
        "ivfpq", "sq8")
    assert CoarseIndex._choose_kind(500_000, 256, None, True, 50_000, 5_000_000, 32, "flat")[0] == "flat"


def test_dimension_mismatch_is_an_error(hnsw):
    with pytest.raises(ValueError, match="dimension"):
        hnsw.search(np.zeros((1, D + 1), dtype=np.float32))


def test_query_vector_cache_encodes_once_and_evicts_the_least_recently_used():
    from vidsearch.search.features import QueryVectorCache

    calls = []
    cache = QueryVectorCache(lambda t: calls.append(t) or np.full(3, len(t), np.float64), size=2)
    assert cache("ab").dtype == np.float32 and cache("ab")[0] == 2 and calls == ["ab"]
    cache("xyz")
    cache("ab")  # used again: "xyz" is now the least recent
    cache("q")
    cache("ab")
    assert calls == ["ab", "xyz", "q"]
    cache("xyz")
    assert calls == ["ab", "xyz", "q", "xyz"]


def test_span_words_bm25_edges():
    """BM25 over spans in memory: terms shared or not, stop words, accents, other scripts, and an index
    whose spans hold no word that counts (empty, or only stop words) answers nothing rather than failing."""
    from vidsearch.search.span_words import SpanWords

    words = SpanWords(["DANGER ahead", "", "the", "Café crème", "日本語", "running dogs"])
    s = words.scores("dangerous run")  # stems: danger, run
    assert s[0] > 0 and s[5] > 0 and not s[1:5].any()
    assert words.scores("cafe")[3] > 0 and words.scores("日本語")[4] > 0
    assert not words.scores("the of a").any() and not words.scores("").any()
    for texts in ([""], ["the a of"], []):
        assert not SpanWords(texts).scores("the hello").any()


def _random_evidence(rng: np.random.Generator, kind: str):
    """(starts, ends, relevance, hits) of one video as a search sees them: frames, merged units,
    point samples or sparse samples (gaps), sometimes a flat curve, sometimes text hits."""
    n = int(rng.integers(1, 80))
    if kind == "frames":
        s = np.sort(rng.uniform(0, 100, n))
        e = s + 1.0
    elif kind == "merged":
        s = np.cumsum(rng.uniform(0.5, 5, n))
        e = s + rng.uniform(0.5, 5, n)
    elif kind == "points":
        s = np.sort(rng.uniform(0, 30, n))
        e = s.copy()
    else:
        s = np.sort(rng.uniform(0, 500, n))
        e = s + 0.5
    r = rng.normal(0, 1, n).astype(np.float32)
    if rng.random() < 0.2:
        r[:] = 0.3
    hits = None
    if rng.random() < 0.5:
        m = int(rng.integers(0, 4))
        hs = rng.uniform(0, 100, m)
        hits = np.stack([hs, hs + rng.uniform(-1, 8, m), rng.uniform(0, 1, m)], axis=1)
    if rng.random() < 0.05:  # only text hits, no units
        s, e, r = s[:0], e[:0], r[:0]
        hits = np.array([[2.0, 5.0, 0.7]])
    return s.astype(np.float32), e.astype(np.float32), r, hits


def page_matches_each_alone(items: list, max_moments: int) -> int:
    """Asserts that localize_moments_many gives every item of a page the moments, curve and thresholds
    localize_moments gives it alone; returns how many videos differed only by a tie (two windows of
    equal score, to rounding: either may lead, and what follows may differ)."""
    ties = 0
    alone = [localize_moments(*it, max_moments=max_moments) for it in items]
    for want, got in zip(alone, localize_moments_many(items, max_moments=max_moments)):
        assert want.flat == got.flat
        for a, b in zip(want.moments, got.moments):
            if abs(a.start - b.start) > 1e-6 or abs(a.end - b.end) > 1e-6:
                assert abs(a.score - b.score) < 1e-9, (a, b)
                ties += 1
                break
            np.testing.assert_allclose([b.score, b.peak], [a.score, a.peak], atol=1e-6)
        else:
            assert len(want.moments) == len(got.moments)
        for name in ("times", "values", "raw"):
            np.testing.assert_allclose(getattr(got.curve, name), getattr(want.curve, name), atol=1e-6)
        np.testing.assert_allclose(got.curve.thresholds, want.curve.thresholds, atol=1e-6)
        assert got.curve.step == pytest.approx(want.curve.step) and got.windows.shape == want.windows.shape
    return ties


def test_moments_of_a_page_at_once_are_each_videos_own():
    """localize_moments_many (one pass over a page's curves) gives every video the moments, curve and
    thresholds localize_moments gives it alone, on every kind of unit layout."""
    rng = np.random.default_rng(0)
    ties = 0
    for _ in range(150):
        items = [_random_evidence(rng, rng.choice(["frames", "merged", "points", "sparse"])) for _ in range(int(rng.integers(1, 12)))]
        ties += page_matches_each_alone(items, max_moments=int(rng.integers(1, 6)))
    assert ties <= 3, ties  # of ~900 videos
    # an hour of talk over one still picture is one unit: smoothed over thousands of bins, it is
    # localised on its own (a page-wide smoothing array would be bins x radius: gigabytes)
    still = (np.array([0.0]), np.array([3600.0]), np.array([0.4]), np.array([[600.0, 660.0, 0.9]]))
    page = [still, _random_evidence(rng, "frames"), still]
    for want, got in zip([localize_moments(*it, max_moments=3) for it in page], localize_moments_many(page, max_moments=3)):
        assert [(m.start, m.end) for m in got.moments] == pytest.approx([(m.start, m.end) for m in want.moments])
    with pytest.raises(ValueError, match="NaN"):
        localize_moments_many([(np.zeros(3), np.ones(3), np.array([0.1, np.nan, 0.2]), None)])
    assert localize_moments_many([]) == []


def test_a_moment_ends_where_its_video_does():
    """A unit's end is its frame's end, up to a frame past the video's last instant (a 12.0 s video's
    last moment read 9.941-12.005, its clip link and exported edit too): the API clips moments to the
    video's duration."""
    from types import SimpleNamespace

    from vidsearch.search.moments import Moment
    from vidsearch.server.presenting import search_results

    starts = np.arange(0.0, 12.0, 1.005)
    features = SimpleNamespace(start=starts, end=starts + 1.005)
    candidate = SimpleNamespace(features=features, attention=np.full(len(starts), 1 / len(starts)), channel_scores={"visual": 0.3},
                                spans=[], video_id="v1")  # fmt: skip
    curve = SimpleNamespace(times=features.end - 0.5, values=np.linspace(0, 1, len(starts)))
    hit = SimpleNamespace(candidate=candidate, found=SimpleNamespace(curve=curve), moments=[Moment(9.941, 12.005, 0.5, 0.9)],
                          moment_relevance=(0.4,), score=0.5, relevance=0.4)  # fmt: skip
    row = {"video_id": "v1", "title": "t", "path": "/x/t.mp4", "duration": 12.0, "metadata": {}}
    [result] = search_results([hit], [row])
    [moment] = result.moments
    assert (moment.start, moment.end) == (9.941, 12.0) and moment.best <= 12.0
    assert result.links["clip"].endswith("start=9.941&end=12.000")


def test_an_empty_index_or_filter_is_said_so_not_nothing_matches():
    """With every video deleted (or a first run that has committed none) a search said "nothing in the
    library matches": the message says there is nothing to search, or that the filters left nothing."""
    from types import SimpleNamespace

    from vidsearch.server.presenting import empty_message

    def ranking(ids, allowed=None):
        return SimpleNamespace(plan=SimpleNamespace(snapshot=SimpleNamespace(ids=np.array(ids)), allowed=allowed), dropped=0)

    assert "holds no videos yet" in empty_message(ranking([]), "time to go home")
    assert "passes the filters" in empty_message(ranking(["a"], np.array([], dtype=object)), "time to go home")
    assert empty_message(ranking(["a"]), "time to go home") == "nothing in the library matches 'time to go home'"
