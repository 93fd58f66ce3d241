"""A fold's batches: each phase's training loader (its size, augmentation, sampling and batch,
sized to the GPU under train.batch_size: auto) and the validation loader."""

from __future__ import annotations

import numpy as np

from .. import distributed, engine, optim
from ..data import ImageDataset, balanced_sampler, eval_transform, make_loader, oversample, train_transform
from ..errors import PipelineError
from ..folds_file import training_rows
from ..labels import quantile_bins, width_edges
from .fold import FoldRun, FoldSpec, phase_size


def number_bins(y: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
    """What train.sampling balances for a number: bins of equal width over the fold's training
    targets y (one per value when they are few, as an ordinal task's grades); `values` placed in
    y's bins when given."""
    return quantile_bins(y if values is None else values, edges=width_edges(y))


def training_images(spec: FoldSpec) -> tuple[list, np.ndarray, np.ndarray]:
    """The other folds' images (negatives sampled to train.neg_fraction), plus other experiments'
    hard negatives and pseudo-labels, with their targets (a number normalised by the fold's scale)
    and what train.sampling balances. Oversampling happens after the split: a validation image can
    never be repeated into it."""
    cfg, t, classes = spec.cfg, spec.cfg.train, spec.classes
    own = spec.comp.images(training_rows(cfg, spec.comp.folds, spec.fold))
    paths, targets = own.paths, own.targets
    strata = number_bins(targets) if cfg.data.numeric else targets
    if t.sampling == "oversample":
        idx = oversample(strata, t.seed + spec.fold)
        paths, targets, strata = [paths[i] for i in idx], targets[idx], strata[idx]
    extra = spec.extra
    if cfg.data.numeric:
        extra_y = extra.targets.reshape(-1)
        paths, targets = paths + extra.paths, spec.scale.normalise(np.concatenate([targets, extra_y]))
        strata = np.concatenate([strata, number_bins(own.targets, extra_y)])
    elif len(extra):
        rows = np.concatenate([targets if cfg.data.multilabel else np.eye(len(classes))[targets], extra.targets])
        soft = cfg.data.multilabel or not (rows.max(1) == 1.0).all()
        # class indices unless the task is multi-label or some pseudo-labels are soft
        paths, targets = paths + extra.paths, rows if soft else rows.argmax(1)
        strata = targets.argmax(1) if np.ndim(targets) == 2 else targets
    return paths, targets, strata


def phase_loader(run: FoldRun, p: int, batch: int | None = None):
    """The batches of phase `p`: its image size, augmentation, sampling and batch size (`batch`:
    phase_batch's choice, made here when not given), balanced as train.sampling says."""
    spec, t = run.spec, run.spec.cfg.train
    batch = batch or phase_batch(run, p)
    paths, targets, strata = training_images(spec)
    sampler = balanced_sampler(strata) if t.sampling == "weighted" else None
    dc = spec.final_dc.at(phase_size(t.phases[p], spec.final_dc))
    ds = ImageDataset(paths, targets, train_transform(dc, t.aug), run.source)
    return make_loader(ds, batch, True, engine.loader_options(spec.cfg.runtime, spec.device), sampler)


def valid_loader(spec: FoldSpec, source=None):
    """This fold's images, untouched, at the inference size (so the kept epoch is chosen on what
    inference will see), and all their targets. Under DDP the loader holds this process's share
    (every world-th image), which distributed.gather_rows puts back in order."""
    images = spec.comp.images(spec.valid_rows)
    mine = slice(distributed.rank(), None, distributed.world_size())
    dl = make_loader(
        ImageDataset(images.paths[mine], images.targets[mine], eval_transform(spec.final_dc), source),
        spec.cfg.infer.batch_size,
        False,
        engine.loader_options(spec.cfg.runtime, spec.device),
    )
    return dl, images.targets


def phase_batch(run: FoldRun, p: int) -> int:
    """train.batch_size, or under auto the largest that fits the GPU at the phase's size (every
    process taking its share), capped so an epoch has at least 8 steps; lr_ref_batch on a CPU."""
    spec, t = run.spec, run.spec.cfg.train
    if t.batch_size != "auto":
        return t.batch_size
    world = distributed.world_size()
    if spec.device.type != "cuda":
        distributed.say(f"fold {spec.fold} phase {p}: batch_size auto on a CPU: lr_ref_batch, {t.lr_ref_batch}")
        return t.lr_ref_batch
    size = phase_size(t.phases[p], spec.final_dc)
    cap = max(1, (len(spec.comp.folds) - len(spec.valid_rows)) // 8 // world)
    model = run.state.model
    optim.set_frozen(model, t.phases[p].frozen)
    # probed on the bare model (no DDP all-reduce: processes may try different batches), then agreed
    twice = 2 if t.rdrop else 1  # R-Drop stacks each batch twice into one forward
    per = engine.largest_batch(lambda b: engine.fits(model, size, b * twice, spec.device, spec.cfg.runtime, 0.85), cap)
    per = distributed.smallest(per, spec.device)
    if per == 0:
        raise PipelineError(f"train.batch_size: auto: not one {size} px image fits in GPU memory")
    distributed.say(f"fold {spec.fold} phase {p}: batch_size auto: {per * world} ({per} per GPU) at {size} px")
    return per * world
