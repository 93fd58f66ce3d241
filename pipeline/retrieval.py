"""A retrieval task's predictions (data.task retrieval): each query image's similarity to each
individual (the best cosine between its embedding and that individual's gallery images), its k
guesses, best first, with data.new_individual put where the similarity falls below a threshold,
and that threshold tuned on the OOF for MAP@k and chosen cross-fitted, as thresholds.py chooses a
multi-label task's.

A similarity table has a column per individual, like a probability table, so infer writes it to
the same files (oof.csv, test.csv) and ensemble averages members' tables as it averages
probabilities. An individual with no image in a query's gallery (an OOF row's fold trained without
it) holds ABSENT: for that row it is a "new individual". The brute-force product of unit vectors is
what faiss's exact index computes; at a few thousand images it is a matrix product in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .metrics import average_precision, top_k

ABSENT = -2.0  # below any cosine: the individual has no gallery image for this query
NEW = -1  # the guess "new individual" among class indices
CHUNK = 4096  # query rows per matrix product


def similarities(queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(Q, n_classes): each query's best cosine with each individual's gallery images (unit rows
    in, class indices `labels` per gallery row), ABSENT where the gallery has none of it."""
    g = torch.from_numpy(np.array(gallery, dtype=np.float32))
    idx = torch.from_numpy(np.array(labels, dtype=np.int64))
    out = []
    for start in range(0, len(queries), CHUNK):
        q = torch.from_numpy(np.array(queries[start : start + CHUNK], dtype=np.float32))
        sims = q @ g.T
        best = torch.full((len(q), n_classes), ABSENT)
        best.scatter_reduce_(1, idx.expand(len(q), -1), sims, reduce="amax", include_self=True)
        out.append(best.numpy())
    return np.concatenate(out) if out else np.zeros((0, n_classes), np.float32)


def unit_mean(views: np.ndarray) -> np.ndarray:
    """(views, N, D) unit embeddings to (N, D): averaged over the views, then to unit length."""
    e = np.asarray(views, dtype=np.float64).mean(0)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def truth(y: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The right answer per row: its individual, or NEW where its gallery holds none of its images."""
    y = np.asarray(y)
    seen = np.take_along_axis(np.asarray(table), y[:, None], 1)[:, 0] > ABSENT
    return np.where(seen, y, NEW)


def decode(table: np.ndarray, k: int, threshold: float | None) -> np.ndarray:
    """(N, k) guesses, best first: the k most similar individuals, with NEW put before the first
    whose similarity is below `threshold` (None: never; -inf in effect). An individual ABSENT
    from the gallery is never guessed; NEW fills what is left."""
    table = np.asarray(table, dtype=float)
    top = top_k(table, k)
    sims = np.take_along_axis(table, top, 1)
    top = np.where(sims > ABSENT, top, NEW)
    if threshold is None:
        return top
    place = (sims >= threshold).sum(1)  # similarities fall along the row: NEW goes after those above
    out = np.full((len(table), k), NEW)
    cols = np.arange(k)
    before = cols[None, :] < place[:, None]
    out[before] = top[before]
    after = cols[None, :] > place[:, None]
    shifted = np.concatenate([top[:, :1], top[:, :-1]], 1)  # column j takes top's j-1 after NEW
    out[after] = shifted[after]
    return out


def score(y_truth: np.ndarray, table: np.ndarray, k: int, threshold: float | None) -> float:
    """MAP@k of the guesses decode makes at `threshold` against `y_truth` (truth's: NEW for unseen)."""
    return float(average_precision(y_truth, decode(table, k, threshold)).mean()) if len(table) else 0.0


def candidates(table: np.ndarray, n: int = 200) -> np.ndarray:
    """Thresholds worth trying: quantiles of the best similarity per row, and one above them all
    (NEW first everywhere)."""
    best = np.asarray(table, dtype=float).max(1)
    grid = np.unique(np.quantile(best, np.linspace(0, 1, n))) if len(best) else np.zeros(0)
    return np.concatenate([grid, [np.inf]])


def fit(y_truth: np.ndarray, table: np.ndarray, k: int) -> float:
    """The threshold of the highest MAP@k on these rows (the lowest such, of ties)."""
    grid = candidates(table)
    scores = [score(y_truth, table, k, t) for t in grid]
    return float(grid[int(np.argmax(scores))])


@dataclass(frozen=True)
class Choice:
    """The new-individual threshold fitted on every OOF row (what the test is decoded with) and
    the CV figures: without NEW, at the cross-fitted threshold (each fold's rows at the threshold
    the other folds' rows chose), in-sample, and NEW first everywhere (the constant answer)."""

    threshold: float | None
    k: int
    without_new: float
    cross_fitted: float
    in_sample: float
    new_everywhere: float
    per_fold: dict  # fold<k>: MAP@k of its rows at the threshold the other folds chose

    def describe(self, token: str | None) -> str:
        if self.threshold is None:
            return f"MAP@{self.k} {self.without_new:.4f} (data.new_individual null: never answered)"
        return (
            f"'{token}' below similarity {self.threshold:.4f} (fitted on every OOF row): MAP@{self.k} cross-fitted "
            f"{self.cross_fitted:.4f} (in-sample {self.in_sample:.4f}; without '{token}' {self.without_new:.4f}; "
            f"'{token}' alone {self.new_everywhere:.4f})"
        )


def choose(y: np.ndarray, table: np.ndarray, folds: np.ndarray, k: int, new: bool) -> Choice:
    """The threshold for NEW fitted on the OOF table and its CV, cross-fitted over `folds` (`new`
    False: data.new_individual null, no threshold)."""
    t, table, folds = truth(y, table), np.asarray(table), np.asarray(folds)
    plain = score(t, table, k, None)
    const = float((t == NEW).mean())
    ap = average_precision(t, decode(table, k, None))
    for f in np.unique(folds) if new else []:
        rows = folds == f
        ap[rows] = average_precision(t[rows], decode(table[rows], k, fit(t[~rows], table[~rows], k)))
    per = {f"fold{f}": float(ap[folds == f].mean()) for f in np.unique(folds)}
    if not new:
        return Choice(None, k, plain, plain, plain, const, per)
    threshold = fit(t, table, k)
    return Choice(threshold, k, plain, float(ap.mean()), score(t, table, k, threshold), const, per)


def spell(guesses: np.ndarray, classes: list[str], token: str | None) -> list[str]:
    """Each row's guesses as the submission's cell: ids joined by spaces, NEW as `token` (once;
    left out when there is no token)."""
    names = np.asarray(list(classes) + [token or ""], dtype=object)
    rows = np.where(guesses == NEW, len(classes), guesses)
    return [" ".join(dict.fromkeys(n for n in names[row] if n)) for row in rows]
