"""Stage 2: fine-tune a timm backbone on each fold, phase by phase; keep the best epoch's model.

Usage: python -m pipeline train CONFIG [key=value ...] [--fold K]      (make train [FOLD=K])

A fold runs the config's phases in order (say: head only at 128 px, then everything at 160 px,
then at 224 px) on one model and one optimizer. It writes runs/<name>/fold<K>/:
  last.pt      after every epoch: model, optimizer, schedule, scaler, epoch and phase
  best.pt      the kept epoch's unwrapped state_dict + config + classes + data config (for infer)
  history.csv  one row per epoch; curves.png plots it, with the phase boundaries
  oof.csv      the kept model's probabilities on fold K, written last: the fold is done
Run again after a crash or a kill, it resumes from last.pt; a finished fold is skipped.

On several GPUs, one fold's processes under torchrun (make train GPUS=N) train it with DDP:
  python -m torch.distributed.run --standalone --nproc_per_node=N -m pipeline train CONFIG --fold K

lr_find and show_batch build on this stage through `start_fold`, `train_phases_before`,
`phase_loader` and `epoch_seed` (at the end of this file) and the FoldRun they pass around, and
nothing else: they are variants of training, so they see exactly the loader and model it builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import timm
import torch
import yaml

from .. import augment, budget, cores, distributed, engine, optim, progress, tricks
from ..cache import run_cache
from ..config import Config, Fgm, Phase
from ..data import (
    DataConfig,
    ImageDataset,
    balanced_sampler,
    eval_transform,
    make_loader,
    oversample,
    train_transform,
)
from ..errors import PipelineError, interrupts_say
from ..folds_file import Images, fold_images, load_folds, training_rows
from ..io import atomic_path, damaged, write_csv
from ..labels import class_list, prob_frame, quantile_bins, width_edges
from ..losses import make_loss, rdrop_loss
from ..metrics import accuracy, higher_is_better, log_loss, score
from ..models import create_model, data_config, save_checkpoint
from ..preflight import check_competition
from ..runs import RunDir
from ..stamps import matches, settings
from ..targets import TargetScale, fit_scale, prediction_loss
from ..upstream import extra_rows

# ----------------------------------------------------------------------------- setup


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def data_digest(folds: pd.DataFrame, extra: Images, root: str | None) -> str:
    """The rows a fold trains on; with the train settings, what decides whether last.pt resumes.
    Extra images count by their path under `root` (data.root), so a moved competition folder
    resumes; root None gives the digest of the release that counted them by their whole path."""
    paths = [os.path.relpath(p, root) if root else str(p) for p in extra.paths]
    text = folds.to_csv(index=False) + "".join(paths) + np.array2string(extra.targets, threshold=np.inf)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def legacy_fingerprint(cfg: Config, folds: pd.DataFrame, extra: Images) -> str:
    """The resume check of the release before this one (a digest of the train sections' YAML and
    the rows), so a fold it left half-done resumes after an upgrade instead of starting over."""
    doc = cfg.model_dump(mode="json")
    text = yaml.safe_dump({k: doc[k] for k in ("data", "model", "train", "folds")}, sort_keys=False)
    text += folds.to_csv(index=False) + "".join(map(str, extra.paths))
    return hashlib.sha256((text + np.array2string(extra.targets, threshold=np.inf)).encode()).hexdigest()[:16]


def phase_size(phase: Phase, final_dc: DataConfig) -> int:
    return phase.img_size or final_dc.size


def check_phase_sizes(cfg: Config, model: torch.nn.Module, final_dc: DataConfig) -> None:
    """Models with position embeddings (ViT) are built for one size; progressive resizing needs a CNN."""
    if not model.pretrained_cfg.get("fixed_input_size"):
        return
    for i, phase in enumerate(cfg.train.phases):
        if phase_size(phase, final_dc) != final_dc.size:
            raise PipelineError(
                f"train.phases.{i}.img_size: {cfg.model.backbone} has a fixed input size "
                f"({final_dc.size} px, model.img_size); leave it null"
            )


def train_loader(
    cfg: Config,
    folds: pd.DataFrame,
    fold: int,
    classes: list[str],
    phase: Phase,
    final_dc: DataConfig,
    device: torch.device,
    extra: Images | None = None,
    source=None,
    batch: int | None = None,
    scale: TargetScale | None = None,
):
    """The other folds' images (negatives sampled to train.neg_fraction), plus other experiments'
    hard negatives and pseudo-labels, augmented at the phase's size, balanced as train.sampling
    says. Oversampling happens after the split: a validation image can never be repeated into it.
    `extra`: upstream.extra_rows' result when the caller has it already; `source`: the decode
    cache; `batch`: the phase's batch (train.batch_size unless that is auto); `scale`: a number's
    target scale (targets.fit_scale), which the loader's targets are normalised by."""
    t = cfg.train
    own = fold_images(cfg, training_rows(cfg, folds, fold), classes)
    paths, targets = own.paths, own.targets
    strata = number_bins(targets) if cfg.data.numeric else targets
    if t.sampling == "oversample":
        idx = oversample(strata, t.seed + fold)
        paths, targets, strata = [paths[i] for i in idx], targets[idx], strata[idx]
    extra = extra if extra is not None else extra_rows(cfg, folds, fold, classes)
    if cfg.data.numeric:
        extra_y = extra.targets.reshape(-1)
        paths, targets = paths + extra.paths, scale.normalise(np.concatenate([targets, extra_y]))
        strata = np.concatenate([strata, number_bins(own.targets, extra_y)])
    elif len(extra):
        rows = np.concatenate([targets if cfg.data.multilabel else np.eye(len(classes))[targets], extra.targets])
        soft = cfg.data.multilabel or not (rows.max(1) == 1.0).all()
        # class indices unless the task is multi-label or some pseudo-labels are soft
        paths, targets = paths + extra.paths, rows if soft else rows.argmax(1)
        strata = targets.argmax(1) if np.ndim(targets) == 2 else targets
    sampler = balanced_sampler(strata) if t.sampling == "weighted" else None
    ds = ImageDataset(paths, targets, train_transform(final_dc.at(phase_size(phase, final_dc)), t.aug), source)
    return make_loader(ds, batch or t.batch_size, True, engine.loader_options(cfg.runtime, device), sampler)


def number_bins(y: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """What train.sampling balances for a number: bins of equal width over the fold's training
    targets y (one per value when they are few, as an ordinal task's grades); `values` placed in
    y's bins when given."""
    return quantile_bins(y if values is None else values, edges=width_edges(y))


def valid_loader(
    cfg: Config,
    folds: pd.DataFrame,
    fold: int,
    classes: list[str],
    final_dc: DataConfig,
    device: torch.device,
    source=None,
):
    """This fold's images, untouched, at the inference size (so the kept epoch is chosen on what
    inference will see), and all their targets. Under DDP the loader holds this process's share
    (every world-th image), which distributed.gather_rows puts back in order."""
    images = fold_images(cfg, folds[folds["fold"] == fold], classes)
    mine = slice(distributed.rank(), None, distributed.world_size())
    dl = make_loader(
        ImageDataset(images.paths[mine], images.targets[mine], eval_transform(final_dc), source),
        cfg.infer.batch_size,
        False,
        engine.loader_options(cfg.runtime, device),
    )
    return dl, images.targets


# ----------------------------------------------------------------------------- the loop


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
    scaler.scale(loss / accum).backward()
    if tr.fgm is not None:
        target, per_sample = tricks.fgm_target(model, x, tr.fgm)
        with tricks.perturbed(target, tr.fgm.epsilon, per_sample) as moved:
            if moved:  # nothing to move in a head-only phase's frozen stem
                with engine.autocast(device, rt):
                    adversarial = loss_fn(model(x), y)
                scaler.scale(adversarial / accum).backward()
    return loss


# The steps timed for the estimate: those after the first few (start-up, first allocations, the
# loader's workers), up to this many, or to the end of a shorter epoch.
WARM_STEPS, TIMED_STEPS = 3, 20
# An all-layer step's cost against a head-only one's at the same size (the head-only backward stops
# at the head), for a phase not yet timed; from `make bench`'s loop (154 against 618 img/s).
ALL_LAYERS_COST = 4.0


@dataclass
class Clock:
    """Times the first steps of a phase (its first epoch in this process), then prints what the
    fold and the run will take at that speed: the phases not yet timed are scaled by their pixels
    and by ALL_LAYERS_COST, validation by its images at a forward's share of a step."""

    run: FoldRun
    p: int
    epoch: int  # the epoch being timed
    steps: int  # the epoch's steps
    images: int  # the epoch's training images (every process's)
    marks: list = field(default_factory=list)

    def step(self, done: int, images: int) -> None:
        if done == min(WARM_STEPS, self.steps - 1) or done == min(WARM_STEPS + TIMED_STEPS, self.steps):
            self.marks.append((images, time.perf_counter()))
            if len(self.marks) == 2 and self.marks[1][1] > self.marks[0][1]:
                rate = (self.marks[1][0] - self.marks[0][0]) / (self.marks[1][1] - self.marks[0][1])
                if self.run.probe:  # runtime.budget's measurement: this epoch ends here
                    raise budget.Measured(rate, self.epoch_seconds(rate))
                say(self.estimate(rate))

    def epoch_seconds(self, rate: float) -> list[float]:
        """Each phase's epoch (its steps and its validation) at `rate` images/s in this phase's steps."""
        run, t = self.run, self.run.cfg.train
        n_valid = int((run.folds["fold"] == run.fold).sum())
        cost = [self.cost(q) / self.cost(self.p) / rate for q in range(len(t.phases))]  # seconds an image
        forward = [c / (1 if t.phases[q].frozen else 3) for q, c in enumerate(cost)]  # validation's share
        return [self.images * c + n_valid * f for c, f in zip(cost, forward)]

    def estimate(self, rate: float) -> str:
        """The message: `rate` images/s in this phase's steps."""
        run, t = self.run, self.run.cfg.train
        epoch_s = self.epoch_seconds(rate)
        left_in_phase = t.phase_starts[self.p] + t.phases[self.p].epochs - self.epoch
        fold_left = left_in_phase * epoch_s[self.p] + sum(
            t.phases[q].epochs * epoch_s[q] for q in range(self.p + 1, len(t.phases))
        )
        whole = sum(ph.epochs * e for ph, e in zip(t.phases, epoch_s))
        run_left = fold_left + run.folds_after * whole
        return (
            f"fold {run.fold} phase {self.p}: {rate:.0f} img/s in training steps; at this speed an epoch takes "
            f"about {duration(epoch_s[self.p])}, the rest of the fold {duration(fold_left)}, the rest of the "
            f"run {duration(run_left)} ({run.folds_after} more fold{'' if run.folds_after == 1 else 's'})"
        )

    def cost(self, q: int) -> float:
        """Phase q's cost per image, relative: pixels, times ALL_LAYERS_COST with every layer training."""
        ph = self.run.cfg.train.phases[q]
        return phase_size(ph, self.run.final_dc) ** 2 * (1 if ph.frozen else ALL_LAYERS_COST)


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


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
                tr.ema.update(model)
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


# ----------------------------------------------------------------------------- a fold


@dataclass
class Kept:
    """The epoch a fold keeps so far (train.monitor), with its validation probabilities."""

    score: float
    epoch: int
    probs: np.ndarray
    weights: str = "raw"  # raw, ema (train.ema) or swa (train.swa): which weights best.pt holds


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
    final_dc: DataConfig
    extra: Images  # other experiments' rows for this fold (upstream.extra_rows)
    made_with: dict  # the train settings and a digest of the rows: last.pt records it, resume checks it
    net: torch.nn.Module  # what the steps call: the model, wrapped for DDP and compiled as runtime says
    source: object  # path -> image: the decode cache, or None to decode the originals
    loss_fn: torch.nn.Module
    ema: tricks.WeightEma | None = None  # train.ema
    swa: tricks.WeightSwa | None = None  # train.swa
    mixer: object | None = None  # train.mixup: timm's Mixup
    history: list[dict] = field(default_factory=list)
    kept: Kept | None = None
    board: progress.Board | None = None  # TensorBoard's event files (process 0), opened by train_fold
    scale: TargetScale | None = None  # a number's target scale, fitted on the fold's training targets
    grades: np.ndarray | None = None  # an ordinal task's grades (the per-epoch kappa rounds to them)
    eraser: augment.Eraser | None = None  # train.aug.random_erasing
    folds_after: int = 0  # the run's other folds not yet trained (the run's estimate)
    timed: set | None = None  # phases whose first steps Clock has timed; None: no estimates (lr-find)
    probe: bool = False  # runtime.budget's first fold: stop at the clock's measurement (budget.Measured)

    @property
    def act(self):
        """How outputs become predictions (engine.activate): a number's scale, else multi-label or not."""
        return self.scale or self.cfg.data.multilabel

    @property
    def paths(self) -> RunDir:
        return RunDir(self.cfg.run_dir)


@dataclass(frozen=True)
class Resume:
    """Where a fold's last.pt left off."""

    epoch: int  # the last finished epoch
    phase: int
    schedule: dict | None  # the phase schedule's state
    done: bool


def build(cfg: Config, folds: pd.DataFrame, fold: int) -> FoldRun:
    """Model, optimizer (over every parameter) and loss scaler for a fold, before any phase."""
    seed_everything(cfg.train.seed + fold)
    classes = class_list(folds[cfg.data.label_col], cfg.data)
    device = engine.pick_device(cfg.runtime)
    engine.setup(cfg.runtime, device)
    distributed.start(device)
    model = create_model(cfg.model, len(classes), cfg.data.numeric)
    final_dc = data_config(model, cfg.model.img_size)
    check_phase_sizes(cfg, model, final_dc)
    model = engine.prepare(model, device, cfg.runtime)
    optimizer = optim.make_optimizer(model, cfg.train)
    extra = extra_rows(cfg, folds, fold, classes)  # read once: the resume check and every phase use it
    made_with = {"settings": settings(cfg, "train"), "data": data_digest(folds, extra, cfg.data.root)}
    scaler = engine.grad_scaler(device, cfg.runtime)
    net = engine.compiled(distributed.wrap(model, device), cfg.runtime)
    source = run_cache(cfg, final_dc)
    t = cfg.train
    scale = fit_number_scale(cfg, folds, fold, classes)
    return FoldRun(
        cfg,
        fold,
        folds,
        classes,
        device,
        model,
        optimizer,
        scaler,
        final_dc,
        extra,
        made_with,
        net,
        source,
        make_loss(cfg, train_labels(cfg, folds, fold, classes), len(classes), scale).to(device),
        tricks.WeightEma(model, t.ema) if t.ema else None,
        tricks.WeightSwa(model, t.swa) if t.swa else None,
        tricks.make_mixer(t.mixup) if t.mixup else None,
        scale=scale,
        grades=number_grades(cfg, folds),
        eraser=augment.Eraser(t.aug.random_erasing, device) if t.aug.random_erasing else None,
    )


def fit_number_scale(cfg: Config, folds: pd.DataFrame, fold: int, classes: list[str]) -> TargetScale | None:
    """A number's target scale from the fold's own training targets (model.y_range); None for classes."""
    if not cfg.data.numeric:
        return None
    return fit_scale(cfg.model.y_range, fold_images(cfg, training_rows(cfg, folds, fold), classes).targets)


def number_grades(cfg: Config, folds: pd.DataFrame) -> np.ndarray | None:
    if not cfg.data.ordinal:
        return None
    return np.unique(pd.to_numeric(folds[cfg.data.label_col]).to_numpy(dtype=float))


def train_labels(cfg: Config, folds: pd.DataFrame, fold: int, classes: list[str]) -> np.ndarray | None:
    """The fold's training rows' class indices (single-label tasks): what class_weights balances."""
    if cfg.data.independent:
        return None
    index = {c: i for i, c in enumerate(classes)}
    return training_rows(cfg, folds, fold)[cfg.data.label_col].astype(str).map(index).to_numpy()


def step_tricks(run: FoldRun, p: int, epoch: int, loader) -> StepTricks:
    t = run.cfg.train
    clock = None
    if run.timed is not None and p not in run.timed and distributed.is_main():  # a phase's first epoch here
        run.timed.add(p)
        clock = Clock(run, p, epoch, len(loader), len(loader) * loader.batch_size * distributed.world_size())
    return StepTricks(
        run.mixer if t.mixes(p, epoch) else None,
        len(run.classes),
        t.rdrop,
        run.cfg.data.multilabel,
        t.fgm,
        run.ema,
        run.eraser,
        clock,
    )


def save_state(run: FoldRun, epoch: int, phase: int, schedule, done: bool) -> None:
    """last.pt; `schedule` None once training is over (SWA's final step)."""
    k = run.kept
    state = {
        "model": timm.utils.unwrap_model(run.model).state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "schedule": schedule.state_dict() if schedule is not None else None,
        "scaler": run.scaler.state_dict(),
        "epoch": epoch,
        "phase": phase,
        "history": run.history,
        "done": done,
        **run.made_with,
        "kept": {"score": k.score, "epoch": k.epoch, "probs": torch.from_numpy(k.probs), "weights": k.weights},
        **({"ema": run.ema.state_dict()} if run.ema else {}),
        **({"swa": run.swa.state_dict()} if run.swa else {}),
    }
    with atomic_path(run.paths.last(run.fold)) as tmp:
        torch.save(state, tmp)


def load_state(run: FoldRun) -> Resume | None:
    """Restore last.pt if it was written with these train settings (compared as Make compares
    stamps, so a key added by a newer release does not restart a fold) and these rows."""
    path = run.paths.last(run.fold)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a checkpoint torn by a kill mid-write cannot exist (atomic), but a foreign one can
        return None
    if "fingerprint" in state:  # written by the release before settings were recorded in last.pt
        same = state["fingerprint"] == legacy_fingerprint(run.cfg, run.folds, run.extra)
        state["kept"] = state.get("best")
    else:
        rows = (run.made_with["data"], data_digest(run.folds, run.extra, None))  # now, or as an older release had it
        same = state.get("data") in rows and matches(run.cfg, "train", state.get("settings"))
    if not same or any(avg is not None and name not in state for name, avg in (("ema", run.ema), ("swa", run.swa))):
        return None
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    run.history = list(state["history"])
    k = state["kept"]
    run.kept = Kept(k["score"], k["epoch"], k["probs"].numpy(), k.get("weights", "raw"))
    for name, avg in (("ema", run.ema), ("swa", run.swa)):
        if avg is not None:
            avg.load_state_dict(state[name])
    return Resume(state["epoch"], state["phase"], state["schedule"], state["done"])


@torch.inference_mode()
def pooled_features(run: FoldRun, valid_dl) -> torch.Tensor | None:
    """In a head-only phase with BatchNorm as pretrained nothing before the classifier changes, so
    the validation images' pooled features are computed once per phase and each epoch validates
    the classifier alone. None for a model whose classifier does not take timm's pre-logits (the
    first batch is checked against the whole forward pass)."""
    model, rt, out = run.model.eval(), run.cfg.runtime, []
    for x, _ in valid_dl:
        x = engine.to_input(x, run.device, rt)
        with engine.autocast(run.device, rt):
            f = model.forward_head(model.forward_features(x), pre_logits=True)
            if not out and not torch.allclose(model.get_classifier()(f).float(), model(x).float(), atol=1e-3):
                return None
        out.append(f)
    return torch.cat(out)


def validate(run: FoldRun, valid_dl, pooled: torch.Tensor | None = None, model=None) -> np.ndarray:
    """The fold's validation probabilities by `model` (the training weights unless given: the EMA's
    or the SWA's), each process predicting its share under DDP; from the pooled features when the
    phase has them (pooled_features)."""
    if pooled is None:
        net = model or run.net
        probs = torch.from_numpy(engine.predict(net, valid_dl, run.device, run.cfg.runtime, run.act))
    else:
        head = (model or run.model).eval().get_classifier()
        with torch.inference_mode(), engine.autocast(run.device, run.cfg.runtime):
            probs = engine.activate(head(pooled), run.act).cpu()
    return distributed.gather_rows(probs, len(run.folds[run.folds["fold"] == run.fold])).numpy()


def offered(run: FoldRun, row: dict, probs: np.ndarray, ema_probs: np.ndarray | None) -> tuple[float, str, np.ndarray]:
    """The epoch's score (train.monitor), weights and probabilities: the raw weights', or with
    train.ema the EMA's too, as ema.keep says (best: whichever scores better). Records the choice."""
    t = run.cfg.train
    keep = t.ema.keep if t.ema else "raw"
    candidates = [("raw", "", probs)] + ([("ema", "ema_", ema_probs)] if ema_probs is not None else [])
    if keep != "best":
        candidates = [c for c in candidates if c[0] == keep]

    def score(prefix: str) -> float:
        if t.monitor == "metric":
            key, up = metric_column(run.cfg)
            return row[prefix + key] if up else -row[prefix + key]
        if t.monitor == "accuracy":
            return row[prefix + "valid_accuracy"]
        return -row[prefix + "valid_loss"] if t.monitor == "loss" else row["epoch"]

    name, prefix, chosen = max(candidates, key=lambda c: (score(c[1]), c[0] == "ema"))
    row["weights"] = name
    return score(prefix), name, chosen


def keep_and_save(run: FoldRun, row: dict, offer: tuple[float, str, np.ndarray], p: int, schedule) -> None:
    """best.pt when this epoch's offer beats the kept one (train.monitor), then last.pt: by
    process 0 only."""
    score, weights, probs = offer
    better = run.kept is None or score > run.kept.score
    if better:
        run.kept = Kept(score, row["epoch"], probs, weights)
    if distributed.is_main():
        if better:
            save_best(run, {"ema": run.ema.module if run.ema else None}.get(weights) or run.model, row, weights)
        save_state(run, row["epoch"], p, schedule, done=row["epoch"] == run.cfg.train.epochs - 1)
    distributed.barrier()


def save_best(run: FoldRun, model: torch.nn.Module, row: dict, weights: str) -> None:
    save_checkpoint(
        run.paths.best(run.fold),
        model,
        config=run.cfg.model_dump(mode="json"),
        classes=run.classes,
        data_config=run.final_dc.to_timm(),
        fold=run.fold,
        epoch=row["epoch"],
        weights=weights,
        valid=row,
        made_with=run.made_with,  # what infer checks against its config (stamps.differences)
        **({"target_scale": run.scale.to_dict()} if run.scale else {}),
    )


@dataclass
class PhaseRun:
    """What every epoch of one phase shares."""

    p: int
    phase: Phase
    train_dl: object
    schedule: optim.PhaseSchedule
    valid_dl: object
    y_val: np.ndarray
    peaks: list[float]
    pooled: torch.Tensor | None = None  # the raw weights' validation features (pooled_features)
    ema_pooled: torch.Tensor | None = None  # the same, when they serve the EMA too


def run_epoch(run: FoldRun, ph: PhaseRun, epoch: int) -> None:
    """One epoch, validated (the EMA too) and checkpointed; history.csv gets its row, with where the
    time went: waiting for batches (data_s), the training steps (train_s), validation and checkpoints."""
    cfg, t = run.cfg, run.cfg.train
    seed = epoch_seed(run, epoch)
    seed_everything(seed)
    ph.train_dl.sampler.set_epoch(seed)
    start = time.time()
    train_loss, waited = train_one_epoch(
        run.net,
        ph.train_dl,
        run.optimizer,
        ph.schedule,
        run.scaler,
        run.loss_fn,
        run.device,
        cfg.runtime,
        t.accum_steps,
        ph.phase.bn_eval,
        run.final_dc,
        t.clip_grad_norm,
        step_tricks(run, ph.p, epoch, ph.train_dl),
        f"fold {run.fold} epoch {epoch}",
    )
    if run.swa is not None and epoch >= t.epochs - t.swa.epochs:
        run.swa.update(run.model)
    trained = time.time()
    probs = check_finite(validate(run, ph.valid_dl, ph.pooled), epoch, "trained")
    if run.ema:  # each DDP process's EMA averaged its own BatchNorm statistics: take process 0's
        distributed.broadcast_buffers(run.ema.module)
    ema_probs = validate(run, ph.valid_dl, ph.ema_pooled, run.ema.module) if run.ema else None
    ema_probs = None if ema_probs is None else check_finite(ema_probs, epoch, "EMA")
    validated = time.time()
    row = dict(
        epoch=epoch,
        phase=ph.p,
        img_size=phase_size(ph.phase, run.final_dc),
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
    run.history.append(row)
    keep_and_save(run, row, offered(run, row, probs, ema_probs), ph.p, ph.schedule)
    row["save_s"] = round(time.time() - validated, 2)  # in history.csv; last.pt's copy is already written
    if distributed.is_main():
        write_csv(run.paths.history(run.fold), pd.DataFrame(run.history))
        if run.board:  # none for lr-find's phases before the one it tests
            run.board.epoch(row)
    say(epoch_line(run.fold, row))


def metric_column(cfg: Config) -> tuple[str, bool]:
    """The history column of the competition's metric (train.monitor: metric), and whether higher
    is better: a log-loss is valid_loss, accuracy valid_accuracy, any other valid_<metric>."""
    m = cfg.metric
    named = {} if cfg.data.numeric else {"log_loss": "valid_loss", "accuracy": "valid_accuracy"}
    return named.get(m, f"valid_{m}"), higher_is_better(m)


def score_row(run: FoldRun, y: np.ndarray, probs: np.ndarray, prefix: str) -> dict:
    """An epoch's validation scores: for classes the log-loss and accuracy (and the metric under
    train.monitor: metric); for a number the training loss and the metric (an ordinal task's
    kappa with each prediction rounded to its nearest grade; infer fits the cut-points)."""
    cfg = run.cfg
    if cfg.data.numeric:
        return {
            f"{prefix}valid_loss": prediction_loss(run.loss_fn, run.scale, probs, y),
            f"{prefix}valid_{cfg.metric}": score(cfg.metric, y, probs, run.grades),
        }
    row = {f"{prefix}valid_loss": log_loss(y, probs), f"{prefix}valid_accuracy": accuracy(y, probs)}
    key, _ = metric_column(cfg)
    if cfg.train.monitor == "metric" and prefix + key not in row:
        row[prefix + key] = score(cfg.metric, y, probs)
    return row


def second_score(row: dict, prefix: str = "") -> str:
    """The row's score besides the loss, as 'valid_acc 0.9' (or 'valid_rmse 1.2'), for the log."""
    key = next(k for k in row if k.startswith(prefix + "valid_") and k != prefix + "valid_loss")
    return f"{key.replace('accuracy', 'acc')} {row[key]:.4f}"


def epoch_line(fold: int, row: dict) -> str:
    return (
        f"fold {fold} epoch {row['epoch']} (phase {row['phase']}, {row['img_size']} px"
        f"{', frozen' if row['frozen'] else ''}): train_loss {row['train_loss']:.4f} "
        f"valid_loss {row['valid_loss']:.4f} {second_score(row)} "
        + (
            f"ema_valid_loss {row['ema_valid_loss']:.4f} {second_score(row, 'ema_')} "
            if "ema_valid_loss" in row
            else ""
        )
        + f"({row['seconds'] + row['save_s']:.1f}s: data {row['data_s']}s, steps {row['train_s']}s, "
        f"valid {row['valid_s']}s, save {row['save_s']}s)"
    )


def phase_batch(run: FoldRun, p: int) -> int:
    """train.batch_size, or under auto the largest that fits the GPU at the phase's size (every
    process taking its share), capped so an epoch has at least 8 steps; lr_ref_batch on a CPU."""
    t = run.cfg.train
    if t.batch_size != "auto":
        return t.batch_size
    world = distributed.world_size()
    if run.device.type != "cuda":
        say(f"fold {run.fold} phase {p}: batch_size auto on a CPU: lr_ref_batch, {t.lr_ref_batch}")
        return t.lr_ref_batch
    size = phase_size(t.phases[p], run.final_dc)
    cap = max(1, len(run.folds[run.folds["fold"] != run.fold]) // 8 // world)
    optim.set_frozen(run.model, t.phases[p].frozen)
    # probed on the bare model (no DDP all-reduce: processes may try different batches), then agreed
    twice = 2 if t.rdrop else 1  # R-Drop stacks each batch twice into one forward
    per = engine.largest_batch(
        lambda b: engine.fits(run.model, size, b * twice, run.device, run.cfg.runtime, 0.85), cap
    )
    per = distributed.smallest(per, run.device)
    if per == 0:
        raise PipelineError(f"train.batch_size: auto: not one {size} px image fits in GPU memory")
    say(f"fold {run.fold} phase {p}: batch_size auto: {per * world} ({per} per GPU) at {size} px")
    return per * world


def run_phase(run: FoldRun, p: int, first_epoch: int, resume: Resume | None, valid_dl, y_val) -> None:
    """The phase's epochs from `first_epoch` on (later than its start when resuming inside it)."""
    cfg, phase = run.cfg, run.cfg.train.phases[p]
    start = cfg.train.phase_starts[p]
    batch = phase_batch(run, p)
    optim.set_frozen(run.model, phase.frozen)
    train_dl = phase_loader(run, p, batch)
    peaks = optim.peak_lrs(run.optimizer, phase, cfg.train, batch)
    schedule = optim.PhaseSchedule(
        run.optimizer, phase, peaks, optim.updates_per_epoch(len(train_dl), cfg.train.accum_steps)
    )
    if resume is not None and resume.phase == p and resume.schedule is not None:
        schedule.load_state_dict(resume.schedule)
    layers = optim.lrs_by_layer(
        [
            pk
            for pk, g in zip(peaks, run.optimizer.param_groups)
            if not phase.frozen or any(q.requires_grad for q in g["params"])
        ]
    )
    say(
        f"fold {run.fold} phase {p}: epochs {start}..{start + phase.epochs - 1}, "
        f"{phase_size(phase, run.final_dc)} px, {'head only' if phase.frozen else 'all layers'}, "
        f"{len(train_dl.dataset)} train images, batch {batch}, {phase.sched}; peak lr by layer group "
        "(stem to head): " + " ".join(f"{lr:.2e}" for lr in layers)
    )
    ph = PhaseRun(p, phase, train_dl, schedule, valid_dl, y_val, peaks)
    if phase.frozen and phase.bn_eval:
        ph.pooled = pooled_features(run, valid_dl)
        if run.ema is not None and ph.pooled is not None and tricks.same_backbone(run.model, run.ema.module):
            ph.ema_pooled = ph.pooled
    for epoch in range(first_epoch, start + phase.epochs):
        run_epoch(run, ph, epoch)


def finish_swa(run: FoldRun, valid_dl, y_val) -> None:
    """With train.swa the fold keeps the average: its BatchNorm statistics recomputed on the last
    phase's training images (augmented, as torch's recipe does; when that phase holds BatchNorm
    frozen, its statistics are kept instead), then validated and saved as best.pt, with a history
    row of its own (epoch = the number of epochs)."""
    t = run.cfg.train
    if run.swa is None or run.kept.weights == "swa":
        return
    p = len(t.phases) - 1
    batch = next(r["batch_size"] for r in reversed(run.history) if r["phase"] == p)  # no new search
    loader = phase_loader(run, p, batch)
    if t.phases[p].bn_eval:
        run.swa.take_buffers(run.model)
    else:
        loader.sampler.set_epoch(epoch_seed(run, t.epochs))
        run.swa.recompute_bn(engine.to_input(x, run.device, run.cfg.runtime, run.final_dc) for x, _ in loader)
        distributed.pool_bn_stats(run.swa.module)  # each process saw its share of the images
    probs = validate(run, valid_dl, None, run.swa.module)
    row = dict(
        epoch=t.epochs,
        phase=p,
        img_size=phase_size(t.phases[p], run.final_dc),
        frozen=t.phases[p].frozen,
        batch_size=loader.batch_size * distributed.world_size(),
        train_loss=float("nan"),
        **score_row(run, y_val, probs, ""),
        weights="swa",
    )
    run.history.append(row)
    run.kept = Kept(float("nan"), t.epochs, probs, "swa")
    if distributed.is_main():
        save_best(run, run.swa.module, row, "swa")
        save_state(run, t.epochs - 1, p, None, done=True)
        write_csv(run.paths.history(run.fold), pd.DataFrame(run.history))
        if run.board:
            run.board.epoch(row)
    distributed.barrier()
    say(
        f"fold {run.fold}: SWA of the last {run.swa.count} epochs, BatchNorm recomputed: "
        f"valid_loss {row['valid_loss']:.4f} {second_score(row)} (kept)"
    )


def say(text: str) -> None:
    """Progress, printed once (by process 0 under DDP)."""
    if distributed.is_main():
        print(text, flush=True)


def train_fold(cfg: Config, folds: pd.DataFrame, fold: int, folds_after: int = 0, probe: bool = False) -> None:
    run = build(cfg, folds, fold)
    run.folds_after, run.timed, run.probe = folds_after, set(), probe
    oof_path = run.paths.fold_oof(fold)
    resume = load_state(run)
    if resume is not None and resume.done:
        if not kept_model_ok(run):  # the kept epoch's weights are not in last.pt: train again
            say(f"fold {fold}: {run.paths.best(fold)} is missing or damaged; training the fold again")
            run, resume = build(cfg, folds, fold), None
            run.folds_after, run.timed = folds_after, set()
        elif readable_csv(oof_path):  # else oof.csv is rewritten from last.pt below
            say(f"fold {fold}: already trained ({run.paths.last(fold)}); skipping")
            if distributed.is_main():  # Make reran this for a newer input (the folds file remade
                for f in (run.paths.best(fold), oof_path):  # the same): up to date now, as it
                    f.touch()  # would be had it trained
            return
    if distributed.is_main():
        oof_path.unlink(missing_ok=True)  # a stale one would mark an unfinished fold as done
    valid_dl, y_val = valid_loader(cfg, folds, fold, run.classes, run.final_dc, run.device, run.source)
    next_epoch = resume.epoch + 1 if resume else 0
    if distributed.is_main():
        run.board = progress.Board(run.paths.tensorboard(fold), next_epoch)
    if resume:
        say(f"fold {fold}: resuming after epoch {resume.epoch} from {run.paths.last(fold)}")
        if not resume.done and not kept_model_ok(run):  # deleted by hand, or by an older Makefile's Ctrl-C
            say(f"fold {fold}: {run.paths.best(fold)} is missing; the next epoch's model is kept in its place")
            run.kept = None
    with interrupts_say(lambda: stopped_at(run)):
        for p, (phase, start) in enumerate(zip(cfg.train.phases, cfg.train.phase_starts)):
            if next_epoch < start + phase.epochs:
                run_phase(run, p, max(next_epoch, start), resume, valid_dl, y_val)
        finish_swa(run, valid_dl, y_val)
        finish(run)


def stopped_at(run: FoldRun) -> str:
    """Where an interrupted fold stopped and how to go on, from what last.pt holds (an epoch whose
    last.pt was not written when the signal came counts as not finished)."""
    try:
        state = torch.load(run.paths.last(run.fold), map_location="cpu", weights_only=True, mmap=True)
        done, kept = state["epoch"], state["kept"]["epoch"]
    except Exception:  # no last.pt yet: the first epoch did not finish
        return f"fold {run.fold} stopped in its first epoch; make train starts it again"
    return (
        f"fold {run.fold} stopped after epoch {done} (last.pt; best.pt holds epoch {kept}); "
        f"make train resumes it at epoch {done + 1}"
    )


def readable_csv(path) -> bool:
    """Whether a fold's oof.csv is there and whole; a damaged one is rewritten from last.pt."""
    return path.is_file() and not damaged(path)


def kept_model_ok(run: FoldRun) -> bool:
    """Whether best.pt loads and was made with these settings: a finished fold is skipped only
    then, so a deleted or damaged best.pt is rebuilt by the next make train."""
    try:
        ckpt = torch.load(run.paths.best(run.fold), map_location="cpu", weights_only=True)
    except Exception:  # missing, or damaged in any of the ways torch.load reports
        return False
    if not isinstance(ckpt, dict):
        return False
    made = ckpt.get("made_with")  # None: an older release's checkpoint, which recorded no settings
    return made is None or matches(run.cfg, "train", made["settings"])


def finish(run: FoldRun) -> None:
    from ..plots import plot_curves  # matplotlib only when a fold ends

    if not distributed.is_main():
        return
    if run.board is not None:
        run.board.close()
    d = run.cfg.data
    plot_curves(
        pd.DataFrame(run.history), run.paths.curves(run.fold), f"{run.cfg.name} fold {run.fold}", kept=run.kept.epoch
    )
    valid = run.folds[run.folds["fold"] == run.fold]
    oof = prob_frame(
        valid[d.id_col],
        run.classes,
        run.kept.probs,
        d.id_col,
        fold=run.fold,
        **{d.label_col: valid[d.label_col].to_list()},
    )
    write_csv(run.paths.fold_oof(run.fold), oof)  # written last: its presence means the fold is done


# ----------------------------------------------------------------------------- entry


def main(cfg: Config, fold: int | None = None) -> None:
    folds = load_folds(cfg)
    if fold is not None and not 0 <= fold < cfg.folds.n_folds:
        raise PipelineError(f"--fold {fold}: the folds file has folds 0..{cfg.folds.n_folds - 1}")
    check_competition(cfg, folds)  # every train and test image, before the first epoch
    if cfg.data.numeric:  # a fixed model.y_range that leaves out a training target: before any epoch
        fit_scale(cfg.model.y_range, pd.to_numeric(folds[cfg.data.label_col]).to_numpy(dtype=float))
    todo = list(range(cfg.folds.n_folds)) if fold is None else [fold]
    cfg = within_budget(cfg, folds, todo[0])
    for i, k in enumerate(todo):
        # the folds still to train besides this one (under Make each fold is a process of its own)
        later = [j for j in range(cfg.folds.n_folds) if j != k and j not in todo[:i]]
        train_fold(cfg, folds, k, sum(not readable_csv(RunDir(cfg.run_dir).fold_oof(j)) for j in later))


def within_budget(cfg: Config, folds: pd.DataFrame, fold: int) -> Config:
    """cfg with the epochs runtime.budget allows (pipeline/budget.py): the run's decision, else
    measured now on the first steps of `fold`, which then trains from its start."""
    if cfg.runtime.budget is None:
        return cfg
    doc = budget.read(cfg)
    if doc is None:
        run = RunDir(cfg.run_dir)
        started = [k for k in range(cfg.folds.n_folds) if run.last(k).is_file()]
        if started:
            raise PipelineError(
                f"runtime.budget: fold {started[0]} was started without it ({run.last(started[0])}); delete "
                f"{run.root}/fold*/ to train every fold within it, or drop runtime.budget"
            )
        if distributed.world_size() > 1:
            raise PipelineError(
                "runtime.budget: the speed is measured in one process; train one fold without GPUS= first"
            )
        try:
            train_fold(cfg, folds, fold, probe=True)
            doc = budget.decide(cfg, None)  # an epoch too short to time: trained as written
        except budget.Measured as m:
            doc = budget.decide(cfg, m)
    say(budget.describe(cfg, doc))
    return budget.applied(cfg, doc)


# ----------------------------------------------------------------------------- what lr_find and show_batch build on


def start_fold(cfg: Config, folds: pd.DataFrame, fold: int) -> FoldRun:
    """A fold's model and optimizer before its first phase, as training builds them."""
    return build(cfg, folds, fold)


def train_phases_before(run: FoldRun, p: int) -> None:
    """Train the fold's phases before phase `p`, so `run` holds what phase p would start from."""
    valid_dl, y_val = valid_loader(run.cfg, run.folds, run.fold, run.classes, run.final_dc, run.device, run.source)
    for q in range(p):
        run_phase(run, q, run.cfg.train.phase_starts[q], None, valid_dl, y_val)


def epoch_seed(run: FoldRun, epoch: int) -> int:
    """The seed of a fold's epoch (its order and every image's augmentation): a resumed run, or
    show-batch, draws what the uninterrupted run did."""
    return run.cfg.train.seed + 1000 * run.fold + epoch


def phase_loader(run: FoldRun, p: int, batch: int | None = None):
    """The batches of phase `p`: its image size, augmentation, sampling and batch size (`batch`:
    phase_batch's choice, made here when not given)."""
    t = run.cfg.train
    batch = batch or phase_batch(run, p)
    return train_loader(
        run.cfg,
        run.folds,
        run.fold,
        run.classes,
        t.phases[p],
        run.final_dc,
        run.device,
        run.extra,
        run.source,
        batch,
        scale=run.scale,
    )
