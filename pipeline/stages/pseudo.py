"""Pseudo-labels: a finished experiment labels unlabelled images for another one to train on.

Usage: python -m pipeline pseudo CONFIG [key=value ...]      (make pseudo)

Fold k's model labels the images for fold k of the next experiment, so no fold learns, through
its teacher, the labels of its own validation images. The source (pseudo.source) is the test
images (this experiment's test_fold<k>.csv, TTA included) or a folder of unlabelled images.
Images whose top probability reaches pseudo.threshold are kept. Writes
runs/<name>/pseudo_labels.csv: image_id, path (relative to data.root), fold, label, confidence,
then one column per class holding the training target (one-hot, or the probabilities when
pseudo.soft). An experiment with train.pseudo_labels_from: <this config> trains on them; they
never enter a validation fold.

A number (data.task regression or ordinal) is labelled by the fold models together: each image's
target is the mean of every fold model's prediction (a soft numeric target), kept where the folds
agree, their standard deviation at most pseudo.max_spread (default a tenth of the training
targets'); its columns are image_id, path, fold, label (the mean), spread, prediction (the target),
and each kept image is written once per fold. Unlike a class's teacher, the mean includes the fold
models that trained on fold k's validation rows: the image never validates, but the student's
fold k learns a little of what its validation labels taught them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import engine, tta
from ..config import Config
from ..data import folder_images
from ..errors import PipelineError
from ..io import read_table, write_csv
from ..labels import PREDICTION
from ..models import load_fold_model
from ..runs import RunDir
from ..upstream import PSEUDO_COLUMNS


@dataclass(frozen=True)
class Unlabelled:
    """One fold model's probabilities on the unlabelled images."""

    ids: list[str]
    paths: list[str]  # relative to data.root
    probs: np.ndarray
    classes: list[str]


def fold_predictions(cfg: Config, fold: int, device) -> Unlabelled:
    """Fold `fold`'s model on the source: infer's test_fold<k>.csv, or a folder of images."""
    d, run = cfg.data, RunDir(cfg.run_dir)
    if cfg.pseudo.source == "test":
        path = run.test_fold(fold)
        if not path.is_file():
            raise PipelineError(f"{path}: not found (run make infer)")
        df = read_table(path, [d.id_col], id_col=d.id_col)
        classes = [c for c in df.columns if c != d.id_col]
        ids = df[d.id_col].tolist()
        return Unlabelled(ids, [d.test_images.format(id=i) for i in ids], df[classes].astype(float).to_numpy(), classes)
    rel = folder_images(d, cfg.pseudo.source, "pseudo.source")
    fm = load_fold_model(run, fold, device, cfg.runtime)
    probs = tta.predict_merged(fm, [Path(d.root) / r for r in rel], cfg, device)
    return Unlabelled([r.rsplit(".", 1)[0] for r in rel], rel, probs, fm.classes)


def label_fold(u: Unlabelled, fold: int, threshold: float, soft: bool) -> pd.DataFrame:
    """The confident rows, with their targets: one-hot, or the probabilities themselves."""
    conf = u.probs.max(1)
    keep = np.flatnonzero(conf >= threshold)
    top = u.probs[keep].argmax(1)
    targets = u.probs[keep] if soft else np.eye(len(u.classes))[top]
    df = pd.DataFrame(
        dict(
            zip(
                PSEUDO_COLUMNS,
                [[u.ids[i] for i in keep], [u.paths[i] for i in keep], fold, [u.classes[c] for c in top], conf[keep]],
            )
        )
    )
    return pd.concat([df, pd.DataFrame(targets, columns=u.classes)], axis=1)


def spread_limit(cfg: Config) -> float:
    """pseudo.max_spread, or a tenth of the training targets' standard deviation."""
    if cfg.pseudo.max_spread is not None:
        return cfg.pseudo.max_spread
    d = cfg.data
    return 0.1 * float(pd.to_numeric(read_table(d.path(d.train_csv), [d.label_col])[d.label_col]).std())


def label_numbers(parts: list[Unlabelled], limit: float) -> pd.DataFrame:
    """A number's pseudo-labels: the fold models' mean where their standard deviation is at most
    `limit`, written once for each fold."""
    values = np.stack([u.probs[:, 0] for u in parts])  # (folds, images)
    mean, spread = values.mean(0), values.std(0)
    keep = np.flatnonzero(spread <= limit)
    u = parts[0]
    rows = [
        pd.DataFrame(
            {
                "image_id": [u.ids[i] for i in keep],
                "path": [u.paths[i] for i in keep],
                "fold": k,
                "label": mean[keep],
                "spread": spread[keep],
                PREDICTION: mean[keep],
            }
        )
        for k in range(len(parts))
    ]
    return pd.concat(rows, ignore_index=True)


def numbers_main(cfg: Config, device) -> pd.DataFrame:
    parts = [fold_predictions(cfg, k, device) for k in range(cfg.folds.n_folds)]
    limit = spread_limit(cfg)
    out = label_numbers(parts, limit)
    path = RunDir(cfg.run_dir).pseudo_labels
    write_csv(path, out)
    n = len(out) // cfg.folds.n_folds
    print(f"{cfg.name}: {n} of {len(parts[0].ids)} images where the folds agree (spread <= {limit:.4g}) -> {path}")
    return out


def main(cfg: Config) -> pd.DataFrame:
    if cfg.data.numeric:
        device = engine.pick_device(cfg.runtime)
        engine.setup(cfg.runtime, device)
        return numbers_main(cfg, device)
    if cfg.data.multilabel:
        raise PipelineError("pseudo: works on one label per image (data.task multiclass)")
    p = cfg.pseudo
    device = engine.pick_device(cfg.runtime)
    engine.setup(cfg.runtime, device)
    parts = []
    for k in range(cfg.folds.n_folds):
        u = fold_predictions(cfg, k, device)
        parts.append(label_fold(u, k, p.threshold, p.soft))
        print(
            f"fold {k}: {len(parts[-1])} of {len(u.ids)} images at confidence >= {p.threshold}: "
            + ", ".join(f"{c} {n}" for c, n in parts[-1]["label"].value_counts().sort_index().items())
        )
    out = pd.concat(parts, ignore_index=True)
    path = RunDir(cfg.run_dir).pseudo_labels
    write_csv(path, out)
    print(f"{cfg.name}: {len(out)} {'soft' if p.soft else 'hard'} pseudo-labels -> {path}")
    return out
