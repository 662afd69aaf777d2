"""Metrics against values worked out by hand, so a wrong rule fails a test instead of a paper table."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vidsearch import metrics as m
from vidsearch.lab.evaluation_cli import app

# --------------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------------


def test_ranks_count_only_strictly_higher_scores():
    sim = np.array(
        [
            [0.9, 0.9, 0.1],  # true 0.9 ties column 1: nothing strictly higher -> rank 0
            [0.5, 0.2, 0.8],  # true 0.2: 0.5 and 0.8 are higher -> rank 2
            [0.3, 0.3, 0.3],  # all tied -> rank 0
        ]
    )
    assert m.ranks_from_similarity(sim).tolist() == [0, 2, 0]


def test_retrieval_metrics_with_ties():
    sim = np.array([[0.9, 0.9, 0.1], [0.5, 0.2, 0.8], [0.3, 0.3, 0.3]])
    # ranks [0, 2, 0]: R@1 = 2/3, R@5 = R@10 = 3/3; median 0 -> MdR 1; mean 2/3 -> MnR 5/3
    got = m.retrieval_metrics(sim)
    assert got == pytest.approx({"R@1": 200 / 3, "R@5": 100.0, "R@10": 100.0, "MdR": 1.0, "MnR": 5 / 3})


def test_retrieval_metrics_from_ranks_thresholds_and_averages():
    ranks = [0, 1, 4, 5, 9, 10, 30]
    # rank < 1: {0} -> 1/7; < 5: {0, 1, 4} -> 3/7; < 10: {0, 1, 4, 5, 9} -> 5/7
    # median 5 -> MdR 6; mean 59/7 -> MnR 66/7
    got = m.retrieval_metrics_from_ranks(ranks)
    assert got == pytest.approx(
        {"R@1": 100 / 7, "R@5": 300 / 7, "R@10": 500 / 7, "MdR": 6.0, "MnR": 66 / 7}
    )


def test_wide_matrix_rank_beyond_five():
    # 1 query x 12 videos: six distractors beat the true video -> rank 6: R@5 miss, R@10 hit.
    sim = np.full((1, 12), -1.0)
    sim[0, 0] = 0.0
    sim[0, 1:7] = 1.0
    got = m.retrieval_metrics(sim)
    assert (got["R@1"], got["R@5"], got["R@10"], got["MdR"], got["MnR"]) == (0.0, 0.0, 100.0, 7.0, 7.0)


def test_true_cols_lets_captions_share_a_video():
    sim = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.3]])
    # captions 0 and 1 both describe video 0; caption 2 video 1.
    # row 0: 0.9 is top -> 0; row 1: 0.8 > 0.2 -> 1; row 2: tie -> 0
    assert m.ranks_from_similarity(sim, np.array([0, 0, 1])).tolist() == [0, 1, 0]
    assert m.retrieval_metrics(sim, np.array([0, 0, 1]))["R@1"] == pytest.approx(200 / 3)


@pytest.mark.parametrize(
    "sim, true_cols, match",
    [
        (np.zeros(3), None, "2-D"),
        (np.zeros((3, 2)), None, "at least as many columns"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), None, "NaN"),
        (np.zeros((0, 3)), None, "empty"),
        (np.zeros((2, 2)), np.array([0, 2]), r"\[0, 2\)"),
        (np.zeros((2, 2)), np.array([0]), "one entry per row"),
        (np.zeros((2, 2)), np.array([0.0, 1.0]), "integer"),
    ],
)
def test_retrieval_rejects_bad_input(sim, true_cols, match):
    with pytest.raises(ValueError, match=match):
        m.retrieval_metrics(sim, true_cols)


def test_ranks_must_be_non_negative_integers():
    with pytest.raises(ValueError):
        m.retrieval_metrics_from_ranks([0, -1])
    with pytest.raises(ValueError):
        m.retrieval_metrics_from_ranks([])


# --------------------------------------------------------------------------------------------------
# Temporal IoU
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 5], [5, 10], 0.0),  # touching: no overlap
        ([0, 10], [0, 10], 1.0),  # identical
        ([0, 10], [5, 15], 5 / 15),  # overlap 5, union 15
        ([2, 4], [0, 10], 2 / 10),  # contained
        ([0, 1], [3, 4], 0.0),  # disjoint
        ([3, 3], [3, 3], 0.0),  # two zero-length windows: 0, not 0/0
        ([0, 6], [0, 10], 0.6),
    ],
)
def test_temporal_iou_cases(a, b, expected):
    assert m.temporal_iou(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


def test_temporal_iou_is_a_cross_matrix_and_batches():
    a = np.array([[0, 10], [5, 15]])
    b = np.array([[0, 10], [10, 20], [0, 20]])
    # rows: a windows; cols: b windows
    expected = np.array([[1.0, 0.0, 0.5], [5 / 15, 5 / 15, 0.5]])
    np.testing.assert_allclose(m.temporal_iou(a, b), expected)
    np.testing.assert_allclose(m.temporal_iou(a[None], b[None])[0], expected)


# --------------------------------------------------------------------------------------------------
# Moment metrics: a 3-query example worked by hand
# --------------------------------------------------------------------------------------------------
#
# Thresholds t = 0.5, 0.55, ..., 0.95 (index 0..9).
#
# Query "a": gt [0,10]; preds (submitted order) [0,6,.9], [20,30,.8]
#   [0,6] has IoU 6/10 = 0.6 -> TP for t <= 0.6 (3 thresholds); [20,30] is FP.
#   t <= 0.6: precision [1, .5], recall [1, 1]            -> AP = 1
#   t >  0.6: no TP                                       -> AP = 0
#   R1: top-1 IoU 0.6 -> hit at 0.5, miss at 0.7.
#
# Query "b": gt [0,10], [20,30]; preds (submitted) [20,28,.5], [0,10,.9], [40,50,.7]
#   by score: [0,10] (IoU 1 with gt0, TP), [40,50] (FP), [20,28] (IoU 8/10 = 0.8 with gt1)
#   t <= 0.8 (7 thresholds): TP,FP,TP  precision [1, 1/2, 2/3], recall [1/2, 1/2, 1]
#       AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
#   t >  0.8 (3 thresholds): TP,FP,FP  recall stays 1/2     -> AP = 1/2
#   R1: the top-1 is the first *submitted* window [20,28], IoU 0.8 -> hit at 0.5 and 0.7.
#
# Query "c": gt [0,10], [30,40], [60,70]; preds [0,10,.9], [100,110,.8], [200,210,.7],
#   [30,40,.6], [60,70,.5]: TP,FP,FP,TP,TP at every threshold (IoUs are 1 or 0).
#   precision [1, 1/2, 1/3, 1/2, 3/5], recall [1/3, 1/3, 1/3, 2/3, 1]
#   interpolated precision at the recall steps: 1, max(1/2, 3/5) = 3/5, 3/5
#   AP = 1/3 * (1 + 3/5 + 3/5) = 11/15   (without interpolation it would be 7/10)
#   R1: hit at both.
#
# mAP@0.5  = mean(1, 5/6, 11/15) = 77/90            -> 85.556 %
# mAP@0.75 = mean(0, 5/6, 11/15) = 47/90            -> 52.222 %
# mAP: per-query averages over thresholds 3/10, (7*5/6 + 3/2)/10 = 11/15, 11/15
#      -> mean 53/90                                 -> 58.889 %
# R1@0.5 = 3/3 -> 100 %; R1@0.7 = 2/3 -> 66.667 %

PREDS = {
    "a": [[0, 6, 0.9], [20, 30, 0.8]],
    "b": [[20, 28, 0.5], [0, 10, 0.9], [40, 50, 0.7]],
    "c": [[0, 10, 0.9], [100, 110, 0.8], [200, 210, 0.7], [30, 40, 0.6], [60, 70, 0.5]],
}
GTS = {"a": [[0, 10]], "b": [[0, 10], [20, 30]], "c": [[0, 10], [30, 40], [60, 70]]}
EXPECTED = {
    "R1@0.5": 100.0,
    "R1@0.7": 200 / 3,
    "mAP@0.5": 100 * 77 / 90,
    "mAP@0.75": 100 * 47 / 90,
    "mAP": 100 * 53 / 90,
}


def _arrays(d):
    return {k: np.array(v, dtype=float) for k, v in d.items()}


def test_thresholds_are_exact_two_decimal_values():
    # np.linspace(0.5, 0.95, 10)[8] is 0.8999999999999999; the reference rounds to two decimals,
    # so an IoU of 0.8999999999999999 must miss at 0.9 as it does there.
    assert m.MOMENT_IOU_THRESHOLDS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
    iou_just_below = np.array([[0.3, 1.2, 1.0]])  # vs [0.3, 1.3]: 0.8999999999999999 in floats
    assert m.average_precision([iou_just_below], [np.array([[0.3, 1.3]])])[0, -2:].tolist() == [0, 0]


def test_per_query_ap_by_threshold():
    ap = m.average_precision([np.array(PREDS[q]) for q in "abc"], [np.array(GTS[q]) for q in "abc"])
    expected = np.array(
        [
            [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
            [5 / 6] * 7 + [1 / 2] * 3,
            [11 / 15] * 10,
        ]
    )
    np.testing.assert_allclose(ap, expected)


def test_moment_metrics_hand_example():
    assert m.moment_metrics(_arrays(PREDS), _arrays(GTS)) == pytest.approx(EXPECTED)


def test_r1_uses_first_submitted_window_not_highest_score():
    # First listed [50,60] misses; the higher-scored [0,10] would have hit.
    preds = [np.array([[50, 60, 0.1], [0, 10, 0.9]])]
    gts = [np.array([[0, 10]])]
    assert m.recall_at_one(preds, gts).tolist() == [[False, False]]
    # AP ranks by score: [0,10] TP first, then FP -> precision [1, .5], recall [1, 1] -> AP 1
    assert m.average_precision(preds, gts, [0.5]).tolist() == [[1.0]]


def test_r1_hits_any_ground_truth_window():
    # top-1 [20,30] misses gt0 but equals gt1
    hits = m.recall_at_one([np.array([[20, 30, 1.0]])], [np.array([[0, 10], [20, 30]])])
    assert hits.tolist() == [[True, True]]


def test_a_ground_truth_window_is_matched_once():
    # Two identical predictions of gt0; gt1 is never found.
    # TP, FP -> recall [1/2, 1/2], precision [1, 1/2] -> AP = 1/2 (double matching would give 1)
    preds = [np.array([[0, 10, 0.9], [0, 10, 0.8]])]
    gts = [np.array([[0, 10], [50, 60]])]
    assert m.average_precision(preds, gts, [0.5]).tolist() == [[0.5]]


def test_greedy_match_takes_highest_iou_not_first_listed():
    # gts: g0 [2,12], g1 [0,10].  p1 [0,10] (score .9): IoU g0 = 8/12 = .667, g1 = 1 -> takes g1.
    # p2 [4,14] (score .8): IoU g0 = 8/12 = .667 -> TP.  Both TP -> AP 1 at t = 0.5.
    # Matching p1 to the first window above threshold (g0) would leave p2 with g1 at IoU 6/14 < .5
    # -> AP 1/2.
    preds = [np.array([[0, 10, 0.9], [4, 14, 0.8]])]
    gts = [np.array([[2, 12], [0, 10]])]
    assert m.average_precision(preds, gts, [0.5]).tolist() == [[1.0]]


def test_only_first_ten_submitted_windows_count():
    # Ten misses, then the perfect window as the 11th (with the highest score).
    misses = [[100 + 20 * i, 110 + 20 * i, 0.5] for i in range(10)]
    preds = {"q": np.array(misses + [[0, 10, 0.99]])}
    gts = {"q": np.array([[0, 10]])}
    assert m.moment_metrics(preds, gts)["mAP"] == 0.0
    # Without the cut it ranks first by score: TP then 10 FP -> AP 1 at every threshold.
    assert m.moment_metrics(preds, gts, max_pred_windows=None)["mAP"] == pytest.approx(100.0)


def test_query_without_predictions_scores_zero():
    preds = {"hit": np.array([[0, 10, 1.0]]), "none": np.zeros((0, 3))}
    gts = {"hit": np.array([[0, 10]]), "none": np.array([[0, 10]])}
    got = m.moment_metrics(preds, gts)
    assert got == pytest.approx({"R1@0.5": 50.0, "R1@0.7": 50.0, "mAP@0.5": 50.0, "mAP@0.75": 50.0, "mAP": 50.0})


def test_average_precision_without_ground_truth_is_zero():
    assert m.average_precision([np.array([[0, 10, 1.0]])], [np.zeros((0, 2))], [0.5]).tolist() == [[0.0]]


def test_moment_metrics_require_the_same_queries():
    with pytest.raises(ValueError, match="different queries"):
        m.moment_metrics({"a": np.array([[0, 1, 1.0]])}, {"a": np.array([[0, 1]]), "b": np.array([[0, 1]])})


def test_reversed_window_is_an_error():
    with pytest.raises(ValueError, match="ends before it starts"):
        m.moment_metrics({"a": np.array([[5, 1, 1.0]])}, {"a": np.array([[0, 1]])})


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _write_example(tmp_path):
    pred = _write_jsonl(
        tmp_path / "pred.jsonl", [{"qid": q, "pred_relevant_windows": w} for q, w in PREDS.items()]
    )
    gt = _write_jsonl(
        tmp_path / "gt.jsonl", [{"qid": q, "relevant_windows": w, "query": "x"} for q, w in GTS.items()]
    )
    return pred, gt


def test_readers_round_trip_and_keep_submitted_order(tmp_path):
    pred, gt = _write_example(tmp_path)
    preds, gts = m.read_predictions(pred), m.read_ground_truth(gt)
    assert list(preds) == ["a", "b", "c"]
    assert preds["b"].tolist() == PREDS["b"]
    assert gts["c"].shape == (3, 2)
    assert m.moment_metrics(preds, gts) == pytest.approx(EXPECTED)


def test_reader_skips_blank_lines_and_accepts_int_qids(tmp_path):
    path = tmp_path / "gt.jsonl"
    path.write_text('{"qid": 7, "relevant_windows": [[0, 2]]}\n\n   \n')
    assert list(m.read_ground_truth(path)) == [7]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"pred_relevant_windows": []}', 'missing "qid"'),
        ('{"qid": 2}', 'missing "pred_relevant_windows"'),
        ('{"qid": [1], "pred_relevant_windows": []}', '"qid" must be'),
        ('{"qid": 2, "pred_relevant_windows": {}}', "must be a list"),
        ('{"qid": 2, "pred_relevant_windows": [[0, 1]]}', r"\[0\] must be \[start, end, score\]"),
        ('{"qid": 2, "pred_relevant_windows": [[0, "1", 0.5]]}', "numbers"),
        ('{"qid": 2, "pred_relevant_windows": [[0, true, 0.5]]}', "numbers"),
        ('{"qid": 2, "pred_relevant_windows": [[0, NaN, 0.5]]}', "non-finite"),
        ('{"qid": 2, "pred_relevant_windows": [[0, 1, 1], [4, 3, 0.5]]}', r"\[1\] ends before it starts"),
        ('{"qid": 1, "pred_relevant_windows": []}', "duplicate qid 1"),
    ],
)
def test_prediction_reader_errors_name_file_and_line(tmp_path, line, problem):
    path = tmp_path / "pred.jsonl"
    path.write_text('{"qid": 1, "pred_relevant_windows": [[0, 1, 0.5]]}\n' + line + "\n")
    with pytest.raises(ValueError, match=problem) as err:
        m.read_predictions(path)
    assert str(err.value).startswith(f"{path}, line 2: ")


def test_ground_truth_reader_errors(tmp_path):
    path = tmp_path / "gt.jsonl"
    path.write_text('{"qid": 1, "relevant_windows": []}\n')
    with pytest.raises(ValueError, match="line 1: .*empty"):
        m.read_ground_truth(path)
    path.write_text('{"qid": 1, "relevant_windows": [[0, 1, 0.5]]}\n')
    with pytest.raises(ValueError, match=r"must be \[start, end\]"):
        m.read_ground_truth(path)
    path.write_text("\n")
    with pytest.raises(ValueError, match="no records"):
        m.read_ground_truth(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not UTF-8"):
        m.read_ground_truth(path)


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------

runner = CliRunner()


def _single_json_object(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, stdout
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


def test_eval_moments_json(tmp_path):
    pred, gt = _write_example(tmp_path)
    result = runner.invoke(app, ["eval-moments", str(pred), str(gt), "--json"])
    assert result.exit_code == 0, result.output
    # the hand-worked values, two decimals as the reference prints them
    assert _single_json_object(result.stdout) == {
        "R1@0.5": 100.0,
        "R1@0.7": 66.67,
        "mAP@0.5": 85.56,
        "mAP@0.75": 52.22,
        "mAP": 58.89,
        "n_queries": 3,
    }


def test_eval_moments_table(tmp_path):
    pred, gt = _write_example(tmp_path)
    result = runner.invoke(app, ["eval-moments", str(pred), str(gt)])
    assert result.exit_code == 0, result.output
    for text in ("R1@0.5", "R1@0.7", "mAP@0.5", "mAP@0.75", "85.56", "52.22", "58.89", "66.67"):
        assert text in result.stdout


def test_eval_moments_bad_line_exits_2_without_traceback(tmp_path):
    pred, gt = _write_example(tmp_path)
    pred.write_text(pred.read_text() + "{oops\n")
    result = runner.invoke(app, ["eval-moments", str(pred), str(gt), "--json"])
    assert result.exit_code == 2
    assert "line 4" in result.stderr and "invalid JSON" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_eval_moments_missing_file_exits_2(tmp_path):
    _, gt = _write_example(tmp_path)
    result = runner.invoke(app, ["eval-moments", str(tmp_path / "nope.jsonl"), str(gt)])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_eval_moments_mismatched_queries_exit_2(tmp_path):
    pred, gt = _write_example(tmp_path)
    gt.write_text(gt.read_text() + '{"qid": "d", "relevant_windows": [[0, 1]]}\n')
    result = runner.invoke(app, ["eval-moments", str(pred), str(gt)])
    assert result.exit_code == 2
    assert "different queries" in result.stderr


def test_eval_retrieval_json_and_table(tmp_path):
    path = tmp_path / "sim.npy"
    np.save(path, np.array([[0.9, 0.9, 0.1], [0.5, 0.2, 0.8], [0.3, 0.3, 0.3]]))
    result = runner.invoke(app, ["eval-retrieval", str(path), "--json"])
    assert result.exit_code == 0, result.output
    # ranks [0, 2, 0] (see test_retrieval_metrics_with_ties)
    assert _single_json_object(result.stdout) == {
        "R@1": 66.67,
        "R@5": 100.0,
        "R@10": 100.0,
        "MdR": 1.0,
        "MnR": 1.67,
        "n_queries": 3,
    }
    table = runner.invoke(app, ["eval-retrieval", str(path)])
    assert table.exit_code == 0 and "66.67" in table.stdout and "MnR" in table.stdout


def _save_npz(path, **arrays):
    with open(path, "wb") as f:  # a file object, so numpy keeps the misleading .npy name
        np.savez(f, **arrays)


@pytest.mark.parametrize(
    "write, problem",
    [
        (lambda p: np.save(p, np.zeros(4)), "2-D"),
        (lambda p: np.save(p, np.zeros((3, 2))), "at least as many columns"),
        (lambda p: np.save(p, np.array([[np.nan]])), "NaN"),
        (lambda p: np.save(p, np.array([["a"]])), "real numbers"),
        (lambda p: np.save(p, np.array([[{}]], dtype=object)), "not a readable .npy"),
        (lambda p: p.write_bytes(b"not an array"), "not a readable .npy"),
        (lambda p: _save_npz(p, x=np.eye(2)), ".npz archive"),
    ],
)
def test_eval_retrieval_bad_matrix_exits_2(tmp_path, write, problem):
    path = tmp_path / "sim.npy"
    write(path)
    result = runner.invoke(app, ["eval-retrieval", str(path), "--json"])
    assert result.exit_code == 2, result.output
    assert problem in result.stderr
    assert "Traceback" not in result.output
