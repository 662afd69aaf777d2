"""The heads-only stage (encoders/head_tuning.py): X-Pool retuned on stored units, anchored at its
identity start, and audio fusion's scalars retuned with it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidsearch.encoders.fusion import FusionHead
from vidsearch.encoders.head_tuning import HeadTuning, TunedUnits, tune_heads
from vidsearch.encoders.xpool import XPool
from vidsearch.metrics import retrieval_metrics

DIM = 16


def _units(videos: int = 48, frames: int = 6, captions_per_video: int = 2, seed: int = 0, audio: bool = False) -> TunedUnits:
    """Videos of random unit vectors; each caption is its video's first unit seen through a fixed
    rotation, so the identity head finds it only by chance and a trained projection can learn it."""
    g = torch.Generator().manual_seed(seed)
    f = F.normalize(torch.randn(videos, frames, DIM, generator=g), dim=-1)
    rotation = torch.linalg.qr(torch.randn(DIM, DIM, generator=g))[0]
    owner = np.repeat(np.arange(videos), captions_per_video)
    source = f[owner, 0]
    text = F.normalize(source @ rotation + 0.05 * torch.randn(len(owner), DIM, generator=g), dim=-1)
    mask = torch.ones(videos, frames, dtype=torch.bool)
    a = am = None
    if audio:  # the soundtrack holds the caption itself: only fusion can use it
        a = F.normalize(text.view(videos, captions_per_video, DIM) + 0.05 * torch.randn(videos, captions_per_video, DIM, generator=g), dim=-1)
        am = torch.ones(videos, captions_per_video, dtype=torch.bool)
    return TunedUnits(f, mask, a, am, text, owner)


def _r1(head: FusionHead, u: TunedUnits, key: str = "video") -> float:
    with torch.no_grad():
        s = head.scores(u.text, u.frames, u.frame_mask, u.audio, u.audio_mask)[key]
    return retrieval_metrics(s.numpy(), u.cap_video)["R@1"]


def _identity_distance(x: XPool) -> float:
    fresh = XPool(x.dim, x.heads, attention_scale=x.attention_scale)
    return max(float((p.detach() - q.detach()).abs().max()) for p, q in zip(x.parameters(), fresh.parameters()))


def test_retuning_learns_what_the_identity_start_cannot_and_the_anchor_holds_it_back():
    u = _units()
    start = FusionHead(DIM)
    before = _r1(start, u)
    free = FusionHead(DIM)
    tune_heads(free, u, HeadTuning(anchor=0.0, epochs=30, lr=1e-2, batch_size=32))
    held = FusionHead(DIM)
    tune_heads(held, u, HeadTuning(anchor=1e4, epochs=30, lr=1e-2, batch_size=32))
    assert _r1(free, u) >= before + 30, (before, _r1(free, u))  # the projections learned the rotation
    assert _r1(held, u) <= before + 10  # pinned to the identity start, it could not
    assert _identity_distance(held.video) < 0.02 < _identity_distance(free.video)
    assert free.video.attention_scale == HeadTuning.attention == 0.25


def test_the_rest_of_the_head_is_left_as_it_was():
    """Only the video X-Pool block and the fusion's three scalars train: the temporal module and the
    audio X-Pool block (which get gradients through the fused score) stay as they were."""
    u = _units(audio=True)
    head = FusionHead(DIM, temporal=True)
    with torch.no_grad():
        for p in head.temporal.parameters():
            p.add_(0.1)
    temporal = {k: v.clone() for k, v in head.temporal.state_dict().items()}
    audio = {k: v.clone() for k, v in head.audio.state_dict().items()}
    weight = float(head.audio_weight.detach())
    tune_heads(head, u, HeadTuning(epochs=3, lr=1e-2, batch_size=32))
    assert all(torch.equal(temporal[k], v) for k, v in head.temporal.state_dict().items())
    assert all(torch.equal(audio[k], v) for k, v in head.audio.state_dict().items())
    assert float(head.audio_weight.detach()) != weight  # while the scalars did move
    assert all(p.requires_grad for p in head.parameters())  # trainable again for whoever trains next
    assert not head.training and head.window_weight == HeadTuning.window_weight


def test_fusion_learns_to_trust_a_soundtrack_that_holds_the_answer():
    u = _units(audio=True)
    head = FusionHead(DIM)
    before = (float(head.audio_weight.detach()), _r1(head, u, "fused"))
    history = tune_heads(head, u, HeadTuning(epochs=15, lr=1e-2, batch_size=32))
    assert float(head.audio_weight.detach()) > before[0] + 0.3
    assert _r1(head, u, "fused") >= before[1] + 30
    assert {"epoch", "step", "video", "fused", "anchor", "total", "seconds"} <= set(history[-1])
    assert history[-1]["step"] == 15 * (len(u.text) // 32)


def _train(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "vidsearch.cli", "train", *args], capture_output=True, text=True, timeout=600)
    assert (done.returncode == 0) == ok, done.stderr[-2000:]
    return done


def test_tune_heads_needs_a_trained_model_and_owns_its_options(tmp_path):
    done = _train("--data", str(tmp_path / "none.jsonl"), "--tune-heads", "--out", str(tmp_path / "m.pt"), ok=False)
    assert "--tune-heads retunes a trained model" in done.stderr + done.stdout
    done = _train("--data", str(tmp_path / "none.jsonl"), "--anchor", "5", "--out", str(tmp_path / "m.pt"), ok=False)
    assert "--anchor and --window-weight belong to --tune-heads" in done.stderr + done.stdout


@pytest.mark.slow
def test_tune_heads_rewrites_only_the_heads_of_the_shipped_model(unseen_synth_corpus, tmp_path):
    from vidsearch.encoders.backbone import WEIGHTS_DIR, load_backbone

    shipped, out = WEIGHTS_DIR / "tiny.pt", tmp_path / "tuned.pt"
    out.with_name(out.name + ".resume").write_bytes(b"a full run's state at this --out")  # would resume the old head
    done = _train("--data", str(unseen_synth_corpus / "train.jsonl"), "--eval-data", str(unseen_synth_corpus / "test.jsonl"),
                  "--checkpoint", str(shipped), "--tune-heads", "--epochs", "3", "--batch-size", "4", "--out", str(out), "--json")  # fmt: skip
    result = json.loads(done.stdout)
    assert result["epochs"] == 3 and [r["epoch"] for r in result["history"]] == [1, 2, 3]
    assert set(result["history"][-1]["eval"]["test"]) >= {"mean", "xpool", "fused"}
    before = torch.load(shipped, map_location="cpu", weights_only=True)
    after = torch.load(out, map_location="cpu", weights_only=True)
    assert after["clip"].keys() == before["clip"].keys() and all(torch.equal(after["clip"][k], v) for k, v in before["clip"].items())
    assert all(torch.equal(after["audio"]["state"][k], v) for k, v in before["audio"]["state"].items())
    changed = {k for k, v in after["head"]["state"].items() if not torch.equal(v, before["head"]["state"][k])}
    assert changed and all(k.startswith("video.") or k in ("audio_weight", "gate_scale", "gate_bias") for k in changed), changed
    assert after["head"]["config"] == {**before["head"]["config"], "video_attention": 0.25, "window_weight": HeadTuning.window_weight}
    assert after["meta"]["head_tuning"]["anchor"] == HeadTuning.anchor and after["meta"]["train"] == before["meta"]["train"]
    assert not out.with_name(out.name + ".resume").exists()
    tuned = load_backbone("tiny", None, out)
    assert tuned.head.video.attention_scale == 0.25 and tuned.head.window_weight == HeadTuning.window_weight == 2.0
    assert _identity_distance(tuned.head.video) < 0.5  # anchored: near its start, not far away
