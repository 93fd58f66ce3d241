"""The training loop, in plain PyTorch: one epoch over a phase's loader, one optimizer update per
train.accum_steps batches, with the tricks a step may carry (mixup/cutmix, R-Drop, FGM, EMA,
random erasing) and the clock that times the first steps. Everything else a fold does (phases,
validation, checkpoints) is around this file, in epochs.py."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch

from .. import augment, cores, distributed, engine, optim, progress, tricks
from ..config import Fgm
from ..errors import PipelineError
from ..losses import rdrop_loss
from .clock import Clock


@dataclass
class StepTricks:
    """What a training step does besides one forward and backward, set per epoch from train.*."""

    mixer: object | None = None  # timm's Mixup, in the epochs that mix
    num_classes: int = 0
    rdrop: float = 0.0
    multilabel: bool = False
    fgm: Fgm | None = None
    ema: tricks.WeightEma | None = None  # updated after every optimizer update
    erase: augment.Eraser | None = None  # train.aug.random_erasing, on the normalised batch
    clock: Clock | None = None  # times the first steps of a fold's phase, then says what is left
    averaged: torch.nn.Module | None = None  # whose weights EMA averages, when the step runs a copy (bn_fold)


def forward_backward(model, x, y, loss_fn, scaler, device, rt, accum: int, tr: StepTricks):
    """One batch's loss, its gradients added to the parameters': mixup/cutmix mix the batch first,
    R-Drop passes it twice (stacked, so two dropout masks in one forward), FGM adds a second
    forward and backward with the input or the stem moved along the gradient, then restored."""
    if tr.mixer is not None:
        x, y = tricks.mix(tr.mixer, x, y, tr.num_classes)
    if tr.fgm is not None and tr.fgm.target == "input":
        x.requires_grad_(True)
    with engine.autocast(device, rt):
        if tr.rdrop:
            loss = rdrop_loss(model(torch.cat([x, x])), y, loss_fn, tr.rdrop, tr.multilabel)
        else:
            loss = loss_fn(model(x), y)
    scaler.scale(loss / accum if accum > 1 else loss).backward()
    if tr.fgm is not None:
        target, per_sample = tricks.fgm_target(model, x, tr.fgm)
        with tricks.perturbed(target, tr.fgm.epsilon, per_sample) as moved:
            if moved:  # nothing to move in a head-only phase's frozen stem
                with engine.autocast(device, rt):
                    adversarial = loss_fn(model(x), y)
                scaler.scale(adversarial / accum if accum > 1 else adversarial).backward()
    return loss


def train_one_epoch(
    model,
    loader,
    optimizer,
    schedule,
    scaler,
    loss_fn,
    device,
    rt,
    accum: int,
    bn_eval: bool,
    dc=None,
    clip=None,
    step_tricks: StepTricks | None = None,
    desc: str = "train",
) -> tuple[float, float]:
    """One pass over the training images; one optimizer update per `accum` batches. Under DDP the
    batches between updates skip the gradient all-reduce (no_sync). Returns the mean loss and the
    seconds spent waiting for batches (the loader's share of the epoch). `dc`: the data config whose
    mean and std normalise the loader's uint8 batches; `clip`: the largest gradient norm an update
    may take (train.clip_grad_norm), measured after unscaling a float16 loss."""
    tr = step_tricks or StepTricks()
    model.train()
    if bn_eval:
        optim.freeze_bn(model)
    total, seen, waited = torch.zeros((), device=device), 0, 0.0  # loss summed on the device: no sync per step
    optimizer.zero_grad(set_to_none=True)
    shown = loader
    if distributed.is_main():  # a bar on a terminal only, its rate in images/s
        shown = progress.bar(loader, len(loader), desc, unit="img", unit_scale=getattr(loader, "batch_size", 1))
    batches, t0 = iter(shown), time.perf_counter()
    for i, (x, y) in enumerate(batches):
        waited += time.perf_counter() - t0
        x, y = engine.to_input(x, device, rt, dc), y.to(device, non_blocking=True)
        if tr.erase is not None:
            tr.erase(x, getattr(loader.sampler, "seed", 0), i, distributed.rank(), distributed.world_size())
        update = (i + 1) % accum == 0 or i + 1 == len(loader)
        with contextlib.nullcontext() if update or not hasattr(model, "no_sync") else model.no_sync():
            loss = forward_backward(model, x, y, loss_fn, scaler, device, rt, accum, tr)
        if update:
            if clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            if tr.ema is not None:
                tr.ema.update(model if tr.averaged is None else tr.averaged)
        total += loss.detach().float() * len(y)
        seen += len(y)
        if (i + 1) % FINITE_EVERY == 0 and not torch.isfinite(total):  # a sync, so not every step
            raise PipelineError(f"training loss is not finite at step {i + 1}: {DIVERGED}")
        if tr.clock is not None:
            tr.clock.step(i + 1, seen * distributed.world_size())
        cores.rebalance()  # another run started or ended: take this process's share of the cores
        if shown is not loader and i % 10 == 0:  # live values on the bar: a sync, so not every step
            progress.show(shown, loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}")
        t0 = time.perf_counter()
    mean = total.item() / max(seen, 1)
    if not np.isfinite(mean):
        raise PipelineError(f"training loss is not finite: {DIVERGED}")
    return mean, waited


FINITE_EVERY = 20  # steps between checks that the loss is still finite
DIVERGED = "lower the phase's lr (make lr-find); best.pt and last.pt keep the last good epoch"


def check_finite(probs: np.ndarray, epoch: int, weights: str) -> np.ndarray:
    """Stop with one line when an epoch's update made the weights predict NaN (a one-step epoch
    can: its loss was taken before the update), before any metric or checkpoint sees them."""
    if not np.isfinite(probs).all():
        raise PipelineError(f"epoch {epoch}: the {weights} weights predict non-finite probabilities: {DIVERGED}")
    return probs
