"""The shape hard negative (encoders/shape_swaps.py) and its loss in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidsearch.encoders.shape_swaps import swap_shapes


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("a red orb moves left while a low tone sounds",
         ["a red square moves left while a low tone sounds", "a red triangle moves left while a low tone sounds",
          "a red star moves left while a low tone sounds"]),
        ('the blue pointy star rises; someone says "look at the star"',
         ['the blue circle rises; someone says "look at the star"', 'the blue square rises; someone says "look at the star"',
          'the blue triangle rises; someone says "look at the star"']),
        ("A green Square Figure stays put", ["A green circle stays put", "A green triangle stays put", "A green star stays put"]),
        ("a beep as the green ball drifts down", ["a beep as the green square drifts down", "a beep as the green triangle drifts down",
                                                  "a beep as the green star drifts down"]),
        ("nothing with a form here", []),
        ("a circle and a star", []),  # two shapes: which event a swap is about is unclear
        ('a voice says "circle"', []),  # quoted words are speech or on-screen text, not the shape
        ("a red star rises; someone says \u201cthe circle\u201d", ["a red circle rises; someone says \u201cthe circle\u201d",
                                                           "a red square rises; someone says \u201cthe circle\u201d",
                                                           "a red triangle rises; someone says \u201cthe circle\u201d"]),
    ],
)  # fmt: skip
def test_swap_shapes(caption, expected):
    assert swap_shapes(caption) == expected


@pytest.mark.timeout(300)
def test_the_shape_loss_asks_each_event_for_its_own_shape_and_reaches_the_frame_tower(tmp_path):
    from vidsearch.encoders.backbone import WEIGHTS_DIR
    from vidsearch.encoders.training import TrainConfig, Trainer
    from vidsearch.lab.training_data import TrainingSet

    r = np.random.default_rng(0)
    nv, per = 4, 3
    caps = ["a red circle moves left with a low tone", "a blue tile rises; clapping is heard",
            "a green starburst stays still with no sound", "a white wedge moves right while a high tone sounds"]  # fmt: skip
    ts = TrainingSet(frames=r.integers(0, 255, (nv * per, 112, 112, 3)).astype(np.uint8), frame_offsets=np.arange(nv + 1) * per,
                     unit_start=np.tile(np.arange(per, dtype=np.float32), nv), unit_end=np.tile(np.arange(per, dtype=np.float32) + 1, nv),
                     audio=(r.random(nv * 16000) * 0.1).astype(np.float16), audio_offsets=np.arange(nv + 1) * 16000,
                     durations=np.full(nv, per, np.float32), videos=[f"v{i}" for i in range(nv)], cap_video=np.arange(nv),
                     cap_text=caps, cap_start=np.zeros(nv, np.float32), cap_end=np.full(nv, per, np.float32))  # fmt: skip
    cfg = TrainConfig(model="tiny", checkpoint=str(WEIGHTS_DIR / "tiny.pt"), epochs=1, batch_size=4, frames_per_video=per,
                      direction_weight=0.0, augment=False)  # fmt: skip
    trainer = Trainer(ts, cfg, tmp_path / "m.pt")
    # the cached swapped captions are the language model's reading of the swapped texts
    want = trainer.backbone.encode_text(swap_shapes(caps[1]))
    got = trainer.encode_swapped("shape", torch.tensor([1]))[0].detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    parts = trainer.losses(trainer._batch(np.arange(nv)))
    assert "shape" in parts and torch.isfinite(parts["shape"]) and float(parts["shape"].detach()) > 0
    assert "motion" in parts and torch.isfinite(parts["motion"])  # every caption names a motion too (motion_swaps.py)
    parts["shape"].backward()  # alone: only the frames and the text projection can lower it
    grad = trainer.net.visual.conv1.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    off = Trainer(ts, TrainConfig(**{**cfg.__dict__, "shape_weight": 0.0}), tmp_path / "n.pt")
    assert "shape" not in off.losses(off._batch(np.arange(nv)))


@pytest.mark.timeout(300)
def test_the_shape_probe_reads_the_shipped_models_shapes_well_above_chance(unseen_synth_corpus):
    """lab/shape_probe.py on a library the model never saw (its own look): each event's units against
    "a {colour} {shape}"; the shipped model reads 12 of 15 there (round 4 too; a model with the shape
    negative alone 14), chance is 1 in 4."""
    import json

    from vidsearch.lab.shape_probe import shape_probe

    data = unseen_synth_corpus / "train.jsonl"
    videos = {json.loads(line)["video"] for line in data.read_text().splitlines() if line.strip()}
    events = [e for e in map(json.loads, (unseen_synth_corpus / "events.jsonl").read_text().splitlines()) if e["video"] in videos]
    out = shape_probe(data)
    confusion = np.asarray(out["confusion"])
    assert out["events"] == len(events) == confusion.sum() >= 10
    assert confusion.sum(1).tolist() == [sum(e["shape"] == s for e in events) for s in out["shapes"]]
    assert out["accuracy"] >= 60.0, out
