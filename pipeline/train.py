"""Stage 2: fine-tune a timm backbone on each fold; keep the best checkpoint and its OOF predictions.

Usage: python -m pipeline train CONFIG [key=value ...] [--fold K]

Writes runs/<name>/fold<K>/: best.pt (unwrapped state_dict + config + classes + data config),
history.csv (one row per epoch) and oof.csv (the best checkpoint's probabilities on fold K).
"""
from __future__ import annotations

import random
import time

import numpy as np
import pandas as pd
import torch
from timm.optim import create_optimizer_v2, list_optimizers
from timm.scheduler import create_scheduler_v2

from . import engine
from .config import Config, Train
from .data import ImageDataset, eval_transform, image_paths, make_loader, train_transform
from .errors import PipelineError
from .folds import load_folds
from .io import write_csv
from .metrics import accuracy, log_loss
from .models import create_model, data_config, save_checkpoint

# ----------------------------------------------------------------------------- setup


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_list(folds: pd.DataFrame, cfg: Config) -> list[str]:
    classes = sorted(folds[cfg.data.label_col].unique())
    reserved = {cfg.data.id_col, cfg.data.label_col, "fold"}
    if reserved & set(classes):
        raise PipelineError(f"{cfg.data.train_csv}: class name '{(reserved & set(classes)).pop()}' "
                            "clashes with a column name of the prediction files")
    return classes


def make_optimizer(model: torch.nn.Module, t: Train):
    if t.optimizer not in list_optimizers():
        raise PipelineError(f"train.optimizer: '{t.optimizer}' is not a timm optimizer "
                            "(e.g. adamw, sgd, lamb, adan)")
    optimizer = create_optimizer_v2(model, opt=t.optimizer, lr=t.lr, weight_decay=t.weight_decay,
                                    layer_decay=t.layer_decay)
    for group in optimizer.param_groups:  # timm's schedulers apply lr_scale; without one, do it here
        group["lr"] = t.lr * group.get("lr_scale", 1.0)
    return optimizer


def make_scheduler(optimizer, t: Train, steps_per_epoch: int):
    """Stepped per batch, so short runs still get a smooth warmup and decay."""
    if t.sched == "none":
        return None
    # warmup_prefix: the decay starts at the peak after warmup and ends at min_lr on the last step
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=t.sched, num_epochs=t.epochs - t.warmup_epochs, warmup_epochs=t.warmup_epochs,
        warmup_prefix=True, warmup_lr=t.lr * 0.01, min_lr=t.lr * 0.01, step_on_epochs=False,
        updates_per_epoch=steps_per_epoch)
    return scheduler

# ----------------------------------------------------------------------------- the loop


def train_one_epoch(model, loader, optimizer, scheduler, loss_fn, device, rt, step: int):
    """One pass over the training fold. Returns the mean loss and the global step after it."""
    model.train()
    total, seen = torch.zeros((), device=device), 0  # summed on the device: no sync per step
    for x, y in loader:
        x, y = engine.to_input(x, device, rt), y.to(device, non_blocking=True)
        with engine.autocast(device, rt):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if scheduler is not None:
            scheduler.step_update(num_updates=step)
        total += loss.detach().float() * len(y)
        seen += len(y)
    mean = total.item() / max(seen, 1)
    if not np.isfinite(mean):
        raise PipelineError("training loss is not finite: lower train.lr")
    return mean, step


def fold_loaders(cfg: Config, folds: pd.DataFrame, fold: int, classes: list[str], dc: dict, device):
    """Training loader over the other folds (augmented), validation loader over this one."""
    d, t = cfg.data, cfg.train
    y = engine.encode(folds[d.label_col], classes)
    paths = np.array(image_paths(d.root, d.train_images, folds[d.id_col], cfg.folds_file), dtype=object)
    val = (folds["fold"] == fold).to_numpy()
    workers = engine.num_workers(cfg.runtime, device)
    train_tf = train_transform(dc, t.aug)
    train_tf.set_random_seed(t.seed + fold)
    train_dl = make_loader(ImageDataset(list(paths[~val]), y[~val], train_tf),
                           t.batch_size, True, workers, device)
    valid_dl = make_loader(ImageDataset(list(paths[val]), y[val], eval_transform(dc)),
                           cfg.infer.batch_size, False, workers, device)
    return train_dl, valid_dl, y[val]


def train_fold(cfg: Config, folds: pd.DataFrame, fold: int) -> None:
    d, t, rt = cfg.data, cfg.train, cfg.runtime
    out = cfg.run_dir / f"fold{fold}"
    seed_everything(t.seed + fold)
    classes = class_list(folds, cfg)
    device = engine.pick_device(rt)
    model = create_model(cfg.model, len(classes))
    dc = data_config(model, cfg.model.img_size)
    model = engine.prepare(model, device, rt)
    train_dl, valid_dl, y_val = fold_loaders(cfg, folds, fold, classes, dc, device)
    optimizer = make_optimizer(model, t)
    lrs = [g["lr"] for g in optimizer.param_groups]  # peak rates, before the warmup lowers them
    scheduler = make_scheduler(optimizer, t, len(train_dl))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
    print(f"fold {fold}: {len(train_dl.dataset)} train / {len(y_val)} valid images, {cfg.model.backbone} "
          f"at {dc['input_size'][-1]} px on {device}; peak lr {min(lrs):.2e}..{max(lrs):.2e} "
          f"over {len(lrs)} param groups")

    best, best_probs, history, step = None, None, [], 0
    for epoch in range(t.epochs):
        start = time.time()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, step = train_one_epoch(model, train_dl, optimizer, scheduler, loss_fn, device, rt, step)
        probs = engine.predict(model, valid_dl, device, rt)
        row = dict(epoch=epoch, lr=lr, train_loss=train_loss, valid_loss=log_loss(y_val, probs),
                   valid_accuracy=accuracy(y_val, probs), seconds=round(time.time() - start, 1))
        history.append(row)
        write_csv(out / "history.csv", pd.DataFrame(history))
        score = -row["valid_loss"] if t.monitor == "loss" else row["valid_accuracy"]
        if best is None or score > best:
            best, best_probs = score, probs
            save_checkpoint(out / "best.pt", model, config=cfg.model_dump(mode="json"), classes=classes,
                            data_config=dc, fold=fold, epoch=epoch, valid=row)
        print(f"fold {fold} epoch {epoch}: train_loss {train_loss:.4f} valid_loss {row['valid_loss']:.4f} "
              f"valid_acc {row['valid_accuracy']:.4f} ({row['seconds']}s)", flush=True)

    valid = folds[folds["fold"] == fold]
    oof = engine.prob_frame(valid[d.id_col], classes, best_probs, d.id_col,
                            fold=fold, **{d.label_col: valid[d.label_col].to_list()})
    write_csv(out / "oof.csv", oof)  # written last: its presence means the fold is done

# ----------------------------------------------------------------------------- entry


def main(cfg: Config, fold: int | None = None) -> None:
    folds = load_folds(cfg)
    todo = range(cfg.folds.n_folds) if fold is None else [fold]
    if fold is not None and not 0 <= fold < cfg.folds.n_folds:
        raise PipelineError(f"--fold {fold}: the folds file has folds 0..{cfg.folds.n_folds - 1}")
    for k in todo:
        train_fold(cfg, folds, k)
