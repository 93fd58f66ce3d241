"""Scores computed from class probabilities, or from numbers: the competition metrics a config can name.

y is class indices (N,), or for a multi-label task a 0/1 matrix (N, K); then probabilities are
per label, a label counts as predicted at 0.5, and scores average over labels. For a number
(data.task regression or ordinal) y is the values (N,) and the prediction one column (N, 1); qwk
of a number scores the grades: each prediction goes to the nearest grade unless it is one already
(an ordinal task's cut-points, pipeline/ordinal.py, make the grades first)."""

from __future__ import annotations

from functools import partial

import numpy as np

# scikit-learn is imported by the metrics that use it, not with this module: every stage imports
# this one, and a training that scores accuracy would pay for scikit-learn's import on each start.


def _multilabel(y) -> bool:
    return np.ndim(y) == 2


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    """Multi-label: the share of (image, label) pairs right at 0.5."""
    if _multilabel(y):
        return float(((np.asarray(probs) >= 0.5) == (np.asarray(y) > 0.5)).mean())
    return float((np.asarray(probs).argmax(1) == np.asarray(y)).mean())


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    """Multi-label: binary cross-entropy averaged over images and labels."""
    if _multilabel(y):
        p = np.clip(np.asarray(probs, dtype=float), 1e-15, 1 - 1e-15)
        y = np.asarray(y, dtype=float)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    from sklearn.metrics import log_loss as _log_loss

    return float(_log_loss(y, probs, labels=list(range(probs.shape[1]))))


def roc_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary: the AUC of the second class's probability; more classes: macro one-vs-rest."""
    from sklearn.metrics import roc_auc_score

    probs = np.asarray(probs, dtype=float)
    if _multilabel(y):
        return float(roc_auc_score(y, probs, average="macro"))
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    probs = probs / probs.sum(1, keepdims=True)
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))


def f1_macro(y: np.ndarray, probs: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    if _multilabel(y):
        return float(f1_score(np.asarray(y) > 0.5, np.asarray(probs) >= 0.5, average="macro", zero_division=0))
    k = np.asarray(probs).shape[1]
    return float(f1_score(y, np.asarray(probs).argmax(1), average="macro", labels=list(range(k)), zero_division=0))


def fbeta_samples(y: np.ndarray, probs: np.ndarray, beta: float) -> float:
    """Kaggle's mean F-beta per image (Planet's F2, iMet's F1): each image's labels at 0.5 against
    its true labels, averaged over images; an image with neither true nor predicted labels scores 1."""
    truth, pred = np.asarray(y) > 0.5, np.asarray(probs) >= 0.5
    tp = (truth & pred).sum(1)
    b2 = beta * beta
    denom = (1 + b2) * tp + b2 * (truth & ~pred).sum(1) + (~truth & pred).sum(1)
    return float(np.where(denom > 0, (1 + b2) * tp / np.maximum(denom, 1), 1.0).mean())


def f1_samples(y: np.ndarray, probs: np.ndarray) -> float:
    return fbeta_samples(y, probs, 1.0)


def f2_samples(y: np.ndarray, probs: np.ndarray) -> float:
    return fbeta_samples(y, probs, 2.0)


def average_precision(truth: np.ndarray, guesses: np.ndarray) -> np.ndarray:
    """Each row's 1/rank of its first right guess (0 when none is right): `guesses` (N, k) of
    class indices, best first; a truth of -1 (an individual never seen) is right where a guess is -1."""
    hit = np.asarray(guesses) == np.asarray(truth)[:, None]
    first = hit.argmax(1)
    return np.where(hit.any(1), 1.0 / (first + 1), 0.0)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The k highest-scoring columns of each row, best first (a tie: the lower column first)."""
    scores = np.asarray(scores, dtype=float)
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(k), (len(scores), 1))
    order = np.lexsort((part, -np.take_along_axis(scores, part, 1)), axis=1)
    return np.take_along_axis(part, order, 1)


def map_at_k(y: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Kaggle's MAP@k of the k highest-scoring classes per image (no "new individual" guess: a
    retrieval task's with one is retrieval.decode's)."""
    return float(average_precision(np.asarray(y), top_k(scores, k)).mean())


def _values(pred) -> np.ndarray:
    return np.asarray(pred, dtype=float).reshape(len(pred), -1)[:, 0]


def nearest(values: np.ndarray, grades: np.ndarray) -> np.ndarray:
    """Each value's nearest grade (grades sorted); a tie goes to the lower grade."""
    grades = np.asarray(grades, dtype=float)
    i = np.clip(np.searchsorted(grades, values), 1, len(grades) - 1)
    return np.where(values - grades[i - 1] <= grades[i] - values, grades[i - 1], grades[i])


def qwk(y: np.ndarray, probs: np.ndarray, grades=None) -> float:
    """Quadratic weighted kappa of the predicted class index (classes in their sorted order); of a
    number, of its grade (`grades`: every grade in order; default: those in y), the kappa's
    weights counting grades apart, as class indices count them."""
    from sklearn.metrics import cohen_kappa_score

    probs = np.asarray(probs)
    if probs.ndim == 2 and probs.shape[1] > 1:
        return float(cohen_kappa_score(y, probs.argmax(1), weights="quadratic"))
    grades = np.unique(y) if grades is None else np.asarray(grades, dtype=float)
    v = _values(probs)
    v = v if np.isin(v, grades).all() else nearest(v, grades)
    index = {g: i for i, g in enumerate(grades)}
    true, pred = [index[g] for g in np.asarray(y, dtype=float)], [index[g] for g in v]
    return float(cohen_kappa_score(true, pred, weights="quadratic", labels=list(range(len(grades)))))


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((_values(pred) - np.asarray(y, dtype=float)) ** 2)))


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(_values(pred) - np.asarray(y, dtype=float))))


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """1 - residual / total sum of squares (0: the mean of y; negative: worse than it)."""
    y = np.asarray(y, dtype=float)
    total = np.sum((y - y.mean()) ** 2)
    return float(1 - np.sum((_values(pred) - y) ** 2) / total) if total > 0 else 0.0


# name: (function, higher is better)
METRICS = {
    "accuracy": (accuracy, True),
    "log_loss": (log_loss, False),
    "roc_auc": (roc_auc, True),
    "f1_macro": (f1_macro, True),
    "f1_samples": (f1_samples, True),
    "f2_samples": (f2_samples, True),
    "qwk": (qwk, True),
    "rmse": (rmse, False),
    "mae": (mae, False),
    "r2": (r2, True),
    **{f"map@{k}": (partial(map_at_k, k=k), True) for k in range(1, 11)},
}


def k_of(metric: str) -> int:
    """The guesses per image a map@k metric scores."""
    return int(metric.partition("@")[2])


def score(metric: str, y: np.ndarray, probs: np.ndarray, grades=None) -> float:
    """`grades`: an ordinal task's grades (qwk of a number)."""
    if grades is not None and metric == "qwk":
        return qwk(np.asarray(y), np.asarray(probs), grades)
    return METRICS[metric][0](np.asarray(y), np.asarray(probs))


def higher_is_better(metric: str) -> bool:
    return METRICS[metric][1]


def better(metric: str, a: float, b: float) -> bool:
    """Whether score a beats score b under the metric."""
    return a > b if METRICS[metric][1] else a < b


def per_fold(metric: str, y: np.ndarray, probs: np.ndarray, folds: np.ndarray, grades=None) -> dict:
    """The metric on each fold's rows and on all of them ('overall')."""
    out = {f"fold{k}": score(metric, y[folds == k], probs[folds == k], grades) for k in np.unique(folds)}
    return {**out, "overall": score(metric, y, probs, grades)}


def false_positive_rate(y: np.ndarray, probs: np.ndarray, negative: int) -> float:
    """The share of the negative class's images predicted as something else."""
    neg = np.asarray(y) == negative
    return float((np.asarray(probs)[neg].argmax(1) != negative).mean()) if neg.any() else float("nan")
