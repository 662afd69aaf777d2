"""The fine stage's best event window: the attributes a query names must happen in one moment."""

from __future__ import annotations

import numpy as np
import pytest

from vidsearch.search.event_windows import AUDIO_WEIGHT, WINDOW_SECONDS, best_window, best_windows
from vidsearch.search.features import VideoFeatures

D = 16
BLUE, RED, CIRCLE, SQUARE, HIGH, LOW = np.eye(D, dtype=np.float32)[:6]


def _unit(*parts: np.ndarray) -> np.ndarray:
    v = np.sum(parts, axis=0)
    return v / np.linalg.norm(v)


def _video(events: list[tuple[float, np.ndarray, np.ndarray | None]], step: float = 1.0) -> VideoFeatures:
    """Back-to-back events (seconds, frame vector, sound vector or None), one unit a second and two
    audio tokens a second."""
    starts, vectors, a_starts, a_vectors = [], [], [], []
    t = 0.0
    for seconds, look, sound in events:
        for k in np.arange(0, seconds, step):
            starts.append(t + k)
            vectors.append(look)
        for k in np.arange(0, seconds, 0.5):
            a_starts.append(t + k)
            a_vectors.append(sound if sound is not None else np.zeros(D, np.float32))
        t += seconds
    s, a = np.array(starts, np.float32), np.array(a_starts, np.float32)
    return VideoFeatures(s, s + step, np.array(vectors, np.float32), a, a + 0.5, np.array(a_vectors, np.float32))


def _mean_score(q: np.ndarray, f: VideoFeatures) -> float:
    m = f.vectors.mean(axis=0)
    return float(m @ q / np.linalg.norm(m))


def test_the_event_that_holds_everything_beats_a_video_that_holds_it_in_pieces():
    """Blue circle then red square (the pieces of "a blue square") against a blue square among other
    things: the pooled video prefers the pieces, the best window the real thing."""
    q = _unit(BLUE, SQUARE)
    pieces = _video([(3, _unit(BLUE, CIRCLE), None), (3, _unit(RED, SQUARE), None)])
    whole = _video([(3, _unit(BLUE, SQUARE), None), (3, _unit(RED, CIRCLE), None), (3, _unit(RED, CIRCLE), None)])
    assert _mean_score(q, pieces) > _mean_score(q, whole)
    w = best_windows(q, [pieces, whole])
    assert w[1] > w[0] and w[1] == pytest.approx(1.0, abs=1e-5)


def test_the_sound_counts_only_in_the_same_window():
    """A blue square with a low tone, and a high tone elsewhere in the video, against one whose
    blue square plays the high tone: "a blue square with a high tone" is the second."""
    q = _unit(BLUE, SQUARE, HIGH)
    apart = _video([(3, _unit(BLUE, SQUARE), LOW), (3, _unit(RED, CIRCLE), HIGH)])
    together = _video([(3, _unit(BLUE, SQUARE), HIGH), (3, _unit(RED, CIRCLE), LOW)])
    a, b = best_windows(q, [apart, together])
    assert b > a
    assert b == pytest.approx(float(_unit(BLUE, SQUARE) @ q) + AUDIO_WEIGHT * float(HIGH @ q), abs=1e-5)
    # no audio asked (or tokens of another space): frames alone, the two videos tie
    a0, b0 = best_windows(q, [apart, together], use_audio=False)
    assert a0 == pytest.approx(b0)
    other_space = VideoFeatures(together.start, together.end, together.vectors, together.audio_start, together.audio_end,
                                np.ones((len(together.audio_start), D + 3), np.float32))  # fmt: skip
    assert best_window(q, other_space) == pytest.approx(b0)


def _brute_force(queries: np.ndarray, f: VideoFeatures, keep: np.ndarray) -> np.ndarray:
    """The best window of one video by the obvious loop: a window starts at each kept unit and holds
    the kept units whose centres lie within WINDOW_SECONDS of it; one that would run past the last
    kept unit starts at the first kept unit within WINDOW_SECONDS of that one instead."""
    centre = (f.start + f.end) / 2
    a_centre = (f.audio_start + f.audio_end) / 2
    if not keep.any():
        return np.zeros(len(queries))
    expected = np.full(len(queries), -np.inf)
    last = centre[keep].max()
    firsts = np.flatnonzero(keep & (centre > last - WINDOW_SECONDS + 1e-6))
    last_full = firsts[np.argmin(centre[firsts])]  # the last window that spans the whole width
    for i in np.flatnonzero(keep):
        if centre[i] + WINDOW_SECONDS - 1e-6 > last:  # one that would run past the last unit ends there instead
            i = i if centre[i] < centre[last_full] else last_full
        inside = keep & (centre >= centre[i]) & (centre < centre[i] + WINDOW_SECONDS - 1e-6)
        v = f.vectors[inside].sum(0)
        s = queries @ (v / np.linalg.norm(v))
        sound = (a_centre >= f.start[i]) & (a_centre < f.start[i] + WINDOW_SECONDS)
        if sound.any() and f.audio_vectors.shape[1] == queries.shape[1]:
            a = f.audio_vectors[sound].sum(0)
            s = s + AUDIO_WEIGHT * queries @ (a / np.linalg.norm(a))
        expected = np.maximum(expected, s)
    return expected


def test_short_videos_of_any_order_equal_the_obvious_loop():
    """Videos of one to a dozen units over 1-20 s, in any order, with and without a time window: here
    most windows reach a video's end, where the full-width rule decides the best one."""
    rng = np.random.default_rng(4)
    for _ in range(60):
        feats, keeps = [], []
        for _ in range(int(rng.integers(1, 5))):
            n, span = int(rng.integers(1, 12)), float(rng.choice([1.0, 2.5, 5.0, 20.0]))
            start = rng.uniform(0, span, n).astype(np.float32)
            a = np.sort(rng.uniform(0, span, int(rng.integers(1, 10)))).astype(np.float32)
            feats.append(VideoFeatures(start, start + 0.5, rng.normal(size=(n, D)).astype(np.float32), a, a + 0.5,
                                       rng.normal(size=(len(a), D)).astype(np.float32)))  # fmt: skip
            keeps.append(rng.random(n) > 0.3 if rng.random() < 0.5 else np.ones(n, bool))
        queries = rng.normal(size=(3, D)).astype(np.float32)
        expected = np.stack([_brute_force(queries, f, k) for f, k in zip(feats, keeps)])
        np.testing.assert_allclose(best_windows(queries, feats, keeps), expected, rtol=1e-4, atol=1e-5)


def test_columnar_windows_equal_the_obvious_loop_on_an_irregular_video():
    rng = np.random.default_rng(0)
    n = 700
    start = np.sort(rng.uniform(0, 900, n)).astype(np.float32)
    f = VideoFeatures(start, start + 0.5, rng.normal(size=(n, D)).astype(np.float32),
                      np.arange(0, 900, 0.5, dtype=np.float32), np.arange(0.5, 900.5, 0.5, dtype=np.float32),
                      rng.normal(size=(1800, D)).astype(np.float32))  # fmt: skip
    queries = rng.normal(size=(5, D)).astype(np.float32)
    keep = rng.random(n) > 0.3
    expected = _brute_force(queries, f, keep)
    np.testing.assert_allclose(best_window(queries, f, keep), expected, rtol=1e-4, atol=1e-5)
    assert best_window(queries[0], f, keep) == pytest.approx(expected[0], rel=1e-4)


def test_an_event_placed_last_scores_as_it_would_in_the_middle():
    """Windows near a video's end once held only its last units: a 2 s event placed last filled a
    window of its own (pure), the same event in the middle shared its window with a neighbour's unit.
    Every window of a video longer than the width now spans the width, wherever the event is."""
    q = _unit(BLUE, SQUARE)
    other = _unit(RED, CIRCLE)
    middle = _video([(3, other, None), (2, _unit(BLUE, SQUARE), None), (3, other, None)])
    last = _video([(3, other, None), (3, other, None), (2, _unit(BLUE, SQUARE), None)])
    a, b = best_windows(q, [middle, last])
    assert a == pytest.approx(b, abs=1e-6)
    assert b < 0.99  # two of its three units, not the event alone
    short = _video([(2, _unit(BLUE, SQUARE), None)])  # a video shorter than a window is one window
    assert best_window(q, short) == pytest.approx(1.0, abs=1e-6)


def test_an_hour_long_video_finds_its_one_matching_moment():
    """3,600 units of near misses and one moment that matches: that moment's window wins, with the
    score its frames and sound give."""
    rng = np.random.default_rng(1)
    n = 3600
    noise = rng.normal(size=(n, D)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    q = _unit(BLUE, SQUARE, HIGH)
    look, sound = _unit(BLUE, SQUARE), HIGH
    vectors = 0.3 * noise + 0.2 * _unit(BLUE, CIRCLE)  # near misses everywhere
    vectors[2000:2003] = look
    start = np.arange(n, dtype=np.float32)
    a_start = np.arange(0, n, 0.5, dtype=np.float32)
    audio = rng.normal(size=(2 * n, D)).astype(np.float32) * 0.1
    audio[4000:4006] = sound
    f = VideoFeatures(start, start + 1, vectors, a_start, a_start + 0.5, audio)
    planted = float(look @ q) + AUDIO_WEIGHT * float(sound @ q)
    found = best_window(q, f)
    assert found == pytest.approx(planted, abs=0.05) and found >= planted - 1e-5
    # no window of near misses comes close
    others = best_window(q, VideoFeatures(start[:1900], start[:1900] + 1, vectors[:1900], a_start[:3800], a_start[:3800] + 0.5, audio[:3800]))
    assert others < planted - 0.1


def test_a_video_without_units_in_the_time_window_scores_zero():
    f = _video([(3, _unit(BLUE, SQUARE), None)])
    assert best_window(_unit(BLUE, SQUARE), f, np.zeros(len(f.start), bool)) == 0.0


def test_candidates_scored_together_equal_each_scored_alone():
    """One pass over all candidates (one shared time axis) gives what each video alone gives: windows
    never reach into the next video, whatever its length, audio or time window."""
    rng = np.random.default_rng(2)

    def random_video(n: int, audio: int | None) -> VideoFeatures:
        s = np.sort(rng.uniform(0, n / 2, n)).astype(np.float32)
        a = np.arange(0, n / 2 + 5, 0.5, dtype=np.float32)  # audio running past the last frame
        width = D if audio is None else audio
        return VideoFeatures(s, s + 0.5, rng.normal(size=(n, D)).astype(np.float32), a, a + 0.5, rng.normal(size=(len(a), width)).astype(np.float32))

    feats = [random_video(12, None), random_video(3, D + 1), random_video(700, None), random_video(1, None), random_video(40, None)]
    keep = [rng.random(len(f.start)) > 0.2 for f in feats]
    keep[3][:] = False  # nothing of this one inside the time window
    queries = rng.normal(size=(4, D)).astype(np.float32)
    together = best_windows(queries, feats, keep)
    alone = np.stack([best_window(queries, f, k) for f, k in zip(feats, keep)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-6)
    assert (together[3] == 0).all()
    np.testing.assert_allclose(best_windows(queries[1], feats, keep), together[:, 1], rtol=1e-5)


def test_units_and_tokens_out_of_time_order_score_as_sorted_ones():
    rng = np.random.default_rng(3)
    f = _video([(3, _unit(BLUE, SQUARE), HIGH), (3, _unit(RED, CIRCLE), LOW), (3, _unit(BLUE, CIRCLE), HIGH)])
    u, a = rng.permutation(len(f.start)), rng.permutation(len(f.audio_start))
    shuffled = VideoFeatures(f.start[u], f.end[u], f.vectors[u], f.audio_start[a], f.audio_end[a], f.audio_vectors[a])
    q = np.stack([_unit(BLUE, SQUARE, HIGH), _unit(RED, CIRCLE, LOW), _unit(BLUE, HIGH)])
    np.testing.assert_allclose(best_windows(q, [shuffled, f]), best_windows(q, [f, f]), rtol=1e-6)
    empty = VideoFeatures(np.zeros(0, np.float32), np.zeros(0, np.float32), np.zeros((0, 0), np.float32))
    np.testing.assert_allclose(best_windows(q, [empty, f])[1], best_windows(q, [f])[0], rtol=1e-6)


class _FixedHead:
    """A head whose video-level score is fixed per video (by its number of units), so only the event
    window's weight decides between two candidates."""

    def __init__(self, window_weight: float | None):
        import torch

        self.audio_weight = torch.tensor(0.0)
        self.window_weight = window_weight

    def rerank(self, text, frames, mask, audio=None, audio_mask=None):
        import torch

        s = torch.tensor([{6: 1.0, 9: 0.5}[int(n)] for n in mask.sum(1)])
        zero = torch.zeros_like(s)
        return {"video": s, "fused": s, "frame_weights": mask.float() / mask.sum(1, keepdim=True), "gate": zero, "audio": zero}


def test_the_fine_stage_weighs_the_window_as_the_head_says():
    """A video that matches everywhere a little (higher video-level score) against one whose one
    event matches exactly: the head's `event_weight` (a softer retuned head leans on the window)
    decides which comes first; a head that does not say gets EVENT_WEIGHT."""
    from types import SimpleNamespace

    from vidsearch.encoders.fusion import FusionHead
    from vidsearch.search.event_windows import EVENT_WEIGHT, window_weight
    from vidsearch.search.ranking import final_ranking

    q = BLUE
    everywhere = _video([(6, _unit(BLUE, RED), None)])  # 6 units, window cosine 0.71, video-level 1.0
    one_event = _video([(3, BLUE, None), (6, RED, None)])  # 9 units, window cosine 1.0, video-level 0.5
    feats = {"everywhere": everywhere, "one_event": one_event}
    plan = SimpleNamespace(window=None, query=q, use_audio=False, audio=None, unit_query=q, motion=None, shape=None, sound=None,
                           weights={"visual": 1.0}, use_frames=True)  # fmt: skip
    pool = SimpleNamespace(ids=list(feats), lists={}, scores={}, spans={})
    cache = SimpleNamespace(get_many=lambda ids: {v: feats[v] for v in ids})

    def first(head) -> str:
        return final_ranking(plan, pool, cache, head, rrf_k=60.0)[0].video_id

    assert first(_FixedHead(None)) == first(_FixedHead(1.0)) == "everywhere"  # 1.0 + 0.71 against 0.5 + 1.0
    assert first(_FixedHead(3.0)) == "one_event"  # 1.0 + 2.12 against 0.5 + 3.0
    assert window_weight(None) == window_weight(_FixedHead(None)) == window_weight(FusionHead(D)) == EVENT_WEIGHT
    assert window_weight(FusionHead(D, window_weight=2.0)) == 2.0
