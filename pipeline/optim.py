"""Optimizer, discriminative learning rates, per-phase LR schedules, and freezing the backbone.

One optimizer lives through all of a fold's phases (so Adam's moments carry over); each phase gets
its own schedule over it. Every param group carries `lr_mult`, its share of the phase's peak LR.
"""

from __future__ import annotations

import math
import warnings

import timm
import torch
from timm.models import group_parameters
from timm.optim import create_optimizer_v2, list_optimizers
from timm.optim._param_groups import auto_group_layers
from timm.scheduler import CosineLRScheduler

from .config import Phase, Train
from .errors import PipelineError

# ----------------------------------------------------------------------------- optimizer


def layer_groups(model: torch.nn.Module) -> int:
    """How many layer groups timm's layer decay sees (stem = 0 ... head = n - 1)."""
    if hasattr(model, "group_matcher"):
        layer_map = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    else:
        layer_map = auto_group_layers(model)
    return max(layer_map.values()) + 1


def layer_decay_of(model: torch.nn.Module, t: Train) -> float | None:
    """The per-group decay the config asks for, directly or as a stem-to-head ratio."""
    if t.lr_ratio is None:
        return t.layer_decay
    depth = layer_groups(model) - 1
    return (1.0 / t.lr_ratio) ** (1.0 / depth) if depth > 0 else None


def make_optimizer(model: torch.nn.Module, t: Train) -> torch.optim.Optimizer:
    """All parameters, grouped by timm's layer decay; call before freezing anything (timm skips
    parameters that do not require grad, and a later phase unfreezes them)."""
    if t.optimizer not in list_optimizers():
        raise PipelineError(f"train.optimizer: '{t.optimizer}' is not a timm optimizer (e.g. adamw, sgd, lamb, adan)")
    optimizer = create_optimizer_v2(
        model,
        opt=t.optimizer,
        lr=t.phases[0].lr,
        weight_decay=t.weight_decay,
        momentum=t.momentum,
        layer_decay=layer_decay_of(model, t),
    )
    for group in optimizer.param_groups:
        # renamed so timm's schedulers do not apply it a second time on top of our peaks
        group["lr_mult"] = group.pop("lr_scale", 1.0)
        if "betas" in group:
            group["cfg_betas"] = tuple(group["betas"])
        elif "momentum" in group:
            group["cfg_momentum"] = group["momentum"]
    return optimizer


def peak_lrs(optimizer: torch.optim.Optimizer, phase: Phase, t: Train, batch: int | None = None) -> list[float]:
    """Each group's peak LR in this phase, with linear scaling by the effective batch if asked
    (`batch`: the phase's batch, which batch_size: auto chooses per phase)."""
    batch = batch or t.batch_size
    scale = batch * t.accum_steps / t.lr_ref_batch if t.lr_ref_batch else 1.0
    return [phase.lr * scale * g["lr_mult"] for g in optimizer.param_groups]


def lrs_by_layer(peaks: list[float]) -> list[float]:
    """The distinct peak LRs from stem to head (groups also differ by weight decay alone)."""
    return sorted(set(round(p, 12) for p in peaks))


# ----------------------------------------------------------------------------- schedules


class PhaseSchedule:
    """A phase's LR (and one-cycle momentum) schedule, stepped once per optimizer update.
    onecycle is torch's OneCycleLR; cosine and sgdr are timm's CosineLRScheduler."""

    def __init__(self, optimizer, phase: Phase, peaks: list[float], updates_per_epoch: int):
        self.optimizer, self.phase, self.t = optimizer, phase, 0
        total = phase.epochs * updates_per_epoch
        for group, peak in zip(optimizer.param_groups, peaks):
            group["initial_lr"], group["lr"] = peak, peak  # timm only setdefaults it: a new phase must reset
            if "cfg_betas" in group:
                group["betas"] = group["cfg_betas"]
            elif "cfg_momentum" in group:
                group["momentum"] = group["cfg_momentum"]
        warmup = round(phase.warmup_epochs * updates_per_epoch)
        low = min(peaks) * 1e-2
        if phase.sched == "onecycle":
            self.impl = torch.optim.lr_scheduler.OneCycleLR(
                # torch divides by each half's length: even a tiny test run needs two steps in each
                optimizer,
                max_lr=peaks,
                pct_start=phase.pct_start,
                total_steps=max(total, math.ceil(2 / min(phase.pct_start, 1 - phase.pct_start)) + 1),
                base_momentum=phase.base_momentum,
                max_momentum=phase.max_momentum,
                cycle_momentum=True,
            )
        elif phase.sched in ("cosine", "sgdr"):
            cycle = total - warmup
            if phase.sched == "sgdr":
                cycle = round((phase.cycle_epochs or phase.epochs / 3) * updates_per_epoch)
            self.impl = CosineLRScheduler(
                optimizer,
                t_initial=max(cycle, 1),
                lr_min=low,
                cycle_mul=phase.cycle_mul,
                cycle_limit=total if phase.sched == "sgdr" else 1,
                warmup_t=warmup,
                warmup_lr_init=low,
                warmup_prefix=True,
                t_in_epochs=False,
            )
            self.impl.step_update(0)
        else:
            self.impl = None

    def step(self) -> None:
        """After an optimizer update: set the values for the next one."""
        self.t += 1
        if isinstance(self.impl, CosineLRScheduler):
            self.impl.step_update(self.t)
        elif self.impl is not None and self.t < self.impl.total_steps:
            self.impl.step()

    def state_dict(self) -> dict:
        return {"t": self.t, "impl": self.impl.state_dict() if self.impl is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Resume: restore the scheduler, then put the optimizer's LRs where it left them."""
        self.t = state["t"]
        if self.impl is None:
            return
        self.impl.load_state_dict(state["impl"])
        if isinstance(self.impl, CosineLRScheduler):
            self.impl.step_update(self.t)
        elif self.t > 0:
            self.impl.last_epoch -= 1  # recompute the current step's values
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "step() before optimizer.step()": intended here
                self.impl.step()


# ----------------------------------------------------------------------------- freezing


def head_params(model: torch.nn.Module) -> set[int]:
    return {id(p) for p in model.get_classifier().parameters()}


def set_frozen(model: torch.nn.Module, frozen: bool) -> None:
    """Frozen: only the classifier takes gradients. Call `freeze_bn` after each `model.train()`."""
    head = head_params(model)
    for p in model.parameters():
        p.requires_grad_(not frozen or id(p) in head)


def freeze_bn(model: torch.nn.Module) -> None:
    """Keep the backbone's BatchNorm layers in eval mode: their running statistics stay put."""
    model = timm.utils.unwrap_model(model)  # DDP or torch.compile around it
    head = set(model.get_classifier().modules())
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m not in head:
            m.eval()


def updates_per_epoch(batches: int, accum_steps: int) -> int:
    return math.ceil(batches / accum_steps)
