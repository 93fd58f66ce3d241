"""Stage 4: hard-negative mining. Each fold's model scores negatives it neither trained nor
validated on; the most confident false positives go to another experiment's training.

Usage: python -m pipeline mine CONFIG [key=value ...]

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

from . import engine, tta
from .config import Config, upstream
from .data import image_paths, read_table
from .errors import PipelineError
from .folds import load_folds, unused_negatives
from .infer import fold_model
from .io import write_csv
from .metrics import false_positive_rate

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
COLUMNS = ["image_id", "path", "fold", "score"]


def folder_images(cfg: Config, folder: str, key: str) -> list[str]:
    """Image files under data.root/folder, as paths relative to data.root, sorted; none of them
    may be a labelled training image (its label would be overridden)."""
    d = cfg.data
    root = d.path(folder)
    if not root.is_dir():
        raise PipelineError(f"{key}: {root} is not a folder")
    rel = sorted(p.relative_to(d.root).as_posix() for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not rel:
        raise PipelineError(f"{key}: no images in {root}")
    train = read_table(d.path(d.train_csv), [d.id_col])[d.id_col]
    labelled = {d.train_images.format(id=i): n for n, i in enumerate(train, start=2)}
    clash = next((r for r in rel if r in labelled), None)
    if clash:
        raise PipelineError(f"{key}: {clash} is a labelled image ({d.train_csv} line {labelled[clash]}); "
                            "the folder must hold unlabelled images only")
    return rel


def pool(cfg: Config, folds: pd.DataFrame, fold: int) -> tuple[list[str], list[str]]:
    """Fold `fold`'s mining pool: ids and paths relative to data.root (a folder image's id is its
    path without the suffix)."""
    if cfg.mine.pool == "unused":
        ids = unused_negatives(cfg, folds, fold)[cfg.data.id_col].tolist()
        return ids, [cfg.data.train_images.format(id=i) for i in ids]
    rel = folder_images(cfg, cfg.mine.pool, "mine.pool")
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
        return pd.DataFrame(columns=COLUMNS)
    model, classes, dc, views = fold_model(cfg, fold, device)
    paths = [Path(cfg.data.root) / r for r in rel]
    probs = tta.merge(tta.predict_views(model, paths, dc, views, cfg.infer.batch_size, device, cfg.runtime),
                      cfg.infer.tta.merge)
    scores = 1.0 - probs[:, classes.index(cfg.data.negative_class)]
    keep = select(scores, cfg.mine.min_score, cfg.mine.top_k)
    print(f"fold {fold}: {len(keep)} hard negatives of {len(rel)} pooled "
          f"(score >= {cfg.mine.min_score}{f', top {cfg.mine.top_k}' if cfg.mine.top_k else ''})")
    return pd.DataFrame({"image_id": [ids[i] for i in keep], "path": [rel[i] for i in keep],
                         "fold": fold, "score": scores[keep]})


def fp_rate_report(cfg: Config, classes: list[str]) -> str:
    """The false-positive rate of this experiment's OOF predictions (infer's, with its TTA)."""
    d = cfg.data
    oof = read_table(cfg.run_dir / "oof.csv", [d.id_col, d.label_col] + classes)
    neg = oof[d.label_col] == d.negative_class
    rate = false_positive_rate(engine.encode(oof[d.label_col], classes), oof[classes].astype(float).to_numpy(),
                               classes.index(d.negative_class))
    return f"false-positive rate on the validation folds: {rate:.4f} ({round(rate * neg.sum())}/{neg.sum()} negatives)"


def main(cfg: Config) -> pd.DataFrame:
    if cfg.data.multilabel:
        raise PipelineError("mine: works on one label per image (data.task multiclass)")
    d = cfg.data
    if d.negative_class is None:
        raise PipelineError("mine: data.negative_class is not set (which class is negative?)")
    folds = load_folds(cfg)
    if d.negative_class not in set(folds[d.label_col]):
        raise PipelineError(f"data.negative_class: '{d.negative_class}' is not a class of {d.train_csv}")
    device = engine.pick_device(cfg.runtime)
    found = pd.concat([mine_fold(cfg, folds, k, device) for k in range(cfg.folds.n_folds)], ignore_index=True)
    write_csv(cfg.run_dir / "hard_negatives.csv", found)
    classes = sorted(folds[d.label_col].unique())
    print(f"{cfg.name}: {len(found)} hard negatives -> {cfg.run_dir / 'hard_negatives.csv'}; "
          + fp_rate_report(cfg, classes))
    return found


def hard_negative_rows(cfg: Config, folds: pd.DataFrame, fold: int) -> list[Path]:
    """Image paths of the hard negatives mined for `fold` by train.hard_negatives_from, checked
    never to be one of this fold's validation images."""
    up = upstream(cfg, "hard_negatives_from", need_file=True)
    if up is None:
        return []
    path = up[1]
    rows = read_table(path, COLUMNS)
    valid = {str(p) for p in image_paths(cfg.data.root, cfg.data.train_images,
                                         folds.loc[folds["fold"] == fold, cfg.data.id_col], cfg.folds_file)}
    mine = rows[rows["fold"].astype(int) == fold]
    paths = [Path(cfg.data.root) / r for r in mine["path"]]
    for line, p in zip(mine.index + 2, paths):
        if str(p) in valid:
            raise PipelineError(f"{path} line {line}: {p} is in fold {fold}'s validation set")
    return image_paths(cfg.data.root, "{id}", mine["path"], path)
