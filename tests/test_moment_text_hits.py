"""Timed text hits (speech, on-screen text, subtitles) shape the moment with their own times.

Media probe p22 M3: a clip red for 3 s then blue for 4 s, saying "A purple dragon sleeps" at about
1.9-3.8 s. Asked for exactly that phrase, the right video came first (by its speech), but its moment
was 3.62-7.01, the blue stretch that looks "purple" to the tiny model: the text hit was rescaled to
the frames' peak relevance (an absolute level), which could not even reach the peak on a curve that
is partly negative. A text hit is now weighed on the curve's own scale by the strength of its own
match, and its span is a candidate window: an exact phrase match is the first moment, over its span;
a weak one does not override a clear visual peak; without text hits nothing changes.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from test_search_parts import page_matches_each_alone
from vidsearch.api_models import SpanHit
from vidsearch.search.features import VideoFeatures
from vidsearch.search.moments import TEXT_LIFT, Moment, localize_moments, temporal_iou
from vidsearch.search.ranking import Candidate, localize_many, moment_relevance
from vidsearch.search.text_channels import EXACT_COSINE, MATCH_STRENGTH_AT_FLOOR, MIN_COSINE, match_strength

# The probe's clip as the tiny model saw it (one unit a second): red frames score low against "a
# purple dragon sleeps", the blue ones (3-7 s) highest; the speech span says the query exactly.
M3_STARTS = np.arange(7.0)
M3_ENDS = M3_STARTS + 1.0
M3_RELEVANCE = np.array([-0.135, -0.135, -0.19, -0.03, 0.141, 0.141, 0.141])
SPOKEN = (1.87, 3.77)


def _iou(m, window) -> float:
    return float(temporal_iou([[m.start, m.end]], [list(window)])[0, 0])


def _clear_visual_peak():
    """20 one-second units: a clear event at 10-14 s (0.3), the rest near 0."""
    t = np.arange(20.0)
    return t, t + 1.0, np.where((t >= 10) & (t < 14), 0.3, 0.0) + 0.02 * np.sin(t)


# --------------------------------------------------------------------------------------------------
# the localizer


@pytest.mark.parametrize("options", [{}, {"smoothing": "none"}, {"min_duration": 1.0}])
def test_an_exact_text_hit_is_the_first_moment_over_its_own_span(options):
    res = localize_moments(M3_STARTS, M3_ENDS, M3_RELEVANCE, text_hits=[[*SPOKEN, 1.0]], max_moments=3, **options)
    first = res.moments[0]
    assert (first.start, first.end) == pytest.approx(SPOKEN)
    assert all(first.score > m.score for m in res.moments[1:])
    # the lift is on the curve's own scale: every second of the span tops the frames' peak
    inside = (res.curve.times >= SPOKEN[0]) & (res.curve.times < SPOKEN[1])
    assert res.curve.raw[inside].min() > M3_RELEVANCE.max()


def test_with_several_thresholds_the_first_moment_lies_in_the_spoken_span():
    """Several alphas also cut finer runs, one of them inside the span where its frames score best: it
    may lead the span itself, but never leaves it."""
    res = localize_moments(M3_STARTS, M3_ENDS, M3_RELEVANCE, text_hits=[[*SPOKEN, 1.0]], alpha=(0.3, 0.5, 0.7))
    first = res.moments[0]
    assert SPOKEN[0] - 0.25 <= first.start < first.end <= SPOKEN[1] + 0.25 and _iou(first, SPOKEN) >= 0.5


def test_without_the_text_hit_the_frames_decide():
    res = localize_moments(M3_STARTS, M3_ENDS, M3_RELEVANCE)
    assert res.moments[0].start > 3.5  # the blue stretch: the probe's 3.62-7.01


def test_the_exact_hit_wins_wherever_the_frames_peak():
    """Whatever the frames' scale and shift (all-negative cosines, a tiny spread, a huge one), an exact
    hit's span is the first moment; the old lift (the frames' peak relevance) fell short on all these."""
    rng = np.random.default_rng(3)
    for scale, shift in [(1.0, 0.0), (0.05, -0.4), (10.0, 2.0), (1.0, -1.0)]:
        rel = (M3_RELEVANCE + 0.01 * rng.standard_normal(7)) * scale + shift
        res = localize_moments(M3_STARTS, M3_ENDS, rel, text_hits=[[*SPOKEN, 1.0]])
        assert (res.moments[0].start, res.moments[0].end) == pytest.approx(SPOKEN), (scale, shift)


def test_a_weak_text_hit_does_not_override_clear_visual_evidence():
    s, e, rel = _clear_visual_peak()
    weak = float(match_strength(MIN_COSINE + 0.05))  # just a match: a passing remark on the topic
    res = localize_moments(s, e, rel, text_hits=[[2.0, 4.0, weak]])
    assert _iou(res.moments[0], (10.0, 14.0)) >= 0.7
    # on frames that already look right it does land the moment on its own seconds
    on_event = localize_moments(s, e, rel, text_hits=[[11.0, 13.0, weak]])
    assert _iou(on_event.moments[0], (11.0, 13.0)) >= 0.7


def test_a_text_hit_lights_up_a_flat_visual_curve():
    s, e = np.arange(60.0), np.arange(60.0) + 1.0
    res = localize_moments(s, e, np.full(60, 0.2), text_hits=[[31.0, 35.5, float(match_strength(0.5))]])
    assert (res.moments[0].start, res.moments[0].end) == pytest.approx((31.0, 35.5))


def test_no_text_hits_leave_the_moments_exactly_as_they_were():
    # moments the localizer gave before text hits had their own argument (recorded from that code)
    res = localize_moments(M3_STARTS, M3_ENDS, M3_RELEVANCE)
    np.testing.assert_allclose([[m.start, m.end, m.score, m.peak] for m in res.moments], [[3.71875, 7.0, 0.12634285714285723, 0.141]], atol=1e-9)
    s, e, rel = _clear_visual_peak()
    res = localize_moments(s, e, rel)
    np.testing.assert_allclose([[m.start, m.end, m.score, m.peak] for m in res.moments], [[10.0, 14.0, 0.2916979140069308, 0.3084033407365325]], atol=1e-9)
    # and text hits that carry nothing (no strength, no duration) are no text hits
    sound = np.array([[4.0, 6.0, 0.05]])
    plain = localize_moments(M3_STARTS, M3_ENDS, M3_RELEVANCE, sound, max_moments=3)
    for nothing in (None, np.empty((0, 3)), [[1.0, 2.0, 0.0]], [[2.0, 2.0, 1.0]]):
        got = localize_moments(M3_STARTS, M3_ENDS, M3_RELEVANCE, sound, nothing, max_moments=3)
        assert got.moments == plain.moments
        for name in ("times", "values", "raw"):
            np.testing.assert_array_equal(getattr(got.curve, name), getattr(plain.curve, name))


def test_text_hits_are_checked():
    with pytest.raises(ValueError, match="NaN"):
        localize_moments(M3_STARTS, M3_ENDS, M3_RELEVANCE, text_hits=[[1.0, np.nan, 1.0]])


def test_only_text_hits_no_units():
    res = localize_moments([], [], [], text_hits=[[2.0, 5.0, 1.0]])
    assert res.moments and (res.moments[0].start, res.moments[0].end) == pytest.approx((2.0, 5.0))


def test_moments_of_a_page_with_text_hits_are_each_videos_own():
    """localize_moments_many gives each video with text hits what localize_moments gives it alone."""
    rng = np.random.default_rng(1)
    ties = 0
    for _ in range(60):
        items = []
        for _ in range(int(rng.integers(1, 8))):
            n = int(rng.integers(3, 40))
            s = np.sort(rng.uniform(0, 60, n))
            e = s + rng.uniform(0.5, 3.0, n)
            r = rng.normal(0, 0.1, n) + rng.uniform(-0.3, 0.3)
            hits = None
            if rng.random() < 0.4:
                a = rng.uniform(0, 60, 3)
                hits = np.stack([a, a + 0.5, rng.normal(0, 0.05, 3)], axis=1)
            text = None
            if rng.random() < 0.7:
                m = int(rng.integers(0, 4))
                a = rng.uniform(-2, 62, m)
                text = np.stack([a, a + rng.uniform(-0.5, 6.0, m), rng.uniform(-0.2, 1.2, m)], axis=1)
            items.append((s, e, r, hits, text))
        # (a tie here: a span over a stretch the curve holds flat, past the last unit)
        ties += page_matches_each_alone(items, max_moments=int(rng.integers(1, 6)))
    assert ties <= 3, ties  # of ~240 videos


# --------------------------------------------------------------------------------------------------
# a match's strength, and the ranking's evidence


def test_match_strength():
    cos = np.array([0.0, MIN_COSINE - 1e-3, MIN_COSINE, (MIN_COSINE + EXACT_COSINE) / 2, EXACT_COSINE, 1.0])
    got = match_strength(cos)
    assert got[:2].tolist() == [0.0, 0.0]  # not a match (a span found by its words alone carries 0)
    assert got[2] == pytest.approx(MATCH_STRENGTH_AT_FLOOR)
    assert got[3] == pytest.approx((MATCH_STRENGTH_AT_FLOOR + 1) / 2)
    assert got[4:].tolist() == [1.0, 1.0]
    assert TEXT_LIFT * MATCH_STRENGTH_AT_FLOOR < 1.0  # a bare match cannot lift the curve's floor over its peak


def _candidate(starts, ends, relevance, spans) -> Candidate:
    d = 4
    f = VideoFeatures(np.asarray(starts, np.float32), np.asarray(ends, np.float32), np.zeros((len(starts), d), np.float32))
    return Candidate(
        video_id="v", score=1.0, channel_scores={}, features=f, in_window=np.ones(len(starts), bool),
        relevance=np.asarray(relevance, np.float32), attention=np.ones(len(starts), np.float32) / len(starts),
        audio_gate=0.0, spans=spans,
    )  # fmt: skip


def _plan(max_moments: int = 3):
    return SimpleNamespace(window=None, use_audio=False, audio=None, query=np.zeros(4, np.float32), request=SimpleNamespace(max_moments=max_moments),
                           motion=None, shape=None, sound=None)  # names no reading channel's attribute  # fmt: skip


@pytest.mark.parametrize("said, cosine", [("A purple dragon sleeps", 1.0), ("The hungry dragon sleeps.", 0.968)])
def test_the_spoken_phrase_is_the_first_moment_of_the_result(said, cosine):
    """The probe's case end to end through the ranking's evidence: the speech hit's own span, first."""
    spans = [SpanHit(source="speech", start=SPOKEN[0], end=SPOKEN[1], text=said, score=cosine),
             SpanHit(source="metadata", start=0.0, end=7.0, text="a_purple_dragon_sleeps", score=0.87)]  # fmt: skip
    found = localize_many(_plan(), [_candidate(M3_STARTS, M3_ENDS, M3_RELEVANCE, spans)])[0]
    assert (found.moments[0].start, found.moments[0].end) == pytest.approx(SPOKEN, abs=1e-6)


def test_a_passing_remark_does_not_move_the_moment_off_a_clear_visual_event():
    s, e, rel = _clear_visual_peak()
    spans = [SpanHit(source="speech", start=2.0, end=4.0, text="look at the green circle", score=MIN_COSINE + 0.02)]
    found = localize_many(_plan(), [_candidate(s, e, rel, spans)])[0]
    assert _iou(found.moments[0], (10.0, 14.0)) >= 0.7
    # words matched by BM25 alone (cosine 0) weigh nothing, as before
    words_only = [SpanHit(source="ocr", start=2.0, end=4.0, text="WIN", score=0.0)]
    plain = localize_moments(s, e, rel.astype(np.float32), max_moments=3)
    assert localize_many(_plan(), [_candidate(s, e, rel, words_only)])[0].moments == plain.moments


def test_a_named_chapter_shapes_the_moment_and_a_title_does_not():
    """A chapter (indexer/container_text.py: a `metadata` span over its own stretch) places the moment
    as speech does; a title or tags (metadata over the whole video) still localise nothing."""
    spans = [SpanHit(source="metadata", start=2.0, end=4.0, text="Kilimanjaro summit", score=1.0)]
    found = localize_many(_plan(), [_candidate(M3_STARTS, M3_ENDS, M3_RELEVANCE, spans)])[0]
    assert (found.moments[0].start, found.moments[0].end) == pytest.approx((2.0, 4.0), abs=1e-6)
    whole = [SpanHit(source="metadata", start=0.0, end=7.0, text="a purple dragon sleeps", score=1.0)]
    plain = localize_many(_plan(), [_candidate(M3_STARTS, M3_ENDS, M3_RELEVANCE, [])])[0]
    assert localize_many(_plan(), [_candidate(M3_STARTS, M3_ENDS, M3_RELEVANCE, whole)])[0].moments == plain.moments


def test_moment_relevance_shares_the_videos_relevance_by_score_below_zero_too():
    """The best moment carries the video's relevance and a weaker one less, measured from 0, or
    from the lowest score where the reading channels took the curve below 0 (before, every moment
    of such a video carried the whole relevance)."""
    def of(*scores):
        return moment_relevance(0.8, [Moment(0.0, 1.0, s, s) for s in scores])

    assert of(0.5, 0.25) == pytest.approx((0.8, 0.4))
    assert of(-0.1, -0.3) == pytest.approx((0.8, 0.0))
    assert of(0.2, -0.2) == pytest.approx((0.8, 0.0))
    assert of(-0.4) == pytest.approx((0.8,)) and moment_relevance(None, []) == ()
