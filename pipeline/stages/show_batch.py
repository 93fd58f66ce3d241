"""make show-batch: runs/<name>/batch.png, the training images of fold 0 exactly as the loader
hands them to the model in each phase's first epoch (its size, train.aug with its transforms and
policy, random erasing on the normalised batch), normalised and back, each with its label; then
one validation image in every TTA view infer.tta asks for. A crop that cuts the object out, or a
flip that turns a 6 into a 9, shows here before any training. Trains nothing.

Usage: python -m pipeline show_batch CONFIG [key=value ...]
"""

from __future__ import annotations

import numpy as np
import torch

from .. import engine
from ..competition import read_competition
from ..config import Config
from ..plots import image_grid
from ..preflight import check_augmentations
from ..runs import RunDir
from ..training.fold import FoldRun, build, epoch_seed
from ..training.loaders import phase_loader
from ..tta import FLIPS, CropsDataset, make_views

PER_PHASE = 16  # images shown of each phase's first batch (two rows)
ROW = 8


def shown(x: torch.Tensor, dc) -> np.ndarray:
    """A normalised batch (N, 3, H, W) back to uint8 (N, H, W, 3) images."""
    mean, std = torch.tensor(dc.mean).view(1, 3, 1, 1), torch.tensor(dc.std).view(1, 3, 1, 1)
    x = x.detach().float().cpu() * std + mean
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def label(run: FoldRun, y: torch.Tensor) -> str:
    """A target as the competition writes it: the class, the labels present, or the number."""
    y, spec = y.float().numpy(), run.spec
    if spec.scale is not None:
        return f"{round(float(spec.scale.units(y)), 6):.4g}"  # rounding: the scale round trip leaves 1e-9s
    if y.ndim == 0:
        return spec.classes[int(y)]
    if spec.cfg.data.multilabel:
        return " ".join(c for c, v in zip(spec.classes, y) if v >= 0.5) or "(none)"
    return f"{spec.classes[int(y.argmax())]} {y.max():.2f}"  # a soft pseudo-label


def phase_batch(run: FoldRun, p: int) -> tuple[np.ndarray, list[str]]:
    """Phase p's first batch as the model gets it: the loader at that epoch's seed, moved to the
    device and normalised, random erasing applied; the images back in uint8 and their labels."""
    spec = run.spec
    loader = phase_loader(run, p, PER_PHASE)
    loader.sampler.set_epoch(epoch_seed(spec, spec.cfg.train.phase_starts[p]))
    x, y = next(iter(loader))
    x = engine.to_input(x, spec.device, spec.cfg.runtime, spec.final_dc)
    if run.eraser is not None:
        run.eraser(x, loader.sampler.seed, 0)
    return shown(x, spec.final_dc), [label(run, v) for v in y]


def tta_views(cfg: Config, run: FoldRun) -> list[tuple[np.ndarray, str]]:
    """The first validation image of the fold in every TTA view (size, crop, flip), as infer sees it."""
    dc = run.spec.final_dc
    path = run.spec.comp.images(run.spec.valid_rows.iloc[:1]).paths[0]
    cells = []
    for view in make_views(dc.size, cfg.infer.tta):
        x = CropsDataset([path], dc, view.size, (view.crop,), run.source)[0][0]
        cells.append((shown(FLIPS[view.flip](x), dc)[0], view.name))  # x: (1, C, H, W)
    return cells


def main(cfg: Config) -> None:
    check_augmentations(cfg)  # the transforms tried as training's check tries them
    run = build(cfg, read_competition(cfg), 0)
    rows = []
    for p in range(len(cfg.train.phases)):
        images, labels = phase_batch(run, p)
        cells = list(zip(images, labels))
        size = images.shape[1]
        for start in range(0, len(cells), ROW):
            rows.append((f"phase {p}, {size} px" if start == 0 else "", cells[start : start + ROW]))
    rows.append(("TTA views", tta_views(cfg, run)))
    out = RunDir(cfg.run_dir).batch
    image_grid(rows, out, f"{cfg.name}: fold 0's training batches as the model gets them, and the TTA views")
    print(f"{out}: {sum(len(r[1]) for r in rows)} images (fold 0: each phase's first batch, then the TTA views)")
