"""A fold in three parts: what it trains (FoldSpec: built once, never changed), what changes as it
trains (FoldState: the weights, the optimizer, the history and the kept epoch, saved to and
restored from last.pt through state_dict/load_state_dict), and the tools its epochs use
(FoldRun: the spec, the state, the wrapped model, the loss, the decode cache, the tricks)."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import timm
import torch

from .. import augment, distributed, engine, optim, progress, tricks
from ..cache import run_cache
from ..competition import Competition
from ..config import Config, Phase
from ..data import DataConfig
from ..errors import PipelineError
from ..folds_file import Images, training_rows
from ..losses import make_loss
from ..models import create_model, data_config, weights_source
from ..runs import RunDir
from ..stamps import made_with
from ..targets import TargetScale, fit_scale
from ..upstream import extra_rows


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def phase_size(phase: Phase, final_dc: DataConfig) -> int:
    return phase.img_size or final_dc.size


@dataclass
class Kept:
    """The epoch a fold keeps so far (train.monitor), with its validation probabilities."""

    score: float
    epoch: int
    probs: np.ndarray
    weights: str = "raw"  # raw, ema (train.ema) or swa (train.swa): which weights best.pt holds


@dataclass(frozen=True)
class FoldSpec:
    """What one fold trains, decided before its first step and the same in every epoch."""

    cfg: Config  # the effective config: runtime.budget's epochs applied
    comp: Competition
    fold: int
    device: torch.device
    final_dc: DataConfig  # the inference size and normalisation (the last phase's size unless set)
    extra: Images  # other experiments' rows for this fold (upstream.extra_rows)
    made_with: dict  # the train settings and a digest of the rows: last.pt and best.pt record it
    scale: TargetScale | None = None  # a number's target scale, fitted on the fold's training targets
    grades: np.ndarray | None = None  # an ordinal task's grades (the per-epoch kappa rounds to them)
    folds_after: int = 0  # the run's other folds not yet trained (the run's estimate)
    estimate: bool = False  # the clock times the phases and says what is left (train_fold's folds)
    probe: bool = False  # runtime.budget's first fold: stop at the clock's measurement (budget.Measured)
    folds_bn: bool = False  # head-only steps may fold BatchNorm (epochs.step_net): the clock's cost ratio

    @property
    def classes(self) -> list[str]:
        return self.comp.classes

    @property
    def valid_rows(self) -> pd.DataFrame:
        return self.comp.rows(self.fold)

    @property
    def act(self):
        """How outputs become predictions (engine.activate): a number's scale, else multi-label or not."""
        return self.scale or self.cfg.data.multilabel

    @property
    def paths(self) -> RunDir:
        return RunDir(self.cfg.run_dir)


@dataclass
class FoldState:
    """What a fold's epochs change: state_dict() is what last.pt holds besides where it stopped.
    `board` and `timed` are this process's own and are not saved."""

    model: torch.nn.Module  # unwrapped
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: tricks.WeightEma | None = None  # train.ema
    swa: tricks.WeightSwa | None = None  # train.swa
    history: list[dict] = field(default_factory=list)
    kept: Kept | None = None
    board: progress.Board | None = None  # TensorBoard's event files (process 0), opened by train_fold
    timed: set = field(default_factory=set)  # phases whose first steps the clock has timed here

    def state_dict(self) -> dict:
        return {
            "model": timm.utils.unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
            "kept": self.state_dict_kept(),
            **({"ema": self.ema.state_dict()} if self.ema else {}),
            **({"swa": self.swa.state_dict()} if self.swa else {}),
        }

    def state_dict_kept(self) -> dict:
        k = self.kept
        return {"score": k.score, "epoch": k.epoch, "probs": torch.from_numpy(k.probs), "weights": k.weights}

    def fits(self, state: dict) -> bool:
        """Whether `state` holds every average this fold keeps (train.ema, train.swa)."""
        return all(avg is None or name in state for name, avg in (("ema", self.ema), ("swa", self.swa)))

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.history = list(state["history"])
        k = state["kept"]
        self.kept = Kept(k["score"], k["epoch"], k["probs"].numpy(), k["weights"])
        for name, avg in (("ema", self.ema), ("swa", self.swa)):
            if avg is not None:
                avg.load_state_dict(state[name])


@dataclass(frozen=True)
class FoldRun:
    """A fold being trained: its spec, its state, and what its steps call."""

    spec: FoldSpec
    state: FoldState
    net: torch.nn.Module  # the model, wrapped for DDP and compiled as runtime says
    source: object  # path -> image: the decode cache, or None to decode the originals
    loss_fn: torch.nn.Module
    mixer: object | None = None  # train.mixup: timm's Mixup
    eraser: augment.Eraser | None = None  # train.aug.random_erasing


def data_digest(comp: Competition, extra: Images, root: str | None) -> str:
    """The rows a fold trains on; with the train settings, what decides whether last.pt resumes.
    Extra images count by their path under `root` (data.root), so a moved competition folder resumes.
    The text is the one the release before this hashed, so its half-done folds resume."""
    paths = [os.path.relpath(p, root) if root else str(p) for p in extra.paths]
    text = comp.folds.to_csv(index=False) + "".join(paths) + np.array2string(extra.targets, threshold=np.inf)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


def build(cfg: Config, comp: Competition, fold: int, **spec_options) -> FoldRun:
    """A fold's model, optimizer (over every parameter) and loss scaler, before any phase.
    spec_options: FoldSpec's folds_after, estimate and probe."""
    seed_everything(cfg.train.seed + fold)
    device = engine.pick_device(cfg.runtime)
    engine.setup(cfg.runtime, device)
    distributed.start(device)
    model = create_model(cfg.model, len(comp.classes), cfg.data.numeric)
    distributed.say(f"fold {fold}: {weights_source(cfg.model)}")
    final_dc = data_config(model, cfg.model.img_size)
    check_phase_sizes(cfg, model, final_dc)
    model = engine.prepare(model, device, cfg.runtime)
    extra = extra_rows(cfg, comp.folds, fold, comp.classes)  # read once: the resume check and every phase use it
    scale = fit_number_scale(cfg, comp, fold)
    spec = FoldSpec(
        cfg=cfg,
        comp=comp,
        fold=fold,
        device=device,
        final_dc=final_dc,
        extra=extra,
        made_with=made_with(cfg, "train", data_digest(comp, extra, cfg.data.root)),
        scale=scale,
        grades=number_grades(cfg, comp),
        folds_bn=may_fold_bn(cfg, model),
        **spec_options,
    )
    t = cfg.train
    state = FoldState(
        model=model,
        optimizer=optim.make_optimizer(model, t),
        scaler=engine.grad_scaler(device, cfg.runtime),
        ema=tricks.WeightEma(model, t.ema) if t.ema else None,
        swa=tricks.WeightSwa(model, t.swa) if t.swa else None,
    )
    loss_fn = make_loss(cfg, train_labels(cfg, comp, fold), len(comp.classes), scale).to(device)
    return FoldRun(
        spec=spec,
        state=state,
        net=engine.compiled(distributed.wrap(model, device), cfg.runtime),
        source=run_cache(cfg, final_dc, comp.every_image),
        loss_fn=loss_fn,
        mixer=tricks.make_mixer(t.mixup) if t.mixup else None,
        eraser=augment.Eraser(t.aug.random_erasing, device) if t.aug.random_erasing else None,
    )


def may_fold_bn(cfg: Config, model: torch.nn.Module) -> bool:
    """Whether a head-only phase's steps can run with BatchNorm folded (epochs.step_net): the setting
    on, one process, not compiled, and BatchNorm in the model."""
    bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return cfg.runtime.fold_frozen_bn and bn and distributed.world_size() == 1 and not cfg.runtime.compile


def fit_number_scale(cfg: Config, comp: Competition, fold: int) -> TargetScale | None:
    """A number's target scale from the fold's own training targets (model.y_range); None for classes."""
    if not cfg.data.numeric:
        return None
    return fit_scale(cfg.model.y_range, comp.images(training_rows(cfg, comp.folds, fold)).targets)


def number_grades(cfg: Config, comp: Competition) -> np.ndarray | None:
    return np.unique(comp.targets) if cfg.data.ordinal else None


def train_labels(cfg: Config, comp: Competition, fold: int) -> np.ndarray | None:
    """The fold's training rows' class indices (single-label tasks): what class_weights balances."""
    if cfg.data.independent:
        return None
    return comp.images(training_rows(cfg, comp.folds, fold)).targets


def epoch_seed(spec: FoldSpec, epoch: int) -> int:
    """The seed of a fold's epoch (its order and every image's augmentation): a resumed run, or
    show-batch, draws what the uninterrupted run did."""
    return spec.cfg.train.seed + 1000 * spec.fold + epoch
