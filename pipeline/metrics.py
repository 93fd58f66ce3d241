"""Scores computed from class probabilities: the competition metrics a config can name.

y is class indices (N,), or for a multi-label task a 0/1 matrix (N, K); then probabilities are
per label, a label counts as predicted at 0.5, and scores average over labels."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score
from sklearn.metrics import log_loss as _log_loss


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
    return float(_log_loss(y, probs, labels=list(range(probs.shape[1]))))


def roc_auc(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary: the AUC of the second class's probability; more classes: macro one-vs-rest."""
    probs = np.asarray(probs, dtype=float)
    if _multilabel(y):
        return float(roc_auc_score(y, probs, average="macro"))
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    probs = probs / probs.sum(1, keepdims=True)
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))


def f1_macro(y: np.ndarray, probs: np.ndarray) -> float:
    if _multilabel(y):
        return float(f1_score(np.asarray(y) > 0.5, np.asarray(probs) >= 0.5, average="macro", zero_division=0))
    k = np.asarray(probs).shape[1]
    return float(f1_score(y, np.asarray(probs).argmax(1), average="macro", labels=list(range(k)), zero_division=0))


def qwk(y: np.ndarray, probs: np.ndarray) -> float:
    """Quadratic weighted kappa of the predicted class index (classes in their sorted order)."""
    return float(cohen_kappa_score(y, np.asarray(probs).argmax(1), weights="quadratic"))


# name: (function, higher is better)
METRICS = {
    "accuracy": (accuracy, True),
    "log_loss": (log_loss, False),
    "roc_auc": (roc_auc, True),
    "f1_macro": (f1_macro, True),
    "qwk": (qwk, True),
}


def score(metric: str, y: np.ndarray, probs: np.ndarray) -> float:
    return METRICS[metric][0](np.asarray(y), np.asarray(probs))


def better(metric: str, a: float, b: float) -> bool:
    """Whether score a beats score b under the metric."""
    return a > b if METRICS[metric][1] else a < b


def per_fold(metric: str, y: np.ndarray, probs: np.ndarray, folds: np.ndarray) -> dict:
    """The metric on each fold's rows and on all of them ('overall')."""
    out = {f"fold{k}": score(metric, y[folds == k], probs[folds == k]) for k in np.unique(folds)}
    return {**out, "overall": score(metric, y, probs)}


THRESHOLDS = np.linspace(0.05, 0.95, 19)


def tune_thresholds(y: np.ndarray, probs: np.ndarray, grid: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Multi-label: per label, the threshold on the grid with the best F1 on these rows (ties:
    the one nearest 0.5)."""
    y, probs = np.asarray(y) > 0.5, np.asarray(probs)
    order = grid[np.argsort(np.abs(grid - 0.5), kind="stable")]
    best = []
    for k in range(y.shape[1]):
        f1 = [f1_score(y[:, k], probs[:, k] >= t, zero_division=0) for t in order]
        best.append(order[int(np.argmax(f1))])
    return np.array(best)


def false_positive_rate(y: np.ndarray, probs: np.ndarray, negative: int) -> float:
    """The share of the negative class's images predicted as something else."""
    neg = np.asarray(y) == negative
    return float((np.asarray(probs)[neg].argmax(1) != negative).mean()) if neg.any() else float("nan")
