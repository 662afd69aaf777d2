"""The maths of the pooling, fusion, audio front end and loss, on small tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidsearch.encoders.audio import (
    AudioEncoder,
    AudioTower,
    LogMel,
    audio_tokens,
    list_audio_towers,
    load_audio_tower,
    mel_centers,
    mel_filterbank,
)
from vidsearch.encoders.fusion import FusionHead
from vidsearch.encoders.losses import ContrastiveLoss, info_nce
from vidsearch.encoders.xpool import MeanPool, ParameterFreePool, XPool, make_pooler, mean_pool

D = 16


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Tensors here are tiny: extra intra-op threads only spin and contend (10x slower on a busy box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _perturb(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Move a module off its identity init, so tests do not pass only because projections are I."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def _batch(bt=3, bv=4, t=6):
    text = torch.randn(bt, D)
    frames = torch.randn(bv, t, D)
    lengths = torch.tensor([6, 3, 1, 0])[:bv]  # the last video has no units at all
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return text, frames, mask


POOLERS = {
    "xpool": lambda: _perturb(XPool(D, heads=2)),
    "param_free": lambda: ParameterFreePool(0.1),
    "mean": MeanPool,
}


@pytest.mark.parametrize("name", sorted(POOLERS))
def test_weights_sum_to_one_over_real_units_and_zero_on_padding(name):
    pooler = POOLERS[name]()
    text, frames, mask = _batch()
    pooled, weights = pooler.pool(text, frames, mask)
    assert pooled.shape == (3, 4, D) and weights.shape == (3, 4, 6)
    expected_total = mask.any(-1).float().expand(3, -1)
    torch.testing.assert_close(weights.sum(-1), expected_total)
    assert (weights[:, ~mask] == 0).all()
    scores = pooler.similarity(text, frames, mask)
    assert scores.shape == (3, 4) and torch.isfinite(scores).all()
    assert (scores[:, 3] == 0).all()  # no units, no evidence
    # padding content is irrelevant
    noisy = frames.masked_fill(~mask[..., None], 1e3)
    torch.testing.assert_close(pooler.similarity(text, noisy, mask), scores)


def test_identity_init_attends_to_the_most_similar_unit():
    # zero-mean unit vectors: LN1 then only rescales, so attention logits are sqrt(D) * cosine
    def centred(x):
        return F.normalize(x - x.mean(-1, keepdim=True), dim=-1)

    text = centred(torch.randn(5, D))
    frames = centred(torch.randn(2, 7, D))
    _, weights = XPool(D).pool(text, frames)
    cos = torch.einsum("td,vsd->tvs", text, frames)
    assert torch.equal(weights.argsort(-1), cos.argsort(-1))
    ln_scale = D / (1 + 1e-5 * D)  # |LN(x)|^2 for a zero-mean unit vector, LayerNorm eps included
    torch.testing.assert_close(weights, torch.softmax(ln_scale / math.sqrt(D) * cos, -1))

    # and on uncentred data, a unit built from the text wins over noise
    text = torch.randn(1, 64)
    frames = torch.randn(1, 5, 64)
    frames[0, 3] = text[0] + 0.5 * torch.randn(64)
    _, weights = XPool(64).pool(text, frames)
    assert weights[0, 0].argmax().item() == 3


def test_a_softer_attention_scale_divides_the_logits_and_survives_a_checkpoint():
    """attention_scale multiplies the logits: on zero-mean unit vectors the weights are
    softmax(scale x |LN|^2 / sqrt(D) x cosine); rerank agrees with pool; the fusion head rebuilt from
    a checkpoint's head config keeps it (encoders/backbone.py _build_heads), and an old config without
    it is the reference's scale, 1."""
    from vidsearch.encoders.backbone import _build_heads

    text = torch.randn(4, D)
    text = F.normalize(text - text.mean(-1, keepdim=True), dim=-1)
    frames = F.normalize(torch.randn(2, 6, D), dim=-1)
    frames = F.normalize(frames - frames.mean(-1, keepdim=True), dim=-1)
    ln_scale = D / (1 + 1e-5 * D)
    cos = torch.einsum("td,vsd->tvs", text, frames)
    _, weights = XPool(D, attention_scale=0.25).pool(text, frames)
    torch.testing.assert_close(weights, torch.softmax(0.25 * ln_scale / math.sqrt(D) * cos, -1))
    sharp = XPool(D).pool(text, frames)[1]
    assert (weights.amax(-1) < sharp.amax(-1)).all()  # softer: the best unit takes less
    head = _perturb(XPool(D, heads=2, attention_scale=0.25))
    t, f, m = _batch(bt=1)
    torch.testing.assert_close(head.rerank(t[0], f, m)[0], head.similarity(t, f, m)[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        XPool(D, attention_scale=0.0)
    saved = FusionHead(D, video_attention=0.25)
    _, rebuilt = _build_heads({"head": {"config": {"video_attention": 0.25}, "state": saved.state_dict()}}, D)
    assert rebuilt.video.attention_scale == 0.25 and rebuilt.audio.attention_scale == 1.0
    _, old = _build_heads({"head": {"config": {}, "state": FusionHead(D).state_dict()}}, D)
    assert old.video.attention_scale == 1.0


def test_xpool_rerank_matches_pool():
    head = _perturb(XPool(D, heads=4))
    text, frames, mask = _batch(bt=1)
    scores, weights = head.similarity_and_weights(text, frames, mask)
    fast_scores, fast_weights = head.rerank(text[0], frames, mask)
    torch.testing.assert_close(fast_scores, scores[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast_weights, weights[0], rtol=1e-4, atol=1e-5)


def test_parameter_free_pool_by_hand():
    text = torch.tensor([[1.0, 0.0, 0.0]])
    frames = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]])
    mask = torch.tensor([[True, True, True, False]])
    pooled, weights = ParameterFreePool(temperature=0.5).pool(text, frames, mask)
    e = [math.exp(1.0 / 0.5), math.exp(0.0), math.exp(0.6 / 0.5)]
    a = [x / sum(e) for x in e]
    z = [a[0] + 0.6 * a[2], a[1] + 0.8 * a[2], 0.0]
    norm = math.sqrt(sum(c * c for c in z))
    torch.testing.assert_close(weights[0, 0], torch.tensor(a + [0.0]))
    torch.testing.assert_close(pooled[0, 0], torch.tensor([c / norm for c in z]))


def test_mean_pool_is_the_plain_mean():
    text, frames, mask = _batch()
    pooled, weights = mean_pool(text, frames, mask)
    for v, n in enumerate([6, 3, 1]):
        torch.testing.assert_close(pooled[1, v], frames[v, :n].mean(0))
        torch.testing.assert_close(weights[2, v, :n], torch.full((n,), 1.0 / n))
    scores = make_pooler("mean").similarity(text, frames, mask)
    torch.testing.assert_close(scores[:, 0], F.cosine_similarity(text, frames[0].mean(0)[None], dim=-1))


def test_fusion_without_audio_is_the_video_score():
    head = _perturb(FusionHead(D, heads=2))
    text, frames, fmask = _batch()
    audio = torch.randn(4, 5, D)
    amask = torch.ones(4, 5, dtype=torch.bool)
    amask[1] = False  # video 1 is silent (no audio tokens)
    out = head.scores(text, frames, fmask, audio, amask)
    assert set(out) >= {"video", "audio", "fused", "frame_weights", "audio_weights"}
    assert torch.equal(out["fused"][:, 1], out["video"][:, 1])
    assert (out["gate"][:, 1] == 0).all() and (out["audio_weights"][:, 1] == 0).all()
    assert ((out["gate"] >= 0) & (out["gate"] <= 1)).all()
    torch.testing.assert_close(out["fused"], out["video"] + head.audio_weight * out["gate"] * out["audio"])
    # no audio at all, and audio that cannot touch the visual branch (independent attention)
    none = head.scores(text, frames, fmask)
    assert torch.equal(none["fused"], none["video"]) and none["audio_weights"].shape == (3, 4, 0)
    other = head.scores(text, frames, fmask, torch.randn(4, 5, D), amask)
    assert torch.equal(other["video"], out["video"]) and torch.equal(other["frame_weights"], out["frame_weights"])
    fast = head.rerank(text[0], frames, fmask, audio, amask)
    torch.testing.assert_close(fast["fused"], out["fused"][0], rtol=1e-4, atol=1e-5)


def test_mel_filterbank_shape_and_pure_tone_peak():
    fb = mel_filterbank(257, 64, 16_000)
    assert fb.shape == (257, 64) and (fb >= 0).all() and fb.max() <= 1.0
    assert (fb.sum(0) > 0).all()  # no empty filter at 512-point FFT resolution
    centres = mel_centers(64, 16_000)
    melspec = LogMel()
    t = torch.arange(16_000) / 16_000
    for hz in (440.0, 1000.0, 3000.0, 6000.0):
        logmel, mask = melspec(torch.sin(2 * math.pi * hz * t))
        assert logmel.shape == (1, 101, 64) and mask.all()
        peak = logmel[0, 5:-5].mean(0).argmax().item()
        assert peak == (centres - hz).abs().argmin().item(), hz


def test_audio_encoder_tokens_are_timed_and_padding_invariant():
    enc = AudioEncoder(dim=D, width=32, layers=1, heads=2).eval()
    assert isinstance(enc, AudioTower) and "small" in list_audio_towers()
    waves = 0.1 * torch.randn(2, 24_000)
    lengths = torch.tensor([24_000, 9_000])  # 1.5 s and 0.5625 s
    out = enc.encode(waves, lengths)
    assert out.vectors.shape == (2, 3, D)
    assert out.mask.tolist() == [[True, True, True], [True, True, False]]
    torch.testing.assert_close(out.starts[0], torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(out.ends[1, :2], torch.tensor([0.5, 0.5625]))
    torch.testing.assert_close(out.vectors[out.mask].norm(dim=-1), torch.ones(5))
    alone = enc.encode(waves[1, :9_000])
    torch.testing.assert_close(alone.vectors[0, :2], out.vectors[1, :2], rtol=1e-4, atol=1e-5)


def test_audio_tokens_for_the_indexer():
    tower = load_audio_tower("small", dim=D, width=32, layers=1, heads=2)
    assert tower.fingerprint.weights == "random:seed0" and tower.fingerprint.dim == D
    starts, ends, vectors = audio_tokens(0.1 * np.random.default_rng(0).standard_normal(23 * 16_000 + 800).astype(np.float32), tower=tower)
    assert vectors.shape == (47, D) and vectors.dtype == np.float32
    np.testing.assert_allclose(starts, np.arange(47) * 0.5, atol=1e-4)
    assert ends[-1] == pytest.approx(23.05) and (ends > starts).all()
    empty = audio_tokens(np.zeros(0, np.float32), tower=tower)
    assert empty[2].shape == (0, D)
    with pytest.raises(ValueError, match="16000 Hz"):
        audio_tokens(np.zeros(100, np.float32), sr=44_100, tower=tower)


def test_info_nce_prefers_the_diagonal():
    sims = 0.8 * torch.eye(6) + 0.1 * torch.rand(6, 6)
    shuffled = sims[torch.tensor([1, 2, 3, 4, 5, 0])]
    assert info_nce(sims, 20.0) < info_nce(shuffled, 20.0)
    fixed = ContrastiveLoss(init_scale=20.0, learnable=False)
    assert not list(fixed.parameters())
    torch.testing.assert_close(fixed(sims), info_nce(sims, 20.0))
    with pytest.raises(ValueError):
        info_nce(torch.zeros(2, 3))


def test_tiny_overfit_reduces_the_loss():
    head, loss_fn = FusionHead(32, heads=2), ContrastiveLoss()
    text, frames, audio = torch.randn(4, 32), torch.randn(4, 8, 32), torch.randn(4, 5, 32)
    fmask = torch.arange(8)[None, :] < torch.tensor([8, 6, 4, 2])[:, None]
    opt = torch.optim.Adam([*head.parameters(), *loss_fn.parameters()], lr=1e-2)
    losses = []
    for _ in range(20):
        loss = loss_fn(head.scores(text, frames, fmask, audio)["fused"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.5 * losses[0]
