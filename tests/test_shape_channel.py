"""The shape channel (encoders/silhouettes.py, search/shape_channel.py): the indexer stores the
outline of what moves in each unit, and a query that names one shape adds how well each window's
outline matches it to its event window, so the video of the asked-for shape comes first where the
unit vectors cannot tell the shapes apart (a renderer the model never saw)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from media import indexed_synth_library
from vidsearch.api_models import SearchRequest
from vidsearch.encoders.shape_swaps import named_shape
from vidsearch.encoders.silhouettes import SHAPE_COLUMNS, frame_silhouettes, unit_silhouettes
from vidsearch.encoders.temporal import CUE_MIN_STRENGTH, frame_cues_and_strength, per_unit_mean
from vidsearch.lab import synth
from vidsearch.search import shape_channel
from vidsearch.search.event_windows import best_windows, channel_hits
from vidsearch.search.features import VideoFeatures
from vidsearch.search.moments import temporal_iou
from vidsearch.search.shape_channel import SHAPES, agreement, query_shape, window_harmonics


def test_the_one_shape_a_query_names():
    assert named_shape("a red circle slides to the left while a low tone plays") == "circle"
    assert named_shape("there is a three-sided shape that sinks; a deep beep rings out") == "triangle"
    assert named_shape("the yellow five-pointed star drops, accompanied by a hand clap") == "star"
    assert named_shape("a medium whistle is heard as a yellow block glides leftward") == "square"
    assert named_shape("two red balls bounce") == "circle" and named_shape("stacked boxes") == "square"
    assert named_shape('the white square drifts up, a voice saying "look at the white circle"') == "square"  # quoted: speech
    assert named_shape('the screen reads "STAR"') is None
    assert named_shape("a red ball and a blue box") is None  # two shapes: which window?
    assert named_shape("a cat playing the piano") is None and query_shape(None) is None and query_shape("") is None
    assert named_shape("a red square moves left") == "square"  # the synthetic one, not Moscow's
    assert named_shape("two stars move left") == "star" and named_shape("a five-star hotel lobby") is None  # a count, a rating
    assert named_shape("a red rectangle slides left") == "square" and named_shape("a blue oval rises") == "circle"
    for text in ("Times Square at night", "a movie star waves", "box office hit", "a city block", "ice cubes in a glass",
                 "the pyramids of Giza", "a 3 square meter room", "polka dots", "a shooting star", "a ball gown",
                 "the Oval Office", "a rectangular table", "a test match at the oval"):
        assert named_shape(text) is None, text


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Another drawing of the four shapes than either renderer's: plain polygons by PIL."""
    if shape == "circle":
        k, radii = 48, [r]
    elif shape == "square":
        k, radii, r = 4, [r], r * 1.1
    elif shape == "triangle":
        k, radii = 3, [r * 1.15]
    else:
        k, radii = 10, [r * 1.1, r * 0.45]  # a five-pointed star: outer and inner corners
    pts = []
    for i in range(k):
        rad = radii[i % len(radii)]
        a = angle + 2 * math.pi * i / k
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _clip(shape: str, size: float, angle: float, direction: tuple[float, float], rng: np.random.Generator, frames: int = 8) -> np.ndarray:
    """A shape crossing a static noisy backdrop, 112 px frames (the `tiny` model's), with sensor grain."""
    backdrop = rng.integers(10, 70, (112, 112, 3)).astype(np.float32)
    colour = tuple(int(c) for c in rng.integers(120, 255, 3))
    out = []
    for i in range(frames):
        u = i / max(frames - 1, 1)
        cx = 56 + direction[0] * (u - 0.5) * 70
        cy = 56 + direction[1] * (u - 0.5) * 70
        img = Image.fromarray(backdrop.astype(np.uint8))
        ImageDraw.Draw(img).polygon(_polygon(shape, cx, cy, size / 2, angle + 0.05 * i), fill=colour)
        frame = np.asarray(img).astype(np.float32) + rng.normal(0, 3, (112, 112, 1))
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return np.stack(out)


def _outline_of(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cue, strength, change = frame_cues_and_strength(frames, np.zeros(len(frames), int), with_change=True)
    per_frame = frame_silhouettes(change, strength >= CUE_MIN_STRENGTH)
    return window_harmonics(per_frame, np.array([0]), np.array([len(frames)]))


def test_each_shape_is_read_from_its_outline_whatever_its_size_turn_and_path():
    """Each shape at three sizes, three turns and two paths over noise: the named shape agrees and
    every other shape disagrees, for every clip."""
    rng = np.random.default_rng(7)
    for shape in SHAPES:
        for size in (24, 34, 44):
            for angle in (0.0, 0.4, 1.1):
                for direction in ((1.0, 0.0), (0.0, -1.0)):
                    h, w = _outline_of(_clip(shape, size, angle, direction, rng))
                    got = {s: float(agreement(h, w, s)[0]) for s in SHAPES}
                    assert got[shape] > 0.3 and all(v < -0.3 for s, v in got.items() if s != shape), (shape, size, angle, got, h)


def test_no_outline_where_nothing_moves_or_the_thing_is_cut_off():
    rng = np.random.default_rng(1)
    still = np.repeat(_clip("square", 34, 0.0, (0.0, 0.0), rng, frames=1), 8, axis=0)
    h, w = _outline_of(still)
    assert w[0] == 0 and agreement(h, w, "square")[0] == 0  # part of the background: nothing to read
    cut = _clip("triangle", 60, 0.0, (0.0, 2.6), rng)  # runs off the top and bottom edges
    _, _, change = frame_cues_and_strength(cut, np.zeros(len(cut), int), with_change=True)
    rows = frame_silhouettes(change)
    edge = [i for i in range(len(cut)) if change[i][[0, -1]].max() > 0.5]  # frames where it touches the border
    assert edge and all(rows[i, 0] == 0 for i in edge)
    assert frame_silhouettes(np.zeros((0, 56, 56), np.float32)).shape == (0, SHAPE_COLUMNS)


def test_a_window_outline_is_the_share_weighted_mean_of_its_units():
    rows = np.array([[1.0, 0.01, 0.02, 0.20, 0.01, 0.01],  # a triangle's 3rd harmonic
                     [0.0, 0.00, 0.00, 0.00, 0.00, 0.00],  # no outline
                     [1.0, 0.01, 0.02, 0.10, 0.01, 0.01],
                     [1.0, 0.01, 0.30, 0.01, 0.01, 0.01],  # stretched: a person, a smear
                     [0.5, 0.01, 0.02, 0.16, 0.01, 0.01]])  # an outline in half of a unit's frames  # fmt: skip
    h, w = window_harmonics(rows, np.array([0, 0, 1, 2, 3]), np.array([3, 2, 2, 4, 5]))
    assert np.allclose(w, [2.0, 1.0, 0.0, 2.0, 1.5])
    assert np.allclose(h[0], (rows[0, 1:] + rows[2, 1:]) / 2) and np.allclose(h[4], (rows[3, 1:] + 0.5 * rows[4, 1:]) / 1.5)
    assert agreement(h, w, "triangle").tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]  # too few units in the 2nd, 3rd, 5th; the 4th is stretched
    assert agreement(h[:1], w[:1], "circle")[0] == -1.0
    # units of several frames: each unit's share of frames with an outline and their mean harmonics
    per_frame = np.array([[1, .1, .1, .1, .1, .1], [0, 0, 0, 0, 0, 0], [1, .3, .3, .3, .3, .3]], np.float32)  # fmt: skip
    units = unit_silhouettes(per_frame, lambda v: per_unit_mean(v, np.array([0.0, 1, 2]), np.array([1.0, 2, 3]), np.zeros(3, int),
                                                                np.array([0.0, 2.0]), np.zeros(2, int)))  # fmt: skip
    assert np.allclose(units, [[0.5, .1, .1, .1, .1, .1], [1, .3, .3, .3, .3, .3]])


def test_the_window_whose_outline_is_asked_for_gains():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(6, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t = np.arange(6, dtype=np.float32)
    star = np.tile([[1.0, 0.01, 0.02, 0.01, 0.02, 0.2]], (6, 1)).astype(np.float32)
    read = VideoFeatures(t, t + 1, v, shapes=star)
    blind = VideoFeatures(t, t + 1, v)  # indexed before the channel: no outlines stored
    base = best_windows(v[0], [read, blind])
    gained = best_windows(v[0], [read, blind], shape="star")
    lost = best_windows(v[0], [read, blind], shape="circle")
    assert shape_channel.SHAPE_WEIGHT > 0 and gained[0] > base[0] > lost[0]
    assert gained[0] == pytest.approx(base[0] + shape_channel.SHAPE_WEIGHT, abs=1e-5)
    assert lost[0] == pytest.approx(base[0] - shape_channel.SHAPE_WEIGHT, abs=1e-5)
    assert gained[1] == pytest.approx(base[1]) and lost[1] == pytest.approx(base[1])
    keep = np.zeros(6, bool)
    keep[:1] = True  # one unit inside the search's time window: too few to tell
    assert best_windows(v[0], [read], [keep], shape="star")[0] == pytest.approx(best_windows(v[0], [read], [keep])[0])


# -- end to end: the held-out renderer, which the shipped model never trained on ------------------------

PAIRS = [("red", "square", "circle", "right"), ("blue", "triangle", "star", "left"),
         ("yellow", "circle", "triangle", "down"), ("green", "star", "square", "up")]  # fmt: skip
WORDS = {"left": "travels left", "right": "travels right", "up": "floats up", "down": "sinks"}


# videos of two events, one shape after the other, same colour and motion (4 s each)
TWO_SHAPES = [("purple", "triangle", "star", "right"), ("white", "square", "circle", "left")]


def _event(colour: str, shape: str, motion: str, start: float = 0.0, end: float = 6.0) -> synth.Event:
    size, margin = 64, synth.MARGIN
    far, mid = synth.WIDTH - size - margin, (synth.WIDTH - size) // 2
    path = {"left": (far, mid, margin, mid), "right": (margin, mid, far, mid), "up": (mid, far, mid, margin),
            "down": (mid, margin, mid, far)}[motion]  # fmt: skip
    return synth.Event(colour, shape, motion, "silence", "textured", "checker", None, None, start, end, size, path)


@pytest.fixture(scope="module")
def shape_library(tmp_path_factory):
    """Per pair, two videos of one colour moving one way over a busy backdrop, differing only in
    shape, drawn by the held-out renderer; then the TWO_SHAPES videos (synth_00008 on)."""
    root = tmp_path_factory.mktemp("shapes")
    plans = [synth.VideoPlan(2 * k + j, "test", (_event(colour, shape, motion),), style="heldout")
             for k, (colour, a, b, motion) in enumerate(PAIRS) for j, shape in enumerate((a, b))]  # fmt: skip
    plans += [synth.VideoPlan(len(plans) + k, "test", (_event(c, a, m, 0.0, 4.0), _event(c, b, m, 4.0, 8.0)), style="heldout")
              for k, (c, a, b, m) in enumerate(TWO_SHAPES)]  # fmt: skip
    return indexed_synth_library(root, plans, 5)


@pytest.mark.slow
def test_stored_outlines_name_each_videos_shape(shape_library):
    """Every video's units hold an outline; read over the whole video it names the video's shape for
    at least 7 of the 8 and another shape for none. (The renderer draws some shapes large and slow:
    where a shape covers the same cells in most sampled frames, the shot's median holds part of it and
    the outline is cut; it then reads as none of the shapes, which adds nothing.)"""
    engine, names = shape_library
    by_name = {n: v for v, n in names.items()}
    feats = engine.cache.get_many(list(names))
    read = 0
    for k, (_, a, b, _) in enumerate(PAIRS):
        for j, shape in enumerate((a, b)):
            f = feats[by_name[f"synth_{2 * k + j:05d}"]]
            assert f.shapes.shape == (len(f.start), SHAPE_COLUMNS) and f.shapes[:, 0].sum() >= 2
            h, w = window_harmonics(f.shapes, np.array([0]), np.array([len(f.start)]))
            got = {s: float(agreement(h, w, s)[0]) for s in SHAPES}
            assert all(got[shape] >= v for v in got.values()), (shape, got)
            read += got[shape] > 0
    assert read >= 7


@pytest.mark.slow
def test_the_video_of_the_asked_for_shape_comes_first(shape_library):
    """Served search puts the asked-for shape's video first for all 8 queries with the channel.
    Without it (weight 0) the shipped model, which never saw this renderer, put 6-8 of the 8 first
    across runs here: the pairs are near ties for it, decided by rounding in its threads."""
    engine, names = shape_library

    def firsts() -> int:
        right = 0
        for k, (colour, a, b, motion) in enumerate(PAIRS):
            for j, shape in enumerate((a, b)):
                req = SearchRequest(query=f"a {colour} {shape} {WORDS[motion]} in silence", top_k=8, min_relevance=0.0)
                right += names[engine.rank(engine.plan(req)).candidates[0].video_id] == f"synth_{2 * k + j:05d}"
        return right

    assert firsts() == 8


@pytest.mark.slow
def test_the_moment_is_cut_where_the_asked_for_shape_is(shape_library):
    """In a video where one shape follows another (same colour, same motion), the first result's top
    moment covers the asked-for shape's 4 s (IoU >= 0.5) wherever the channel reads that shape there
    (its best window lies on the event): the channel's agreement shapes the moment's curve
    (event_windows.channel_hits). The renderer's look changes with the video's number, and some looks
    read as no shape (a thin or large outline), so the test asks for two readable queries of the four;
    without the rows the frames' cosines alone put the moment on the other shape here (checked)."""
    engine, names = shape_library
    by_name = {n: v for v, n in names.items()}
    first, readable = 2 * len(PAIRS), 0
    for k, (colour, a, b, motion) in enumerate(TWO_SHAPES):
        f = engine.cache.get_many([by_name[f"synth_{first + k:05d}"]])[by_name[f"synth_{first + k:05d}"]]
        for shape, (start, end) in ((a, (0.0, 4.0)), (b, (4.0, 8.0))):
            rows = channel_hits([f], shape=shape)[0]
            best = rows[np.argmax(rows[:, 2])]
            if best[2] <= 0 or best[0] < start - 0.5 or best[1] > end + 0.5:
                continue  # the channel does not read this shape here: nothing to follow
            readable += 1
            ranking = engine.rank(engine.plan(SearchRequest(query=f"a {colour} {shape} {WORDS[motion]}", top_k=3, min_relevance=0.0)))
            hit = ranking.page(0, 1)[0]
            assert names[hit.candidate.video_id] == f"synth_{first + k:05d}", shape
            top = hit.moments[0]
            iou = float(np.ravel(temporal_iou([top.start, top.end], [(start, end)]))[0])
            assert iou >= 0.5, (shape, top, (start, end))
    assert readable >= 2


@pytest.mark.slow
def test_an_index_made_before_the_channel_gets_its_column(shape_library, tmp_path, tiny_backbone):
    """An index whose features table has no outline column (made by an earlier version) is searched
    with no outlines for its videos, and its next write adds the column: the rows already there read none."""
    from vidsearch.config import load_settings
    from vidsearch.indexer.pipeline import IndexRun, open_store_for
    from vidsearch.search.features import FeatureCache

    engine, _ = shape_library
    clips = [Path(p) for p in sorted(engine.store.files()["path"].to_pylist())[:2]]
    for folder, clip in zip(("lib", "later"), clips):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / clip.name).write_bytes(clip.read_bytes())
    settings = load_settings(None, db=tmp_path / "db", model="tiny", pretrained="none", speech=False, ocr=False)
    store = open_store_for(settings, tiny_backbone)
    IndexRun(store, tiny_backbone, settings).run([tmp_path / "lib"])
    store.table("video_features").drop_columns(["unit_shapes"])  # as an earlier version made it
    old_ids = [v for v in store.files()["video_id"].to_pylist() if v]
    old = FeatureCache(store).get_many(old_ids)
    assert len(old) == 1 and all(f.shapes.shape == (0, SHAPE_COLUMNS) and len(f.start) for f in old.values())
    q = next(iter(old.values())).vectors[0]
    assert best_windows(q, list(old.values()), shape="square")[0] == pytest.approx(best_windows(q, list(old.values()))[0])
    IndexRun(open_store_for(settings, tiny_backbone), tiny_backbone, settings).run([tmp_path / "later"])
    assert "unit_shapes" in store.table("video_features").schema.names
    now = FeatureCache(store).get_many([v for v in store.files()["video_id"].to_pylist() if v])
    fresh = [f for v, f in now.items() if v not in old_ids]
    assert len(fresh) == 1 and fresh[0].shapes.shape == (len(fresh[0].start), SHAPE_COLUMNS) and fresh[0].shapes[:, 0].sum() > 0
    assert all(now[v].shapes.shape == (0, SHAPE_COLUMNS) for v in old_ids)
