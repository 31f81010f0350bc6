"""Each official metric against a value worked out by hand."""

import math

import pytest

from xtc.data.metrics import compute_metrics
from xtc.data.tasks import get_task

PRED = [1, 0, 1, 1]
GOLD = [1, 0, 0, 1]  # tp=2, tn=1, fp=1, fn=0


def test_accuracy():
    assert compute_metrics(get_task("RTE"), PRED, GOLD) == {"accuracy": 0.75, "score": 0.75}


def test_mrpc_f1_and_accuracy():
    m = compute_metrics(get_task("MRPC"), PRED, GOLD)
    # F1 = 2tp / (2tp + fp + fn) = 4 / 5
    assert m["f1"] == pytest.approx(0.8) and m["accuracy"] == 0.75
    assert m["score"] == pytest.approx((0.8 + 0.75) / 2)


def test_cola_matthews():
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = 2 / sqrt(3*2*2*1)
    m = compute_metrics(get_task("CoLA"), PRED, GOLD)
    assert m["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))


def test_stsb_pearson_spearman():
    # x = [1,2,3], y = [1,2,4]: cov = 3, var_x = 2, var_y = 42/9 -> r = 3 / sqrt(2 * 42/9)
    m = compute_metrics(get_task("STS-B"), [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert m["pearson"] == pytest.approx(3 / math.sqrt(2 * 42 / 9))
    assert m["spearman"] == pytest.approx(1.0)  # same order
    # reversed order of the last two: ranks [1,2,3] vs [1,3,2] -> rho = 1 - 6*2/(3*8) = 0.5
    assert compute_metrics(get_task("STS-B"), [1.0, 2.0, 3.0], [1.0, 4.0, 2.0])["spearman"] == pytest.approx(0.5)


def test_mnli_three_classes():
    assert compute_metrics(get_task("MNLI"), [0, 1, 2, 2], [0, 1, 2, 1])["accuracy"] == 0.75


def test_degenerate_predictions_are_named():
    from xtc.data.metrics import degenerate

    rte, stsb = get_task("RTE"), get_task("STS-B")
    assert degenerate(rte, [1, 1, 1, 1]) == "every prediction is 'not_entailment' (one class)"
    assert degenerate(rte, [1, 0, 1, 1]) is None
    assert degenerate(stsb, [2.5, 2.5, 2.5]) == "every prediction is 2.5 (no variance)"
    assert degenerate(stsb, [2.5, 2.6, 2.5]) is None
