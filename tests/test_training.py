"""`vidsearch train` end to end on a rendered corpus: checkpoint, held-out scores, resume."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vidsearch.encoders.backbone import CHECKPOINT_FORMAT, load_backbone
from vidsearch.encoders.training import TrainConfig, param_groups


def test_scalars_learn_faster_and_only_matrices_decay():
    """Adam moves a parameter ~lr per step: the logit scale and fusion weight get their own rate."""
    matrix, bias, scalar = torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.tensor(0.1))
    cfg = TrainConfig(lr=1e-3, weight_decay=0.05, scalar_lr_mult=50.0)
    groups = param_groups([matrix, bias, scalar], cfg)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    (matrix.sum() + bias.sum() - scalar).backward()
    before = scalar.item()
    opt.step()
    assert scalar.item() - before == pytest.approx(0.05, rel=0.01)  # lr x 50, no decay
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0, 0.0]


def test_a_fine_tune_keeps_its_checkpoints_attention_scale_unless_told(tmp_path):
    """--xpool-attention unset: the warm-start checkpoint's video_attention (a softened head stays
    soft when fine-tuned again), else the reference's 1; set: the run's own."""
    from vidsearch.encoders.training import Trainer

    soft = tmp_path / "soft.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "clip": {}, "head": {"config": {"video_attention": 0.25}, "state": {}}}, soft)
    plain = tmp_path / "plain.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "clip": {}, "head": {"config": {}, "state": {}}}, plain)
    assert Trainer._video_attention(TrainConfig(checkpoint=str(soft))) == 0.25
    assert Trainer._video_attention(TrainConfig(checkpoint=str(soft), xpool_attention=1.0)) == 1.0
    assert Trainer._video_attention(TrainConfig(checkpoint=str(plain))) == 1.0
    assert Trainer._video_attention(TrainConfig(xpool_attention=0.5)) == 0.5 and Trainer._video_attention(TrainConfig()) == 1.0


def test_the_temporal_module_learns_at_its_own_rate():
    """A fine-tune starts the cue-reading weights at zero: they get `temporal_lr_mult` x lr."""
    from vidsearch.encoders.temporal import TemporalMixer

    other, module = torch.nn.Parameter(torch.ones(3, 3)), TemporalMixer(4, cues=2)
    cfg = TrainConfig(lr=1e-3, weight_decay=0.0, temporal_lr_mult=10.0)
    fast = list(module.parameters())
    opt = torch.optim.AdamW(param_groups([other, *fast], cfg, fast), lr=cfg.lr, weight_decay=0.0)
    (other.sum() + sum(p.sum() for p in fast)).backward()
    before = module.out.weight.detach().clone()
    opt.step()
    assert (module.out.weight.detach() - before).abs().max().item() == pytest.approx(1e-2, rel=0.01)
    assert other.detach()[0, 0].item() == pytest.approx(1 - 1e-3, rel=1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == 1 + len(fast)


def _train(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "vidsearch.cli", "train", *args, "--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_train_scores_held_out_videos_writes_a_loadable_checkpoint_and_resumes(unseen_synth_corpus, tmp_path):
    corpus, out = unseen_synth_corpus, tmp_path / "model.pt"
    common = ["--data", str(corpus / "train.jsonl"), "--eval-data", str(corpus / "test.jsonl"), "--out", str(out),
              "--batch-size", "3", "--frames-per-video", "4"]  # fmt: skip
    first = _train(*common, "--epochs", "2", "--eval-every", "1")
    assert first["epochs"] == 2 and first["videos"] == len((corpus / "train.jsonl").read_text().splitlines())
    rows = first["history"]
    assert [r["epoch"] for r in rows] == [1, 2] and all(torch.isfinite(torch.tensor(r["total"])) for r in rows)
    n_test = len((corpus / "test.jsonl").read_text().splitlines())
    for r in rows:  # every epoch scored on the held-out videos, per pooling method, and on direction
        assert set(r["eval"]) == {"test"} and set(r["eval"]["test"]) == {"mean", "xpool", "fused", "direction_accuracy"}
        assert "direction" in r and r["direction"] > 0  # the reversed-direction loss ran
        for name, m in r["eval"]["test"].items():
            if name == "direction_accuracy":
                assert m["queries"] > 0 and 0 <= m["event_mean"] <= 100 and 0 <= m["xpool"] <= 100
                continue
            assert 0 <= m["R@1"] <= m["R@5"] <= 100 and 1 <= m["MdR"] <= n_test

    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["meta"]["epochs_done"] == 2
    assert not any(k.startswith("text.transformer.") for k in ckpt["clip"]), "the frozen MiniLM is not copied"
    backbone = load_backbone("tiny", "none", out)
    assert backbone.head is not None and backbone.fingerprint.weights != load_backbone("tiny", "none").fingerprint.weights
    assert backbone.head.temporal is not None  # the temporal module travels in the checkpoint
    # and the indexer's units are the mixed ones: each unit knows its neighbours
    frames = np.random.default_rng(0).integers(0, 255, (4, backbone.image_size, backbone.image_size, 3), dtype=np.uint8)
    t = np.arange(4.0)
    mixed, *_ = backbone.encode_units(frames, t, t + 1, np.zeros(4, int))
    assert not np.allclose(mixed, backbone.encode_frames(frames), atol=1e-4)

    again = _train(*common, "--epochs", "3", "--resume")  # continue to 3 epochs, scored after the last only
    assert again["resumed"] and again["epochs"] == 3 and [r["epoch"] for r in again["history"]] == [3]
    assert "eval" in again["history"][0]
    assert torch.load(out, map_location="cpu", weights_only=False)["meta"]["epochs_done"] == 3
