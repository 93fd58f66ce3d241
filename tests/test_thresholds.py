"""pipeline/thresholds.py: a multi-label task's thresholds, tuned for the metric and chosen cross-fitted."""

import numpy as np
import pytest

from pipeline import metrics, thresholds


def test_an_image_gets_the_label_nearest_its_threshold_unless_empty_sets_are_allowed():
    p = np.array([[0.2, 0.45, 0.1], [0.9, 0.1, 0.6]])
    t = np.array([0.5, 0.5, 0.3])
    assert thresholds.labels_at(p, t, empty_allowed=True).tolist() == [[0, 0, 0], [1, 0, 1]]
    assert thresholds.labels_at(p, t, empty_allowed=False).tolist() == [[0, 1, 0], [1, 0, 1]]


def test_kaggles_mean_f_beta_per_image():
    y = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 0]])
    p = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # tp 1, fp 1, fn 1; nothing; right
    assert metrics.f2_samples(y, p) == pytest.approx((5 / (5 + 4 + 1) + 1 + 1) / 3)
    assert metrics.f1_samples(y, p) == pytest.approx((2 / (2 + 1 + 1) + 1 + 1) / 3)
    from sklearn.metrics import fbeta_score

    assert metrics.f2_samples(y, p) == pytest.approx(fbeta_score(y, p, beta=2, average="samples", zero_division=1))


def _labels(n=400, seed=0):
    """Two labels: the first's probabilities run high (best cut near 0.8), the second's low (near 0.2)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (n, 2))
    noise = rng.normal(0, 0.05, (n, 2))
    p = np.clip(np.stack([0.65 + 0.3 * y[:, 0], 0.05 + 0.3 * y[:, 1]], 1) + noise, 0, 1)
    return y, p, np.arange(n) % 5


def test_per_label_thresholds_are_kept_when_they_win_cross_fitted():
    y, p, folds = _labels()
    choice = thresholds.choose(y, p, folds, "f1_macro", empty_allowed=True)
    assert choice.way == "per label" and choice.thresholds[0] > 0.7 and choice.thresholds[1] < 0.3
    assert choice.cross_fitted["per label"] > choice.cross_fitted["global"] > choice.cross_fitted["0.5"]
    assert choice.in_sample >= choice.cross_fitted["per label"]


def test_the_simpler_way_is_kept_when_the_labels_need_no_thresholds_of_their_own():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (300, 3))
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.05, y.shape), 0, 1)  # 0.5 separates every label
    choice = thresholds.choose(y, p, np.arange(300) % 5, "f1_samples", empty_allowed=True)
    assert choice.way == "0.5" and np.allclose(choice.thresholds, 0.5)


def test_thresholds_are_tuned_for_the_metric_f2_reaching_lower_than_f1():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (400, 4))
    p = np.clip(0.35 + 0.3 * y + rng.normal(0, 0.2, y.shape), 0, 1)  # overlapping: recall costs precision
    f1 = thresholds.fit("global", y, p, "f1_samples", empty_allowed=True)
    f2 = thresholds.fit("global", y, p, "f2_samples", empty_allowed=True)
    assert f2[0] < f1[0]
    # a metric that reads probabilities (log-loss) tunes the labels a submission writes for the mean F1
    assert thresholds.choose(y, p, np.arange(400) % 5, "log_loss", True).metric == "f1_samples"


def test_per_label_thresholds_are_not_tried_where_they_would_cost_labels_squared(monkeypatch):
    y, p, folds = _labels()
    monkeypatch.setattr(thresholds, "PER_LABEL_MAX", 100)
    choice = thresholds.choose(y, p, folds, "f1_macro", empty_allowed=True)
    assert set(choice.cross_fitted) == {"0.5", "global"}
    assert "per label not tried: 2 labels" in choice.describe(["a", "b"])
