"""Stage 2: fine-tune a timm backbone on each fold, phase by phase; keep the best epoch's model.

Usage: python -m pipeline train CONFIG [key=value ...] [--fold K]

A fold runs the config's phases in order (say: head only at 128 px, then everything at 160 px,
then at 224 px) on one model and one optimizer. It writes runs/<name>/fold<K>/:
  last.pt      after every epoch: model, optimizer, schedule, scaler, epoch and phase
  best.pt      the kept epoch's unwrapped state_dict + config + classes + data config (for infer)
  history.csv  one row per epoch; curves.png plots it, with the phase boundaries
  oof.csv      the kept model's probabilities on fold K, written last: the fold is done
Run again after a crash or a kill, it resumes from last.pt; a finished fold is skipped.
"""
from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch

from . import engine, optim
from .config import STAGE_SECTIONS, Config, Phase, to_yaml
from .data import (ImageDataset, balanced_sampler, eval_transform, image_paths, make_loader, oversample,
                   train_transform)
from .errors import PipelineError
from .folds import load_folds, training_rows
from .io import atomic_path, write_csv
from .metrics import accuracy, log_loss
from .mine import hard_negative_rows
from .models import create_model, data_config, save_checkpoint
from .pseudo import pseudo_rows

# ----------------------------------------------------------------------------- setup


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def class_list(folds: pd.DataFrame, cfg: Config) -> list[str]:
    d = cfg.data
    labels = folds[d.label_col]
    classes = sorted({t for r in engine.split_labels(labels, d.sep) for t in r} if d.multilabel else labels.unique())
    reserved = {cfg.data.id_col, cfg.data.label_col, "fold"}
    if reserved & set(classes):
        raise PipelineError(f"{cfg.data.train_csv}: class name '{(reserved & set(classes)).pop()}' "
                            "clashes with a column name of the prediction files")
    return classes


def fingerprint(cfg: Config, folds: pd.DataFrame, extra: tuple[list[Path], np.ndarray]) -> str:
    """What a fold's training depends on; a checkpoint from other settings is not resumed."""
    paths, targets = extra
    text = (to_yaml(cfg, STAGE_SECTIONS["train"]) + folds.to_csv(index=False)
            + "".join(map(str, paths)) + np.array2string(targets, threshold=np.inf))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def phase_size(phase: Phase, final_dc: dict) -> int:
    return phase.img_size or final_dc["input_size"][-1]


def check_phase_sizes(cfg: Config, model: torch.nn.Module, final_dc: dict) -> None:
    """Models with position embeddings (ViT) are built for one size; progressive resizing needs a CNN."""
    if not model.pretrained_cfg.get("fixed_input_size"):
        return
    for i, phase in enumerate(cfg.train.phases):
        if phase_size(phase, final_dc) != final_dc["input_size"][-1]:
            raise PipelineError(f"train.phases.{i}.img_size: {cfg.model.backbone} has a fixed input size "
                                f"({final_dc['input_size'][-1]} px, model.img_size); leave it null")


def fold_images(cfg: Config, rows: pd.DataFrame, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """Image paths (each checked to exist) and class indices of some rows of the folds file."""
    d = cfg.data
    return (image_paths(d.root, d.train_images, rows[d.id_col], cfg.folds_file),
            engine.encode(rows[d.label_col], classes, d.sep))


def extra_rows(cfg: Config, folds: pd.DataFrame, fold: int, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """What other experiments add to this fold's training: hard negatives and pseudo-labels, as
    image paths and (N, K) targets. Both are checked never to be a validation image."""
    neg = hard_negative_rows(cfg, folds, fold)
    neg_t = np.zeros((len(neg), len(classes)))
    if neg:
        neg_t[:, classes.index(cfg.data.negative_class)] = 1.0
    pl_paths, pl_t = pseudo_rows(cfg, folds, fold, classes)
    return neg + pl_paths, np.concatenate([neg_t, pl_t])


def train_loader(cfg: Config, folds: pd.DataFrame, fold: int, classes: list[str], phase: Phase,
                 final_dc: dict, device: torch.device, extra: tuple[list[Path], np.ndarray] | None = None):
    """The other folds' images (negatives sampled to train.neg_fraction), plus other experiments'
    hard negatives and pseudo-labels, augmented at the phase's size, balanced as train.sampling
    says. Oversampling happens after the split: a validation image can never be repeated into it.
    `extra`: extra_rows' result when the caller has it already."""
    t = cfg.train
    paths, y = fold_images(cfg, training_rows(cfg, folds, fold), classes)
    if t.sampling == "oversample":
        idx = oversample(y, t.seed + fold)
        paths, y = [paths[i] for i in idx], y[idx]
    extra_paths, extra_t = extra if extra is not None else extra_rows(cfg, folds, fold, classes)
    targets = y
    if extra_paths:
        rows = np.concatenate([y if cfg.data.multilabel else np.eye(len(classes))[y], extra_t])
        soft = cfg.data.multilabel or not (rows.max(1) == 1.0).all()
        # class indices unless the task is multi-label or some pseudo-labels are soft
        paths, targets = paths + extra_paths, rows if soft else rows.argmax(1)
    labels = targets.argmax(1) if np.ndim(targets) == 2 else targets
    sampler = balanced_sampler(labels) if t.sampling == "weighted" else None
    size = phase_size(phase, final_dc)
    dc = dict(final_dc, input_size=[3, size, size])
    ds = ImageDataset(paths, targets, train_transform(dc, t.aug))
    return make_loader(ds, t.batch_size, True, engine.num_workers(cfg.runtime, device), device, sampler)


def valid_loader(cfg: Config, folds: pd.DataFrame, fold: int, classes: list[str], final_dc: dict,
                 device: torch.device):
    """This fold's images, untouched, at the inference size (so the kept epoch is chosen on what
    inference will see)."""
    paths, y = fold_images(cfg, folds[folds["fold"] == fold], classes)
    dl = make_loader(ImageDataset(paths, y, eval_transform(final_dc)), cfg.infer.batch_size, False,
                     engine.num_workers(cfg.runtime, device), device)
    return dl, y

# ----------------------------------------------------------------------------- the loop


class SmoothBCE(torch.nn.Module):
    """Binary cross-entropy per label, targets smoothed towards 1/2 by `smoothing`."""

    def __init__(self, smoothing: float):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits, target):
        target = target.float() * (1 - self.smoothing) + 0.5 * self.smoothing
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)


def make_loss(cfg: Config) -> torch.nn.Module:
    """Cross-entropy with label smoothing (it takes class indices or probability rows); binary
    cross-entropy per label for a multi-label task."""
    if cfg.data.multilabel:
        return SmoothBCE(cfg.train.label_smoothing)
    return torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)


def train_one_epoch(model, loader, optimizer, schedule, scaler, loss_fn, device, rt, accum: int,
                    bn_eval: bool) -> float:
    """One pass over the training images; one optimizer update per `accum` batches."""
    model.train()
    if bn_eval:
        optim.freeze_bn(model)
    total, seen = torch.zeros((), device=device), 0  # summed on the device: no sync per step
    optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(loader):
        x, y = engine.to_input(x, device, rt), y.to(device, non_blocking=True)
        with engine.autocast(device, rt):
            loss = loss_fn(model(x), y)
        scaler.scale(loss / accum).backward()
        if (i + 1) % accum == 0 or i + 1 == len(loader):
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
        total += loss.detach().float() * len(y)
        seen += len(y)
    mean = total.item() / max(seen, 1)
    if not np.isfinite(mean):
        raise PipelineError("training loss is not finite: lower the phase's lr (make lr-find)")
    return mean

# ----------------------------------------------------------------------------- a fold


@dataclass
class FoldRun:
    """Everything one fold's training carries from epoch to epoch (and through last.pt)."""
    cfg: Config
    fold: int
    folds: pd.DataFrame
    classes: list[str]
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    final_dc: dict
    fp: str
    extra: tuple[list[Path], np.ndarray]  # other experiments' rows for this fold (extra_rows)
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # score, epoch, probs of the kept epoch

    @property
    def out(self) -> Path:
        return self.cfg.run_dir / f"fold{self.fold}"


def build(cfg: Config, folds: pd.DataFrame, fold: int) -> FoldRun:
    """Model, optimizer (over every parameter) and loss scaler for a fold, before any phase."""
    seed_everything(cfg.train.seed + fold)
    classes = class_list(folds, cfg)
    device = engine.pick_device(cfg.runtime)
    model = create_model(cfg.model, len(classes))
    final_dc = data_config(model, cfg.model.img_size)
    check_phase_sizes(cfg, model, final_dc)
    model = engine.prepare(model, device, cfg.runtime)
    optimizer = optim.make_optimizer(model, cfg.train)
    extra = extra_rows(cfg, folds, fold, classes)  # read once: the fingerprint and every phase use it
    return FoldRun(cfg, fold, folds, classes, device, model, optimizer,
                   engine.grad_scaler(device, cfg.runtime), final_dc, fingerprint(cfg, folds, extra), extra)


def save_state(run: FoldRun, epoch: int, phase: int, schedule, done: bool) -> None:
    state = {"model": timm.utils.unwrap_model(run.model).state_dict(), "optimizer": run.optimizer.state_dict(),
             "schedule": schedule.state_dict(), "scaler": run.scaler.state_dict(), "epoch": epoch,
             "phase": phase, "history": run.history, "fingerprint": run.fp, "done": done,
             "best": {**run.best, "probs": torch.from_numpy(run.best["probs"])}}
    with atomic_path(run.out / "last.pt") as tmp:
        torch.save(state, tmp)


def load_state(run: FoldRun) -> dict | None:
    """last.pt if it was written by this very config and folds file, else None (start over)."""
    path = run.out / "last.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a checkpoint torn by a kill mid-write cannot exist (atomic), but a foreign one can
        return None
    if state.get("fingerprint") != run.fp:
        return None
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.history = list(state["history"])
    run.best = {**state["best"], "probs": state["best"]["probs"].numpy()}
    return state


def run_epoch(run: FoldRun, p: int, phase: Phase, epoch: int, train_dl, schedule, valid_dl, y_val,
              loss_fn, peaks: list[float]) -> None:
    cfg, t = run.cfg, run.cfg.train
    seed = t.seed + 1000 * run.fold + epoch  # per epoch, so a resumed run draws what it would have
    seed_everything(seed)
    train_dl.dataset.transform.set_random_seed(seed)
    start = time.time()
    train_loss = train_one_epoch(run.model, train_dl, run.optimizer, schedule, run.scaler, loss_fn,
                                 run.device, cfg.runtime, t.accum_steps, phase.bn_eval)
    probs = engine.predict(run.model, valid_dl, run.device, cfg.runtime, cfg.data.multilabel)
    row = dict(epoch=epoch, phase=p, img_size=phase_size(phase, run.final_dc), frozen=phase.frozen,
               lr_head=max(peaks), lr_stem=min(peaks), train_loss=train_loss,
               valid_loss=log_loss(y_val, probs), valid_accuracy=accuracy(y_val, probs),
               seconds=round(time.time() - start, 1))
    run.history.append(row)
    write_csv(run.out / "history.csv", pd.DataFrame(run.history))
    score = {"loss": -row["valid_loss"], "accuracy": row["valid_accuracy"], "last": epoch}[t.monitor]
    if run.best is None or score > run.best["score"]:
        run.best = dict(score=score, epoch=epoch, probs=probs)
        save_checkpoint(run.out / "best.pt", run.model, config=cfg.model_dump(mode="json"),
                        classes=run.classes, data_config=run.final_dc, fold=run.fold, epoch=epoch, valid=row)
    save_state(run, epoch, p, schedule, done=epoch == t.epochs - 1)
    print(f"fold {run.fold} epoch {epoch} (phase {p}, {row['img_size']} px{', frozen' if phase.frozen else ''}): "
          f"train_loss {train_loss:.4f} valid_loss {row['valid_loss']:.4f} "
          f"valid_acc {row['valid_accuracy']:.4f} ({row['seconds']}s)", flush=True)


def run_phase(run: FoldRun, p: int, first_epoch: int, resume: dict | None, valid_dl, y_val, loss_fn) -> None:
    """The phase's epochs from `first_epoch` on (later than its start when resuming inside it)."""
    cfg, phase = run.cfg, run.cfg.train.phases[p]
    start = cfg.train.phase_starts[p]
    optim.set_frozen(run.model, phase.frozen)
    train_dl = train_loader(cfg, run.folds, run.fold, run.classes, phase, run.final_dc, run.device, run.extra)
    peaks = optim.peak_lrs(run.optimizer, phase, cfg.train)
    schedule = optim.PhaseSchedule(run.optimizer, phase, peaks,
                                   optim.updates_per_epoch(len(train_dl), cfg.train.accum_steps))
    if resume is not None and resume["phase"] == p:
        schedule.load_state_dict(resume["schedule"])
    layers = optim.lrs_by_layer([pk for pk, g in zip(peaks, run.optimizer.param_groups)
                                 if not phase.frozen or any(q.requires_grad for q in g["params"])])
    print(f"fold {run.fold} phase {p}: epochs {start}..{start + phase.epochs - 1}, "
          f"{phase_size(phase, run.final_dc)} px, {'head only' if phase.frozen else 'all layers'}, "
          f"{len(train_dl.dataset)} train images, {phase.sched}; peak lr by layer group (stem to head): "
          + " ".join(f"{lr:.2e}" for lr in layers), flush=True)
    for epoch in range(first_epoch, start + phase.epochs):
        run_epoch(run, p, phase, epoch, train_dl, schedule, valid_dl, y_val, loss_fn, peaks)


def train_fold(cfg: Config, folds: pd.DataFrame, fold: int) -> None:
    run = build(cfg, folds, fold)
    oof_path = run.out / "oof.csv"
    resume = load_state(run)
    if resume is not None and resume["done"] and oof_path.is_file():
        print(f"fold {fold}: already trained ({run.out / 'last.pt'}); skipping")
        return
    oof_path.unlink(missing_ok=True)  # a stale one would mark an unfinished fold as done
    valid_dl, y_val = valid_loader(cfg, folds, fold, run.classes, run.final_dc, run.device)
    next_epoch = resume["epoch"] + 1 if resume else 0
    if resume:
        print(f"fold {fold}: resuming after epoch {resume['epoch']} from {run.out / 'last.pt'}")
    loss_fn = make_loss(cfg)
    for p, (phase, start) in enumerate(zip(cfg.train.phases, cfg.train.phase_starts)):
        if next_epoch < start + phase.epochs:
            run_phase(run, p, max(next_epoch, start), resume, valid_dl, y_val, loss_fn)
    finish(run)


def finish(run: FoldRun) -> None:
    from .plots import plot_curves  # matplotlib only when a fold ends

    d = run.cfg.data
    plot_curves(pd.DataFrame(run.history), run.out / "curves.png", f"{run.cfg.name} fold {run.fold}",
                kept=run.best["epoch"])
    valid = run.folds[run.folds["fold"] == run.fold]
    oof = engine.prob_frame(valid[d.id_col], run.classes, run.best["probs"], d.id_col,
                            fold=run.fold, **{d.label_col: valid[d.label_col].to_list()})
    write_csv(run.out / "oof.csv", oof)  # written last: its presence means the fold is done

# ----------------------------------------------------------------------------- entry


def main(cfg: Config, fold: int | None = None) -> None:
    folds = load_folds(cfg)
    if fold is not None and not 0 <= fold < cfg.folds.n_folds:
        raise PipelineError(f"--fold {fold}: the folds file has folds 0..{cfg.folds.n_folds - 1}")
    for k in range(cfg.folds.n_folds) if fold is None else [fold]:
        train_fold(cfg, folds, k)
