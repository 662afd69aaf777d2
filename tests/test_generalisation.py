"""Generalisation beyond one renderer, and order: randomised and held-out synthetic styles, the
temporal module over unit vectors, reversed-direction captions, and the eval metrics users feel
(P@1 by relevance, the R@1 ceiling, direction accuracy)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from vidsearch.encoders.directions import reverse_direction
from vidsearch.encoders.temporal import TemporalMixer, frame_cues, mix_units, unit_cues_of, widen_state
from vidsearch.lab import synth
from vidsearch.lab.synth_looks import CLAP_COLOURS, SPRITE_VARIANTS, TIMBRES, EventLook, video_look
from vidsearch.lab.relevance_eval import attribute_chance, attribute_p1, attribute_relevance, named_key, r1_ceiling, relevance_metrics

SEED = 3
N = 4


# -- the styles ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def styled(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for style in ("random", "heldout"):
        root = tmp_path_factory.mktemp(style)
        synth.generate(root, N, SEED, jobs=2, progress=False, style=style)
        out[style] = root
    return out


def _frames(path: Path) -> tuple[np.ndarray, float]:
    info = json.loads(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height,r_frame_rate",
                                      "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout)["streams"][0]  # fmt: skip
    num, den = (int(x) for x in info["r_frame_rate"].split("/"))
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, info["height"], info["width"], 3), num / den


def _dominant_colour(frame: np.ndarray) -> str | None:
    names = list(synth.COLOURS)
    palette = np.array([synth.COLOURS[n] for n in names], np.float32)
    dist = np.linalg.norm(frame.reshape(-1, 1, 3).astype(np.float32) - palette[None], axis=2)
    near = dist.min(axis=1) < 70
    if near.sum() < 50:
        return None
    return names[int(np.bincount(dist.argmin(axis=1)[near], minlength=len(names)).argmax())]


def _audio(path: Path) -> np.ndarray:
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", str(synth.SAMPLE_RATE), "-"]
    return np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout, np.float32)


def test_styles_change_the_look_not_the_ground_truth(styled, tmp_path):
    plain = synth.plan(N, SEED, 0.2, "plain")
    for style, root in styled.items():
        events = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
        assert [e["caption"] for e in events] == [e.caption for p in plain for e in p.events], style
        assert json.loads((root / "synth.json").read_text())["style"] == style
    # the looks differ: randomised sizes/paths, and the held-out renderer's own frame size
    random_events = [e for p in synth.plan(N, SEED, 0.2, "random") for e in p.events]
    assert [e.path for e in random_events] != [e.path for p in plain for e in p.events]
    assert len({e.look.variant for p in synth.plan(40, SEED, 0.2, "random") for e in p.events}) >= 3
    frames, _ = _frames(styled["heldout"] / "videos" / "synth_00000.mp4")
    assert frames.shape[1:3] == (240, 240)
    with pytest.raises(ValueError, match="unknown style"):
        synth.plan(2, 1, 0.2, "cartoon")


@pytest.mark.parametrize("style", ["random", "heldout"])
def test_each_style_shows_the_events_colour_and_plays_its_tone(styled, style):
    root = styled[style]
    events = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()]
    pitch = {p.video: p.look.pitch for p in synth.plan(N, SEED, 0.2, style)}  # the randomised look's own pitch
    colours = tones = 0
    for e in events:
        video = root / e["video"]
        frames, fps = _frames(video)
        mid = int((e["start"] + e["end"]) / 2 * fps)
        assert _dominant_colour(frames[mid]) == e["colour"], (style, e["video"], e["start"])
        colours += 1
        if e["sound"] in synth.TONE_HZ and not e["spoken"]:
            audio = _audio(video)
            a, b = (int(t * synth.SAMPLE_RATE) for t in (e["start"] + 0.2, e["end"] - 0.2))
            w = audio[a:b]
            spectrum = np.abs(np.fft.rfft(w * np.hanning(w.size)))
            peak = float(np.fft.rfftfreq(w.size, 1 / synth.SAMPLE_RATE)[spectrum.argmax()])
            assert peak == pytest.approx(synth.TONE_HZ[e["sound"]] * pitch[e["video"]], rel=0.06), (style, e)
            tones += 1
        if e["sound"] == "silence" and not e["spoken"]:
            audio = _audio(video)
            a, b = (int(t * synth.SAMPLE_RATE) for t in (e["start"] + 0.2, e["end"] - 0.2))
            assert float(np.sqrt(np.mean(audio[a:b] ** 2))) < 0.01, (style, e)
    assert colours >= 8


def test_randomised_tones_keep_their_pitch_class_in_every_timbre():
    """Whatever the timbre (sawtooth, a random organ, vibrato), the fundamental is the strongest
    partial and each class's pitch range (the look's 0.8-1.25x) never meets another's."""
    looks = [video_look(7, i, "random") for i in range(300)]
    assert set(TIMBRES) == {lk.timbre for lk in looks}
    lo, hi = min(lk.pitch for lk in looks), max(lk.pitch for lk in looks)
    assert 0.8 <= lo < 0.85 and 1.2 < hi <= 1.25
    assert synth.TONE_HZ["low"] * hi < synth.TONE_HZ["middle"] * lo and synth.TONE_HZ["middle"] * hi < synth.TONE_HZ["high"] * lo
    t = np.arange(synth.SAMPLE_RATE // 2) / synth.SAMPLE_RATE
    freqs = np.fft.rfftfreq(t.size, 1 / synth.SAMPLE_RATE)
    for timbre in TIMBRES:
        for hz in (synth.TONE_HZ["low"] * lo, synth.TONE_HZ["high"] * hi):
            for vibrato in (0.0, 0.015):
                w = synth.tone_wave(hz, t, timbre, vibrato, seed=11)
                assert np.abs(w).max() == pytest.approx(1.0, abs=1e-6)
                peak = freqs[np.abs(np.fft.rfft(w * np.hanning(w.size))).argmax()]
                assert peak == pytest.approx(hz, rel=0.03), (timbre, hz, vibrato)


def test_randomised_claps_vary_and_stay_audible():
    looks = [video_look(7, i, "random") for i in range(300)]
    assert {lk.clap_group for lk in looks} == {1, 2, 3} and {lk.clap_colour for lk in looks} == set(CLAP_COLOURS)
    assert any(lk.clap_tail for lk in looks) and any(lk.shake for lk in looks) and any(lk.vibrato for lk in looks)
    turns = [e.look.turn for p in synth.plan(100, 7, 0.0, "random") for e in p.events]
    assert 0.3 < np.mean([t > 0 for t in turns]) < 0.7 and max(turns) > 300  # half the shapes point any way
    n = 2 * synth.SAMPLE_RATE
    for lk in looks[:40]:
        x = synth._claps(n, np.random.default_rng(0), every=lk.clap_every, decay=lk.clap_decay, group=lk.clap_group,
                         colour=lk.clap_colour, level=lk.clap_level, tail=lk.clap_tail)  # fmt: skip
        hits = int(np.ceil((n - 0.05 * synth.SAMPLE_RATE - 0.06 * synth.SAMPLE_RATE) / (lk.clap_every * synth.SAMPLE_RATE)))
        assert 0.2 < np.abs(x).max() and hits >= 1, lk
    # the plain look's claps are what they always were (plain corpora keep their files)
    plain = synth._claps(n, np.random.default_rng(5))
    m = int(0.06 * synth.SAMPLE_RATE)
    rng = np.random.default_rng(5)
    first = synth.CLAP_LEVEL * np.exp(-np.arange(m) / (0.012 * synth.SAMPLE_RATE)) * rng.uniform(-1, 1, m)
    start = int(0.05 * synth.SAMPLE_RATE)
    assert np.array_equal(plain[start : start + m], first)


@pytest.mark.parametrize("turn", [0.0, 137.0])
@pytest.mark.parametrize("variant", SPRITE_VARIANTS)
def test_every_sprite_variant_keeps_the_shape_and_its_colour(variant, turn):
    look = EventLook(variant=variant, angle=30.0 if variant != "turned" else 20.0, turn=turn)
    names = list(synth.COLOURS)
    palette = np.array([synth.COLOURS[n] for n in names], np.float32)
    for shape in synth.SHAPES:
        flat = synth.sprite_pixels("green", shape, 64)[..., 3].astype(np.float32).sum()
        px = synth.sprite_pixels("green", shape, 64, look)
        opaque = px[..., 3] > 200
        assert abs(px[..., 3].astype(np.float32).sum() / flat - 1) < 0.2, (variant, shape)  # "turned" is drawn 8% smaller
        rgb = px[opaque][:, :3].astype(np.float32)
        # the same colour family: every opaque pixel's hue is the palette colour's, however dark
        nearest = np.argmax((rgb / (np.linalg.norm(rgb, axis=1, keepdims=True) + 1e-6)) @ (palette / np.linalg.norm(palette, axis=1, keepdims=True)).T, axis=1)
        assert np.mean(nearest == names.index("green")) > 0.95, (variant, shape)


# -- direction -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a red circle moves left while a low tone sounds", "a red circle moves right while a low tone sounds"),
        ("a deep beep rings out as a blue box drifts upward", "a deep beep rings out as a blue box drifts downward"),
        ("the star rises; clapping is heard", "the star sinks; clapping is heard"),
        ("a disc slides to the Left", "a disc slides to the Right"),
        ('a ball stays still; someone says "turn up the lights"', None),
        ('a box glides leftward, with a voice saying "look up"', 'a box glides rightward, with a voice saying "look up"'),
    ],
)
def test_reverse_direction(caption, expected):
    assert reverse_direction(caption) == expected


def test_temporal_module_starts_as_identity_and_learns_order():
    torch.manual_seed(0)
    m = TemporalMixer(16)
    units = torch.nn.functional.normalize(torch.randn(2, 5, 16), dim=-1)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = m(units, mask)
    assert torch.allclose(out[0], units[0], atol=1e-6) and torch.allclose(out[1, :3], units[1, :3], atol=1e-6)
    assert torch.all(out[1, 3:] == 0)
    torch.nn.init.normal_(m.out.weight, std=0.5)
    forward = m(units[:1], mask[:1])
    backward = m(units[:1].flip(1), mask[:1]).flip(1)
    assert not torch.allclose(forward, backward, atol=1e-3), "a reversed sequence must give other units"
    assert torch.allclose(forward.norm(dim=-1), torch.ones(1, 5), atol=1e-5)


def test_mix_units_per_video_equals_one_video_at_a_time():
    torch.manual_seed(1)
    m = TemporalMixer(8)
    torch.nn.init.normal_(m.out.weight, std=0.3)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(7, 8)).astype(np.float32)
    owner = np.array([0, 0, 0, 1, 1, 2, 2])
    start = np.array([0, 1, 2, 0, 1, 0, 2], float)
    together = mix_units(m, vecs, start, start + 1, owner)
    for v in range(3):
        sel = owner == v
        alone = mix_units(m, vecs[sel], start[sel], start[sel] + 1, owner[sel])
        np.testing.assert_allclose(together[sel], alone, atol=1e-5)


def _moving_square(rng, steps: int, dx: int, dy: int, shake: int = 0) -> np.ndarray:
    """A textured backdrop (grain, a shaking camera) with a square crossing it by (dx, dy) a frame."""
    back = rng.integers(0, 255, (260, 260, 3), dtype=np.uint8)
    frames = []
    for t in range(steps):
        ox, oy = rng.integers(0, shake + 1, 2) if shake else (0, 0)
        f = back[oy : oy + 224, ox : ox + 224].copy()
        x, y = 92 + dx * (t - steps // 2), 92 + dy * (t - steps // 2)
        f[y : y + 40, x : x + 40] = (40, 200, 60)
        noise = rng.integers(-12, 13, f.shape)
        frames.append(np.clip(f.astype(int) + noise, 0, 255).astype(np.uint8))
    return np.stack(frames)


def test_where_cues_follow_the_moving_thing_not_the_backdrop():
    rng = np.random.default_rng(0)
    videos = {"right": (30, 0), "left": (-30, 0), "down": (0, 25), "up": (0, -25)}
    frames = np.concatenate([_moving_square(rng, 5, dx, dy, shake=2) for dx, dy in videos.values()])
    owner = np.repeat(np.arange(len(videos)), 5)
    cues = frame_cues(frames, owner)
    for v, (dx, dy) in enumerate(videos.values()):
        c = cues[owner == v]
        step = np.diff(c, axis=0).mean(axis=0)  # the centroid's move per frame, image coordinates
        assert np.sign(step[0]) == np.sign(dx) if dx else abs(step[0]) < 0.05, (v, c)
        assert np.sign(step[1]) == np.sign(dy) if dy else abs(step[1]) < 0.05, (v, c)
        assert abs(step[0] if dx else step[1]) > 0.15  # ~30 px of 224 a frame is ~0.27 of [-1, 1]
    # the background of each video is its own (frames of two videos read together or alone agree)
    np.testing.assert_allclose(cues[owner == 1], frame_cues(frames[owner == 1], owner[owner == 1]), atol=1e-5)
    still = np.repeat(frames[:1], 4, axis=0)
    assert np.all(frame_cues(still, np.zeros(4, int)) == 0), "a static shot has no moving thing"
    # read a few videos at a time (small batches), the same cues
    np.testing.assert_allclose(frame_cues(frames, owner, batch=2), cues, atol=1e-6)
    # two frames are no background (their median is the darker one): no cue rather than a reversed one
    dark = np.full((2, 224, 224, 3), 230, np.uint8)
    dark[0, 90:130, 20:60] = dark[1, 90:130, 160:200] = 10
    assert np.all(frame_cues(dark, np.zeros(2, int)) == 0)


@pytest.mark.parametrize("style", ["random", "heldout"])
def test_the_cue_reads_the_direction_of_each_renderers_events(styled, style):
    """The ceiling the temporal module learns toward, on both renderers' own drawing of motion."""
    from vidsearch.lab.direction_cues import cue_direction_accuracy

    out = cue_direction_accuracy(styled[style])
    assert out["events"] >= 3, out
    assert out["direction_from_cues"] >= 75.0, out


def test_cues_tell_the_module_a_direction_the_vectors_cannot():
    torch.manual_seed(0)
    m = TemporalMixer(8, cues=2)
    torch.nn.init.normal_(m.out.weight, std=0.5)
    units = torch.nn.functional.normalize(torch.randn(1, 4, 8), dim=-1).expand(2, 4, 8)  # the same vectors
    path = torch.linspace(-0.6, 0.6, 4)
    cues = torch.stack([torch.stack([path, torch.zeros(4)], -1), torch.stack([-path, torch.zeros(4)], -1)])  # right, left
    out = m(units, None, None, cues)
    assert not torch.allclose(out[0], out[1], atol=1e-3), "moving right and moving left must give other units"
    # a module trained before the cues loads into one that reads them, unchanged until trained
    old = TemporalMixer(8)
    torch.nn.init.normal_(old.out.weight, std=0.5)
    new = TemporalMixer(8, cues=2)
    state = widen_state({f"temporal.{k}": v for k, v in old.state_dict().items()}, new)  # as a checkpoint's head stores it
    new.load_state_dict({k.removeprefix("temporal."): v for k, v in state.items()})
    torch.testing.assert_close(new(units, None, None, cues), old(units), atol=1e-6, rtol=0)
    # and back: a module with cues loads into one without (fine-tuning with --no-where-cues)
    plain = TemporalMixer(8)
    state = widen_state({f"temporal.{k}": v for k, v in m.state_dict().items()}, plain)
    plain.load_state_dict({k.removeprefix("temporal."): v for k, v in state.items()})
    torch.testing.assert_close(plain.fc.weight, m.fc.weight[:, :16])


def test_merged_units_read_the_mean_cue_of_their_frames():
    head = torch.nn.Module()
    head.temporal = TemporalMixer(8, cues=2)
    rng = np.random.default_rng(1)
    frames = np.concatenate([_moving_square(rng, 4, 30, 0), _moving_square(rng, 3, 0, 25)])
    f_owner = np.array([0, 0, 0, 0, 1, 1, 1])
    f_start = np.array([0, 1, 2, 3, 0, 1, 2], float)
    per_frame = frame_cues(frames, f_owner)
    np.testing.assert_allclose(unit_cues_of(head, frames, f_start, f_start + 1, f_owner, f_start, f_owner), per_frame)
    u_start, u_owner = np.array([0.0, 2.0, 0.0, 1.0]), np.array([0, 0, 1, 1])  # units of frames {0,1}, {2,3}, {0}, {1,2}
    merged = unit_cues_of(head, frames, f_start, f_start + 1, f_owner, u_start, u_owner)
    want = np.stack([per_frame[[0, 1]].mean(0), per_frame[[2, 3]].mean(0), per_frame[4], per_frame[[5, 6]].mean(0)])
    np.testing.assert_allclose(merged, want, atol=1e-6)
    assert unit_cues_of(None, frames, f_start, f_start + 1, f_owner, f_start, f_owner) is None


# -- metrics ---------------------------------------------------------------------------------------


def test_relevance_metrics_count_any_matching_video():
    sims = np.array([[0.9, 0.8, 0.1], [0.2, 0.9, 0.3], [0.1, 0.2, 0.3]])
    relevant = [{0: [(0, 2)], 1: [(1, 3)]}, {0: [(0, 2)]}, {2: [(0, 4)], 0: [(0, 1)], 1: [(0, 1)]}]
    moments = {(0, 0): (0.0, 2.0), (2, 2): (3.0, 4.0)}
    m = relevance_metrics(sims, relevant, lambda q, col: moments.get((q, col)))
    assert m["P@1_relevant"] == pytest.approx(200 / 3, abs=0.01)  # query 1's first result holds no match
    assert m["P@5_relevant"] == pytest.approx(100 * (2 / 3 + 1 / 3 + 1) / 3, abs=0.01)
    assert m["moment_P@1_iou0.5"] == pytest.approx(100 / 3, abs=0.01)  # (3, 4) vs (0, 4): IoU 0.25
    assert r1_ceiling(relevant) == pytest.approx(100 * (1 / 2 + 1 + 1 / 3) / 3, abs=0.01)


def test_attribute_p1_says_which_attribute_the_first_result_holds(tmp_path):
    from types import SimpleNamespace

    events = [  # video a: red circle left low; video b: red square right clap; video c: blue circle left low
        {"video": "a.mp4", "start": 0.0, "end": 2.0, "colour": "red", "shape": "circle", "motion": "left", "sound": "low"},
        {"video": "b.mp4", "start": 0.0, "end": 2.0, "colour": "red", "shape": "square", "motion": "right", "sound": "clap"},
        {"video": "c.mp4", "start": 0.0, "end": 2.0, "colour": "blue", "shape": "circle", "motion": "left", "sound": "low"},
    ]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    cols = {str((tmp_path / n).resolve()): i for i, n in enumerate(("a.mp4", "b.mp4", "c.mp4"))}
    queries = SimpleNamespace(text=["a red circle moves left, low tone"], path=[str((tmp_path / "a.mp4").resolve())],
                              start=np.array([0.0]), end=np.array([2.0]))  # fmt: skip
    by = attribute_relevance(tmp_path / "events.jsonl", tmp_path, cols, queries, np.array([0]))
    assert by == {"colour": [{0, 1}], "shape": [{0, 2}], "motion": [{0, 2}], "sound": [{0, 2}]}
    # first result b: the colour is right, shape, motion and sound are not; c: the other way round
    assert attribute_p1(np.array([[0.1, 0.9, 0.2]]), by) == {"colour": 100.0, "shape": 0.0, "motion": 0.0, "sound": 0.0}
    assert attribute_p1(np.array([[0.1, 0.2, 0.9]]), by) == {"colour": 0.0, "shape": 100.0, "motion": 100.0, "sound": 100.0}
    assert attribute_chance(by, 3) == pytest.approx({"colour": 66.67, "shape": 66.67, "motion": 66.67, "sound": 66.67})


def test_a_caption_names_backdrop_and_words_only_when_it_says_them():
    e = {"colour": "red", "shape": "circle", "motion": "left", "sound": "low", "background": "plain", "onscreen": "STOP", "spoken": None}
    assert named_key(e, "a red ball drifts to the left; a deep beep rings out") == ("red", "circle", "left", "low", None, None, None)
    assert named_key(e, 'against a solid backdrop, a red ball ..., under the caption "STOP"')[4:] == ("plain", "STOP", None)


@pytest.mark.slow
def test_eval_reports_relevance_ceiling_and_direction(unseen_synth_corpus, tmp_path):
    db = tmp_path / "idx"
    data = unseen_synth_corpus / "train.jsonl"
    run = lambda *a: subprocess.run(["vidsearch", *a], capture_output=True, text=True, timeout=600)  # noqa: E731
    done = run("index", str(data), "--db", str(db), "--model", "tiny", "--no-speech", "--no-ocr")
    assert done.returncode == 0, done.stderr[-1500:]
    done = run("eval", "--data", str(data), "--db", str(db), "--json")
    assert done.returncode == 0, done.stderr[-1500:]
    report = json.loads(done.stdout)
    for name, row in report["methods"].items():
        assert row["P@1_relevant"] >= row["R@1"], name  # the caption's own video is always relevant
        assert 0 <= row["moment_P@1_iou0.5"] <= row["P@1_relevant"]
    assert 0 < report["R@1_ceiling"] <= 100
    # the shipped model reads order: the fine stage as search computes it contrasts direction queries
    assert "+direction" in report["methods"] and "moments_without_direction_contrast" in report
    for name, row in report["methods"].items():  # each attribute alone is easier than all four at once
        assert set(row["P@1_by_attribute"]) == {"colour", "shape", "motion", "sound"}, name
        assert min(row["P@1_by_attribute"].values()) >= row["P@1_relevant"], name
    assert set(report["attribute_chance"]) == {"colour", "shape", "motion", "sound"}
    d = report["direction"]
    assert d["queries"] > 0 and all(0 <= d[k] <= 100 for k in ("mean", "xpool", "fused"))
    assert 0 < d["event_queries"] <= d["queries"] and 0 <= d["event"] <= 100


def test_training_sets_concatenate_video_by_video():
    from vidsearch.lab.training_data import TrainingSet, concat_training_sets

    def make(nv: int, seed: int) -> TrainingSet:
        r = np.random.default_rng(seed)
        fo, ao = np.r_[0, np.cumsum(r.integers(1, 4, nv))], np.r_[0, np.cumsum(r.integers(2, 5, nv))]
        return TrainingSet(frames=r.integers(0, 255, (fo[-1], 2, 2, 3)).astype(np.uint8), frame_offsets=fo,
                           unit_start=np.arange(fo[-1], dtype=np.float32), unit_end=np.arange(fo[-1], dtype=np.float32) + 1,
                           audio=r.random(ao[-1]).astype(np.float16), audio_offsets=ao, durations=np.ones(nv, np.float32),
                           videos=[f"v{seed}_{i}" for i in range(nv)], cap_video=np.arange(nv), cap_text=[f"c{seed}{i}" for i in range(nv)],
                           cap_start=np.zeros(nv, np.float32), cap_end=np.ones(nv, np.float32))  # fmt: skip

    a, b = make(3, 1), make(2, 2)
    c = concat_training_sets([a, b])
    assert c.videos == a.videos + b.videos and c.cap_video.tolist() == [0, 1, 2, 3, 4]
    for v in range(5):
        src, w = (a, v) if v < 3 else (b, v - 3)
        np.testing.assert_array_equal(c.frames[c.frame_offsets[v] : c.frame_offsets[v + 1]], src.frames[src.frame_offsets[w] : src.frame_offsets[w + 1]])
        np.testing.assert_array_equal(c.audio[c.audio_offsets[v] : c.audio_offsets[v + 1]], src.audio[src.audio_offsets[w] : src.audio_offsets[w + 1]])


def test_fine_tuning_starts_heads_from_the_checkpoint_and_a_step_learns_direction(tmp_path):
    from vidsearch.encoders.backbone import WEIGHTS_DIR, read_checkpoint
    from vidsearch.encoders.training import TrainConfig, Trainer
    from vidsearch.lab.training_data import TrainingSet

    r = np.random.default_rng(0)
    nv, per = 4, 3
    fo = np.arange(nv + 1) * per
    caps = ["a red circle moves left with a low tone", "a blue square rises; clapping is heard",
            "a green star stays still with no sound", "a white triangle moves right while a high tone sounds"]  # fmt: skip
    ts = TrainingSet(frames=r.integers(0, 255, (nv * per, 112, 112, 3)).astype(np.uint8), frame_offsets=fo,
                     unit_start=np.tile(np.arange(per, dtype=np.float32), nv), unit_end=np.tile(np.arange(per, dtype=np.float32) + 1, nv),
                     audio=(r.random(nv * 16000) * 0.1).astype(np.float16), audio_offsets=np.arange(nv + 1) * 16000,
                     durations=np.full(nv, per, np.float32), videos=[f"v{i}" for i in range(nv)], cap_video=np.arange(nv),
                     cap_text=caps, cap_start=np.zeros(nv, np.float32), cap_end=np.full(nv, per, np.float32))  # fmt: skip
    shipped = WEIGHTS_DIR / "tiny.pt"
    trainer = Trainer(ts, TrainConfig(model="tiny", checkpoint=str(shipped), epochs=1, batch_size=4, frames_per_video=per), tmp_path / "m.pt")
    assert trainer.warm_started == ["head", "audio"]
    saved = read_checkpoint(shipped)["head"]["state"]["audio_weight"].float()
    assert torch.allclose(trainer.head.audio_weight.detach(), saved)
    parts = trainer.losses(trainer._batch(np.arange(nv)))
    assert "direction" in parts and torch.isfinite(parts["total"])  # three of four captions name a direction
    parts["total"].backward()
    assert trainer.head.temporal.out.weight.grad is not None and trainer.head.temporal.out.weight.grad.abs().sum() > 0
