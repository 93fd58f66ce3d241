"""pipeline/metrics.py: every metric on known values, per fold, and for multi-label tasks."""

import numpy as np
import pytest

from pipeline import metrics, thresholds
from pipeline.metrics import accuracy, log_loss


@pytest.mark.parametrize(
    "metric, y, p, want",
    [
        ("accuracy", [0, 1, 1], [[0.6, 0.4], [0.3, 0.7], [0.8, 0.2]], 2 / 3),
        ("log_loss", [0, 1], [[0.5, 0.5], [0.5, 0.5]], np.log(2)),
        ("roc_auc", [0, 0, 1, 1], [[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]], 0.75),
        ("f1_macro", [0, 0, 1, 1], [[1, 0], [1, 0], [1, 0], [0, 1]], (0.8 + 2 / 3) / 2),
        ("qwk", [0, 1, 2], [[1, 0, 0], [0, 1, 0], [0, 0, 1]], 1.0),
    ],
)
def test_metrics_on_known_values(metric, y, p, want):
    assert metrics.score(metric, np.array(y), np.array(p, dtype=float)) == pytest.approx(want)


def test_metric_per_fold_and_overall():
    y = np.array([0, 1, 0, 1])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.2, 0.8]])
    out = metrics.per_fold("accuracy", y, p, np.array([0, 0, 1, 1]))
    assert out == {"fold0": 1.0, "fold1": 0.5, "overall": 0.75}


def test_roc_auc_macro_for_three_classes():
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.eye(3)[y] * 0.7 + 0.1
    assert metrics.roc_auc(y, p) == pytest.approx(1.0)


def test_multilabel_metrics_and_thresholds():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    p = np.array([[0.9, 0.2], [0.3, 0.4], [0.6, 0.7], [0.1, 0.1]])
    assert accuracy(y, p) == pytest.approx(7 / 8)
    want = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert log_loss(y, p) == pytest.approx(want)
    t = thresholds.fit("per label", y, p, "f1_macro", empty_allowed=True)
    assert ((p >= t) == (y > 0.5)).all()  # thresholds that separate each label perfectly here


def test_false_positive_rate_counts_negatives_called_positive():
    y = np.array([0, 0, 0, 1])
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.8, 0.2], [0.1, 0.9]])
    assert metrics.false_positive_rate(y, p, negative=0) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "metric, want",
    [("rmse", np.sqrt(4 / 3)), ("mae", 2 / 3), ("r2", 1 - 4 / 2)],  # residuals 0, 0, 2; total sum of squares 2
)
def test_number_metrics_on_known_values(metric, want):
    assert metrics.score(metric, np.array([1.0, 2.0, 3.0]), np.array([[1.0], [2.0], [5.0]])) == pytest.approx(want)
    assert metrics.better(
        metric, metrics.score(metric, np.array([1.0, 2.0, 3.0]), np.array([[1.0], [2.0], [3.0]])), want
    )


def test_the_kappa_of_a_number_is_of_its_nearest_grade():
    y = np.array([0.0, 1.0, 2.0, 2.0])
    pred = np.array([[0.2], [1.4], [1.6], [2.9]])
    assert metrics.score("qwk", y, pred) == pytest.approx(1.0)  # grades of y: 2.9 is a 2
    # every grade given: 2.9 is a 3; by hand, 1 - (1/9) / (8/9) (quadratic weights over 4 grades)
    assert metrics.score("qwk", y, pred, grades=[0, 1, 2, 3]) == pytest.approx(0.875)
    assert metrics.nearest(np.array([0.5, 0.51, -4.0]), np.array([0.0, 1.0])).tolist() == [0.0, 1.0, 0.0]


def test_map_at_k_is_one_over_the_rank_of_the_first_right_guess():
    scores = np.array([[0.1, 0.9, 0.5, 0.3], [0.4, 0.3, 0.1, 0.0], [0.0, 0.1, 1.0, 0.5], [0.9, 0.1, 0.2, 0.3]])
    # right at rank 2, rank 1, rank 3, and beyond k
    y = np.array([2, 0, 1, 1])
    assert metrics.score("map@3", y, scores) == pytest.approx((1 / 2 + 1 + 1 / 3 + 0) / 4)
    assert metrics.score("map@1", y, scores) == pytest.approx(1 / 4)
    assert metrics.score("map@5", y, scores) == pytest.approx((1 / 2 + 1 + 1 / 3 + 1 / 4) / 4)
    assert metrics.higher_is_better("map@5") and metrics.k_of("map@5") == 5
    # a tie goes to the lower column; a truth of -1 (new) is right only where a guess is -1
    assert metrics.top_k(np.array([[0.5, 0.5, 0.1]]), 2).tolist() == [[0, 1]]
    assert metrics.average_precision(np.array([-1, -1]), np.array([[3, -1], [1, 2]])).tolist() == [0.5, 0.0]
