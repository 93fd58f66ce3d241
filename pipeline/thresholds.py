"""A multi-label task's thresholds: tuned for the competition's metric and chosen cross-fitted.

Three ways to turn per-label probabilities into labels compete: 0.5 for every label, one tuned
threshold for all, and one per label (coordinate ascent from the global one). Each is scored
cross-fitted on the OOF: each fold's rows at the thresholds fitted on the other folds' rows. The
best wins (ties: the simpler way), and the submission uses its thresholds fitted on every row.
An image whose labels all fall below their thresholds gets the one nearest its threshold, unless
the competition allows an empty set (data.empty_labels). Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import better, score

GRID = np.linspace(0.05, 0.95, 19)
ORDER = GRID[np.argsort(np.abs(GRID - 0.5), kind="stable")]  # ties go to the threshold nearest 0.5
# the metrics that read labels (at 0.5); the others (log-loss, AUC) read the probabilities, so the
# labels a submission writes are tuned for the mean F1 per image, Kaggle's usual multi-label score
LABEL_METRICS = ("accuracy", "f1_macro", "f1_samples", "f2_samples")
WAYS = ("0.5", "global", "per label")
# per label rescores every row 19 times a label: its cost grows with labels squared, so it is tried
# only while labels^2 x rows stays under this (Planet's 17 labels x 40k rows: yes; iMet's 1,103: no)
PER_LABEL_MAX = 5e7


def labels_at(probs: np.ndarray, thresholds, empty_allowed: bool) -> np.ndarray:
    """0/1 labels: those at or above their threshold; with none, the label nearest its threshold
    unless an empty set is allowed."""
    probs = np.asarray(probs, dtype=float)
    hits = probs >= np.asarray(thresholds)
    if not empty_allowed:
        none = np.flatnonzero(~hits.any(1))
        hits[none, np.argmax(probs[none] - np.asarray(thresholds), axis=1)] = True
    return hits.astype(float)


def tuned_for(metric: str) -> str:
    return metric if metric in LABEL_METRICS else "f1_samples"


def _score(metric: str, y, probs, thresholds, empty_allowed: bool) -> float:
    return score(metric, y, labels_at(probs, thresholds, empty_allowed))


def fit(way: str, y: np.ndarray, probs: np.ndarray, metric: str, empty_allowed: bool) -> np.ndarray:
    """Thresholds (one per label) fitted on these rows for `metric`, in one of WAYS."""
    k = probs.shape[1]
    t = np.full(k, 0.5)
    if way == "0.5":
        return t
    best = None
    for g in ORDER:  # one threshold for every label
        s = _score(metric, y, probs, np.full(k, g), empty_allowed)
        if best is None or better(metric, s, best):
            best, t = s, np.full(k, g)
    if way == "global":
        return t
    for j in range(k):  # then each label in turn, the others held
        for g in ORDER:
            trial = t.copy()
            trial[j] = g
            s = _score(metric, y, probs, trial, empty_allowed)
            if better(metric, s, best):
                best, t = s, trial
    return t


@dataclass(frozen=True)
class Choice:
    way: str  # one of WAYS
    thresholds: np.ndarray  # fitted on every row: what the submission uses
    metric: str  # what they were tuned for
    cross_fitted: dict  # way -> the metric on the OOF, each fold's rows at the other folds' fit
    in_sample: float  # the chosen way's fit on every row, scored on those rows (flatters)
    empty_allowed: bool  # whether an image may get no label

    def describe(self, classes: list[str]) -> str:
        ways = ", ".join(f"{w} {s:.4f}" for w, s in self.cross_fitted.items())
        if "per label" not in self.cross_fitted:
            ways += f" (per label not tried: {len(self.thresholds)} labels)"
        return (
            f"multi-label thresholds for {self.metric}, cross-fitted CV by way: {ways}; kept: {self.way} "
            f"({', '.join(f'{c} {t:.2f}' for c, t in zip(classes, self.thresholds))}); "
            f"in-sample {self.in_sample:.4f}; "
            + ("an image may get no label" if self.empty_allowed else "every image gets a label")
        )


def choose(y: np.ndarray, probs: np.ndarray, folds: np.ndarray, metric: str, empty_allowed: bool) -> Choice:
    """The way with the best cross-fitted score (ties: the earlier in WAYS), fitted on every row;
    per label only where it is affordable (PER_LABEL_MAX)."""
    metric, probs, y = tuned_for(metric), np.asarray(probs, dtype=float), np.asarray(y)
    scores = {}
    ways = WAYS if probs.shape[1] ** 2 * len(probs) <= PER_LABEL_MAX else WAYS[:2]
    for way in ways:
        out = np.zeros_like(probs)
        for k in np.unique(folds):
            held = folds == k
            t = fit(way, y[~held], probs[~held], metric, empty_allowed)
            out[held] = labels_at(probs[held], t, empty_allowed)
        scores[way] = score(metric, y, out)
    way = ways[0]
    for w in ways[1:]:
        if better(metric, scores[w], scores[way]):
            way = w
    t = fit(way, y, probs, metric, empty_allowed)
    return Choice(way, t, metric, scores, _score(metric, y, probs, t, empty_allowed), empty_allowed)
