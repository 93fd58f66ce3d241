"""Reading another experiment's outputs: the hard negatives and pseudo-labels a fold trains on
(train.hard_negatives_from, train.pseudo_labels_from), and the predictions an ensemble combines.

The stages that write the hard negatives and pseudo-labels (mine, pseudo) use the column lists
below, so writer and reader agree on one format. Every row is checked so that no image ever
reaches the training of a fold that validates on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import retrieval
from .config import Config
from .config_files import UPSTREAM, load_config, load_upstream, validate
from .errors import PipelineError
from .folds_file import Images, train_image_paths
from .io import image_paths, read_table
from .labels import y_true
from .metrics import k_of, per_fold
from .runs import RunDir

HARD_NEGATIVE_COLUMNS = ["image_id", "path", "fold", "score"]  # path: relative to data.root
PSEUDO_COLUMNS = ["image_id", "path", "fold", "label", "confidence"]  # then one target column per class

# ----------------------------------------------------------------------------- a fold's extra rows


def _upstream_file(cfg: Config, key: str) -> Path | None:
    up = load_upstream(cfg, key)
    if up is None:
        return None
    if not up.file.is_file():
        raise PipelineError(f"{up.file}: not found (run make {UPSTREAM[key][1]} CONFIG={getattr(cfg.train, key)})")
    return up.file


def hard_negative_rows(cfg: Config, folds: pd.DataFrame, fold: int) -> list[Path]:
    """Image paths of the hard negatives mined for `fold` by train.hard_negatives_from, checked
    never to be one of this fold's validation images."""
    path = _upstream_file(cfg, "hard_negatives_from")
    if path is None:
        return []
    rows = read_table(path, HARD_NEGATIVE_COLUMNS)
    d = cfg.data
    valid = {str(p) for p in train_image_paths(cfg, folds[folds["fold"] == fold])}
    mine = rows[rows["fold"].astype(int) == fold]
    for line, rel in zip(mine.index + 2, mine["path"]):
        if str(Path(d.root) / rel) in valid:
            raise PipelineError(f"{path} line {line}: {Path(d.root) / rel} is in fold {fold}'s validation set")
    return image_paths(d.root, "{id}", mine["path"], path, mine.index + 2)


def pseudo_rows(cfg: Config, folds: pd.DataFrame, fold: int, classes: list[str]) -> Images:
    """Image paths and (N, K) targets of the pseudo-labels for `fold` from train.pseudo_labels_from.
    None of them may be a labelled image: a pseudo-labelled image never validates."""
    path = _upstream_file(cfg, "pseudo_labels_from")
    if path is None:
        return Images([], np.zeros((0, len(classes))))
    rows = read_table(path, ["path", "fold"] + classes)
    d = cfg.data
    labelled = {str(q) for q in train_image_paths(cfg, folds)}
    mine = rows[rows["fold"].astype(int) == fold]
    paths = image_paths(d.root, "{id}", mine["path"], path, mine.index + 2)
    for line, q in zip(mine.index + 2, paths):
        if str(q) in labelled:
            raise PipelineError(
                f"{path} line {line}: {q} is a labelled image of {cfg.folds_file}; "
                "pseudo-labels must come from unlabelled images"
            )
    return Images(paths, mine[classes].astype(float).to_numpy())


def extra_rows(cfg: Config, folds: pd.DataFrame, fold: int, classes: list[str]) -> Images:
    """What other experiments add to this fold's training: hard negatives (labelled negative) and
    pseudo-labels, as image paths and (N, K) targets."""
    neg = hard_negative_rows(cfg, folds, fold)
    neg_t = np.zeros((len(neg), len(classes)))
    if neg:
        neg_t[:, classes.index(cfg.data.negative_class)] = 1.0
    pl = pseudo_rows(cfg, folds, fold, classes)
    return Images(neg + pl.paths, np.concatenate([neg_t, pl.targets]))


# ----------------------------------------------------------------------------- an ensemble's members


@dataclass(frozen=True)
class Predictions:
    """A finished experiment's predictions (make infer's output), as an ensemble reads them."""

    run: Path
    cfg: Config
    classes: list[str]
    oof: pd.DataFrame
    test: pd.DataFrame
    test_folds: np.ndarray  # (folds, M, K): each fold model's test probabilities, in test's row order


def read_predictions(member: str | Path) -> Predictions:
    """A member named by its config, or by its run folder (which holds the config it ran with; the
    training files it names need not be at hand, as on the machine a bundle predicts on)."""
    member = Path(member)
    cfg = load_config(member) if member.is_file() else validate(Config, RunDir(member).config)
    run = RunDir(cfg.run_dir if member.is_file() else member)
    d = cfg.data
    if not run.test.is_file():
        raise PipelineError(f"{run.test}: not found (run make infer for {cfg.name})")
    test = read_table(run.test, [d.id_col], id_col=d.id_col)
    classes = [c for c in test.columns if c != d.id_col]
    oof = read_table(run.oof, [d.id_col, "fold", d.label_col] + classes, id_col=d.id_col)
    for df in (test, oof):
        df[classes] = df[classes].astype(float)
    folds = []
    for k in range(cfg.folds.n_folds):
        if run.test_fold(k).is_file():
            f = read_table(run.test_fold(k), [d.id_col] + classes, id_col=d.id_col).set_index(d.id_col)
            folds.append(f.loc[test[d.id_col], classes].astype(float).to_numpy())
    test_folds = np.stack(folds) if folds else test[classes].to_numpy()[None]
    return Predictions(run.root, cfg, classes, oof, test, test_folds)


def check_compatible(members: list[Predictions]) -> None:
    """Members must predict the same classes for the same competition on the same folds."""
    first = members[0]
    for m in members[1:]:
        if m.cfg.data.task != first.cfg.data.task:
            raise PipelineError(
                f"{m.run}: data.task {m.cfg.data.task}, but {first.run} is {first.cfg.data.task}; cannot ensemble them"
            )
        for what, a, b in [
            ("classes", first.classes, m.classes),
            ("folds file", first.cfg.folds_file, m.cfg.folds_file),
            ("data", first.cfg.data, m.cfg.data),
            (
                "OOF ids/folds",
                first.oof[[first.cfg.data.id_col, "fold"]].values.tolist(),
                m.oof[[m.cfg.data.id_col, "fold"]].values.tolist(),
            ),
        ]:
            if a != b:
                raise PipelineError(f"{m.run}: {what} differ from {first.run}'s; cannot ensemble them")


# ----------------------------------------------------------------------------- scores of a run


def read_oof(cfg: Config, path: Path) -> pd.DataFrame:
    """An OOF table (a fold's or infer's), checked as every table is (io.read_table: a damaged
    one is a one-line error naming it); the fold as an integer, the predictions as numbers."""
    d = cfg.data
    oof = read_table(path, [d.id_col, "fold", d.label_col], id_col=d.id_col)
    classes = [c for c in oof.columns if c not in (d.id_col, "fold", d.label_col)]
    oof["fold"] = oof["fold"].astype(int)
    oof[classes] = oof[classes].astype(float)
    return oof


def oof_scores(cfg: Config, oof: pd.DataFrame, similarities: bool = False) -> dict:
    """An OOF table's metric on each fold (fold<k>) and over all its rows (overall). `similarities`:
    a retrieval task's infer OOF, scored with its new-individual threshold cross-fitted."""
    d = cfg.data
    classes = [c for c in oof.columns if c not in (d.id_col, "fold", d.label_col)]
    y = y_true(oof[d.label_col], classes, d)
    if similarities:
        f = oof["fold"].to_numpy()
        c = retrieval.choose(y, oof[classes].to_numpy(dtype=float), f, k_of(cfg.metric), d.new_individual is not None)
        return {**c.per_fold, "overall": c.cross_fitted}
    grades = np.unique(y) if d.ordinal else None
    pred = oof[classes].to_numpy(dtype=float)
    return per_fold(cfg.metric, y, pred[:, 0] if d.numeric else pred, oof["fold"].to_numpy(), grades)
