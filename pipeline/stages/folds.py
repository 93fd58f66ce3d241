"""Stage 1: stratified (and grouped) K folds, written once to folds/<competition>.csv.

Usage: python -m pipeline folds CONFIG [key=value ...]      (make folds)

Every experiment on the competition shares the file, so their OOF predictions line up and can
be ensembled; pipeline/folds_file.py reads it back, checked, for every later stage.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..config import Config
from ..errors import PipelineError
from ..folds_file import check_folds, fold_spec, load_folds
from ..io import read_table, write_csv, write_text
from ..labels import split_labels


def assign_folds(labels, groups, n_folds: int, seed: int) -> np.ndarray:
    """Fold index per row: stratified by label, and never splitting a group when groups are given."""
    labels = np.asarray(labels)
    if groups is None:
        splitter, groups = StratifiedKFold(n_folds, shuffle=True, random_state=seed), None
    else:
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(labels), -1)
    for k, (_, valid) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        fold[valid] = k
    return fold


def rarest_label(labels: pd.Series, sep: str) -> pd.Series:
    """Multi-label rows stratified by their rarest label (scikit-learn has no multi-label
    stratifier): every label then spreads over the folds about evenly."""
    rows = split_labels(labels, sep)
    freq = pd.Series([t for r in rows for t in r]).value_counts()
    return pd.Series([min(r, key=lambda t: (freq[t], t)) for r in rows], index=labels.index)


def make_folds(cfg: Config) -> pd.DataFrame:
    d = cfg.data
    csv = d.path(d.train_csv)
    cols = [d.id_col, d.label_col] + ([d.group_col] if d.group_col else [])
    df = read_table(csv, cols, id_col=d.id_col)[cols]
    strata = df[d.label_col] if not d.multilabel else rarest_label(df[d.label_col], d.label_sep)
    counts = strata.value_counts()
    if counts.min() < cfg.folds.n_folds:
        raise PipelineError(
            f"{csv}: class '{counts.idxmin()}' has {counts.min()} rows, fewer than folds.n_folds={cfg.folds.n_folds}"
        )
    if d.group_col and df[d.group_col].nunique() < cfg.folds.n_folds:
        raise PipelineError(f"{csv}: column '{d.group_col}' has fewer groups than folds.n_folds")
    groups = df[d.group_col].to_numpy() if d.group_col else None
    df["fold"] = assign_folds(strata, groups, cfg.folds.n_folds, cfg.folds.seed)
    check_folds(df, d.id_col, cfg.folds.n_folds, d.group_col)
    return df


def main(cfg: Config) -> pd.DataFrame:
    path, spec_path = cfg.folds_file, cfg.folds_file.with_suffix(".json")
    if spec_path.is_file() and json.loads(spec_path.read_text()) != fold_spec(cfg):
        load_folds(cfg)  # raises, naming what differs: other runs may depend on these folds
    df = make_folds(cfg)
    if path.is_file() and spec_path.is_file() and _same_rows(cfg, df):
        print(f"{path}: up to date")
        path.touch()  # so Make sees it newer than train.csv
        return df
    write_csv(path, df)
    write_text(spec_path, json.dumps(fold_spec(cfg), indent=1) + "\n")
    table = pd.crosstab(df["fold"], df[cfg.data.label_col])
    print(f"{path}: {len(df)} rows in {cfg.folds.n_folds} folds; class counts per fold:")
    print(table.to_string())
    return df


def _same_rows(cfg: Config, df: pd.DataFrame) -> bool:
    try:
        return load_folds(cfg).equals(df)
    except PipelineError:
        return False
