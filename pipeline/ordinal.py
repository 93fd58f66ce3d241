"""An ordinal task's cut-points: a regression's number to a grade (pure functions).

The model predicts the grade as a number; cut-points between consecutive grades turn it into one.
Plain rounding puts them at the midpoints. APTOS 2019's winners fitted them on the out-of-fold
predictions instead, to maximise the kappa: here Nelder-Mead from the midpoints, on the metric,
and kept only when better than the midpoints on the rows it was fitted on. The reported CV is
cross-fitted, as calibration is: each fold's rows are graded by the cut-points fitted on the
other folds' rows; the test is graded by those fitted on the whole OOF, and only when the
cross-fitted OOF beats rounding (else the midpoints grade it, and are what the CV reports).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from .metrics import better, higher_is_better, score


def midpoints(grades: np.ndarray) -> np.ndarray:
    g = np.asarray(grades, dtype=float)
    return (g[1:] + g[:-1]) / 2


def cut(values, cuts, grades) -> np.ndarray:
    """Each value's grade: grades[i] for values between cuts[i - 1] and cuts[i] (a value on a
    cut-point takes the higher grade)."""
    values = np.asarray(values, dtype=float).reshape(len(values), -1)[:, 0]
    return np.asarray(grades, dtype=float)[np.searchsorted(np.sort(np.asarray(cuts, dtype=float)), values, "right")]


def fit_cuts(y, pred, grades, metric: str) -> np.ndarray:
    """Cut-points maximising the metric of the graded predictions against y (Nelder-Mead from
    the midpoints, a first step of a quarter of the grades' smallest gap); the midpoints unless
    the fit beats them on these rows."""
    start = midpoints(grades)
    sign = -1.0 if higher_is_better(metric) else 1.0

    def loss(c):
        return sign * score(metric, y, cut(pred, c, grades), grades)

    step = 0.25 * float(np.min(np.diff(np.asarray(grades, dtype=float))))
    simplex = np.vstack([start] + [start + step * e for e in np.eye(len(start))])
    res = minimize(loss, start, method="Nelder-Mead", options={"initial_simplex": simplex, "maxiter": 400 * len(start)})
    fitted = np.sort(res.x)
    return fitted if loss(fitted) < loss(start) else start


def cross_fitted(y, pred, folds, grades, metric: str) -> tuple[np.ndarray, dict[int, list[float]]]:
    """Each fold's rows graded by the cut-points fitted on the other folds' rows."""
    y, folds = np.asarray(y, dtype=float), np.asarray(folds)
    out, per_fold = np.empty(len(y)), {}
    for k in np.unique(folds):
        rest = folds != k
        c = fit_cuts(y[rest], np.asarray(pred)[rest], grades, metric)
        per_fold[int(k)] = [float(x) for x in c]
        out[~rest] = cut(np.asarray(pred)[~rest], c, grades)
    return out, per_fold


def fit(y, pred, folds, grades, metric: str) -> tuple[np.ndarray, dict]:
    """(the OOF graded as the CV reports it, a report): the cut-points for the test (fitted on the
    whole OOF when the cross-fitted OOF beats rounding, else the midpoints), the folds' cut-points,
    and the OOF metric rounded and cross-fitted."""
    rounded = cut(pred, midpoints(grades), grades)
    crossed, per_fold = cross_fitted(y, pred, folds, grades, metric)
    s_round, s_cross = score(metric, y, rounded, grades), score(metric, y, crossed, grades)
    applied = better(metric, s_cross, s_round)
    report = {
        "grades": [float(g) for g in grades],
        "cuts": [float(c) for c in (fit_cuts(y, pred, grades, metric) if applied else midpoints(grades))],
        "midpoints": [float(c) for c in midpoints(grades)],
        "fold_cuts": per_fold,
        "metric": metric,
        "oof_rounded": s_round,
        "oof_cut_points": s_cross,
        "applied": bool(applied),
    }
    return (crossed if applied else rounded), report


def describe(report: dict) -> str:
    done = "applied" if report["applied"] else "not applied: no better than rounding on the OOF"
    return (
        f"cut-points {', '.join(f'{c:.3f}' for c in report['cuts'])} (midpoints "
        f"{', '.join(f'{c:.3f}' for c in report['midpoints'])}): OOF {report['metric']} rounded "
        f"{report['oof_rounded']:.4f}, cut-points {report['oof_cut_points']:.4f} (each fold's rows at the "
        f"cut-points of the other folds); {done}"
    )
