"""The motion channel (search/motion_channel.py): every unit's where-cue is stored at indexing, and a
query that names one motion adds how well each window's moving thing goes that way to its event
window, so the video whose shape moves as asked comes first; indexes made before the column get it
at their next write and read "no cues" for the videos already there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from test_direction_contrast import PAIRS, WORDS, moving_library  # noqa: F401 - fixture
from vidsearch.api_models import SearchRequest
from vidsearch.encoders.motion_swaps import named_motion
from vidsearch.search import event_windows
from vidsearch.search.event_windows import best_windows
from vidsearch.search.features import FeatureCache, VideoFeatures
from vidsearch.search.motion_channel import JUMP, MIN_UNITS, SPEED, agreement, query_motion, unwrap_jumps, window_velocity


def test_the_one_motion_a_query_names():
    assert named_motion("a red circle slides to the left while a low tone plays") == "left"
    assert named_motion("there is a purple square that climbs; a shrill beep rings out") == "up"
    assert named_motion("the yellow star drifts downward") == "down"
    assert named_motion("a blue box travels rightward") == "right"
    assert named_motion("a green square, motionless, and a clap") == "still"
    assert named_motion("a red star stays still") == "still"
    assert named_motion('a blue circle moves left, a voice says "go up"') == "left"  # quoted words are speech
    assert named_motion('the screen reads "MOVE LEFT"') is None
    assert named_motion("a ball moves left, then moves right") is None  # two motions: which window?
    assert named_motion("a cat playing the piano") is None and query_motion(None) is None
    # phrasings a user writes that the synthetic captions do not use
    assert named_motion("a red ball rolling to the right") == "right"
    assert named_motion("a car moving from left to right") == "right"
    assert named_motion("from the top to the bottom, a dot travels") == "down"
    assert named_motion("the square is moving upward") == "up" and named_motion("a falling star") == "down"
    assert named_motion("the star is standing still") == "still" and named_motion("the ball does not move") == "still"
    assert named_motion("a man picks up a cup") is None and named_motion("a static hiss") is None  # not motion
    assert named_motion("a car moving left to right") == "right" and named_motion("a star heads right") == "right"
    assert named_motion("a purple diamond spins in place") == "still" and named_motion("it remains in the same place") == "still"
    assert named_motion("a red ball travels towards the top of the frame") == "up"
    assert named_motion("the dot heads to the left side of the screen") == "left"
    for text, way in (("a red circle zooms to the left", "left"), ("a blue square streaks across to the right", "right"),
                      ("a white circle makes its way upward", "up"), ("a purple square creeps downward", "down"),
                      ("a red star inching left", "left"), ("a green circle moves down the screen", "down"),
                      ("a green square is still", "still"), ("a yellow star doesn't budge", "still"),
                      ("a green square is still moving left", "left")):  # fmt: skip
        assert named_motion(text) == way, text
    # other senses of the words: a place, a route, a name, two ways at once, "left" as in "leave"
    for text in ("passenger left behind", "panel left of the door", "heads up display", "a man with headphones down",
                 "people walking down the street", "a dog runs right into the pool", "a man walks to the right of the car",
                 "a drop of water", "Niagara Falls at night", "falling in love", "swinging left and right", "jumps up and down",
                 "the car drives to the top of the hill", "a man in place of honour", "a man walks up the stairs",
                 "he shot down the idea", "the price is still high", "two inches left of tape", "a shot up close",
                 "he is still in the building", "runs down the shot clock", "prices shooting up", "shoots left-handed"):
        assert named_motion(text) is None, text


def test_a_jump_between_two_events_is_not_a_move():
    """A thing moving right to the right edge, then a thing coming in at the left edge and moving
    right again: the step between them is a jump (long, against the steps on both sides), taken out
    of the path, so the window that holds both reads right, not left; a fast move that keeps its
    way, a turn, and another video's path are left as they are; uncued units stay uncued."""
    t = np.arange(7, dtype=np.float64)
    x = np.array([-0.6, -0.1, 0.4, 0.9, -0.6, -0.1, 0.4])  # one step in, the jump at the fourth step
    cues = np.column_stack([x, np.full(7, 0.1)])
    one = np.zeros(7, int)
    lo, hi = np.array([2]), np.array([5])  # units 2-4: the end of the first event, the start of the second
    raw, ok, _ = window_velocity(t, cues, lo, hi)
    assert ok[0] and agreement(raw, ok, "right")[0] < 0  # read as a move left before
    fixed = unwrap_jumps(cues, one)
    vel, ok, _ = window_velocity(t, fixed, lo, hi)
    assert ok[0] and agreement(vel, ok, "right")[0] > 0.9 and agreement(vel, ok, "left")[0] < -0.9
    assert np.allclose(fixed[:4], cues[:4]) and np.allclose(np.diff(fixed[3:, 0]), [0.0, 0.5, 0.5])
    fast = np.column_stack([[-0.9, -0.1, 0.7, 0.95], np.full(4, 0.1)])  # a long step the same way as its neighbours
    assert np.allclose(unwrap_jumps(fast, np.zeros(4, int)), fast)
    turn = np.column_stack([[-0.9, -0.2, 0.5, 0.5], [0.0, 0.0, 0.0, 0.7]])  # right, then down: not against
    assert np.allclose(unwrap_jumps(turn, np.zeros(4, int)), turn)
    two = unwrap_jumps(np.vstack([cues, cues]), np.r_[one, one + 1])  # each video on its own
    assert np.allclose(two[:7], fixed) and np.allclose(two[7:], fixed)
    holes = cues.copy()
    holes[2] = 0.0
    assert (unwrap_jumps(holes, one)[2] == 0).all()
    exact = np.array([[-0.5, 0.0], [-0.25, 0.0], [-1.0, 0.0], [-0.75, 0.0]])  # right, jump left, right: the last lands on (0, 0)
    landed = unwrap_jumps(exact, np.zeros(4, int))
    assert np.allclose(landed[:, 0], [-0.5, -0.25, -0.25, 0.0]) and (np.abs(landed).sum(1) > 0).all()  # still a cue
    assert JUMP > 0.5  # a third of the picture and more


def test_a_windows_velocity_is_the_slope_of_its_cues():
    t = np.arange(8, dtype=np.float64) + 0.5
    cues = np.column_stack([0.2 * t - 0.8, -0.1 * t + 0.3])  # right at 0.2/s, up at 0.1/s (y down)
    lo, hi = np.array([0, 2, 5, 6]), np.array([3, 6, 8, 8])
    vel, ok, cued = window_velocity(t, cues, lo, hi)
    assert ok.tolist() == [True, True, True, False] and cued.tolist() == [3, 4, 3, 2]  # the last window holds fewer than MIN_UNITS units
    assert np.allclose(vel[:3], [[0.2, -0.1]] * 3) and np.allclose(vel[3], 0.0)
    holes = cues.copy()
    holes[3] = 0.0  # a unit where nothing moved reads no cue: not a thing at the centre
    vel, ok, _ = window_velocity(t, holes, np.array([1, 2]), np.array([5, 5]))
    assert ok.tolist() == [True, False] and np.allclose(vel[0], [0.2, -0.1])
    assert MIN_UNITS == 3

    fast, slow = np.array([[-0.5, 0.0], [0.4, 0.0]]), np.array([[0.02 * SPEED, 0.0]])
    both = np.ones(2, bool)
    assert np.allclose(agreement(fast, both, "left"), [1.0, -1.0])
    assert np.allclose(agreement(fast, both, "right"), [-1.0, 1.0])
    assert np.allclose(agreement(fast, both, "up"), [0.0, 0.0])  # sideways: neither up nor down
    assert np.allclose(agreement(fast, both, "still"), [-1.0, -1.0])
    assert agreement(slow, np.ones(1, bool), "still")[0] > 0.9 and abs(agreement(slow, np.ones(1, bool), "right")[0]) < 0.05
    assert np.allclose(agreement(fast, np.zeros(2, bool), "left"), 0.0)
    # a window where nothing moved reads still (a thing that never moves is part of its shot's
    # background and reads no cue); one with too few units to tell, or no cues stored, reads nothing
    none, still = np.zeros(2, bool), np.array([True, False])
    assert agreement(fast, none, "still", still).tolist() == [1.0, 0.0]
    assert agreement(fast, none, "left", still).tolist() == [0.0, 0.0]


def test_noise_on_a_static_shot_stores_no_cue():
    """Sensor noise gives a static shot's frames a weak centroid at a random place; the stored cues
    leave it out (a frame where nothing stands out by CUE_MIN_STRENGTH has none), so the shot reads
    as still, while a faint thing that moves keeps its cues."""
    from vidsearch.encoders.temporal import CUE_MIN_STRENGTH, frame_cues, unit_where_cues

    rng = np.random.default_rng(0)
    base = rng.integers(40, 200, size=(112, 112, 3))
    noisy = np.stack([np.clip(base + rng.integers(-6, 7, size=base.shape), 0, 255) for _ in range(8)]).astype(np.uint8)
    moving = np.full((8, 112, 112, 3), 120, np.uint8)
    for i in range(8):
        moving[i, 40:60, 5 + 11 * i : 25 + 11 * i] += 15  # 15 grey levels brighter, moving right
    frames = np.concatenate([noisy, moving])
    owner = np.repeat([0, 1], 8)
    t = np.tile(np.arange(8, dtype=np.float32), 2)
    assert np.abs(frame_cues(noisy, np.zeros(8, int))).sum() > 0  # the model's own cue reads the noise
    cues = unit_where_cues(frames, t, t + 1, owner, t, owner)
    assert np.all(cues[:8] == 0) and np.all(np.abs(cues[8:]).sum(1) > 0), cues
    vel, ok, _ = window_velocity(t[8:] + 0.5, cues[8:], np.array([0]), np.array([8]))
    assert ok[0] and agreement(vel, ok, "right")[0] > 0.9
    assert 0 < CUE_MIN_STRENGTH < 0.1


def test_the_indexer_reads_each_frames_cues_once(monkeypatch):
    """The indexer reads the frames' where-cues once and hands them to the model's head (focus view,
    temporal module) and to the stored cues: the units are the same as when the head reads them
    itself, and encoding with given cues reads none again."""
    from vidsearch.encoders import temporal
    from vidsearch.encoders.backbone import load_backbone

    backbone = load_backbone("tiny")  # the shipped model: its head reads cues
    assert backbone.head is not None and backbone.head.reads_cues
    frames = np.full((12, 112, 112, 3), 90, np.uint8)
    for i in range(12):
        frames[i, 30:60, 4 + 8 * i : 34 + 8 * i] = 230  # a bright square moving right
    owner = np.repeat([0, 1], 6)
    t = np.tile(np.arange(6, dtype=np.float64), 2)
    own = backbone.encode_units(frames, t, t + 1, owner)[0]
    read = temporal.frame_cues_and_strength(frames, owner)
    calls = []
    real = temporal.where_cues_and_strength
    monkeypatch.setattr(temporal, "where_cues_and_strength", lambda *a: calls.append(1) or real(*a))
    given = backbone.encode_units(frames, t, t + 1, owner, cues=read[0])[0]
    assert calls == [], "given cues are not read again"
    np.testing.assert_allclose(given, own, atol=1e-5)
    stored = temporal.unit_where_cues(frames, t, t + 1, owner, t, owner, read)
    assert calls == [] and np.all(np.diff(stored[:6, 0]) > 0), stored  # the square's x grows
    np.testing.assert_allclose(stored, temporal.unit_where_cues(frames, t, t + 1, owner, t, owner), atol=1e-6)


def test_the_window_that_moves_as_asked_gains():
    t = np.arange(10, dtype=np.float32)
    x = np.r_[np.linspace(-0.8, 0.8, 5), np.linspace(0.8, -0.8, 5)]  # right for 5 s, then back left
    cues = np.column_stack([x, np.full(10, 0.1)]).astype(np.float32)
    v = np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cued, blind = VideoFeatures(t, t + 1, v, cues=cues), VideoFeatures(t, t + 1, v)  # blind: indexed before the channel
    for q, way, wrong in ((v[2], "right", "left"), (v[7], "left", "right")):
        base = best_windows(q, [cued, blind])
        assert base[0] == pytest.approx(base[1])
        gained, lost = best_windows(q, [cued, blind], motion=way), best_windows(q, [cued, blind], motion=wrong)
        assert gained[0] > base[0] + 0.5 * event_windows.MOTION_WEIGHT and lost[0] < gained[0]
        assert gained[1] == pytest.approx(base[1]) and lost[1] == pytest.approx(base[1])  # no cues: as before
    static = VideoFeatures(t, t + 1, v, cues=np.zeros((10, 2), np.float32))  # stored, nothing ever moved
    base = best_windows(v[2], [static, blind])
    still = best_windows(v[2], [static, blind], motion="still")
    assert still[0] == pytest.approx(base[0] + event_windows.MOTION_WEIGHT) and still[1] == pytest.approx(base[1])
    assert best_windows(v[2], [static], motion="left")[0] == pytest.approx(base[0])
    # a window where one unit saw something move is not "still" (and too few for a slope): every
    # 3 s window here holds one such unit, so nothing is added
    blip = np.zeros((10, 2), np.float32)
    blip[[1, 4, 7]] = [[0.5, 0.1], [-0.5, 0.1], [0.6, -0.2]]
    blips = VideoFeatures(t, t + 1, v, cues=blip)
    assert best_windows(v[2], [blips], motion="still")[0] == pytest.approx(best_windows(v[2], [blips])[0])
    tokens = VideoFeatures(t[::4], t[::4] + 4, v[::4], cues=np.zeros((3, 2), np.float32))  # merged units of 4 s
    assert best_windows(v[0], [tokens], motion="still")[0] == pytest.approx(best_windows(v[0], [tokens])[0])  # too few to tell
    both = best_windows(np.stack([v[2], v[7]]), [cued, blind], motion="right")  # several queries, one motion
    assert both.shape == (2, 2) and both[0, 0] == pytest.approx(best_windows(v[2], [cued, blind], motion="right")[0])


@pytest.mark.slow
def test_stored_cues_follow_the_motion(moving_library):  # noqa: F811
    engine, names = moving_library
    by_name = {n: v for v, n in names.items()}
    feats = engine.cache.get_many(list(names))
    for k, (_, _, a, _, _, _) in enumerate(PAIRS):  # each pair's first video: one shape going one way for 4 s
        f = feats[by_name[f"synth_{2 * k:05d}"]]
        assert f.cues.shape == (len(f.start), 2)
        vel, ok, _ = window_velocity((f.start + f.end) / 2, f.cues, np.array([0]), np.array([len(f.start)]))
        assert ok[0] and agreement(vel, ok, a)[0] > 0.8, (a, vel)



@pytest.mark.slow
def test_an_index_made_before_the_channel_gets_its_column(moving_library, tmp_path, tiny_backbone):  # noqa: F811
    """An index whose features table has no cue column (made by an earlier version) is searched with
    no cues for its videos, and its next write adds the column: the rows already there read none."""
    from vidsearch.config import load_settings
    from vidsearch.indexer.pipeline import IndexRun, open_store_for

    engine, _ = moving_library
    clips = [Path(p) for p in sorted(engine.store.files()["path"].to_pylist())[:2]]
    (tmp_path / "lib").mkdir()
    (tmp_path / "later").mkdir()
    first, second = tmp_path / "lib" / clips[0].name, tmp_path / "later" / clips[1].name
    first.write_bytes(clips[0].read_bytes())
    second.write_bytes(clips[1].read_bytes())
    settings = load_settings(None, db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False)
    store = open_store_for(settings, tiny_backbone)
    IndexRun(store, tiny_backbone, settings).run([first.parent])
    store.table("video_features").drop_columns(["unit_cues"])  # as an earlier version made it
    old_ids = [v for v in store.files()["video_id"].to_pylist() if v]
    old = FeatureCache(store).get_many(old_ids)
    assert len(old) == 1 and all(f.cues.shape == (0, 2) and len(f.start) for f in old.values())
    IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([second.parent])
    assert "unit_cues" in store.table("video_features").schema.names
    now = FeatureCache(store).get_many([v for v in store.files()["video_id"].to_pylist() if v])
    fresh = [f for v, f in now.items() if v not in old_ids]
    assert len(fresh) == 1 and fresh[0].cues.shape == (len(fresh[0].start), 2) and np.abs(fresh[0].cues).sum() > 0
    assert all(now[v].cues.shape == (0, 2) for v in old_ids)  # rows written before: no cues, read as none


@pytest.mark.slow
def test_the_video_that_moves_as_asked_comes_first(moving_library, monkeypatch):  # noqa: F811
    """Each pair: one video of a shape going one way for 4 s, one of it going the other way for 2 s
    then a still shape. Served search puts the asked-for direction's video first for 8 of the 8
    queries with the channel; without it (weight 0, the contrast still on) fewer."""
    engine, names = moving_library

    def firsts() -> int:
        right = 0
        for k, (colour, shape, a, b, _, _) in enumerate(PAIRS):
            for motion, want in ((a, 2 * k), (b, 2 * k + 1)):
                req = SearchRequest(query=f"a {colour} {shape} {WORDS[motion]} while there is no sound", top_k=3, min_relevance=0.0)
                right += names[engine.rank(engine.plan(req)).candidates[0].video_id] == f"synth_{want:05d}"
        return right

    with_channel = firsts()
    monkeypatch.setattr(event_windows, "MOTION_WEIGHT", 0.0)
    without = firsts()
    print(f"motion channel: {with_channel}/8 first with it, {without}/8 without")
    assert with_channel == 8 and with_channel > without, (with_channel, without)
