"""Calibrated relevance: the evidence it reads, the calibration file (stored with the model, refused
for another model), fitting and measuring it (`vidsearch calibrate`), and what a search does with it:
a relevance in [0, 1] on every result and moment, results under `min_relevance` dropped, and an
empty answer that says why."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from vidsearch.lab.calibration import LabelledQuery, Observations, fit, report, threshold_figures
from vidsearch.search.ranking import Candidate
from vidsearch.search.relevance import FEATURES, Calibration, CalibrationError, evidence, find_calibration, shipped_calibrations
from vidsearch.server import create_app


def candidate(vid: str, **scores) -> Candidate:
    return Candidate(video_id=vid, score=0.0, channel_scores=scores, features=None, in_window=np.ones(2, bool),
                     relevance=np.array([0.1, 0.4]), attention=np.ones(2) / 2, audio_gate=0.0, spans=[])  # fmt: skip


def calibration(fingerprint: str, coef: dict[str, float], intercept: float, threshold: float = 0.5) -> Calibration:
    return Calibration(fingerprint=fingerprint, model="test", features=FEATURES, mean=(0.0,) * len(FEATURES), scale=(1.0,) * len(FEATURES),
                       coef=tuple(coef.get(f, 0.0) for f in FEATURES), intercept=intercept, threshold=threshold)  # fmt: skip


def test_evidence_reads_each_channel_and_the_pool():
    cands = [candidate("a", visual=0.7, audio=0.2, speech=0.6, metadata=0.5), candidate("b", visual=0.3, metadata=0.2), candidate("c", visual=0.4, ocr=0.45)]
    x = evidence(cands)
    col = {f: x[:, i] for i, f in enumerate(FEATURES)}
    assert col["visual"].tolist() == [0.7, 0.3, 0.4]
    assert col["visual_margin"] == pytest.approx([0.3, -0.1, 0.0])  # against the pool's median, 0.4
    assert col["visual_z"] == pytest.approx([3.0, -1.0, 0.0])  # median absolute deviation 0.1
    assert col["frame_max"].tolist() == [0.4] * 3 and col["audio"].tolist() == [0.2, 0.0, 0.0]
    assert col["text_best"].tolist() == [0.6, 0.2, 0.45]
    assert col["text_hits"].tolist() == [2, 0, 1]  # metadata counts where it matches by meaning (cosine >= 0.35), not by a shared word
    assert col["inv_rank"] == pytest.approx([1, 1 / 2, 1 / 3])
    assert evidence([]).shape == (0, len(FEATURES))


def test_calibration_file_round_trip_and_refusals(tmp_path, caplog):
    cal = calibration("fp1", {"visual": 2.0}, -1.0)
    path = cal.save(tmp_path / "db" / "calibration.json")
    assert Calibration.load(path) == cal
    assert find_calibration("fp1", db=tmp_path / "db") == cal
    with caplog.at_level(logging.WARNING):
        assert find_calibration("other", db=tmp_path / "db") is None  # another model's scores mean something else
    assert "vidsearch calibrate" in caplog.text
    with pytest.raises(CalibrationError, match="fitted for model fingerprint fp1"):
        find_calibration("other", explicit=path)
    bad = json.loads(path.read_text()) | {"features": ["visual"]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(CalibrationError, match="fit it again"):
        Calibration.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(CalibrationError, match="cannot be read"):
        Calibration.load(tmp_path / "junk.json")


def test_evidence_outside_the_fitted_range_is_read_at_its_edge(tmp_path):
    """A feature the fit never saw vary (a text channel off at fit time) must not extrapolate: with a
    negative weight learned on noise, a strong speech match would otherwise read as certainly irrelevant."""
    text = FEATURES.index("text_best")
    lo, hi = [0.0] * len(FEATURES), [1.0] * len(FEATURES)
    hi[text] = 0.01  # the fit saw text_best only between 0 and 0.01
    cal = replace(calibration("fp", {"text_best": -30.0, "visual": 4.0}, -2.0), lo=tuple(lo), hi=tuple(hi))
    x = np.zeros((3, len(FEATURES)))
    x[:, FEATURES.index("visual")] = 0.5
    x[1, text], x[2, text] = 0.01, 0.9
    p = cal.probability(x)
    assert p[2] == pytest.approx(p[1]) and p[2] > 0.4  # unclipped: sigmoid(-27) ~ 0
    assert replace(cal, lo=None, hi=None).probability(x)[2] < 1e-9  # a file without a range extrapolates, as before
    x[0, FEATURES.index("visual")] = 3.0  # above the range too: read at 1.0
    assert cal.probability(x)[0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert Calibration.load(cal.save(tmp_path / "c.json")) == cal
    bad = json.loads((tmp_path / "c.json").read_text()) | {"lo": hi, "hi": lo}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(CalibrationError, match="lo <= hi"):
        Calibration.load(tmp_path / "bad.json")
    (tmp_path / "short.json").write_text(json.dumps(bad | {"lo": [0.0]}))
    with pytest.raises(CalibrationError, match="one value per feature"):
        Calibration.load(tmp_path / "short.json")


def test_words_alone_can_make_a_result_relevant(tmp_path):
    """The second route: a strong spoken or on-screen match in a video where nothing stands out
    visually (what a real recording looks like to a model trained on synthetic renders) is relevant
    by its words alone; without the route the visual evidence pulls it to ~0."""
    cal = replace(calibration("fp", {"frame_max": 6.0}, -5.0), words_coef=(8.0, 0.0), words_intercept=-4.0)
    x = np.zeros((3, len(FEATURES)))
    x[0, FEATURES.index("text_best")] = 0.9  # words only
    x[1, FEATURES.index("frame_max")] = 0.9  # seen only
    p = cal.probability(x)

    def either(seen: float, words: float) -> float:  # relevant when either route says so
        return 1 - (1 - 1 / (1 + np.exp(-seen))) * (1 - 1 / (1 + np.exp(-words)))

    assert p.tolist() == pytest.approx([either(-5.0, 3.2), either(0.4, -4.0), either(-5.0, -4.0)])
    assert p[0] > 0.95 and p[2] < 0.03
    assert replace(cal, words_coef=None).probability(x)[0] < 0.01
    assert Calibration.load(cal.save(tmp_path / "w.json")) == cal
    (tmp_path / "bad.json").write_text(json.dumps(json.loads((tmp_path / "w.json").read_text()) | {"words_coef": [1.0]}))
    with pytest.raises(CalibrationError, match="words_coef"):
        Calibration.load(tmp_path / "bad.json")


def test_calibrated_results_are_ordered_by_relevance():
    """The served order follows calibrated relevance (ties keep the fused order); the fused order
    stays available, since the evidence (inv_rank) is read in it."""
    from types import SimpleNamespace

    from vidsearch.search.ranking import Ranking

    plan = SimpleNamespace(request=SimpleNamespace(group_by="video"))
    cands = [replace(candidate(v), probability=p) for v, p in (("a", 0.2), ("b", 0.7), ("c", 0.2), ("d", 0.05))]
    ranking = Ranking(plan, cands, min_relevance=0.1)
    assert [c.video_id for c in ranking.candidates] == ["b", "a", "c"] and ranking.dropped == 1
    assert [c.video_id for c in ranking.fused] == ["a", "b", "c", "d"]
    plain = [replace(c, probability=None) for c in cands]
    assert [c.video_id for c in Ranking(plan, plain).candidates] == ["a", "b", "c", "d"]  # uncalibrated: fused order


@pytest.fixture
def shipped_pair(tmp_path, monkeypatch) -> tuple[Calibration, Calibration]:
    """Two shipped calibrations of model "fp": fitted with speech and OCR on, and with them off."""
    from vidsearch.search import relevance

    on = replace(calibration("fp", {"visual": 1.0}, -1.0, threshold=0.1), fitted_on={"text_channels": ["ocr", "speech"]})
    off = replace(calibration("fp", {"visual": 2.0}, -1.0, threshold=0.08), fitted_on={"text_channels": []})
    files = [on.save(tmp_path / "m.calibration.json"), off.save(tmp_path / "m.visual.calibration.json")]
    monkeypatch.setattr(relevance, "shipped_calibrations", lambda: files)
    return on, off


def test_the_calibration_fitted_with_the_index_text_channels_is_chosen(tmp_path, shipped_pair):
    """A model may ship one calibration per channel set (speech and OCR on, or off): the one fitted
    with the index's timed text channels wins; the user's own file beside the index wins over all."""
    on, off = shipped_pair
    assert find_calibration("fp", text_channels=["metadata"]) == off  # titles are no timed channel
    assert find_calibration("fp", text_channels=["metadata", "ocr", "speech"]) == on
    assert find_calibration("fp", text_channels=["subtitle"]) == on  # some timed text: the text-on fit is nearer
    assert find_calibration("fp") == on  # not said: the first
    own = calibration("fp", {"audio": 1.0}, 0.0).save(tmp_path / "db" / "calibration.json")
    assert find_calibration("fp", db=own.parent, text_channels=[]) == Calibration.load(own)


def test_a_reindex_that_brings_speech_switches_the_calibration(tmp_path, shipped_pair):
    from types import SimpleNamespace

    from vidsearch.search.engine import SearchEngine

    on, off = shipped_pair

    class Spans:  # the text channels as the engine asks them: which sources, and a new version
        now, coming = ["metadata"], ["metadata", "speech"]

        def sources(self):
            return self.now

        def refresh(self):
            self.now = self.coming

    engine = SearchEngine.__new__(SearchEngine)
    engine.backbone = SimpleNamespace(fingerprint=SimpleNamespace(id="fp"))
    engine.settings = SimpleNamespace(db=tmp_path / "no-db", calibration=None)
    engine.store = object()  # an engine over an index (a bare snapshot has no spans to ask)
    engine.text_channels = Spans()
    engine._pick_calibration()
    assert engine.calibration == off
    engine._refresh_text_channels()  # a job indexed speech
    assert engine.calibration == on


def test_a_calibration_fitted_without_text_reads_words_through_one_fitted_with_them():
    """The visual-only calibration's fit saw no text match, so a title, a manifest's description or a
    chapter that said the query exactly got relevance ~0 and was dropped (media verify N1). It reads
    words through the text-on calibration's words route; without a text match nothing changes."""
    shipped = [Calibration.load(p) for p in shipped_calibrations()]
    fingerprint = shipped[0].fingerprint
    visual = next(c for c in shipped if c.text_channels == ())
    assert not visual.reads_words
    chosen = find_calibration(fingerprint, text_channels=["metadata"])
    assert chosen == visual and chosen.words_from is not None and chosen.words_from.reads_words
    named, passing, none = (candidate("a", visual=0.5, metadata=1.0), candidate("b", visual=0.5, metadata=0.38), candidate("c", visual=0.5))
    x = evidence([named, passing, none])
    p, before = chosen.probability(x), visual.probability(x)
    assert before[0] < chosen.threshold and p[0] > 0.5  # the exact title or chapter is found (it was dropped)
    assert p[1] < chosen.threshold  # a loosely related title is not
    assert p[2] == pytest.approx(before[2], abs=5e-4)  # no text: the visual fit's figure stands (the borrowed route adds ~1e-4)
    assert "words_from" not in chosen.to_json()


def test_the_shipped_model_ships_its_calibration():
    from vidsearch.encoders.backbone import load_backbone

    files = shipped_calibrations()
    assert {"tiny.calibration.json", "tiny.visual.calibration.json"} <= {p.name for p in files}
    fp = load_backbone("tiny").fingerprint
    visual = find_calibration(fp.id, text_channels=["metadata"])
    assert visual is not None and visual.text_channels == () and 0 < visual.threshold < 1
    cal = find_calibration(fp.id, text_channels=["ocr", "speech"])
    assert cal is not None and cal.text_channels == ("ocr", "speech")
    assert cal is not None and 0 < cal.threshold < 1 and cal.fitted_on["queries"]
    # fitted with the text channels on (the default), with the range it may be read in and the words route
    assert cal.lo is not None and cal.hi[FEATURES.index("text_hits")] >= 1 and cal.hi[FEATURES.index("text_best")] > 0.5
    assert cal.words_coef is not None and cal.words_coef[0] > 0
    assert {"text_speech", "text_screen", "near_miss_text"} <= set(cal.fitted_on["queries"])


def synthetic_observations(seed: int, n_pos: int = 150, n_neg: int = 150) -> Observations:
    """Queries whose relevant candidate stands out by its visual margin (positives), and queries where
    nothing does (negatives)."""
    rng = np.random.default_rng(seed)
    queries, xs, ys = [], [], []
    for i in range(n_pos + n_neg):
        positive = i < n_pos
        x = np.zeros((10, len(FEATURES)))
        x[:, 1] = rng.normal(0, 0.05, 10)
        y = np.zeros(10)
        if positive:
            x[0, 1] += 0.25
            y[0] = 1
        queries.append(LabelledQuery(f"q{i}", frozenset({"v"}) if positive else frozenset(), "positive" if positive else "unrelated",
                                     "fit" if i % 2 else "held_out"))  # fmt: skip
        xs.append(x)
        ys.append(y)
    return Observations(queries, xs, ys, xs)


class FP:
    id = "fp"

    def describe(self):
        return "test model"


def test_fit_learns_that_words_alone_answer_some_queries():
    """Two kinds of answerable query: some answered by what is seen (a visual margin), some by words
    heard or shown in a video where nothing stands out visually. The fit keeps both."""
    rng = np.random.default_rng(3)
    queries, xs, ys = [], [], []
    text = FEATURES.index("text_best")
    for i in range(450):
        kind = ("seen", "words", "unrelated")[i % 3]
        x = np.zeros((10, len(FEATURES)))
        x[:, 1] = rng.normal(0, 0.05, 10)
        x[:, text] = np.clip(rng.normal(0.1, 0.1, 10), 0, None)  # passing text matches everywhere
        y = np.zeros(10)
        if kind == "seen":
            x[0, 1] += 0.25
            y[0] = 1
        elif kind == "words":
            x[0, 1] -= 0.1  # visually below the pool
            x[0, text] = rng.uniform(0.7, 1.0)
            y[0] = 1
        queries.append(LabelledQuery(f"q{i}", frozenset() if kind == "unrelated" else frozenset({"v"}), kind, "fit" if i % 2 else "held_out"))
        xs.append(x)
        ys.append(y)
    obs = Observations(queries, xs, ys, xs)
    cal = fit(obs, FP())
    held = report(cal, obs, "held_out")
    assert held["ece"] < 0.05 and cal.words_coef is not None
    at = held["at_threshold"]
    assert at["kept:seen"] > 0.9 and at["kept:words"] > 0.9 and at["empty:unrelated"] > 0.9, at


def test_fit_separates_matches_from_misses_and_is_calibrated():
    obs = synthetic_observations(0)
    cal = fit(obs, FP())
    held = report(cal, obs, "held_out")
    fit_x, _ = obs.rows("fit")
    assert cal.lo == pytest.approx(np.quantile(fit_x, 0.005, axis=0)) and cal.hi == pytest.approx(np.quantile(fit_x, 0.995, axis=0))
    assert held["ece"] < 0.05
    assert held["at_threshold"]["empty:unrelated"] > 0.9 and held["at_threshold"]["kept:recall"] > 0.9
    assert held["ranking"]["fusion"]["p_at_1"] == 1.0
    with pytest.raises(ValueError, match="need at least 100"):
        fit(synthetic_observations(1, 20, 20), FP())



def test_the_default_threshold_floor_holds_for_the_kinds_the_index_can_answer():
    """Words said are answerable on an index with speech; on one without it the frames find a phrase
    only where it also describes the picture (a weak visual margin). Those must not hold the default
    threshold at the bottom of the grid there, while with speech (or channels unknown) they do."""
    rng = np.random.default_rng(5)
    queries, xs, ys = [], [], []
    for i in range(600):
        kind = ("positive", "text_speech", "unrelated")[i % 3]
        x = np.zeros((10, len(FEATURES)))
        x[:, 1] = rng.normal(0, 0.05, 10)
        y = np.zeros(10)
        if kind != "unrelated":
            x[0, 1] += 0.3 if kind == "positive" else 0.04
            y[0] = 1
        queries.append(LabelledQuery(f"q{i}", frozenset() if kind == "unrelated" else frozenset({"v"}), kind, "fit" if i % 2 else "held_out"))
        xs.append(x)
        ys.append(y)
    obs = Observations(queries, xs, ys, xs)
    held_low = fit(obs, FP())  # channels not known: every kind keeps its floor
    with_speech = fit(obs, FP(), text_channels=("ocr", "speech"))
    visual_only = fit(obs, FP(), text_channels=())
    assert held_low.threshold == with_speech.threshold < visual_only.threshold, (held_low.threshold, visual_only.threshold)
    base = threshold_figures(visual_only, obs, "fit", 0.0)
    at_low, at_visual = (threshold_figures(c, obs, "fit", c.threshold) for c in (with_speech, visual_only))
    assert at_low["kept:text_speech"] >= 0.5 * base["kept:text_speech"] > 0
    assert at_visual["empty:unrelated"] > at_low["empty:unrelated"] and at_visual["kept:positive"] > 0.9

# -- what a search does with it -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated(shared_library, tmp_path_factory, tiny_backbone):
    """The shared library's app with a calibration for its (random-weight) model that trusts only the
    fused ranking's first place: p = sigmoid(10 / rank - 6), 98% for the first result, 27% for the second."""
    settings, _ = shared_library
    path = calibration(tiny_backbone.fingerprint.id, {"inv_rank": 10.0}, -6.0, threshold=0.5).save(tmp_path_factory.mktemp("cal") / "c.json")
    with TestClient(create_app(settings.model_copy(update={"calibration": path}))) as c:
        yield c


def test_results_carry_relevance_and_weak_ones_are_dropped(calibrated):
    body = calibrated.post("/v1/search", json={"query": "colour bars"}).json()
    assert body["min_relevance"] == 0.5 and body["message"] is None
    assert [r["relevance_label"] for r in body["results"]] == ["strong"]  # the default threshold keeps the first only
    r = body["results"][0]
    assert r["relevance"] == pytest.approx(1 / (1 + np.exp(-4)), abs=1e-4)
    assert all(0 <= m["relevance"] <= r["relevance"] + 1e-9 for m in r["moments"]) and r["moments"][0]["relevance"] == r["relevance"]
    everything = calibrated.post("/v1/search", json={"query": "colour bars", "min_relevance": 0}).json()["results"]
    assert len(everything) == 4 and [x["relevance"] for x in everything] == sorted((x["relevance"] for x in everything), reverse=True)
    assert all(0 <= x["relevance"] <= 1 for x in everything)
    moments = calibrated.post("/v1/search", json={"query": "colour bars", "group_by": "moment", "min_relevance": 0.2}).json()["results"]
    assert moments and all(m["relevance"] >= 0.2 and m["moments"][0]["relevance"] == m["relevance"] for m in moments)
    assert [m["relevance"] for m in moments] == sorted((m["relevance"] for m in moments), reverse=True)


def test_nothing_good_enough_is_an_empty_list_that_says_why(calibrated):
    body = calibrated.post("/v1/search", json={"query": "a cat playing the piano", "min_relevance": 0.99}).json()
    assert body["results"] == [] and body["next_cursor"] is None
    assert "nothing in the library matches 'a cat playing the piano' well enough" in body["message"]
    assert "98%" in body["message"] and "99%" in body["message"] and "min_relevance" in body["message"]
    assert calibrated.post("/v1/search", json={"query": "x", "min_relevance": 1.5}).status_code == 422


def test_without_a_calibration_nothing_is_dropped(shared_library):
    settings, _ = shared_library
    with TestClient(create_app(settings)) as c:
        body = c.post("/v1/search", json={"query": "colour bars", "min_relevance": 0.9}).json()
    assert len(body["results"]) == 4 and body["min_relevance"] is None
    assert all(r["relevance"] is None and r["relevance_label"] is None for r in body["results"])


@pytest.mark.slow
def test_calibrate_command_fits_and_refuses_too_little_data(shared_library, tmp_path):
    settings, clips = shared_library
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"query": q, "relevant": [str(clips["bars"])]}) + "\n" for q in ("colour bars", "bars")))
    proc = subprocess.run([sys.executable, "-m", "vidsearch.cli", "calibrate", "--data", str(labels), "--db", str(settings.db),
                           "--out", str(tmp_path / "c.json")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "need at least 100 queries" in proc.stdout + proc.stderr
    labels.write_text(json.dumps({"query": "x", "relevant": ["nowhere.mp4"]}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "vidsearch.cli", "calibrate", "--data", str(labels), "--db", str(settings.db)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "'nowhere.mp4' is not in the index" in proc.stdout + proc.stderr


def test_synthetic_labels_ask_for_words_said_and_shown(unseen_synth_corpus):
    """The labels a calibration is fitted on include queries only speech or OCR answer (each naming
    every video that says or shows the words) and near misses by text that no video has."""
    from vidsearch.lab.calibration import synthetic_labels

    events = [json.loads(line) for line in (unseen_synth_corpus / "events.jsonl").read_text().splitlines()]
    said = {e["spoken"] for e in events if e["spoken"]}
    shown = {e["onscreen"] for e in events if e["onscreen"]}
    labels = synthetic_labels(unseen_synth_corpus, per_kind=20)
    by_kind: dict[str, list[dict]] = {}
    for rec in labels:
        by_kind.setdefault(rec["kind"], []).append(rec)
    assert said and shown and by_kind["text_speech"] and by_kind["text_screen"] and len(by_kind["near_miss_text"]) == 20
    for rec in by_kind["text_speech"] + by_kind["text_screen"]:
        words = next(w for w in said | shown if w in rec["query"])
        assert sorted(rec["relevant"]) == sorted({e["video"] for e in events if words in (e["spoken"], e["onscreen"])}), rec
    assert not any(rec["query"] == w for rec in by_kind["text_speech"] for w in said if w.startswith("look at"))  # bare, it describes a picture
    for rec in by_kind["near_miss_text"]:
        assert rec["relevant"] == [] and not any(w in rec["query"] for w in said | shown), rec
    assert len({r["query"] for r in labels}) == len(labels)
