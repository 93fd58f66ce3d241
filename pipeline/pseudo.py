"""Pseudo-labels: a finished experiment labels unlabelled images for another one to train on.

Usage: python -m pipeline pseudo CONFIG [key=value ...]

Fold k's model labels the images for fold k of the next experiment, so no fold learns, through
its teacher, the labels of its own validation images. The source (pseudo.source) is the test
images (this experiment's test_fold<k>.csv, TTA included) or a folder of unlabelled images.
Images whose top probability reaches pseudo.threshold are kept. Writes
runs/<name>/pseudo_labels.csv: image_id, path (relative to data.root), fold, label, confidence,
then one column per class holding the training target (one-hot, or the probabilities when
pseudo.soft). An experiment with train.pseudo_labels_from: <this config> trains on them; they
never enter a validation fold.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import engine, tta
from .config import Config, upstream
from .data import image_paths, read_table
from .errors import PipelineError
from .infer import fold_model
from .io import write_csv
from .mine import folder_images


def fold_predictions(cfg: Config, fold: int, device) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """Ids, paths relative to data.root, probabilities and classes of fold `fold`'s model on the source."""
    d = cfg.data
    if cfg.pseudo.source == "test":
        path = cfg.run_dir / f"test_fold{fold}.csv"
        if not path.is_file():
            raise PipelineError(f"{path}: not found (run make infer)")
        df = read_table(path, [d.id_col], id_col=d.id_col)
        classes = [c for c in df.columns if c != d.id_col]
        ids = df[d.id_col].tolist()
        return ids, [d.test_images.format(id=i) for i in ids], df[classes].astype(float).to_numpy(), classes
    rel = folder_images(cfg, cfg.pseudo.source, "pseudo.source")
    model, classes, dc, views = fold_model(cfg, fold, device)
    probs = tta.predict_views(model, [Path(d.root) / r for r in rel], dc, views, cfg.infer.batch_size,
                              device, cfg.runtime)
    return [r.rsplit(".", 1)[0] for r in rel], rel, tta.merge(probs, cfg.infer.tta.merge), classes


def label_fold(ids, rel, probs: np.ndarray, classes: list[str], fold: int, threshold: float,
               soft: bool) -> pd.DataFrame:
    """The confident rows, with their targets: one-hot, or the probabilities themselves."""
    conf = probs.max(1)
    keep = np.flatnonzero(conf >= threshold)
    top = probs[keep].argmax(1)
    targets = probs[keep] if soft else np.eye(len(classes))[top]
    df = pd.DataFrame({"image_id": [ids[i] for i in keep], "path": [rel[i] for i in keep], "fold": fold,
                       "label": [classes[c] for c in top], "confidence": conf[keep]})
    return pd.concat([df, pd.DataFrame(targets, columns=classes)], axis=1)


def main(cfg: Config) -> pd.DataFrame:
    if cfg.data.multilabel:
        raise PipelineError("pseudo: works on one label per image (data.task multiclass)")
    p = cfg.pseudo
    device = engine.pick_device(cfg.runtime)
    parts = []
    for k in range(cfg.folds.n_folds):
        ids, rel, probs, classes = fold_predictions(cfg, k, device)
        parts.append(label_fold(ids, rel, probs, classes, k, p.threshold, p.soft))
        print(f"fold {k}: {len(parts[-1])} of {len(ids)} images at confidence >= {p.threshold}: "
              + ", ".join(f"{c} {n}" for c, n in parts[-1]["label"].value_counts().sort_index().items()))
    out = pd.concat(parts, ignore_index=True)
    write_csv(cfg.run_dir / "pseudo_labels.csv", out)
    print(f"{cfg.name}: {len(out)} {'soft' if p.soft else 'hard'} pseudo-labels -> {cfg.run_dir / 'pseudo_labels.csv'}")
    return out


def pseudo_rows(cfg: Config, folds: pd.DataFrame, fold: int, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Image paths and (N, K) targets of the pseudo-labels for `fold` from train.pseudo_labels_from.
    None of them may be a labelled image: a pseudo-labelled image never validates."""
    up = upstream(cfg, "pseudo_labels_from", need_file=True)
    if up is None:
        return [], np.zeros((0, len(classes)))
    path = up[1]
    rows = read_table(path, ["image_id", "path", "fold"] + classes)
    labelled = {str(q) for q in image_paths(cfg.data.root, cfg.data.train_images, folds[cfg.data.id_col],
                                            cfg.folds_file)}
    mine = rows[rows["fold"].astype(int) == fold]
    paths = image_paths(cfg.data.root, "{id}", mine["path"], path)
    for line, q in zip(mine.index + 2, paths):
        if str(q) in labelled:
            raise PipelineError(f"{path} line {line}: {q} is a labelled image of {cfg.folds_file}; "
                                "pseudo-labels must come from unlabelled images")
    return paths, mine[classes].astype(float).to_numpy()
