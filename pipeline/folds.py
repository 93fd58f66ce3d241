"""Stage 1: stratified (and grouped) K folds, written once to folds/<competition>.csv.

Usage: python -m pipeline folds CONFIG [key=value ...]
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from .config import Config
from .data import read_table
from .errors import PipelineError
from .io import write_csv, write_text


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
    rows = [[t for t in str(v).split(sep) if t] for v in labels]
    freq = pd.Series([t for r in rows for t in r]).value_counts()
    return pd.Series([min(r, key=lambda t: (freq[t], t)) for r in rows], index=labels.index)


def check_folds(df: pd.DataFrame, id_col: str, n_folds: int, group_col: str | None = None) -> None:
    """No leaks: each id in exactly one fold, every fold used, no group in two folds."""
    if df[id_col].duplicated().any():
        raise PipelineError(f"folds: id '{df[id_col][df[id_col].duplicated()].iloc[0]}' appears twice")
    if sorted(df["fold"].unique()) != list(range(n_folds)):
        raise PipelineError(f"folds: folds used are {sorted(df['fold'].unique())}, want 0..{n_folds - 1}")
    if group_col:
        spread = df.groupby(group_col)["fold"].nunique()
        if (spread > 1).any():
            raise PipelineError(f"folds: group '{spread[spread > 1].index[0]}' is split across folds")


def fold_spec(cfg: Config) -> dict:
    d = cfg.data
    return {"train_csv": str(d.path(d.train_csv)), "label_col": d.label_col, "group_col": d.group_col,
            "n_folds": cfg.folds.n_folds, "seed": cfg.folds.seed}


def make_folds(cfg: Config) -> pd.DataFrame:
    d = cfg.data
    csv = d.path(d.train_csv)
    cols = [d.id_col, d.label_col] + ([d.group_col] if d.group_col else [])
    df = read_table(csv, cols, id_col=d.id_col)[cols]
    strata = df[d.label_col] if not d.multilabel else rarest_label(df[d.label_col], d.label_sep)
    counts = strata.value_counts()
    if counts.min() < cfg.folds.n_folds:
        raise PipelineError(f"{csv}: class '{counts.idxmin()}' has {counts.min()} rows, "
                            f"fewer than folds.n_folds={cfg.folds.n_folds}")
    if d.group_col and df[d.group_col].nunique() < cfg.folds.n_folds:
        raise PipelineError(f"{csv}: column '{d.group_col}' has fewer groups than folds.n_folds")
    groups = df[d.group_col].to_numpy() if d.group_col else None
    df["fold"] = assign_folds(strata, groups, cfg.folds.n_folds, cfg.folds.seed)
    check_folds(df, d.id_col, cfg.folds.n_folds, d.group_col)
    return df


def load_folds(cfg: Config) -> pd.DataFrame:
    """The folds file, checked against this config and train.csv. Training never re-splits."""
    path, spec_path = cfg.folds_file, cfg.folds_file.with_suffix(".json")
    if not path.is_file() or not spec_path.is_file():
        raise PipelineError(f"{path}: folds file not found (run make folds)")
    spec = json.loads(spec_path.read_text())
    if spec != fold_spec(cfg):
        diff = {k: v for k, v in fold_spec(cfg).items() if spec.get(k) != v}
        raise PipelineError(f"{path}: made with {spec}, but the config asks for {diff}; "
                            "delete it to re-split (every run on it must be retrained)")
    d = cfg.data
    df = read_table(path, [d.id_col, d.label_col, "fold"], id_col=d.id_col)
    df["fold"] = df["fold"].astype(int)
    train = read_table(d.path(d.train_csv), [d.id_col, d.label_col], id_col=d.id_col)
    if not df[[d.id_col, d.label_col]].equals(train[[d.id_col, d.label_col]]):
        raise PipelineError(f"{path}: ids or labels differ from {d.path(d.train_csv)}; "
                            "delete it and run make folds")
    check_folds(df, d.id_col, cfg.folds.n_folds, d.group_col)
    return df


def training_rows(cfg: Config, folds: pd.DataFrame, fold: int) -> pd.DataFrame:
    """The rows fold `fold` trains on: every other fold, with the negatives sampled down to
    train.neg_fraction (seeded by fold, so train and mine draw the same sample)."""
    rows = folds[folds["fold"] != fold]
    if cfg.train.neg_fraction >= 1.0:
        return rows
    neg = rows[rows[cfg.data.label_col] == cfg.data.negative_class]
    keep = neg.sample(frac=cfg.train.neg_fraction, random_state=cfg.train.seed + fold)
    return rows[~rows.index.isin(neg.index.difference(keep.index))]


def unused_negatives(cfg: Config, folds: pd.DataFrame, fold: int) -> pd.DataFrame:
    """The training folds' negatives that fold `fold` did not train on: its mining pool."""
    rows = folds[(folds["fold"] != fold) & (folds[cfg.data.label_col] == cfg.data.negative_class)]
    return rows[~rows.index.isin(training_rows(cfg, folds, fold).index)]


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
