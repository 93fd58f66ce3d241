"""Stage 3: test probabilities from every fold's best checkpoint, averaged over folds.

Usage: python -m pipeline infer CONFIG [key=value ...]

Writes runs/<name>/: test_fold<K>.csv per fold, test.csv (the fold mean) and oof.csv (all folds'
out-of-fold probabilities, in the folds file's order). Models are rebuilt from checkpoints alone.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import engine
from .config import Config
from .data import ImageDataset, eval_transform, image_paths, make_loader, read_table
from .errors import PipelineError
from .folds import load_folds
from .io import write_csv
from .metrics import accuracy
from .models import load_checkpoint


def predict_fold(cfg: Config, fold: int, paths: list, device) -> tuple[np.ndarray, list[str]]:
    model, ckpt = load_checkpoint(cfg.run_dir / f"fold{fold}" / "best.pt")
    model = engine.prepare(model, device, cfg.runtime)
    ds = ImageDataset(paths, None, eval_transform(ckpt["data_config"]))
    dl = make_loader(ds, cfg.infer.batch_size, False, engine.num_workers(cfg.runtime, device), device)
    return engine.predict(model, dl, device, cfg.runtime), ckpt["classes"]


def gather_oof(cfg: Config, classes: list[str]) -> pd.DataFrame:
    """Every fold's OOF table, checked to cover the folds file exactly once, in its order."""
    d = cfg.data
    folds = load_folds(cfg)
    parts = []
    for k in range(cfg.folds.n_folds):
        path = cfg.run_dir / f"fold{k}" / "oof.csv"
        part = read_table(path, [d.id_col, "fold", d.label_col] + classes, id_col=d.id_col)
        parts.append(part)
    oof = pd.concat(parts).set_index(d.id_col)
    if sorted(oof.index) != sorted(folds[d.id_col]):
        raise PipelineError(f"{cfg.run_dir}: OOF ids differ from {cfg.folds_file} (retrain the folds)")
    oof = oof.loc[folds[d.id_col]].reset_index()
    oof[classes] = oof[classes].astype(float)
    return oof


def main(cfg: Config) -> pd.DataFrame:
    d = cfg.data
    sample_csv = d.path(d.sample_submission)
    ids = read_table(sample_csv, [d.id_col], id_col=d.id_col)[d.id_col]
    paths = image_paths(d.root, d.test_images, ids, sample_csv)
    device = engine.pick_device(cfg.runtime)
    fold_probs, classes = [], None
    for k in range(cfg.folds.n_folds):
        probs, fold_classes = predict_fold(cfg, k, paths, device)
        if classes is not None and fold_classes != classes:
            raise PipelineError(f"{cfg.run_dir}/fold{k}/best.pt: classes {fold_classes} differ from fold 0's")
        classes = fold_classes
        write_csv(cfg.run_dir / f"test_fold{k}.csv", engine.prob_frame(ids, classes, probs, d.id_col))
        fold_probs.append(probs)
        print(f"fold {k}: predicted {len(ids)} test images")
    oof = gather_oof(cfg, classes)
    write_csv(cfg.run_dir / "oof.csv", oof)
    test = engine.prob_frame(ids, classes, np.mean(fold_probs, axis=0), d.id_col)
    write_csv(cfg.run_dir / "test.csv", test)
    y = engine.encode(oof[d.label_col], classes)
    print(f"{cfg.name}: CV accuracy {accuracy(y, oof[classes].to_numpy()):.4f} (OOF, {len(oof)} images)")
    return test
