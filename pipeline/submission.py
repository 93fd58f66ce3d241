"""The submission file: its layout read off sample_submission.csv, built in that layout, and
checked against the sample before anything is written (what the competition would reject)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .config import Data
from .errors import PipelineError
from .io import check_table, read_table
from .thresholds import labels_at


def _numbers(values: pd.Series) -> np.ndarray | None:
    v = pd.to_numeric(values, errors="coerce")
    return None if v.isna().any() else v.to_numpy()


def _integers(values) -> np.ndarray | None:
    """The values as integers ('3' and '3.0' are 3), or None when any is not a whole number."""
    v = _numbers(pd.Series(list(values), dtype=object))
    return None if v is None or not np.isfinite(v).all() or (v != np.round(v)).any() else v.astype(np.int64)


def code_order(classes: list[str]) -> list[str]:
    """The classes in the order a code counts: numeric when every class is an integer (the class
    list is sorted as text, which puts '10' before '2'), else the class list's own order."""
    ints = _integers(classes)
    return list(classes) if ints is None else [classes[i] for i in np.argsort(ints, kind="stable")]


def check_id_first(cols: list[str], id_col: str, sample_path) -> None:
    if cols[0] != id_col:
        raise PipelineError(
            f"{sample_path}: first column is '{cols[0]}', expected the id column '{id_col}' "
            "(set data.sample_id_col if the sample names it differently)"
        )


def read_sample(d: Data) -> pd.DataFrame:
    """sample_submission.csv as strings, its first column the id column (data.sample_id_col, else
    data.id_col) with unique ids: checked as it is read, so that infer refuses a sample the
    submission could not follow before it predicts anything."""
    path = d.path(d.sample_submission)
    sample = read_table(path, [])
    check_id_first(list(sample.columns), d.sample_id, path)
    return check_table(sample, path, [d.sample_id], d.sample_id)


def class_form(values: pd.Series, classes: list[str], col: str, sample_path) -> str:
    """How a one-column sample writes the class, read off its values (data.submission_classes:
    auto): labels if they are classes, or text, or numbers codes cannot be; codes if the classes
    are names and the values integers in 0..K-1. Integers in 0..K-1 that are not all classes,
    with integer classes (1..5 and a sample of 0s), could be codes or a placeholder: refused,
    since either guess writes a silently wrong submission half the time."""
    k, shown = len(classes), ", ".join(sorted(set(map(str, values)))[:3])
    if set(map(str, values)) <= set(classes) or _numbers(values) is None:
        return "labels"
    ints, class_ints = _integers(values), _integers(classes)
    if class_ints is not None and ints is not None and set(ints) <= set(class_ints):
        return "labels"  # '3.0' for the class '3'
    as_codes = ints is not None and ints.min() >= 0 and ints.max() < k
    if class_ints is None and as_codes:
        return "codes"
    if class_ints is not None and not as_codes:
        return "labels"  # not codes, so the numbers stand for the (integer) classes
    order = code_order(classes)
    what = (
        f"integers in 0..{k - 1} ({shown}) that are not all classes ({order[0]}..{order[-1]}): class codes "
        "or a placeholder?"
        if as_codes
        else f"numbers ({shown}) that are neither classes nor codes 0..{k - 1}:"
    )
    raise PipelineError(
        f"{sample_path}: '{col}' holds {what} set data.submission_classes to labels (the class as "
        "train.csv spells it) or codes (its index in sorted order)"
    )


def layout(
    sample: pd.DataFrame,
    classes: list[str],
    id_col: str,
    negative: str | None,
    sample_path,
    multilabel: bool = False,
    classes_as: str = "auto",
) -> tuple[str, str | None]:
    """How sample_submission.csv wants the predictions: (kind, the class a binary column is for).
    labels: a class name per row; codes: the class's index in code_order; probs: one probability
    column per class; binary: one column, the probability of a class (the column's name if it is
    a class, else the class that is not data.negative_class, else the second in sorted order),
    chosen when the sample holds fractions; multilabels: the labels at or above their thresholds.
    A one-column sample's class form is classes_as (data.submission_classes), or read off it
    (class_form) when that is auto."""
    cols = list(sample.columns)
    check_id_first(cols, id_col, sample_path)
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
    if classes_as != "auto":
        return classes_as, None
    nums = _numbers(sample[cols[1]])
    if nums is not None and len(classes) == 2 and (nums != np.round(nums)).any():
        positive = next((c for c in classes if c != negative), classes[1]) if negative else classes[1]
        return "binary", positive
    return class_form(sample[cols[1]], classes, cols[1], sample_path), None


def build_submission(
    sample: pd.DataFrame,
    test: pd.DataFrame,
    classes: list[str],
    id_col: str,
    sample_path,
    negative: str | None = None,
    thresholds=None,
    sep: str = " ",
    classes_as: str = "auto",
    empty_allowed: bool = True,
) -> pd.DataFrame:
    """The submission in the sample's layout, ids in the sample's order (id_col: the sample's id
    column, which test's must be named as). With thresholds (a multi-label task), a label column
    gets every label at or above its threshold, joined by sep; an image with none gets the label
    nearest its threshold unless empty_allowed (thresholds.labels_at). classes_as: layout's."""
    kind, cls = layout(sample, classes, id_col, negative, sample_path, thresholds is not None, classes_as)
    probs = test.set_index(id_col)
    missing = [i for i in sample[id_col] if i not in probs.index]
    if missing:
        raise PipelineError(f"{sample_path}: no prediction for id '{missing[0]}' ({len(missing)} missing)")
    probs = probs.loc[sample[id_col], classes]
    ids = sample[[id_col]].reset_index(drop=True)
    col = sample.columns[-1]
    if kind == "multilabels":
        hits = labels_at(probs.to_numpy(), thresholds, empty_allowed) > 0
        return ids.assign(**{col: [sep.join(c for c, h in zip(classes, row) if h) for row in hits]})
    if kind == "probs":
        return pd.concat([ids, probs[list(sample.columns[1:])].reset_index(drop=True)], axis=1)
    if kind == "binary":
        return ids.assign(**{col: probs[cls].to_numpy()})
    top = np.asarray(classes, dtype=object)[probs.to_numpy().argmax(1)]
    if kind == "codes":
        code = {c: i for i, c in enumerate(code_order(classes))}
        return ids.assign(**{col: [code[c] for c in top]})
    return ids.assign(**{col: top})


def check_submission(
    sub: pd.DataFrame,
    sample: pd.DataFrame,
    classes: list[str],
    id_col: str,
    sample_path,
    negative: str | None = None,
    sep: str | None = None,
    classes_as: str = "auto",
) -> None:
    """Refuse a submission the competition would reject: columns, ids and order, NaN, values (in
    the layout build_submission chose: the same classes_as)."""
    same_frame(sub, sample, id_col, sample_path)
    nan = sub.isna().to_numpy() if sep is None else sub[[id_col]].isna().to_numpy()  # no label is a fair answer
    if nan.any():
        row, col = np.argwhere(nan)[0]
        raise PipelineError(f"submission line {row + 2}: '{sub.columns[col]}' is empty (NaN)")
    kind, _ = layout(sample, classes, id_col, negative, sample_path, sep is not None, classes_as)
    values = sub.drop(columns=[id_col])
    if kind == "multilabels":
        bad = ~values.map(lambda v: all(t in classes for t in str(v if v == v else "").split(sep) if t)).to_numpy()
    elif kind in ("probs", "binary"):
        bad = ~values.apply(pd.to_numeric, errors="coerce").apply(lambda c: c.between(0, 1)).to_numpy()
    elif kind == "codes":
        bad = ~values.isin(list(range(len(classes))) + [str(i) for i in range(len(classes))]).to_numpy()
    else:
        bad = ~values.astype(str).isin(classes).to_numpy()  # integer classes read back from a CSV are ints
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PipelineError(
            f"submission line {row + 2}: '{values.columns[col]}' = "
            f"{str(values.iat[row, col])!r} is not a valid "
            f"{ {'binary': 'probability', 'multilabels': 'label list'}.get(kind, kind[:-1]) }"
        )


# ----------------------------------------------------------------------------- a number per id


def number_layout(sample: pd.DataFrame, id_col: str, sample_path) -> str:
    """The column a number (data.task regression or ordinal) goes in: the sample must be the id
    column then one column, holding numbers or nothing (a placeholder); a sample of class columns or
    of text cannot take a number, and is refused naming it."""
    cols = list(sample.columns)
    check_id_first(cols, id_col, sample_path)
    if len(cols) != 2:
        raise PipelineError(
            f"{sample_path}: columns {cols}: a number per id needs '{id_col}' then one column; this sample "
            "cannot take a number (is data.task right?)"
        )
    values = sample[cols[1]].astype(str).str.strip()
    text = values[(values != "") & pd.to_numeric(values, errors="coerce").isna()]
    if len(text):
        raise PipelineError(
            f"{sample_path}: line {text.index[0] + 2}: '{cols[1]}' = {text.iloc[0]!r} is text; this sample "
            "cannot take a number (is data.task right?)"
        )
    return cols[1]


def build_numbers(
    sample: pd.DataFrame, test: pd.DataFrame, id_col: str, sample_path, spelled: dict[float, str] | None = None
) -> pd.DataFrame:
    """The sample's layout with each id's number (test: id_col and one column of values), in the
    sample's order; `spelled` (an ordinal task): each grade as train.csv spells it, written instead."""
    col = number_layout(sample, id_col, sample_path)
    values = test.set_index(id_col).iloc[:, 0]
    missing = [i for i in sample[id_col] if i not in values.index]
    if missing:
        raise PipelineError(f"{sample_path}: no prediction for id '{missing[0]}' ({len(missing)} missing)")
    v = values.loc[sample[id_col]].to_numpy(dtype=float)
    out = sample[[id_col]].reset_index(drop=True)
    return out.assign(**{col: [spelled.get(x, x) for x in v] if spelled else v})


def check_numbers(sub: pd.DataFrame, sample: pd.DataFrame, id_col: str, sample_path, grades=None) -> None:
    """Refuse a submission of numbers the competition would reject: the sample's columns, ids and
    order, and a finite number on every line (an ordinal task's: one of its `grades`, as spelled)."""
    number_layout(sample, id_col, sample_path)
    same_frame(sub, sample, id_col, sample_path)
    col = sub.columns[1]
    v = pd.to_numeric(sub[col], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(v)
    if grades is not None:
        bad |= ~sub[col].astype(str).isin(list(grades))
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        what = "grade" if grades is not None else "finite number"
        raise PipelineError(f"submission line {row + 2}: '{col}' = {sub[col].iloc[row]!r} is not a {what}")


def same_frame(sub: pd.DataFrame, sample: pd.DataFrame, id_col: str, sample_path) -> None:
    """The submission has the sample's columns, and its ids in its order."""
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


def guesses_layout(sample: pd.DataFrame, id_col: str, sample_path) -> str:
    """The column a retrieval task's guesses go in (data.task retrieval): the sample must be the id
    column then one column (its cells: space-separated ids, or a placeholder)."""
    cols = list(sample.columns)
    check_id_first(cols, id_col, sample_path)
    if len(cols) != 2:
        raise PipelineError(
            f"{sample_path}: columns {cols}: guesses per id need '{id_col}' then one column of space-separated "
            "ids (is data.task right?)"
        )
    return cols[1]


def build_guesses(sample: pd.DataFrame, ids, cells: list[str], id_col: str, sample_path) -> pd.DataFrame:
    """The sample's layout with each id's guesses (`cells`, in the order of `ids`), in the sample's order."""
    col = guesses_layout(sample, id_col, sample_path)
    by_id = dict(zip(map(str, ids), cells))
    missing = [i for i in sample[id_col].astype(str) if i not in by_id]
    if missing:
        raise PipelineError(f"{sample_path}: no prediction for id '{missing[0]}' ({len(missing)} missing)")
    out = sample[[id_col]].reset_index(drop=True)
    return out.assign(**{col: [by_id[i] for i in sample[id_col].astype(str)]})


def check_guesses(sub: pd.DataFrame, sample: pd.DataFrame, id_col: str, sample_path, known: set, k: int) -> None:
    """Refuse a retrieval submission the competition would reject: the sample's columns, ids and
    order, and on every line 1 to k distinct guesses, each an individual of train.csv or the token
    for a new one (`known` holds both)."""
    guesses_layout(sample, id_col, sample_path)
    same_frame(sub, sample, id_col, sample_path)
    col = sub.columns[1]
    for row, cell in enumerate(sub[col].astype(str)):
        words = cell.split()
        bad = next((w for w in words if w not in known), None)
        if not 1 <= len(words) <= k or len(set(words)) != len(words) or bad is not None:
            why = f"'{bad}' is no individual of train.csv" if bad else f"expected 1 to {k} distinct guesses"
            raise PipelineError(f"submission line {row + 2}: '{col}' = {cell!r}: {why}")
