"""Classes and labels: the class list of a competition, names to indices, probability tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import Data
from .errors import PipelineError


def split_labels(labels: pd.Series, sep: str) -> list[list[str]]:
    return [[t for t in str(v).split(sep) if t] for v in labels]


def class_list(labels: pd.Series, d: Data) -> list[str]:
    """The classes in sorted order (the column order of every probability table); for a
    multi-label task, every label that occurs."""
    classes = sorted({t for r in split_labels(labels, d.label_sep) for t in r} if d.multilabel else labels.unique())
    clash = {d.id_col, d.sample_id, d.label_col, "fold"} & set(classes)
    if clash:
        raise PipelineError(
            f"{d.train_csv}: class name '{clash.pop()}' clashes with a column name of the prediction files"
        )
    return classes


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
