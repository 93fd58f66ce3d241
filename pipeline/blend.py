"""Ways to combine several models' class probabilities (or numbers) into one prediction (pure functions).

Every method is applied by one rule to the out-of-fold predictions and to the test predictions,
so an ensemble's CV measures the very rule that makes its submission. A method that is fitted
(fit: its weights and the choice among the mean, the fit and each member alone) is cross-fitted
on the OOF: each fold's rows are blended by what was fitted on the other folds' rows, so no CV is
scored on the rows that chose it; the test prediction uses the fit on every row.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
from scipy.optimize import minimize
from scipy.stats import rankdata

from .config import Method
from .errors import PipelineError
from .metrics import better, higher_is_better, log_loss, rmse, score

METHODS = get_args(Method)  # the names an ensemble file may give (config.Ensemble.method)
MULTILABEL_METHODS = ("mean", "fit", "rank")  # votes pick one class per image
PROBABILITY_METHODS = ("mean", "fit")  # rank, vote and hierarchical output scores or one-hot rows
PROBABILITY_METRICS = ("log_loss",)  # metrics that read the probabilities themselves, not their order
NUMBER_METHODS = ("mean", "fit", "rank", "median")  # a number has no class to vote for
CLASS_METHODS = tuple(m for m in METHODS if m != "median")
RETRIEVAL_METHODS = ("mean", "median")  # similarities, not probabilities: no fit, rank or vote


def methods_for(metric: str, multilabel: bool, numeric: bool = False, retrieval: bool = False) -> tuple[str, ...]:
    """The methods whose output the metric can score: no ranks or votes for a log-loss, no votes
    for a number; a retrieval task's similarities averaged or their median."""
    if retrieval:
        return RETRIEVAL_METHODS
    if numeric:
        return NUMBER_METHODS
    methods = MULTILABEL_METHODS if multilabel else CLASS_METHODS
    return tuple(m for m in methods if metric not in PROBABILITY_METRICS or m in PROBABILITY_METHODS)


def allowed_methods(
    method: str, metric: str, multilabel: bool, numeric: bool = False, retrieval: bool = False
) -> tuple[str, ...]:
    """The methods the table shows; `method` must be one (no votes for a multi-label task or a
    number, and only probabilities for a log-loss; a retrieval task's similarities: mean, median)."""
    methods = methods_for(metric, multilabel, numeric, retrieval)
    if retrieval and method not in methods:
        raise PipelineError(f"ensemble method {method}: a retrieval task's similarities are combined by mean or median")
    if method not in methods:
        if metric in PROBABILITY_METRICS and method not in PROBABILITY_METHODS:
            task = f"metric {metric} needs probabilities; it"
        else:
            task = "a number" if numeric else "a multi-label task" if multilabel else "it"
        raise PipelineError(f"ensemble method {method}: {task} takes {', '.join(methods)}")
    return methods


def parse_weights(text: str, n_members: int) -> list[float]:
    """--weights 0.7,0.3: one non-negative weight per member, not all zero."""
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError:
        raise PipelineError(f"--weights {text}: expected numbers like 0.7,0.3") from None
    if len(weights) != n_members or min(weights) < 0 or sum(weights) <= 0:
        raise PipelineError(f"--weights: one non-negative weight per member ({n_members})")
    return weights


def weighted_mean(stack: np.ndarray, weights=None) -> np.ndarray:
    """(members, N, K) -> (N, K): the (weighted) mean of the members' probabilities."""
    stack = np.asarray(stack, dtype=float)
    w = np.ones(len(stack)) if weights is None else np.asarray(weights, dtype=float)
    return np.tensordot(w / w.sum(), stack, axes=1)


def rank_mean(stack: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Each member's probabilities of a class replaced by their rank among the rows (scaled to
    (0, 1]), averaged over members, rows renormalised to sum to 1. Only the order of a member's
    scores counts, which suits rank metrics (AUC) and members with different calibrations."""
    stack = np.asarray(stack, dtype=float)
    n = stack.shape[1]
    ranks = np.stack([np.apply_along_axis(rankdata, 0, m) / n for m in stack])
    out = ranks.mean(0)
    return out if multilabel else out / out.sum(1, keepdims=True)


def rank_numbers(stack: np.ndarray) -> np.ndarray:
    """(members, N, 1) numbers -> (N, 1): each member's predictions replaced by their ranks,
    averaged, and mapped back to the target's units through the quantiles of the members' mean
    (the same spread as the mean blend, in the order the ranks agree on)."""
    stack = np.asarray(stack, dtype=float)[:, :, 0]
    n = stack.shape[1]
    ranks = np.mean([(rankdata(m) - 1) / max(n - 1, 1) for m in stack], axis=0)  # in [0, 1]
    return np.quantile(weighted_mean(stack[:, :, None])[:, 0], ranks)[:, None]


def vote(labels: np.ndarray, n_classes: int, tiebreak: np.ndarray) -> np.ndarray:
    """Hard majority vote. labels: (voters, N) class indices. Returns (N, K) vote shares, nudged
    so that argmax gives the winner: the most votes; on a tie, the tied class with the highest
    `tiebreak` probability (the voters' mean); then the lower class index. The same every time."""
    labels = np.asarray(labels)
    counts = np.stack([(labels == k).sum(0) for k in range(n_classes)], axis=1).astype(float)
    # votes are integers, so a nudge below 1/2 never overturns a majority, only breaks ties
    score_ = counts + 0.25 * np.asarray(tiebreak, dtype=float)
    winner = score_.argmax(1)  # argmax takes the lowest index among exact ties
    shares = counts / len(labels)
    shares[np.arange(len(winner)), winner] += 1e-9  # keep argmax on the winner after any rounding
    return shares / shares.sum(1, keepdims=True)


def fit_weights(oofs: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """Member weights, non-negative and summing to 1, fitted on the OOF predictions by SLSQP to
    the log-loss of the weighted mean (the metric itself when it is log-loss; a smooth stand-in
    for accuracy-like metrics, which are flat almost everywhere). Guard: the plain mean, the fit
    and each member alone are scored on the metric, and the best wins (the mean on ties), so the
    result is never worse on the OOF than the plain mean or the best single member."""
    m = len(oofs)
    equal = np.full(m, 1.0 / m)
    if m == 1:
        return equal
    res = minimize(
        fit_objective(oofs, y, metric),
        equal,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
    )
    w = np.clip(res.x, 0.0, None)
    w = w / w.sum() if w.sum() > 0 else equal
    best, best_score = equal, score(metric, y, weighted_mean(oofs, equal))
    for cand in [w, *np.eye(m)]:  # the fit, then each member alone
        s = score(metric, y, weighted_mean(oofs, cand))
        if better(metric, s, best_score):
            best, best_score = cand, s
    return best


def cross_fitted_weights(oofs: np.ndarray, y: np.ndarray, folds: np.ndarray, metric: str) -> np.ndarray:
    """The OOF blended as `fit` blends it, each fold's rows by fit_weights on the other folds' rows."""
    out = np.empty(oofs.shape[1:], dtype=float)
    y = np.asarray(y)
    for k in np.unique(folds):
        held = folds == k
        out[held] = weighted_mean(oofs[:, held], fit_weights(oofs[:, ~held], y[~held], metric))
    return out


def fit_objective(oofs: np.ndarray, y: np.ndarray, metric: str):
    """What fit_weights minimises over the weights: the log-loss of the weighted mean of
    probabilities; for a number the metric itself (RMSE standing in for a kappa, which is flat
    almost everywhere)."""
    if oofs.shape[2] == 1 and np.ndim(y) == 1 and metric in ("rmse", "mae", "r2", "qwk"):
        if metric == "qwk":
            return lambda w: rmse(y, weighted_mean(oofs, np.abs(w) + 1e-12))
        sign = -1.0 if higher_is_better(metric) else 1.0
        return lambda w: sign * score(metric, y, weighted_mean(oofs, np.abs(w) + 1e-12))
    return lambda w: log_loss(y, np.clip(weighted_mean(oofs, np.abs(w) + 1e-12), 1e-15, 1))


def combine(
    method: str,
    oofs: np.ndarray,
    tests: np.ndarray,
    test_folds: list[np.ndarray],
    y: np.ndarray,
    metric: str,
    weights=None,
    folds: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(OOF, test, weights) of a method. oofs: (members, N, K); tests: (members, M, K), each
    member's fold mean; test_folds: per member (folds, M, K), its fold models one by one.
    fit: the weights fitted on every OOF row make the test prediction; the OOF is cross-fitted
    over `folds` (each row's fold; None: one fit on every row, scored in-sample).
    vote: every fold model of every member votes on a test image; on an OOF image each member's
    one model that did not train on it votes. hierarchical: each member's fold mean makes one
    label (its OOF label on OOF images), then the members vote."""
    k = oofs.shape[2]
    if method == "fit":
        w = fit_weights(oofs, y, metric)
        oof = weighted_mean(oofs, w) if folds is None else cross_fitted_weights(oofs, y, folds, metric)
        return oof, weighted_mean(tests, w), w
    if method == "mean":
        w = np.full(len(oofs), 1 / len(oofs)) if weights is None else np.asarray(weights) / np.sum(weights)
        return weighted_mean(oofs, w), weighted_mean(tests, w), w
    if method == "median":
        return np.median(oofs, axis=0), np.median(tests, axis=0), None
    if method == "rank" and k == 1 and np.issubdtype(np.asarray(y).dtype, np.floating):  # a number
        return rank_numbers(oofs), rank_numbers(tests), None
    if method == "rank":
        return rank_mean(oofs, y.ndim == 2), rank_mean(tests, y.ndim == 2), None
    if y.ndim == 2:
        raise ValueError(f"method {method}: voting needs one label per image")
    oof_vote = vote(oofs.argmax(2), k, weighted_mean(oofs))
    if method == "vote":
        voters = np.concatenate([f.argmax(2) for f in test_folds])
        return oof_vote, vote(voters, k, weighted_mean(tests)), None
    if method == "hierarchical":
        return oof_vote, vote(tests.argmax(2), k, weighted_mean(tests)), None
    raise ValueError(f"unknown method {method!r}")
