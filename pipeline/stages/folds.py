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
from ..folds_file import check_folds, fold_spec, load_folds, read_spec, split_differences
from ..io import read_table, write_csv, write_text, write_text_if_changed
from ..labels import N_BINS, check_numbers, quantile_bins, split_labels


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


def retrieval_folds(labels, groups, n_folds: int, seed: int, new_share: float) -> np.ndarray:
    """Fold index per row for identification: individuals drawn (with `seed`) until they hold a
    `new_share` of the rows have all their images in one fold, so each validation fold has about
    that share of images of individuals its training never saw, as the test has of new ones; every
    other individual's images (or groups, `groups` given: a group never splits) spread over
    distinct folds, so each of its validation images has the same individual in training. Each
    placement goes to the fold with the fewest rows so far, largest units first."""
    labels = np.asarray(labels)
    units = np.asarray(groups) if groups is not None else np.arange(len(labels))
    rng = np.random.default_rng(seed)
    individuals = np.unique(labels)
    drawn = rng.permutation(individuals)
    counts = pd.Series(labels).value_counts()
    taken = np.cumsum(counts[drawn].to_numpy()) - counts[drawn].to_numpy() < new_share * len(labels)
    new = set(drawn[taken]) if new_share > 0 else set()
    fold, sizes = np.full(len(labels), -1), np.zeros(n_folds, int)
    for ind in rng.permutation(individuals):
        rows = np.flatnonzero(labels == ind)
        unit_rows = [rows[units[rows] == u] for u in dict.fromkeys(units[rows])]
        if ind in new:
            unit_rows = [rows]
        used: set[int] = set()
        for r in sorted(unit_rows, key=len, reverse=True):
            free = [f for f in range(n_folds) if f not in used] or list(range(n_folds))
            k = min(free, key=lambda f: (sizes[f], rng.random()))
            fold[r], sizes[k] = k, sizes[k] + len(r)
            used.add(k)
    return fold


def held_out_share(labels, folds) -> float:
    """The share of rows whose individual has all its images in one fold (its validation sees it new)."""
    spread = pd.Series(np.asarray(folds)).groupby(np.asarray(labels)).transform("nunique")
    return float((spread == 1).mean())


def rarest_label(labels: pd.Series, sep: str) -> pd.Series:
    """Multi-label rows stratified by their rarest label (scikit-learn has no multi-label
    stratifier): every label then spreads over the folds about evenly."""
    rows = split_labels(labels, sep)
    freq = pd.Series([t for r in rows for t in r]).value_counts()
    return pd.Series([min(r, key=lambda t: (freq[t], t)) for r in rows], index=labels.index)


def read_train(cfg: Config) -> pd.DataFrame:
    """train.csv's id, label (and group) columns, checked."""
    d = cfg.data
    cols = [d.id_col, d.label_col] + ([d.group_col] if d.group_col else [])
    return read_table(d.path(d.train_csv), cols, id_col=d.id_col)[cols]


def strata(cfg: Config, df: pd.DataFrame) -> pd.Series:
    """What the folds are stratified on: the class, the rarest label, or a number's quantile bin
    (each grade of an ordinal task), at most a fifth of the rows per fold's worth of bins."""
    d = cfg.data
    if d.numeric:
        values = check_numbers(df, d, d.path(d.train_csv))
        n_bins = max(1, min(N_BINS, len(df) // (2 * cfg.folds.n_folds)))
        bins = quantile_bins(values, len(np.unique(values)) if d.ordinal else n_bins)
        return pd.Series([f"bin{b}" for b in bins], index=df.index)
    return df[d.label_col] if not d.multilabel else rarest_label(df[d.label_col], d.label_sep)


def make_folds(cfg: Config) -> pd.DataFrame:
    d = cfg.data
    csv = d.path(d.train_csv)
    df = read_train(cfg)
    if d.group_col and df[d.group_col].nunique() < cfg.folds.n_folds:
        raise PipelineError(f"{csv}: column '{d.group_col}' has fewer groups than folds.n_folds")
    groups = df[d.group_col].to_numpy() if d.group_col else None
    if d.retrieval:
        df["fold"] = retrieval_folds(df[d.label_col], groups, cfg.folds.n_folds, cfg.folds.seed, cfg.folds.new_share)
        check_folds(df, d.id_col, cfg.folds.n_folds, d.group_col)
        return df
    counts = strata(cfg, df).value_counts()
    if counts.min() < cfg.folds.n_folds and d.ordinal:
        grade = df[d.label_col][strata(cfg, df) == counts.idxmin()].iloc[0]
        raise PipelineError(
            f"{csv}: grade '{grade}' has {counts.min()} rows, fewer than folds.n_folds={cfg.folds.n_folds}"
        )
    if counts.min() < cfg.folds.n_folds and not d.numeric:
        raise PipelineError(
            f"{csv}: class '{counts.idxmin()}' has {counts.min()} rows, fewer than folds.n_folds={cfg.folds.n_folds}"
        )
    df["fold"] = assign_folds(strata(cfg, df), groups, cfg.folds.n_folds, cfg.folds.seed)
    check_folds(df, d.id_col, cfg.folds.n_folds, d.group_col)
    return df


def place_new_rows(old: pd.DataFrame, new: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """train.csv's rows now, each in its old fold when it had one; a new row goes to its group's
    fold, else to the fold with the fewest rows of its stratum (then the fewest rows): runs
    trained on the old folds keep their validation sets except for the rows that came or went."""
    d, n = cfg.data, cfg.folds.n_folds
    df = new.copy()
    df["fold"] = df[d.id_col].map(old.set_index(d.id_col)["fold"]).fillna(-1).astype(int)
    key = strata(cfg, df)
    counts = pd.crosstab(key[df["fold"] >= 0], df.loc[df["fold"] >= 0, "fold"]).reindex(columns=range(n), fill_value=0)
    sizes = np.bincount(df.loc[df["fold"] >= 0, "fold"], minlength=n)
    group_fold = dict(zip(df.loc[df["fold"] >= 0, d.group_col], df.loc[df["fold"] >= 0, "fold"])) if d.group_col else {}
    for i in np.flatnonzero(df["fold"].to_numpy() < 0):
        s = key.iloc[i]
        per = counts.loc[s].to_numpy() if s in counts.index else np.zeros(n, int)
        k = group_fold.get(df[d.group_col].iloc[i]) if d.group_col else None
        k = k if k is not None else int(min(range(n), key=lambda f: (per[f], sizes[f], f)))
        df.iloc[i, df.columns.get_loc("fold")] = k
        if s not in counts.index:
            counts.loc[s] = 0
        counts.loc[s, k] += 1
        sizes[k] += 1
        if d.group_col:
            group_fold[df[d.group_col].iloc[i]] = k
    check_folds(df, d.id_col, n, d.group_col)
    return df


def edits(old: pd.DataFrame, new: pd.DataFrame, cfg: Config) -> str:
    """What changed in train.csv since the folds file was made, in words."""
    d = cfg.data
    before, now = old.set_index(d.id_col)[d.label_col], new.set_index(d.id_col)[d.label_col]
    added, removed = now.index.difference(before.index), before.index.difference(now.index)
    both = now.index.intersection(before.index)
    relabelled = int((before[both] != now[both]).sum())
    return f"{len(added)} rows added, {len(removed)} removed, {relabelled} relabelled"


def updated(cfg: Config) -> tuple[pd.DataFrame, str] | None:
    """The folds file brought up to an edited train.csv (rows keep their folds), with what changed;
    None when there is no readable folds file made with these settings to keep."""
    try:
        old = read_table(cfg.folds_file, [cfg.data.id_col, cfg.data.label_col, "fold"], id_col=cfg.data.id_col)
        old["fold"] = old["fold"].astype(int)
    except (PipelineError, ValueError):
        return None
    return place_new_rows(old, read_train(cfg), cfg), edits(old, read_train(cfg), cfg)


def main(cfg: Config) -> pd.DataFrame:
    """Write the folds file once; when train.csv is edited later, keep each row in its fold and
    place only the new rows (delete the folds file to re-split on purpose). A moved or copied
    competition folder changes nothing but where the JSON says train.csv is."""
    path, spec_path = cfg.folds_file, cfg.folds_file.with_suffix(".json")
    spec = read_spec(spec_path)
    if spec is not None and (split_differences(spec, cfg) or "train_digest" not in spec):
        load_folds(cfg)  # raises, naming what differs or the earlier release: other runs may depend on these folds
    if path.is_file() and spec is not None and _same_rows(cfg):
        df = load_folds(cfg)
        # The CSV keeps its time, so Make sees every fold still up to date
        write_text_if_changed(spec_path, spec_text(cfg, df))
        print(f"{path}: up to date with {cfg.data.path(cfg.data.train_csv)}")
        return df
    kept = updated(cfg) if path.is_file() and spec is not None else None
    df = kept[0] if kept else make_folds(cfg)
    write_csv(path, df)
    write_text(spec_path, spec_text(cfg, df))
    if kept:
        print(
            f"{path}: {cfg.data.train_csv} changed ({kept[1]}): every other row keeps its fold and new "
            "rows were placed by class; every fold's training rows changed, so every run retrains. To "
            f"re-split from scratch instead, delete {path} and run make folds."
        )
    print("\n".join(summary(cfg, df)))
    return df


# At most this many classes print their full fold-by-class table; more get the summary alone.
TABLE_CLASSES = 12


def class_table(cfg: Config, df: pd.DataFrame) -> pd.DataFrame:
    """Rows per class (or label, or grade) and fold: the table stratification balances."""
    d = cfg.data
    labels = df[d.label_col] if not d.multilabel else rarest_label(df[d.label_col], d.label_sep)
    return pd.crosstab(labels, df["fold"]).rename_axis(index=None, columns=None)


def spec_text(cfg: Config, df: pd.DataFrame) -> str:
    """The folds JSON: the split's settings, where train.csv was and its digest, and the full
    per-fold table (class counts, or the target's spread for a number)."""
    doc = fold_spec(cfg)
    if cfg.data.numeric and not cfg.data.ordinal:
        values = pd.to_numeric(df[cfg.data.label_col])
        desc = values.groupby(df["fold"]).describe()[["count", "mean", "std", "min", "max"]].round(4)
        doc["target_per_fold"] = {str(k): row.to_dict() for k, row in desc.iterrows()}
    else:
        if cfg.data.retrieval:
            doc["individuals_held_out"] = held_out_share(df[cfg.data.label_col], df["fold"])
        table = class_table(cfg, df)
        doc["rows_per_class_and_fold"] = {str(c): [int(n) for n in row] for c, row in table.iterrows()}
    return json.dumps(doc, indent=1) + "\n"


def summary(cfg: Config, df: pd.DataFrame) -> list[str]:
    """A few lines whatever the number of classes: rows per fold, the classes and the smallest
    class in each fold (the full table is in the folds JSON, and printed up to TABLE_CLASSES)."""
    path, n = cfg.folds_file, cfg.folds.n_folds
    sizes = df["fold"].value_counts().reindex(range(n), fill_value=0)
    lines = [f"{path}: {len(df)} rows in {n} folds; rows per fold: {' '.join(map(str, sizes))}"]
    if cfg.data.numeric and not cfg.data.ordinal:
        values = pd.to_numeric(df[cfg.data.label_col])
        table = values.groupby(df["fold"]).describe()[["count", "mean", "std", "min", "max"]]
        return lines + ["the target per fold:", table.to_string()]
    if cfg.data.retrieval:
        labels = df[cfg.data.label_col]
        lines.append(
            f"{labels.nunique()} individuals; {held_out_share(labels, df['fold']):.1%} of the rows are of one with "
            f"every image in one fold, new to its training (folds.new_share {cfg.folds.new_share}, and single images)"
        )
    table = class_table(cfg, df)
    what = "grades" if cfg.data.ordinal else "labels (each row by its rarest)" if cfg.data.multilabel else "classes"
    total = table.sum(axis=1)
    big, small = total.idxmax(), total.idxmin()
    lines.append(f"{len(table)} {what}: largest '{big}' {total[big]} rows, smallest '{small}' {total[small]}")
    smallest = [f"{k}: '{table[k].idxmin()}' {table[k].min()}" for k in table.columns]
    lines.append("smallest per fold: " + ", ".join(smallest))
    if len(table) <= TABLE_CLASSES:
        lines += ["rows per class and fold:", table.to_string()]
    else:
        lines.append(f"the full table ({len(table)} x {n}) is in {path.with_suffix('.json')}")
    return lines


def _same_rows(cfg: Config) -> bool:
    try:
        load_folds(cfg)
        return True
    except PipelineError:
        return False
