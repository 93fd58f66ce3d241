"""Scores computed from class probabilities."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import log_loss as _log_loss


def accuracy(y: np.ndarray, probs: np.ndarray) -> float:
    return float((np.asarray(probs).argmax(1) == np.asarray(y)).mean())


def log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    return float(_log_loss(y, probs, labels=list(range(probs.shape[1]))))


def false_positive_rate(y: np.ndarray, probs: np.ndarray, negative: int) -> float:
    """The share of the negative class's images predicted as something else."""
    neg = np.asarray(y) == negative
    return float((np.asarray(probs)[neg].argmax(1) != negative).mean()) if neg.any() else float("nan")
