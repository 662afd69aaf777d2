"""Calibrated relevance: the evidence it reads, the calibration file (stored with the model, refused
for another model), fitting and measuring it (`vidsearch calibrate`), and what a search does with it:
a relevance in [0, 1] on every result and moment, results under `min_relevance` dropped, and an
empty answer that says why."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from vidsearch.lab.calibration import LabelledQuery, Observations, fit, report
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
    cands = [candidate("a", visual=0.7, audio=0.2, speech=0.6, metadata=0.5), candidate("b", visual=0.3), candidate("c", visual=0.4, ocr=0.45)]
    x = evidence(cands)
    col = {f: x[:, i] for i, f in enumerate(FEATURES)}
    assert col["visual"].tolist() == [0.7, 0.3, 0.4]
    assert col["visual_margin"] == pytest.approx([0.3, -0.1, 0.0])  # against the pool's median, 0.4
    assert col["visual_z"] == pytest.approx([3.0, -1.0, 0.0])  # median absolute deviation 0.1
    assert col["frame_max"].tolist() == [0.4] * 3 and col["audio"].tolist() == [0.2, 0.0, 0.0]
    assert col["text_best"].tolist() == [0.6, 0.0, 0.45] and col["text_hits"].tolist() == [1, 0, 1]  # metadata is no timed channel
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


def test_the_shipped_model_ships_its_calibration():
    from vidsearch.encoders.backbone import load_backbone

    files = shipped_calibrations()
    assert any(p.name == "tiny.calibration.json" for p in files)
    fp = load_backbone("tiny").fingerprint
    cal = find_calibration(fp.id)
    assert cal is not None and 0 < cal.threshold < 1 and cal.fitted_on["queries"]


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


def test_fit_separates_matches_from_misses_and_is_calibrated():
    obs = synthetic_observations(0)
    cal = fit(obs, FP())
    held = report(cal, obs, "held_out")
    assert held["ece"] < 0.05
    assert held["at_threshold"]["empty:unrelated"] > 0.9 and held["at_threshold"]["kept:recall"] > 0.9
    assert held["ranking"]["fusion"]["p_at_1"] == 1.0
    with pytest.raises(ValueError, match="need at least 100"):
        fit(synthetic_observations(1, 20, 20), FP())


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
