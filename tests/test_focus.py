"""The focus view (encoders/focus.py): each frame seen again, closer, around what moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidsearch.encoders.focus import focus_crops, focus_crops_uint8
from vidsearch.encoders.fusion import FusionHead
from vidsearch.encoders.temporal import frame_cues
from vidsearch.encoders.unit_head import head_units


def _square_video(steps: int = 5, size: int = 112, side: int = 14, dx: int = 8) -> np.ndarray:
    """A small bright square crossing a grey frame's upper right quarter."""
    frames = np.full((steps, size, size, 3), 60, np.uint8)
    for t in range(steps):
        x = 64 + dx * (t - steps // 2)
        frames[t, 20 : 20 + side, x : x + side] = (230, 40, 40)
    return frames


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return ys.min(), ys.max(), xs.min(), xs.max()


def test_the_window_is_half_the_frame_around_the_cue_and_stays_inside():
    frames = np.zeros((3, 112, 112, 3), np.uint8)
    frames[:, 10:20, 90:100] = 255
    # the cue at the square's quarter, at the corner beyond it (moved inside), and none (the centre)
    crops = focus_crops_uint8(frames, np.array([[0.5, -0.5], [1.0, -1.0], [0.0, 0.0]], np.float32))
    for i in (0, 1):  # window x 56..112, y 0..56, twice as large: the square at 2 x (its place - window origin)
        y0, y1, x0, x1 = _box(crops[i, ..., 0] > 128)
        assert (abs(y0 - 20) <= 1, abs(y1 - 39) <= 1, abs(x0 - 68) <= 1, abs(x1 - 87) <= 1) == (True,) * 4, (i, y0, y1, x0, x1)
    assert not (crops[2, ..., 0] > 128).any(), "the centre window does not hold a corner square"
    # float and uint8 paths agree
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    f = focus_crops(x, torch.tensor([[0.5, -0.5]] * 3)).round().clamp(0, 255).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(f[0], crops[0])


def test_the_crop_follows_the_moving_thing_and_shows_it_larger():
    frames = _square_video()
    cues = frame_cues(frames, np.zeros(len(frames), int))
    crops = focus_crops_uint8(frames, cues)
    for t in range(len(frames)):
        big = (crops[t, ..., 0] > 150).sum()
        small = (frames[t, ..., 0] > 150).sum()
        assert 3.0 * small <= big <= 5.0 * small, (t, small, big)  # 2x the side: ~4x the area, whole


def test_a_head_without_focus_weight_leaves_units_as_they_are_and_with_it_mixes_the_crops():
    frames = _square_video()
    owner = np.zeros(len(frames), int)
    start = np.arange(len(frames), dtype=np.float64)
    rng = np.random.default_rng(0)
    table = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(256, 8)).astype(np.float32)), dim=-1)

    def encode(f: np.ndarray) -> np.ndarray:  # a stand-in tower: the frame's mean red level picks a vector
        return table[torch.from_numpy(f[..., 0].reshape(len(f), -1).mean(1).astype(np.int64))].numpy()

    vectors = encode(frames)
    head = FusionHead(8, focus=0.5)  # no temporal module: the focus view alone
    out = head_units(head, encode, frames, vectors, start, start + 1, owner, start, start + 1, owner)
    np.testing.assert_allclose(out, vectors, atol=1e-6)  # w = 0: the model it was fine-tuned from
    with torch.no_grad():
        head.focus.weight.fill_(1.0)
    out = head_units(head, encode, frames, vectors, start, start + 1, owner, start, start + 1, owner)
    near = encode(focus_crops_uint8(frames, frame_cues(frames, owner)))
    want = torch.nn.functional.normalize(torch.from_numpy(vectors + near), dim=-1).numpy()
    np.testing.assert_allclose(out, want, atol=1e-5)
    assert not np.allclose(out, vectors, atol=1e-3)
    # merged units read the mean of their frames' crops
    u_start, u_owner = np.array([0.0, 2.0]), np.array([0, 0])
    merged_in = torch.nn.functional.normalize(torch.from_numpy(np.stack([vectors[:2].mean(0), vectors[2:].mean(0)])), dim=-1).numpy()
    merged = head_units(head, encode, frames, merged_in, start, start + 1, owner, u_start, u_start + 2, u_owner)
    want = np.stack([near[:2].mean(0), near[2:].mean(0)])
    want = torch.nn.functional.normalize(torch.from_numpy(merged_in + want / np.linalg.norm(want, axis=1, keepdims=True)), dim=-1).numpy()
    np.testing.assert_allclose(merged, want, atol=1e-5)


@pytest.mark.timeout(300)
def test_training_with_focus_learns_its_weight_and_the_checkpoint_indexes_with_it(tmp_path):
    from vidsearch.encoders.backbone import WEIGHTS_DIR, load_backbone, read_checkpoint
    from vidsearch.encoders.training import TrainConfig, Trainer
    from vidsearch.lab.training_data import TrainingSet

    nv, per = 4, 4
    frames = np.concatenate([_square_video(per, dx=d) for d in (8, -8, 6, -6)])
    r = np.random.default_rng(0)
    caps = ["a red square moves right", "a red square moves left", "a red square drifts right", "a red square drifts left"]
    ts = TrainingSet(frames=frames, frame_offsets=np.arange(nv + 1) * per,
                     unit_start=np.tile(np.arange(per, dtype=np.float32), nv), unit_end=np.tile(np.arange(per, dtype=np.float32) + 1, nv),
                     audio=(r.random(nv * 16000) * 0.1).astype(np.float16), audio_offsets=np.arange(nv + 1) * 16000,
                     durations=np.full(nv, per, np.float32), videos=[f"v{i}" for i in range(nv)], cap_video=np.arange(nv),
                     cap_text=caps, cap_start=np.zeros(nv, np.float32), cap_end=np.full(nv, per, np.float32))  # fmt: skip
    trainer = Trainer(ts, TrainConfig(model="tiny", checkpoint=str(WEIGHTS_DIR / "tiny.pt"), epochs=1, batch_size=4,
                                      frames_per_video=per, augment=False, bf16=False), tmp_path / "m.pt")  # fmt: skip
    saved = read_checkpoint(WEIGHTS_DIR / "tiny.pt")["head"]["state"].get("focus.weight")
    # a checkpoint without the focus view starts it at 0 (the model it came from); one with it, where it was
    assert trainer.head.focus is not None and float(trainer.head.focus.weight.detach()) == (0.0 if saved is None else float(saved))
    parts = trainer.losses(trainer._batch(np.arange(nv)))
    parts["total"].backward()
    assert trainer.head.focus.weight.grad is not None and float(trainer.head.focus.weight.grad) != 0.0
    with torch.no_grad():
        trainer.head.focus.weight.fill_(0.7)
    trainer.save()
    bb = load_backbone("tiny", None, tmp_path / "m.pt", precision="fp32")
    assert bb.head.focus is not None and abs(float(bb.head.focus.weight) - 0.7) < 1e-3
    # the indexer's units equal the trainer's own (validation) units for the same frames
    owner = np.repeat(np.arange(nv), per)
    start = np.tile(np.arange(per, dtype=np.float64), nv)
    units, *_ = bb.encode_units(frames, start, start + 1, owner)
    trainer.net.eval(), trainer.head.eval()
    with torch.no_grad():
        ref, mask = trainer._encode_frames(ts)
    np.testing.assert_allclose(units, ref[mask].numpy(), atol=2e-3)
    # a run without the focus view starts from this checkpoint too (its focus weight left out)
    plain = Trainer(ts, TrainConfig(model="tiny", checkpoint=str(tmp_path / "m.pt"), epochs=1, batch_size=4, frames_per_video=per,
                                    augment=False, bf16=False, focus=0.0), tmp_path / "n.pt")  # fmt: skip
    assert plain.head.focus is None and "head" in plain.warm_started
