"""A fold's phases and epochs around the loop (loop.py): each phase's loader, schedule and peak
LRs; each epoch trained, validated (the EMA too), scored, kept or not, checkpointed and logged
with where its time went."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import bn_fold, distributed, optim, tricks
from ..config import Phase
from ..io import write_csv
from . import loop
from .checkpoints import Resume
from .clock import Clock
from .fold import FoldRun, epoch_seed, phase_size, seed_everything
from .keep import finish_swa, keep_and_save, offered, pooled_features, score_row, second_score, validate
from .loaders import phase_batch, phase_loader, valid_loader
from .loop import StepTricks, check_finite


@dataclass(frozen=True)
class PhaseRun:
    """What every epoch of one phase shares."""

    p: int
    phase: Phase
    train_dl: object
    schedule: optim.PhaseSchedule
    valid_dl: object
    y_val: np.ndarray
    peaks: list[float]
    net: torch.nn.Module  # what the steps run: run.net, or its copy with BatchNorm folded (step_net)
    pooled: torch.Tensor | None = None  # the raw weights' validation features (pooled_features)
    ema_pooled: torch.Tensor | None = None  # the same, when they serve the EMA too


def start_phase(run: FoldRun, p: int, resume: Resume | None, valid_dl, y_val) -> PhaseRun:
    """Phase p's loader (its batch chosen), schedule (resumed inside the phase) and peak LRs, said
    in one line; the validation features computed once when the phase leaves them unchanged."""
    spec, state, phase = run.spec, run.state, run.spec.cfg.train.phases[p]
    t, start = spec.cfg.train, spec.cfg.train.phase_starts[p]
    batch = phase_batch(run, p)
    optim.set_frozen(state.model, phase.frozen)
    train_dl = phase_loader(run, p, batch)
    peaks = optim.peak_lrs(state.optimizer, phase, t, batch)
    schedule = optim.PhaseSchedule(state.optimizer, phase, peaks, optim.updates_per_epoch(len(train_dl), t.accum_steps))
    if resume is not None and resume.phase == p and resume.schedule is not None:
        schedule.load_state_dict(resume.schedule)
    groups = zip(peaks, state.optimizer.param_groups)
    trained = [pk for pk, g in groups if not phase.frozen or any(q.requires_grad for q in g["params"])]
    layers = optim.lrs_by_layer(trained)
    net = step_net(run, phase)
    distributed.say(
        f"fold {spec.fold} phase {p}: epochs {start}..{start + phase.epochs - 1}, "
        f"{phase_size(phase, spec.final_dc)} px, {'head only' if phase.frozen else 'all layers'}"
        f"{' (BatchNorm folded)' if net is not run.net else ''}, "
        f"{len(train_dl.dataset)} train images, batch {batch}, {phase.sched}; peak lr by layer group "
        "(stem to head): " + " ".join(f"{lr:.2e}" for lr in layers)
    )
    pooled = ema_pooled = None
    if phase.frozen and phase.bn_eval:
        pooled = pooled_features(run, valid_dl)
        if state.ema is not None and pooled is not None and tricks.same_backbone(state.model, state.ema.module):
            ema_pooled = pooled
    return PhaseRun(p, phase, train_dl, schedule, valid_dl, y_val, peaks, net, pooled, ema_pooled)


def step_net(run: FoldRun, phase: Phase) -> torch.nn.Module:
    """run.net, or in a head-only phase with its BatchNorm frozen (runtime.fold_frozen_bn) a copy of
    the model with that BatchNorm folded into the convolutions (bn_fold), sharing the head. Not
    under DDP or torch.compile, whose wrappers hold the model itself."""
    spec = run.spec
    if not (phase.frozen and phase.bn_eval and spec.cfg.runtime.fold_frozen_bn and run.net is run.state.model):
        return run.net
    twin = bn_fold.folded_copy(run.state.model, phase_size(phase, spec.final_dc), spec.device)
    return run.net if twin is None else twin


def run_phase(run: FoldRun, p: int, first_epoch: int, resume: Resume | None, valid_dl, y_val) -> None:
    """The phase's epochs from `first_epoch` on (later than its start when resuming inside it)."""
    ph = start_phase(run, p, resume, valid_dl, y_val)
    for epoch in range(first_epoch, run.spec.cfg.train.phase_starts[p] + ph.phase.epochs):
        run_epoch(run, ph, epoch)


def step_tricks(run: FoldRun, p: int, epoch: int, loader) -> StepTricks:
    spec, state, t = run.spec, run.state, run.spec.cfg.train
    clock = None
    if spec.estimate and p not in state.timed and distributed.is_main():  # a phase's first epoch here
        state.timed.add(p)
        clock = Clock(spec, p, epoch, len(loader), len(loader) * loader.batch_size * distributed.world_size())
    return StepTricks(
        run.mixer if t.mixes(p, epoch) else None,
        len(spec.classes),
        t.rdrop,
        spec.cfg.data.multilabel,
        t.fgm,
        state.ema,
        run.eraser,
        clock,
        state.model,
    )


def validate_epoch(run: FoldRun, ph: PhaseRun, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The epoch's validation probabilities, the raw weights' and the EMA's, each checked finite."""
    ema = run.state.ema
    probs = check_finite(validate(run, ph.valid_dl, ph.pooled), epoch, "trained")
    if ema:  # each DDP process's EMA averaged its own BatchNorm statistics: take process 0's
        distributed.broadcast_buffers(ema.module)
    ema_probs = validate(run, ph.valid_dl, ph.ema_pooled, ema.module) if ema else None
    return probs, None if ema_probs is None else check_finite(ema_probs, epoch, "EMA")


def run_epoch(run: FoldRun, ph: PhaseRun, epoch: int) -> None:
    """One epoch, validated (the EMA too) and checkpointed; history.csv gets its row, with where the
    time went: waiting for batches (data_s), the training steps (train_s), validation and checkpoints."""
    spec, state, t = run.spec, run.state, run.spec.cfg.train
    seed = epoch_seed(spec, epoch)
    seed_everything(seed)
    ph.train_dl.sampler.set_epoch(seed)
    start = time.time()
    train_loss, waited = loop.train_one_epoch(
        ph.net, ph.train_dl, state.optimizer, ph.schedule, state.scaler, run.loss_fn, spec.device,
        spec.cfg.runtime, t.accum_steps, ph.phase.bn_eval, spec.final_dc, t.clip_grad_norm,
        step_tricks(run, ph.p, epoch, ph.train_dl), f"fold {spec.fold} epoch {epoch}",
    )  # fmt: skip
    if state.swa is not None and epoch >= t.epochs - t.swa.epochs:
        state.swa.update(state.model)
    trained = time.time()
    probs, ema_probs = validate_epoch(run, ph, epoch)
    validated = time.time()
    row = dict(
        epoch=epoch,
        phase=ph.p,
        img_size=phase_size(ph.phase, spec.final_dc),
        frozen=ph.phase.frozen,
        batch_size=ph.train_dl.batch_size * distributed.world_size(),
        lr_head=max(ph.peaks),
        lr_stem=min(ph.peaks),
        train_loss=train_loss,
        **score_row(run, ph.y_val, probs, ""),
        **({} if ema_probs is None else score_row(run, ph.y_val, ema_probs, "ema_")),
        data_s=round(waited, 2),
        train_s=round(trained - start - waited, 2),
        valid_s=round(validated - trained, 2),
        seconds=round(validated - start, 1),
    )
    state.history.append(row)
    keep_and_save(run, row, offered(run, row, probs, ema_probs), ph.p, ph.schedule)
    row["save_s"] = round(time.time() - validated, 2)  # in history.csv; last.pt's copy is already written
    if distributed.is_main():
        write_csv(spec.paths.history(spec.fold), pd.DataFrame(state.history))
        if state.board:  # none for lr-find's phases before the one it tests
            state.board.epoch(row)
    distributed.say(epoch_line(spec.fold, row))


def epoch_line(fold: int, row: dict) -> str:
    ema = row.get("ema_valid_loss")
    return (
        f"fold {fold} epoch {row['epoch']} (phase {row['phase']}, {row['img_size']} px"
        f"{', frozen' if row['frozen'] else ''}): train_loss {row['train_loss']:.4f} "
        f"valid_loss {row['valid_loss']:.4f} {second_score(row)} "
        + (f"ema_valid_loss {ema:.4f} {second_score(row, 'ema_')} " if ema is not None else "")
        + f"({row['seconds'] + row['save_s']:.1f}s: data {row['data_s']}s, steps {row['train_s']}s, "
        f"valid {row['valid_s']}s, save {row['save_s']}s)"
    )


def run_phases(run: FoldRun, next_epoch: int, resume: Resume | None) -> None:
    """Every phase from `next_epoch` on, then SWA's average when train.swa keeps one."""
    t = run.spec.cfg.train
    valid_dl, y_val = valid_loader(run.spec, run.source)
    for p, (phase, start) in enumerate(zip(t.phases, t.phase_starts)):
        if next_epoch < start + phase.epochs:
            run_phase(run, p, max(next_epoch, start), resume, valid_dl, y_val)
    finish_swa(run, valid_dl, y_val)


def train_phases_before(run: FoldRun, p: int) -> None:
    """Train the fold's phases before phase `p`, so `run` holds what phase p would start from
    (lr-find's test of a later phase)."""
    valid_dl, y_val = valid_loader(run.spec, run.source)
    for q in range(p):
        run_phase(run, q, run.spec.cfg.train.phase_starts[q], None, valid_dl, y_val)
