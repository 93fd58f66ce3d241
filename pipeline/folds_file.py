"""The folds file, folds/<competition>.csv: made once by the folds stage, read by every later one.

Reading it checks it against train.csv and the config (it is never re-split behind anyone's
back), and says which rows a fold trains on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config
from .errors import PipelineError
from .io import image_paths, read_table
from .labels import check_numbers, y_true
from .provenance import file_digest

# A folds file's JSON records where train.csv was and what it held (its digest) when the split was
# made or last brought up to date; only the other keys decide whether the split is this config's.
RECORDED = ("train_csv", "train_digest")


def fold_spec(cfg: Config) -> dict:
    """The settings a split is made from, and the train.csv it was made from; stored beside it as
    folds/<competition>.json."""
    d = cfg.data
    spec = {
        "train_csv": str(d.path(d.train_csv)),
        "train_digest": file_digest(d.path(d.train_csv)),
        "label_col": d.label_col,
        "group_col": d.group_col,
        "n_folds": cfg.folds.n_folds,
        "seed": cfg.folds.seed,
    }
    return spec | ({"task": "retrieval", "new_share": cfg.folds.new_share} if d.retrieval else {})


def split_differences(spec: dict, cfg: Config) -> dict:
    """The split settings the config asks for that `spec` (a folds JSON) was not made with."""
    now = fold_spec(cfg)
    return {k: v for k, v in now.items() if k not in RECORDED and spec.get(k) != v}


def read_spec(path: Path) -> dict | None:
    """A folds file's JSON, or None when it is missing or unreadable."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return spec if isinstance(spec, dict) else None


def moved_competition(cfg: Config) -> str | None:
    """The name of the folds file made from this train.csv when the competition folder has been
    renamed: with data.name unset the name is the folder's, so its folds file is not where the
    config looks. Found by train.csv's digest and the split settings; None when there is none."""
    if cfg.data.name is not None or cfg.folds_file.with_suffix(".json").is_file():
        return None
    digest = file_digest(cfg.data.path(cfg.data.train_csv))
    for spec_path in sorted(Path(cfg.folds.dir).glob("*.json")):
        spec = read_spec(spec_path)
        found = spec and spec.get("train_digest") == digest and not split_differences(spec, cfg)
        if found and spec_path.with_suffix(".csv").is_file():
            return spec_path.stem
    return None


def folds_stale(cfg: Config) -> bool:
    """Whether `make folds` has work to do: no folds file, or train.csv's bytes are not those the
    folds file was last checked against. Make asks this instead of comparing times, so a copied
    folder (new times, same bytes) keeps every fold up to date."""
    spec = read_spec(cfg.folds_file.with_suffix(".json"))
    if spec is None or not cfg.folds_file.is_file():
        return True
    csv = cfg.data.path(cfg.data.train_csv)
    if "train_digest" not in spec:  # an earlier release's: make folds runs, and refuses it (load_folds)
        return True
    return spec["train_digest"] != file_digest(csv) or bool(split_differences(spec, cfg))


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


def load_folds(cfg: Config) -> pd.DataFrame:
    """The folds file, checked against this config and train.csv. Training never re-splits."""
    path, spec_path = cfg.folds_file, cfg.folds_file.with_suffix(".json")
    if not path.is_file() or not spec_path.is_file():
        raise PipelineError(f"{path}: folds file not found (run make folds)")
    spec = read_spec(spec_path) or {}
    if "train_digest" not in spec:
        raise PipelineError(
            f"{spec_path}: written by an earlier release, which recorded no digest of train.csv; delete {path} "
            "and it, and run make folds to re-split (every run on it must be retrained)"
        )
    diff = split_differences(spec, cfg)
    if diff:
        spec = {k: v for k, v in spec.items() if k not in RECORDED}
        raise PipelineError(
            f"{path}: made with {spec}, but the config asks for {diff}; "
            "delete it to re-split (every run on it must be retrained)"
        )
    d = cfg.data
    df = read_table(path, [d.id_col, d.label_col, "fold"], id_col=d.id_col)
    df["fold"] = df["fold"].astype(int)
    train = read_table(d.path(d.train_csv), [d.id_col, d.label_col], id_col=d.id_col)
    if not df[[d.id_col, d.label_col]].equals(train[[d.id_col, d.label_col]]):
        raise PipelineError(
            f"{path}: ids or labels differ from {d.path(d.train_csv)}; run make folds (rows keep their folds, "
            "new rows are placed)"
        )
    check_folds(df, d.id_col, cfg.folds.n_folds, d.group_col)
    if d.numeric:
        check_numbers(train, d, d.path(d.train_csv))
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


def train_image_paths(cfg: Config, rows: pd.DataFrame) -> list[Path]:
    """Image paths (each checked to exist) of some rows of the folds file, a missing one named by
    its line in train.csv: load_folds checks that the folds file holds train.csv's rows in
    train.csv's order, and keeps its index, so a row's line there is index + 2 whichever fold it is in."""
    d = cfg.data
    return image_paths(d.root, d.train_images, rows[d.id_col], d.path(d.train_csv), rows.index + 2)


@dataclass(frozen=True)
class Images:
    """Image files with their targets: class indices (N,), numbers (N,, float), or rows of class
    probabilities or of 0/1 labels (N, K)."""

    paths: list[Path]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


def fold_images(cfg: Config, rows: pd.DataFrame, classes: list[str]) -> Images:
    """Image paths (each checked to exist) and targets (class indices, 0/1 rows, or numbers in the
    target's units) of some rows of the folds file."""
    return Images(train_image_paths(cfg, rows), y_true(rows[cfg.data.label_col], classes, cfg.data))
