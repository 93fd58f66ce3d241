"""Classes and labels: the class list of a competition, names to indices, probability tables; for a
number (data.task regression or ordinal), the values, their grades and quantile bins."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import Data
from .errors import PipelineError


def split_labels(labels: pd.Series, sep: str) -> list[list[str]]:
    return [[t for t in str(v).split(sep) if t] for v in labels]


PREDICTION = "prediction"  # a number's one output column, in every prediction file


def class_list(labels: pd.Series, d: Data) -> list[str]:
    """The classes in sorted order (the column order of every probability table); for a
    multi-label task, every label that occurs; for a number, its one column, PREDICTION."""
    classes = (
        [PREDICTION]
        if d.numeric
        else sorted({t for r in split_labels(labels, d.label_sep) for t in r} if d.multilabel else labels.unique())
    )
    clash = {d.id_col, d.sample_id, d.label_col, "fold"} & set(classes)
    if clash and d.numeric:
        raise PipelineError(
            f"{d.train_csv}: column name '{PREDICTION}' is the prediction files' own column; rename it in the CSV"
        )
    if clash:
        raise PipelineError(
            f"{d.train_csv}: class name '{clash.pop()}' clashes with a column name of the prediction files"
        )
    return classes


def y_true(labels: pd.Series, classes: list[str], d: Data) -> np.ndarray:
    """What metrics compare predictions with: the numbers (a numeric task), else encode's."""
    return numbers(labels) if d.numeric else encode(labels, classes, d.sep)


def numbers(labels: pd.Series) -> np.ndarray:
    return pd.to_numeric(labels).to_numpy(dtype=float)


def check_numbers(df: pd.DataFrame, d: Data, path) -> np.ndarray:
    """label_col as finite numbers, the first that is not named by its line; an ordinal task's
    grades as well (numbers, so their order is the numbers')."""
    values = pd.to_numeric(df[d.label_col], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        what = "an ordered grade (a number)" if d.ordinal else "a number"
        raise PipelineError(
            f"{path}: line {df.index[bad[0]] + 2}: '{d.label_col}' = {df[d.label_col].iloc[bad[0]]!r} is not {what} "
            f"(data.task {d.task})"
        )
    if d.ordinal and len(np.unique(values)) < 2:
        raise PipelineError(f"{path}: '{d.label_col}' has one grade only; an ordinal task needs two or more")
    return values


def grades(labels: pd.Series) -> tuple[np.ndarray, list[str]]:
    """An ordinal task's grades in order: their values, and each as train.csv first spells it."""
    values = numbers(labels)
    order = np.unique(values)
    spelled = pd.Series(list(labels), dtype=str).groupby(values).first()
    return order, [spelled[v] for v in order]


N_BINS = 10  # a number is stratified (folds) and balanced (train.sampling) on up to this many bins


def bin_edges(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Edges of up to n_bins bins of about equal count (ties kept in one bin), so a number can be
    stratified and sampled as classes are; few distinct values: one bin each."""
    distinct = np.unique(np.asarray(values, dtype=float))
    if len(distinct) <= n_bins:
        return (distinct[1:] + distinct[:-1]) / 2
    return np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]))


def width_edges(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Edges of n_bins bins of equal width over the values' range (few distinct values: one bin
    each): what train.sampling balances, so the rare values of a long tail count as often as the
    common ones (equal-count quantile bins would leave nothing to balance)."""
    values = np.asarray(values, dtype=float)
    distinct = np.unique(values)
    if len(distinct) <= n_bins:
        return (distinct[1:] + distinct[:-1]) / 2
    return np.linspace(values.min(), values.max(), n_bins + 1)[1:-1]


def quantile_bins(values: np.ndarray, n_bins: int = N_BINS, edges: np.ndarray | None = None) -> np.ndarray:
    """Bin index per value, by bin_edges of the values themselves unless `edges` are given."""
    values = np.asarray(values, dtype=float)
    return np.searchsorted(bin_edges(values, n_bins) if edges is None else edges, values, side="right")


def encode(labels: pd.Series, classes: list[str], sep: str | None = None) -> np.ndarray:
    """Class names to indices in the order of `classes`; with sep (multi-label), to an (N, K)
    0/1 matrix."""
    if sep is not None:
        index = {c: i for i, c in enumerate(classes)}
        out = np.zeros((len(labels), len(classes)))
        for row, names in enumerate(split_labels(labels, sep)):
            out[row, [index[n] for n in names]] = 1.0
        return out
    return labels.map({c: i for i, c in enumerate(classes)}).to_numpy()


def prob_frame(ids, classes: list[str], probs: np.ndarray, id_col: str, **extra) -> pd.DataFrame:
    """A probability table: the id column, any extra columns, then one column per class."""
    df = pd.DataFrame({id_col: list(ids), **extra})
    return pd.concat([df, pd.DataFrame(probs, columns=classes)], axis=1)
