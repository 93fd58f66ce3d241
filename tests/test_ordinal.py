"""An ordinal task's cut-points (pipeline/ordinal.py)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import ordinal
from pipeline.metrics import qwk

GRADES = np.array([0.0, 1.0, 2.0, 3.0])


def skewed(n: int = 400, seed: int = 0):
    """Predictions that run high by 0.4 on every grade: rounding overgrades; cut-points can fix it."""
    rng = np.random.default_rng(seed)
    y = rng.choice(GRADES, n, p=[0.5, 0.2, 0.1, 0.2])
    pred = y + 0.4 + rng.normal(0, 0.25, n)
    return y, pred, np.arange(n) % 5


def test_cut_gives_each_value_its_grade():
    cuts = [0.5, 1.5, 2.5]
    assert ordinal.cut([-3, 0.49, 0.5, 1.2, 2.6, 9], cuts, GRADES).tolist() == [0, 0, 1, 1, 3, 3]
    assert ordinal.midpoints([0, 1 / 3, 1]).tolist() == pytest.approx([1 / 6, 2 / 3])


@pytest.mark.parametrize("seed", range(4))
def test_fitted_cut_points_never_lower_the_kappa_against_rounding(seed):
    y, pred, _ = skewed(seed=seed)
    rounded = qwk(y, ordinal.cut(pred, ordinal.midpoints(GRADES), GRADES), GRADES)
    cuts = ordinal.fit_cuts(y, pred, GRADES, "qwk")
    assert qwk(y, ordinal.cut(pred, cuts, GRADES), GRADES) >= rounded
    assert list(cuts) == sorted(cuts)


def test_the_fit_moves_the_cut_points_up_when_predictions_run_high():
    y, pred, folds = skewed()
    graded, report = ordinal.fit(y, pred, folds, GRADES, "qwk")
    assert report["applied"] and report["oof_cut_points"] > report["oof_rounded"]
    assert all(c > m for c, m in zip(report["cuts"], report["midpoints"]))
    assert qwk(y, graded, GRADES) == pytest.approx(report["oof_cut_points"])


def test_the_reported_kappa_is_cross_fitted(monkeypatch):
    """Each fold's rows are graded by cut-points fitted without them."""
    y, pred, folds = skewed()
    seen = []
    real = ordinal.fit_cuts
    monkeypatch.setattr(ordinal, "fit_cuts", lambda yy, pp, g, m: seen.append(len(yy)) or real(yy, pp, g, m))
    graded, per_fold = ordinal.cross_fitted(y, pred, folds, GRADES, "qwk")
    assert seen == [int((folds != k).sum()) for k in range(5)]
    for k in range(5):
        rows = folds == k
        assert np.array_equal(graded[rows], ordinal.cut(pred[rows], real(y[~rows], pred[~rows], GRADES, "qwk"), GRADES))
        assert per_fold[k] == pytest.approx(list(real(y[~rows], pred[~rows], GRADES, "qwk")))


def test_cut_points_that_do_not_beat_rounding_out_of_fold_are_not_applied():
    y = np.repeat(GRADES, 10)
    pred = y.copy()  # perfect already: no cut-point does better than the midpoints
    graded, report = ordinal.fit(y, pred, np.arange(40) % 4, GRADES, "qwk")
    assert not report["applied"] and report["cuts"] == report["midpoints"]
    assert np.array_equal(graded, y)
