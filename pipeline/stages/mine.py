"""Stage 4: hard-negative mining. Each fold's model scores negatives it neither trained nor
validated on; the most confident false positives go to another experiment's training.

Usage: python -m pipeline mine CONFIG [key=value ...]      (make mine)

Needs data.negative_class. The pool (mine.pool) is either the training folds' negatives that
train.neg_fraction left out, or a folder of extra negative images. Fold k's model mines for fold k
only, from images outside fold k's validation set. Writes runs/<name>/hard_negatives.csv:
image_id, path (relative to data.root), fold, score (the probability of not being negative).
An experiment with train.hard_negatives_from: <this config> adds each row to its fold's training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import engine, tta
from ..competition import read_competition
from ..config import Config
from ..data import folder_images
from ..errors import PipelineError
from ..folds_file import unused_negatives
from ..io import read_table, write_csv
from ..labels import encode
from ..metrics import false_positive_rate
from ..models import load_fold_model
from ..runs import RunDir
from ..upstream import HARD_NEGATIVE_COLUMNS


def pool(cfg: Config, folds: pd.DataFrame, fold: int) -> tuple[list[str], list[str]]:
    """Fold `fold`'s mining pool: ids and paths relative to data.root (a folder image's id is its
    path without the suffix)."""
    if cfg.mine.pool == "unused":
        ids = unused_negatives(cfg, folds, fold)[cfg.data.id_col].tolist()
        return ids, [cfg.data.train_images.format(id=i) for i in ids]
    rel = folder_images(cfg.data, cfg.mine.pool, "mine.pool")
    return [r.rsplit(".", 1)[0] for r in rel], rel


def select(scores: np.ndarray, min_score: float, top_k: int | None) -> np.ndarray:
    """Indices of the scores at least min_score, highest first, at most top_k (ties: pool order)."""
    order = np.argsort(-scores, kind="stable")
    order = order[scores[order] >= min_score]
    return order if top_k is None else order[:top_k]


def mine_fold(cfg: Config, folds: pd.DataFrame, fold: int, device) -> pd.DataFrame:
    ids, rel = pool(cfg, folds, fold)
    valid = {cfg.data.train_images.format(id=i) for i in folds.loc[folds["fold"] == fold, cfg.data.id_col]}
    assert not valid & set(rel), "a validation image in the mining pool"
    if not rel:
        return pd.DataFrame(columns=HARD_NEGATIVE_COLUMNS)
    fm = load_fold_model(RunDir(cfg.run_dir), fold, device, cfg.runtime)
    probs = tta.predict_merged(fm, [Path(cfg.data.root) / r for r in rel], cfg, device)
    scores = 1.0 - probs[:, fm.classes.index(cfg.data.negative_class)]
    keep = select(scores, cfg.mine.min_score, cfg.mine.top_k)
    print(
        f"fold {fold}: {len(keep)} hard negatives of {len(rel)} pooled "
        f"(score >= {cfg.mine.min_score}{f', top {cfg.mine.top_k}' if cfg.mine.top_k else ''})"
    )
    return pd.DataFrame(
        dict(zip(HARD_NEGATIVE_COLUMNS, [[ids[i] for i in keep], [rel[i] for i in keep], fold, scores[keep]]))
    )


def fp_rate_report(cfg: Config, classes: list[str]) -> str:
    """The false-positive rate of this experiment's OOF predictions (infer's, with its TTA)."""
    d = cfg.data
    oof = read_table(RunDir(cfg.run_dir).oof, [d.id_col, d.label_col] + classes)
    neg = oof[d.label_col] == d.negative_class
    rate = false_positive_rate(
        encode(oof[d.label_col], classes), oof[classes].astype(float).to_numpy(), classes.index(d.negative_class)
    )
    return f"false-positive rate on the validation folds: {rate:.4f} ({round(rate * neg.sum())}/{neg.sum()} negatives)"


def main(cfg: Config) -> pd.DataFrame:
    if cfg.data.task != "multiclass":
        raise PipelineError(f"mine: works on one label per image (data.task multiclass), not data.task {cfg.data.task}")
    d = cfg.data
    if d.negative_class is None:
        raise PipelineError("mine: data.negative_class is not set (which class is negative?)")
    comp = read_competition(cfg)
    folds = comp.folds
    if d.negative_class not in comp.classes:
        raise PipelineError(f"data.negative_class: '{d.negative_class}' is not a class of {d.train_csv}")
    device = engine.pick_device(cfg.runtime)
    engine.setup(cfg.runtime, device)
    found = pd.concat([mine_fold(cfg, folds, k, device) for k in range(cfg.folds.n_folds)], ignore_index=True)
    out = RunDir(cfg.run_dir).hard_negatives
    write_csv(out, found)
    print(f"{cfg.name}: {len(found)} hard negatives -> {out}; " + fp_rate_report(cfg, comp.classes))
    return found
