"""Token merging: the matching maths, proportional attention, temporal units, and the patched tower."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidsearch.encoders.token_merging import (
    MergeConfig,
    apply_token_merging,
    attention_with_keys,
    bipartite_match,
    encode_many_video_units,
    encode_video_units,
    forward_units,
    merge_config_for,
    merge_config_of,
    merge_wavg,
    member_split,
    recommended_config,
    recommended_for,
    remove_token_merging,
    token_schedule,
)


@pytest.fixture(scope="module")
def tiny(tiny_backbone):
    """An fp32 copy of the shared tiny backbone's image tower (the backbone itself may run in bf16)."""
    return SimpleNamespace(
        model=copy.deepcopy(tiny_backbone.model.visual).float().eval(),
        image_size=tiny_backbone.image_size,
        mean=tiny_backbone.mean,
        std=tiny_backbone.std,
    )


def _frames(bb, t: int, seed: int = 0, static: bool = True) -> torch.Tensor:
    """A textured background (static or not) with a square that moves: neighbours share background."""
    g = torch.Generator().manual_seed(seed)
    s = bb.image_size
    bg = F.interpolate(torch.rand(1, 3, 7, 7, generator=g), size=(s, s), mode="bilinear", align_corners=False)
    frames = []
    for i in range(t):
        f = (bg if static else torch.rand(1, 3, s, s, generator=g)).clone()
        y = x = 16 + 20 * i % (s - 48)
        f[:, :, y : y + 40, x : x + 40] = torch.tensor([1.0, 0.1, 0.1]).view(1, 3, 1, 1)
        frames.append(f)
    return (torch.cat(frames) - bb.mean) / bb.std


def _reference_units(bb, frames: torch.Tensor, lo, hi) -> torch.Tensor:
    """The unmerged unit vectors: meanP of the frames' plain vectors (what the store pools)."""
    with torch.inference_mode():
        plain = F.normalize(bb.model(frames), dim=-1)
    return torch.stack([F.normalize(plain[a:b].mean(0), dim=-1) for a, b in zip(lo, hi)])


# ------------------------------------------------------------------ matching and merging


def _random_tokens(b=3, n=21, c=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, c, generator=g, dtype=torch.float64)
    size = torch.randint(1, 5, (b, n, 1), generator=g).double()
    metric = torch.randn(b, n, 6, generator=g)
    return x, size, metric


@pytest.mark.parametrize("r", [1, 5, 10])
def test_merge_keeps_size_weighted_sum_and_token_count(r):
    x, size, metric = _random_tokens()
    match = bipartite_match(metric, r, n_protected=1)
    out, out_size = merge_wavg(x, size, match)
    assert out.shape == (3, 21 - r, 8) and out_size.shape == (3, 21 - r, 1)
    torch.testing.assert_close((out * out_size).sum(1), (x * size).sum(1))
    torch.testing.assert_close(out_size.sum(1), size.sum(1))


def test_sizes_sum_to_original_count_over_chained_merges():
    x, _, metric = _random_tokens(n=31)
    size = torch.ones(3, 31, 1, dtype=torch.float64)
    for r in (5, 4, 6):
        match = bipartite_match(metric, r, n_protected=1)
        x, size = merge_wavg(x, size, match)
        metric = x[..., :6].float()
    assert x.shape[1] == 31 - 15
    assert torch.all(size.sum(1) == 31)
    # across frames: members of a group, earlier frame's tokens into the later frame's
    a_idx, b_idx = member_split(2, (7, 7), x.device)
    xx = torch.randn(3, 16, 8, dtype=torch.float64)
    match = bipartite_match(xx[..., :4].float(), 7, 2, a_idx, b_idx)
    merged, msize = merge_wavg(xx, torch.ones(3, 16, 1, dtype=torch.float64), match)
    assert merged.shape[1] == 9 and torch.all(msize.sum(1) == 16)


def test_cls_is_never_matched_and_passes_through_bit_exact():
    x, size, metric = _random_tokens()
    metric[:, 0] = metric[:, 2]  # CLS looks exactly like a patch token: the best match there is
    x[:, 0] = x[:, 2]
    match = bipartite_match(metric, 10, n_protected=1)
    assert 0 not in match.a_idx.tolist() and 0 not in match.b_idx.tolist()
    out, out_size = merge_wavg(x, size, match)
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(out_size[:, 0], size[:, 0])


def test_merging_picks_the_most_similar_pairs():
    metric = torch.randn(1, 9, 4)
    metric[0, 3] = metric[0, 6] * 2.0  # 3 (in A: positions 1,3,5,7) duplicates 6 (in B: 2,4,6,8)
    match = bipartite_match(metric, 1, n_protected=1)
    assert match.a_idx[match.src[0, 0]] == 3 and match.b_idx[match.dst[0, 0]] == 6


# ------------------------------------------------------------------ attention


def test_proportional_attention_with_unit_sizes_is_plain_attention(tiny):
    blk = tiny.model.transformer.resblocks[0]
    h = blk.ln_1(torch.randn(2, 50, 256))
    with torch.no_grad():
        plain = blk.attn(h, h, h, need_weights=False)[0]
        ours, keys = attention_with_keys(blk.attn, h, None)
        zero_bias, _ = attention_with_keys(blk.attn, h, torch.zeros(2, 1, 1, 50))
    torch.testing.assert_close(ours, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zero_bias, plain, atol=1e-5, rtol=1e-5)
    assert keys.shape == (2, 50, 64)


def test_proportional_attention_counts_a_merged_token_as_its_copies(tiny):
    blk = tiny.model.transformer.resblocks[0]
    h = torch.randn(1, 10, 256)
    dup = torch.cat([h, h[:, 4:5], h[:, 4:5]], dim=1)  # token 4 three times, each of size 1
    size = torch.ones(1, 10)
    size[0, 4] = 3.0
    with torch.no_grad():
        with_copies, _ = attention_with_keys(blk.attn, dup, None)
        weighted, _ = attention_with_keys(blk.attn, h, size.log()[:, None, None, :])
    torch.testing.assert_close(weighted, with_copies[:, :10], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ the tower


def test_r0_patched_tower_equals_unpatched(tiny):
    x = _frames(tiny, 5)
    model = tiny.model
    with torch.inference_mode():
        ref = model(x)
        units = forward_units(model, x, MergeConfig(r=0))
        try:
            apply_token_merging(model, MergeConfig(r=0))
            torch.testing.assert_close(model(x), ref, atol=0, rtol=0)  # disabled: stock forward
            apply_token_merging(model, "tome:r=0;prop=1;temporal:groups=2@1;cross=0;cls=each")
            torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)  # merging path, r=0
        finally:
            remove_token_merging(model)
    torch.testing.assert_close(units.features, F.normalize(ref, dim=-1), atol=1e-5, rtol=1e-5)
    assert units.tokens.tolist() == [50] * 5 and units.lo.tolist() == list(range(5))


def test_patch_keeps_weights_and_can_be_removed(tiny_backbone):
    model = tiny_backbone.model
    keys = list(model.state_dict())
    cls = type(model.visual)
    apply_token_merging(model, "tome:r=4;prop=1")
    try:
        assert merge_config_of(model).canonical() == "tome:r=4;prop=1"
        assert list(model.state_dict()) == keys
        s = tiny_backbone.image_size
        frames = np.random.default_rng(0).integers(0, 255, (3, s, s, 3), dtype=np.uint8)
        vecs = tiny_backbone.encode_frames(frames)  # the backbone's own path now merges inside each frame
        assert vecs.shape == (3, 256) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    finally:
        remove_token_merging(model)
    assert type(model.visual) is cls and merge_config_of(model).canonical() == "off"


def test_identical_frames_merge_to_exactly_one_frame(tiny):
    """Duplicates under proportional attention are one token of their total size: grouping identical
    frames and merging every cross-frame pair gives the single frame's vector."""
    one = _frames(tiny, 1, seed=3)
    frames = one.expand(4, -1, -1, -1).contiguous()
    for cls in ("each", "mean"):
        cfg = MergeConfig(r=0, groups=((2, 1), (4, 2)), cross=1.0, cls=cls)
        with torch.inference_mode():
            units = forward_units(tiny.model, frames, cfg)
            single = F.normalize(tiny.model(one), dim=-1)
        assert units.lo.tolist() == [0] and units.hi.tolist() == [4]
        assert units.tokens.tolist() == [(4 if cls == "each" else 1) + 49]
        torch.testing.assert_close(units.features, single, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize(
    "t, groups, video, expected",
    [
        (7, ((2, 1), (4, 2)), None, [(0, 4), (4, 7)]),
        (5, ((2, 1),), None, [(0, 2), (2, 4), (4, 5)]),
        (9, ((2, 1), (4, 3)), None, [(0, 4), (4, 8), (8, 9)]),
        (5, ((2, 1),), [0, 0, 0, 1, 1], [(0, 2), (2, 3), (3, 5)]),
        (6, ((4, 2),), [7, 7, 7, 7, 7, 3], [(0, 4), (4, 5), (5, 6)]),
    ],
)
def test_temporal_units_and_spans(tiny, t, groups, video, expected):
    x = _frames(tiny, t)
    cfg = MergeConfig(r=1, groups=groups, cross=0.5)
    with torch.inference_mode():
        units = forward_units(tiny.model, x, cfg, video)
    assert list(zip(units.lo.tolist(), units.hi.tolist())) == expected
    start, end = np.arange(t) * 0.5, np.arange(t) * 0.5 + 0.5
    vid = np.zeros(t, np.int64) if video is None else np.asarray(video)
    vec, s, e, v = encode_many_video_units(tiny.model, x, start, end, vid, cfg, batch_frames=4)
    assert vec.shape == (len(expected), 256)
    assert s.tolist() == [start[a] for a, _ in expected] and e.tolist() == [end[b - 1] for _, b in expected]
    assert v.tolist() == [vid[a] for a, _ in expected]
    np.testing.assert_allclose(vec, units.features.numpy(), atol=1e-5)  # batches cut only between groups


def test_end_to_end_tiny_video(tiny):
    t = 10
    x = _frames(tiny, t)
    cfg = recommended_for(tiny.model)
    assert cfg == recommended_config(4)
    assert cfg.canonical() == "tome:r=1;prop=1;temporal:groups=2@1,4@2;cross=0.8;cls=each"
    start = np.linspace(0, 9, t)
    out = encode_video_units(tiny.model, x, start, start + 1.0, cfg)
    assert out.vectors.shape == (3, 256) and out.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
    assert out.start.tolist() == [0.0, 4.0, 8.0] and out.end.tolist() == [4.0, 8.0, 10.0]
    layer_tokens: list[float] = []
    with torch.inference_mode():
        forward_units(tiny.model, x, cfg, layer_tokens=layer_tokens)
    assert layer_tokens == pytest.approx(token_schedule(cfg, 50, 4, t))
    assert np.mean(layer_tokens) < 0.75 * 50


def test_merged_vectors_stay_close_to_unmerged(tiny):
    """Random weights map every image close together, so closeness is judged against how far apart
    distinct units are. Measured (recommended schedule, seeds 0-3): static background, the largest
    drift is 4-7% of the smallest distance between two units; a new random background in every frame (nothing to
    share, the worst case for forced cross-frame merges) still min cosine 0.997."""
    cfg = recommended_for(tiny.model)
    x = _frames(tiny, 12, seed=1, static=True)
    with torch.inference_mode():
        units = forward_units(tiny.model, x, cfg)
    ref = _reference_units(tiny, x, units.lo, units.hi)
    drift = 1 - (units.features * ref).sum(-1)
    apart = (1 - ref @ ref.T)[~torch.eye(len(ref), dtype=torch.bool)]
    assert drift.max() < 0.15 * apart.min(), (drift, apart)
    assert torch.equal((units.features @ ref.T).argmax(-1), torch.arange(len(ref)))

    x = _frames(tiny, 8, seed=1, static=False)
    with torch.inference_mode():
        units = forward_units(tiny.model, x, cfg)
    cos = (units.features * _reference_units(tiny, x, units.lo, units.hi)).sum(-1)
    assert cos.min() > 0.995, cos


def test_bf16_tower_runs_and_agrees(tiny):
    visual = copy.deepcopy(tiny.model).to(torch.bfloat16)
    x = _frames(tiny, 4)
    cfg = recommended_for(visual)
    with torch.inference_mode():
        low = forward_units(visual, x, cfg).features
        high = forward_units(tiny.model, x, cfg).features
    assert low.dtype == torch.float32
    assert F.cosine_similarity(low, high).min() > 0.99


def test_custom_block_attention_r0_matches():
    """open_clip's own Attention class (qk-norm / scaled-cosine towers) goes through the same path."""
    from vidsearch.encoders.torchvision_compat import import_open_clip

    import_open_clip()
    from open_clip.transformer import VisionTransformer

    # (scaled_cosine_attn is left out: open_clip 3.3's own forward fails on it, bmm on 4-D tensors)
    for kw in ({"qk_norm": True}, {"scale_heads": True, "scale_attn_inner": True, "scale_attn": True}):
        torch.manual_seed(0)
        vt = VisionTransformer(
            image_size=64, patch_size=16, width=64, layers=2, heads=2, mlp_ratio=4.0, output_dim=32, **kw
        ).eval()
        x = torch.randn(3, 3, 64, 64)
        with torch.no_grad():
            ref = F.normalize(vt(x), dim=-1)
            got = forward_units(vt, x, MergeConfig()).features
            merged = forward_units(vt, x, MergeConfig(r=2, groups=((2, 1),))).features
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        assert merged.shape == (2, 32) and torch.isfinite(merged).all()


# ------------------------------------------------------------------ settings


def test_config_canonical_form_round_trips():
    cfg = MergeConfig(r=1, groups=((2, 2), (4, 4)), cross=0.8)
    text = cfg.canonical()
    assert text == "tome:r=1;prop=1;temporal:groups=2@2,4@4;cross=0.8;cls=each"
    assert MergeConfig.parse(text) == cfg and str(cfg) == text
    assert MergeConfig().canonical() == "off" and MergeConfig.parse("off") == MergeConfig()
    assert MergeConfig.parse("tome:r=8").canonical() == "tome:r=8;prop=1"
    loose = MergeConfig.parse("cls=mean;groups=2@3;r=0")  # any order, defaults filled in
    assert loose.canonical() == "tome:r=0;prop=1;temporal:groups=2@3;cross=0.5;cls=mean"


@pytest.mark.parametrize(
    "bad", ["tome:r=-1", "groups=3@1,4@2", "groups=2@3,4@2", "groups=1@0", "cross=1.5", "speed=9", "groups=2"]
)
def test_config_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        MergeConfig.parse(bad)


def test_grouping_past_the_last_block_is_an_error(tiny):
    with pytest.raises(ValueError, match="blocks"):
        apply_token_merging(tiny.model, "groups=2@4")


def test_user_settings_resolve_against_the_model(tiny):
    assert merge_config_for(tiny.model, "recommended") == recommended_for(tiny.model)
    assert merge_config_for(tiny.model, None).canonical() == "off"
    assert merge_config_for(tiny.model, "tome:r=2").canonical() == "tome:r=2;prop=1"
    assert recommended_config(12).canonical() == "tome:r=1;prop=1;temporal:groups=2@2,4@4;cross=0.8;cls=each"
