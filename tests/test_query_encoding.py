"""Query encoding under load: one text-tower pass serves the frames and the text channels, and
concurrent new queries are encoded in micro-batches."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from vidsearch.config import Settings
from vidsearch.search import SearchEngine, Snapshot, TextChannels
from vidsearch.search.batching import QueryBatcher


def test_concurrent_texts_share_batches_and_each_gets_its_own_vector():
    calls: list[list[str]] = []

    def encode_many(texts):
        calls.append(list(texts))
        time.sleep(0.05)  # a text-tower pass
        return [np.full(3, float(len(t)), np.float32) for t in texts]

    batcher = QueryBatcher(encode_many, wait_ms=20)
    texts = [f"query {'x' * i}" for i in range(12)]
    out: dict[str, np.ndarray] = {}
    threads = [threading.Thread(target=lambda t=t: out.__setitem__(t, batcher(t))) for t in texts]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert all(out[t][0] == len(t) for t in texts)
    assert sum(len(c) for c in calls) == 12
    assert len(calls) < 12  # batched: without it every text is its own pass
    assert max(len(c) for c in calls) > 1


def test_a_leader_returns_after_its_batch_while_texts_keep_arriving():
    """The leader runs one batch and hands over: under a steady stream of new texts each caller waits
    for about one pass, not for the stream to stop (the old leader drained every next batch itself)."""

    def encode_many(texts):
        time.sleep(0.03)  # a pass on busy cores
        return [np.zeros(2, np.float32) for _ in texts]

    batcher = QueryBatcher(encode_many, wait_ms=2)
    waited: dict[str, float] = {}
    stop = threading.Event()

    def ask(text: str) -> None:
        t0 = time.perf_counter()
        batcher(text)
        waited[text] = time.perf_counter() - t0

    def stream() -> None:  # a new text every 10 ms: a pass always has followers waiting
        threads, i = [], 0
        while not stop.is_set():
            threads.append(threading.Thread(target=ask, args=(f"text {i}",)))
            threads[-1].start()
            i += 1
            time.sleep(0.01)
        for th in threads:
            th.join(10)

    feeder = threading.Thread(target=stream)
    feeder.start()
    time.sleep(1.0)
    stop.set()
    feeder.join(20)
    assert len(waited) > 50 and batcher.batches > 10
    assert max(waited.values()) < 0.3, sorted(waited.values())[-5:]  # ~2 passes at most; the old leader: ~1 s


def test_a_failed_batch_fails_its_callers_and_the_next_batch_works():
    fail = [True]

    def encode_many(texts):
        if fail[0]:
            fail[0] = False
            raise RuntimeError("tower down")
        return [np.ones(2, np.float32) for _ in texts]

    batcher = QueryBatcher(encode_many, wait_ms=1)
    with pytest.raises(RuntimeError, match="tower down"):
        batcher("a")
    assert batcher("b").tolist() == [1.0, 1.0]
    # a tower that returns too few vectors fails its callers instead of leaving one waiting for ever
    short = QueryBatcher(lambda texts: [np.ones(2, np.float32)][: len(texts) - 1], wait_ms=1)
    with pytest.raises(RuntimeError, match="0 vectors for 1 texts"):
        short("c")
    with pytest.raises(RuntimeError, match="0 vectors for 1 texts"):
        short("d")  # and the next caller leads again


def test_the_tiny_text_tower_gives_the_sentence_vector_in_the_same_pass(tiny_backbone):
    from vidsearch.encoders.sentence import get_sentence_encoder

    assert tiny_backbone.sentence_tower
    texts = ["a red circle moves to the left", "someone says hello, then a dog barks twice"]
    vectors, sentences = tiny_backbone.encode_text_and_sentences(texts)
    np.testing.assert_allclose(vectors, tiny_backbone.encode_text(texts), atol=1e-6)
    want = get_sentence_encoder().encode(texts)
    assert (sentences * want).sum(axis=1).min() > 0.9999
    long = " ".join(["word"] * 60)  # cut at the tower's context: the sentence encoder reads further
    assert list(tiny_backbone.encode_text_and_sentences([long])[1]) == [None]


def test_a_cut_text_leaves_the_other_texts_of_its_batch_their_sentence_vectors(tiny_backbone):
    """One long query in a micro-batch used to cost every other text of the batch its sentence vector
    (a search process then loaded a MiniLM of its own to make it)."""
    texts = ["a red circle moves to the left", " ".join(["word"] * 60), "a dog barks twice"]
    vectors, sentences = tiny_backbone.encode_text_and_sentences(texts)
    np.testing.assert_allclose(vectors, tiny_backbone.encode_text(texts), atol=1e-5)
    assert sentences[1] is None
    alone = tiny_backbone.encode_text_and_sentences([texts[0], texts[2]])[1]
    np.testing.assert_allclose(np.stack([sentences[0], sentences[2]]), alone, atol=1e-5)


class NoSecondPass:
    def encode(self, texts):
        raise AssertionError("the sentence encoder ran although the query tower is its network")


def test_a_forgotten_sentence_vector_is_made_again_by_the_query_tower(tiny_backbone):
    """The query-vector and sentence-vector caches forget apart: a text used again and again keeps its
    query vector while new texts push its sentence vector out. The vectors handed to a search process
    must still hold the sentence vector (None made the process load a MiniLM of its own: a 1.3 s
    answer under load, bench/api_load.py), and the text channels make it with the tower's pass."""
    channels = TextChannels(store=None, encoder=NoSecondPass())
    snap = Snapshot(version="v", videos={}, ids=np.zeros(0, str), durations=np.zeros(0), coarse=None)
    engine = SearchEngine.from_snapshot(snap, tiny_backbone, Settings(model="tiny"), {}, text_channels=channels)
    text = "a woman giving a presentation with slides"
    vector, sentence, _ = engine.query_vectors(text)
    channels._embed = type(channels._embed)(channels._encode)  # every sentence vector forgotten
    assert channels.remembered(text) is None and engine._query_vectors.peek(text) is not None
    again, made, _ = engine.query_vectors(text)
    np.testing.assert_allclose(again, vector)
    assert made is not None and float(made @ sentence) > 0.9999
    channels._embed = type(channels._embed)(channels._encode)
    assert float(channels.sentence_vector(text) @ sentence) > 0.9999  # what a channel search asks for


def test_a_search_query_is_encoded_once_for_frames_and_text_channels(tiny_backbone):
    channels = TextChannels(store=None, encoder=NoSecondPass())
    snap = Snapshot(version="v", videos={}, ids=np.zeros(0, str), durations=np.zeros(0), coarse=None)
    engine = SearchEngine.from_snapshot(snap, tiny_backbone, Settings(model="tiny"), {}, text_channels=channels)
    query = engine.encode_query("a blue square spins")
    sentence = channels._embed("a blue square spins")  # what the channel search asks for
    assert query.shape == (tiny_backbone.dim,) and sentence.shape == (384,)


def test_the_onnx_text_tower_agrees_with_torch_and_serves_the_queries(tiny_backbone):
    """encoders/onnx_text.py: the same two vectors as the torch pass (any batch, any length), and an
    engine switches its query path to it."""
    pytest.importorskip("onnxruntime")
    from vidsearch.encoders.onnx_text import OnnxSentenceTower

    texts = ["rain", "a red circle moves to the left", "someone says hello, then a dog barks twice at the mailman"]
    want_q, want_s = tiny_backbone.encode_text_and_sentences(texts)
    tower = OnnxSentenceTower.build(tiny_backbone)
    assert tower is not None and tower.min_cosine >= 0.9999
    snap = Snapshot(version="v", videos={}, ids=np.zeros(0, str), durations=np.zeros(0), coarse=None)
    engine = SearchEngine.from_snapshot(snap, tiny_backbone, Settings(model="tiny"), {})
    try:
        tiny_backbone.query_tower = tower
        got_q, got_s = tiny_backbone.encode_text_and_sentences(texts)
        one_q, _ = tiny_backbone.encode_text_and_sentences(texts[:1])  # a batch of one: its own length
        assert (got_q * want_q).sum(1).min() > 0.9999 and (got_s * want_s).sum(1).min() > 0.9999
        assert (one_q[0] * want_q[0]).sum() > 0.9999
        calls = []
        tower_call = tower.__call__
        tiny_backbone.query_tower = lambda ids, mask: calls.append(ids.shape) or tower_call(ids, mask)
        assert engine.encode_query("a blue square spins").shape == (tiny_backbone.dim,)
        assert calls and calls[0][1] < 32  # the padding to the context (32) was cut
    finally:
        tiny_backbone.query_tower = None


def test_without_onnxruntime_the_torch_path_serves(tiny_backbone, monkeypatch):
    import sys

    from vidsearch.encoders.onnx_text import OnnxSentenceTower

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    assert OnnxSentenceTower.build(tiny_backbone) is None
    snap = Snapshot(version="v", videos={}, ids=np.zeros(0, str), durations=np.zeros(0), coarse=None)
    engine = SearchEngine.from_snapshot(snap, tiny_backbone, Settings(model="tiny"), {})
    engine.start_query_runtime(wait=True)
    assert tiny_backbone.query_tower is None and engine.encode_query("rain").shape == (tiny_backbone.dim,)
