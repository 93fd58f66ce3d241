"""Stage 5: average the probabilities of one or more experiments into submissions/<name>.csv.

Usage: python -m pipeline ensemble RUN [RUN ...] [--name NAME] [--out-dir submissions]

RUN is an experiment folder (runs/<name>, holding config.yaml, oof.csv and test.csv) or its
config file. The submission has exactly the ids, order and columns of sample_submission.csv:
a label column gets class names, one column per class gets probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, load_config
from .data import read_table
from .engine import encode
from .errors import PipelineError
from .io import write_csv
from .metrics import accuracy


@dataclass(frozen=True)
class Member:
    run: Path
    cfg: Config
    classes: list[str]
    oof: pd.DataFrame
    test: pd.DataFrame


def load_member(arg: str | Path) -> Member:
    arg = Path(arg)
    cfg = load_config(arg) if arg.is_file() else load_config(arg / "config.yaml")
    run = cfg.run_dir if arg.is_file() else arg
    d = cfg.data
    test_path = run / "test.csv"
    if not test_path.is_file():
        raise PipelineError(f"{test_path}: not found (run make infer for {cfg.name})")
    test = read_table(test_path, [d.id_col], id_col=d.id_col)
    classes = [c for c in test.columns if c != d.id_col]
    oof = read_table(run / "oof.csv", [d.id_col, "fold", d.label_col] + classes, id_col=d.id_col)
    for df in (test, oof):
        df[classes] = df[classes].astype(float)
    return Member(run, cfg, classes, oof, test)


def check_compatible(members: list[Member]) -> None:
    """Members must predict the same classes for the same competition on the same folds."""
    first = members[0]
    for m in members[1:]:
        for what, a, b in [("classes", first.classes, m.classes),
                           ("folds file", first.cfg.folds_file, m.cfg.folds_file),
                           ("data", first.cfg.data, m.cfg.data),
                           ("OOF ids/folds", first.oof[[first.cfg.data.id_col, "fold"]].values.tolist(),
                            m.oof[[m.cfg.data.id_col, "fold"]].values.tolist())]:
            if a != b:
                raise PipelineError(f"{m.run}: {what} differ from {first.run}'s; cannot ensemble them")


def build_submission(sample: pd.DataFrame, test: pd.DataFrame, classes: list[str],
                     id_col: str, label_col: str, sample_path: Path) -> pd.DataFrame:
    cols = list(sample.columns)
    probs = test.set_index(id_col)
    missing = [i for i in sample[id_col] if i not in probs.index]
    if missing:
        raise PipelineError(f"{sample_path}: no prediction for id '{missing[0]}' ({len(missing)} missing)")
    probs = probs.loc[sample[id_col], classes]
    if cols == [id_col, label_col]:
        labels = np.asarray(classes, dtype=object)[probs.to_numpy().argmax(1)]
        return pd.DataFrame({id_col: sample[id_col].to_list(), label_col: labels})
    if cols[0] == id_col and sorted(cols[1:]) == sorted(classes):
        return pd.concat([sample[[id_col]].reset_index(drop=True),
                          probs[cols[1:]].reset_index(drop=True)], axis=1)
    raise PipelineError(f"{sample_path}: columns {cols}: expected '{id_col},{label_col}' or "
                        f"'{id_col}' then one column per class {classes}")


def check_submission(sub: pd.DataFrame, sample: pd.DataFrame, classes: list[str],
                     id_col: str, sample_path: Path) -> None:
    """Refuse a submission the competition would reject: columns, ids and order, NaN, ranges."""
    if list(sub.columns) != list(sample.columns):
        raise PipelineError(f"submission columns {list(sub.columns)} differ from {sample_path}'s "
                            f"{list(sample.columns)}")
    if len(sub) != len(sample):
        raise PipelineError(f"submission has {len(sub)} rows, {sample_path} has {len(sample)}")
    differ = np.flatnonzero(sub[id_col].astype(str).to_numpy() != sample[id_col].astype(str).to_numpy())
    if len(differ):
        raise PipelineError(f"submission line {differ[0] + 2}: id '{sub[id_col].iloc[differ[0]]}', "
                            f"{sample_path} has '{sample[id_col].iloc[differ[0]]}' there")
    nan = sub.isna().to_numpy()
    if nan.any():
        row, col = np.argwhere(nan)[0]
        raise PipelineError(f"submission line {row + 2}: '{sub.columns[col]}' is empty (NaN)")
    values = sub.drop(columns=[id_col])
    if set(values.columns) == set(classes):
        bad = ~values.apply(pd.to_numeric, errors="coerce").apply(lambda c: c.between(0, 1)).to_numpy()
    else:
        bad = ~values.isin(classes).to_numpy()
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PipelineError(f"submission line {row + 2}: '{values.columns[col]}' = "
                            f"{str(values.iat[row, col])!r} is not a valid class or probability")


def main(runs: list[str | Path], name: str | None = None, out_dir: str | Path = "submissions") -> pd.DataFrame:
    members = [load_member(r) for r in runs]
    check_compatible(members)
    first, d = members[0], members[0].cfg.data
    classes = first.classes
    y = encode(first.oof[d.label_col], classes)
    for m in members:
        print(f"{m.cfg.name}: CV accuracy {accuracy(y, m.oof[classes].to_numpy()):.4f}")
    oof = np.mean([m.oof[classes].to_numpy() for m in members], axis=0)
    test = first.test[[d.id_col]].copy()
    test[classes] = np.mean([m.test.set_index(d.id_col).loc[test[d.id_col], classes].to_numpy()
                             for m in members], axis=0)
    sample_path = d.path(d.sample_submission)
    sample = read_table(sample_path, [d.id_col], id_col=d.id_col)
    sub = build_submission(sample, test, classes, d.id_col, d.label_col, sample_path)
    check_submission(sub, sample, classes, d.id_col, sample_path)
    name = name or (first.cfg.name if len(members) == 1 else "ensemble")
    path = Path(out_dir) / f"{name}.csv"
    write_csv(path, sub)
    print(f"ensemble of {len(members)} (mean): CV accuracy {accuracy(y, oof):.4f} -> {path}")
    return sub
