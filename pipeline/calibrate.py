"""Temperature scaling: one temperature T fitted on out-of-fold predictions, applied as
softmax(log p / T) (per label sigmoid(logit p / T) for a multi-label task).

Label smoothing, mixup and averaged weights leave probabilities under-confident; a log-loss metric
pays for it. T > 0 never changes the predicted class (nor a label's side of 0.5), so accuracy and
F1 are untouched; a ranking metric (AUC) can move a little, as each fold's rows get their own
temperature. The OOF score after calibration is honest: each fold's rows are scaled by the
temperature fitted on the other folds' rows; the test rows by the one fitted on all (the fold
models' mean is scaled at the temperature their OOF asked for).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from .metrics import better, log_loss, score

EPS = 1e-7


def wanted(setting: str, metric: str) -> bool:
    """infer.calibrate / ensemble calibrate: on, off, or auto (on for a log-loss metric)."""
    return setting == "on" or (setting == "auto" and metric == "log_loss")


def scaled(probs: np.ndarray, temperature: float, multilabel: bool = False) -> np.ndarray:
    """The probabilities at temperature T (T = 1 leaves them as they are, up to clipping)."""
    p = np.clip(np.asarray(probs, dtype=float), EPS, 1 - EPS)
    if multilabel:
        return 1 / (1 + np.exp(-(np.log(p) - np.log1p(-p)) / temperature))
    z = np.log(p) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_temperature(y: np.ndarray, probs: np.ndarray, multilabel: bool = False) -> float:
    """The T in [0.05, 20] minimising the log-loss of `probs` against `y`; 1 unless it does
    better than 1, so calibration never raises the log-loss it was fitted on."""
    res = minimize_scalar(
        lambda log_t: log_loss(y, scaled(probs, np.exp(log_t), multilabel)),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    t = float(np.exp(res.x))
    return t if log_loss(y, scaled(probs, t, multilabel)) < log_loss(y, scaled(probs, 1.0, multilabel)) else 1.0


def cross_fitted(
    y: np.ndarray, probs: np.ndarray, folds: np.ndarray, multilabel: bool = False
) -> tuple[np.ndarray, dict]:
    """Each fold's OOF rows scaled by the temperature fitted on the other folds' rows."""
    out, temps = np.empty_like(np.asarray(probs, dtype=float)), {}
    for k in np.unique(folds):
        rest = folds != k
        temps[int(k)] = fit_temperature(y[rest], probs[rest], multilabel)
        out[~rest] = scaled(probs[~rest], temps[int(k)], multilabel)
    return out, temps


def calibrate(
    y: np.ndarray,
    oof: np.ndarray,
    test: np.ndarray,
    folds: np.ndarray,
    multilabel: bool = False,
    metric: str = "log_loss",
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(calibrated OOF, calibrated test, a report): the OOF cross-fitted, the test at the
    temperature fitted on the whole OOF; the report has both temperatures and the log-losses.
    Nothing is scaled (applied: false) unless the cross-fitted OOF log-loss is lower and the
    competition's `metric` on the OOF is no worse."""
    oof_cal, per_fold = cross_fitted(y, oof, folds, multilabel)
    t = fit_temperature(y, oof, multilabel)
    before, after = log_loss(y, oof), log_loss(y, oof_cal)
    report = {
        "temperature": t,
        "fold_temperatures": per_fold,
        "oof_log_loss_before": before,
        "oof_log_loss_after": after,
        "applied": after < before and not better(metric, score(metric, y, oof), score(metric, y, oof_cal)),
    }
    if not report["applied"]:
        return oof, test, report
    return oof_cal, scaled(test, t, multilabel), report


def describe(report: dict) -> str:
    done = "applied" if report["applied"] else "not applied: no better on the OOF"
    return (
        f"calibration: temperature {report['temperature']:.3f} (fitted on the whole OOF, for the test): "
        f"OOF log-loss {report['oof_log_loss_before']:.4f} -> {report['oof_log_loss_after']:.4f} "
        f"(each fold's rows at the temperature of the other folds); {done}"
    )
