"""The submission file: its layout read off sample_submission.csv, built in that layout, and
checked against the sample before anything is written (what the competition would reject)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import PipelineError


def _numbers(values: pd.Series) -> np.ndarray | None:
    v = pd.to_numeric(values, errors="coerce")
    return None if v.isna().any() else v.to_numpy()


def layout(
    sample: pd.DataFrame, classes: list[str], id_col: str, negative: str | None, sample_path, multilabel: bool = False
) -> tuple[str, str | None]:
    """How sample_submission.csv wants the predictions: (kind, the class a binary column is for).
    labels: a class name per row; codes: the class's index (the sample holds integers that are not
    class names); probs: one probability column per class; binary: one column, the probability of
    a class (the column's name if it is a class, else the class that is not data.negative_class,
    else the second in sorted order), chosen when the sample holds fractions."""
    cols = list(sample.columns)
    if cols[0] != id_col:
        raise PipelineError(f"{sample_path}: first column is '{cols[0]}', expected the id column '{id_col}'")
    if len(cols) > 2 or (len(cols) == 2 and len(classes) == 2 and cols[1] in classes):
        if sorted(cols[1:]) == sorted(classes):
            return "probs", None
        if len(cols) == 2:
            return "binary", cols[1]
        raise PipelineError(
            f"{sample_path}: columns {cols}: expected '{id_col}' then one label column, "
            f"or one column per class {classes}"
        )
    if len(cols) != 2:
        raise PipelineError(f"{sample_path}: columns {cols}: no prediction column")
    if multilabel:
        return "multilabels", None
    nums = _numbers(sample[cols[1]])
    values = set(sample[cols[1]].astype(str))
    if nums is not None and len(classes) == 2 and (nums != np.round(nums)).any():
        positive = next((c for c in classes if c != negative), classes[1]) if negative else classes[1]
        return "binary", positive
    if nums is not None and not values <= set(classes):
        return "codes", None
    return "labels", None


def build_submission(
    sample: pd.DataFrame,
    test: pd.DataFrame,
    classes: list[str],
    id_col: str,
    sample_path,
    negative: str | None = None,
    thresholds=None,
    sep: str = " ",
) -> pd.DataFrame:
    """The submission in the sample's layout, ids in the sample's order. With thresholds (a
    multi-label task), a label column gets every label at or above its threshold, joined by sep."""
    probs = test.set_index(id_col)
    missing = [i for i in sample[id_col] if i not in probs.index]
    if missing:
        raise PipelineError(f"{sample_path}: no prediction for id '{missing[0]}' ({len(missing)} missing)")
    probs = probs.loc[sample[id_col], classes]
    kind, cls = layout(sample, classes, id_col, negative, sample_path, thresholds is not None)
    ids = sample[[id_col]].reset_index(drop=True)
    col = sample.columns[-1]
    if kind == "multilabels":
        hits = probs.to_numpy() >= np.asarray(thresholds)
        return ids.assign(**{col: [sep.join(c for c, h in zip(classes, row) if h) for row in hits]})
    if kind == "probs":
        return pd.concat([ids, probs[list(sample.columns[1:])].reset_index(drop=True)], axis=1)
    if kind == "binary":
        return ids.assign(**{col: probs[cls].to_numpy()})
    top = probs.to_numpy().argmax(1)
    return ids.assign(**{col: top if kind == "codes" else np.asarray(classes, dtype=object)[top]})


def check_submission(
    sub: pd.DataFrame,
    sample: pd.DataFrame,
    classes: list[str],
    id_col: str,
    sample_path,
    negative: str | None = None,
    sep: str | None = None,
) -> None:
    """Refuse a submission the competition would reject: columns, ids and order, NaN, values."""
    if list(sub.columns) != list(sample.columns):
        raise PipelineError(
            f"submission columns {list(sub.columns)} differ from {sample_path}'s {list(sample.columns)}"
        )
    if len(sub) != len(sample):
        raise PipelineError(f"submission has {len(sub)} rows, {sample_path} has {len(sample)}")
    differ = np.flatnonzero(sub[id_col].astype(str).to_numpy() != sample[id_col].astype(str).to_numpy())
    if len(differ):
        raise PipelineError(
            f"submission line {differ[0] + 2}: id '{sub[id_col].iloc[differ[0]]}', "
            f"{sample_path} has '{sample[id_col].iloc[differ[0]]}' there"
        )
    nan = sub.isna().to_numpy() if sep is None else sub[[id_col]].isna().to_numpy()  # no label is a fair answer
    if nan.any():
        row, col = np.argwhere(nan)[0]
        raise PipelineError(f"submission line {row + 2}: '{sub.columns[col]}' is empty (NaN)")
    kind, _ = layout(sample, classes, id_col, negative, sample_path, sep is not None)
    values = sub.drop(columns=[id_col])
    if kind == "multilabels":
        bad = ~values.map(lambda v: all(t in classes for t in str(v if v == v else "").split(sep) if t)).to_numpy()
    elif kind in ("probs", "binary"):
        bad = ~values.apply(pd.to_numeric, errors="coerce").apply(lambda c: c.between(0, 1)).to_numpy()
    elif kind == "codes":
        bad = ~values.isin(list(range(len(classes))) + [str(i) for i in range(len(classes))]).to_numpy()
    else:
        bad = ~values.isin(classes).to_numpy()
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PipelineError(
            f"submission line {row + 2}: '{values.columns[col]}' = "
            f"{str(values.iat[row, col])!r} is not a valid "
            f"{ {'binary': 'probability', 'multilabels': 'label list'}.get(kind, kind[:-1]) }"
        )
