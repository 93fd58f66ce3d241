"""Test-time augmentation: the views of an image, one forward for all views of a batch, merging.

A view is (size, crop, flip). Size and crop need the image decoded and resized again, so they are
made by the dataset; flips and rotations are exact tensor ops, so they are made on the batch.
All crops and flips of a batch go through the model in one forward pass.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import albumentations as A
import numpy as np
import torch

from . import engine, progress
from .cache import run_cache
from .config import Config, Tta
from .data import DataConfig, ImageDataset, make_loader, normalize, resize_short
from .errors import PipelineError
from .models import FoldModel

# The dihedral group of the square: each is its own inverse except rot90 / rot270.
FLIPS = {
    "none": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "transpose": lambda x: x.transpose(-2, -1),
    "rot90": lambda x: torch.rot90(x, 1, (-2, -1)),
    "rot180": lambda x: torch.rot90(x, 2, (-2, -1)),
    "rot270": lambda x: torch.rot90(x, 3, (-2, -1)),
}
INVERSE = {
    "none": "none",
    "hflip": "hflip",
    "vflip": "vflip",
    "transpose": "transpose",
    "rot90": "rot270",
    "rot180": "rot180",
    "rot270": "rot90",
}
CROPS = {"center": ("center",), "five": ("center", "tl", "tr", "bl", "br")}


@dataclass(frozen=True)
class View:
    size: int
    crop: str
    flip: str

    @property
    def name(self) -> str:
        return f"{self.size}px/{self.crop}/{self.flip}"


def make_views(base_size: int, tta: Tta) -> list[View]:
    """Every (size, crop, flip) the config asks for; the plain view (base size, centre, no flip)
    comes first."""
    sizes = [base_size] + [s for s in tta.sizes if s != base_size]
    flips = ["none"] + [f for f in tta.flips if f != "none"]
    return [View(s, c, f) for s, c, f in itertools.product(sizes, CROPS[tta.crops], flips)]


def merge(probs: np.ndarray, mode: str, multilabel: bool = False) -> np.ndarray:
    """(views, N, K) probabilities to (N, K). mean: arithmetic mean; gmean: geometric mean
    (the mean of log-probabilities); max: each class's largest; median: each column's median. Rows
    are renormalised to sum to 1 in float64 (float32 softmax sums stray by 1e-7, which log-loss
    scorers warn about); multi-label probabilities (and numbers: pass multilabel, data.independent)
    are per column and stay as merged (gmean per label is the mean log-probability)."""
    probs = np.asarray(probs, dtype=np.float64)
    if mode == "mean":
        out = probs.mean(0)
    elif mode == "median":
        out = np.median(probs, axis=0)
    elif mode == "gmean" and multilabel:
        return np.exp(np.log(np.clip(probs, 1e-12, 1.0)).mean(0))
    elif mode == "gmean":
        logp = np.log(np.clip(probs, 1e-12, 1.0)).mean(0)
        out = np.exp(logp - logp.max(1, keepdims=True))
    elif mode == "max":
        out = probs.max(0)
    else:
        raise ValueError(f"unknown merge mode {mode!r}")
    return out if multilabel else out / out.sum(1, keepdims=True)


def crop_boxes(h: int, w: int, size: int, crops: tuple[str, ...]) -> list[tuple[int, int]]:
    """Top-left corners of the named crops; centre as albumentations' CenterCrop places it."""
    where = {
        "center": ((h - size) // 2, (w - size) // 2),
        "tl": (0, 0),
        "tr": (0, w - size),
        "bl": (h - size, 0),
        "br": (h - size, w - size),
    }
    return [where[c] for c in crops]


class CropsDataset(ImageDataset):
    """Each item: the image resized as timm's eval recipe does (short side to size / crop_pct),
    then every named crop of size x size, stacked: (n_crops, C, size, size)."""

    def __init__(self, paths, dc: DataConfig, size: int, crops: tuple[str, ...], source=None):
        super().__init__(paths, None, A.Compose([resize_short(dc.at(size))] + normalize(dc)), source)
        self.size, self.crops = size, crops

    def __getitem__(self, i: int):
        image, target = super().__getitem__(i)
        s = self.size
        boxes = crop_boxes(image.shape[1], image.shape[2], s, self.crops)
        return torch.stack([image[:, y : y + s, x : x + s] for y, x in boxes]), target


@torch.inference_mode()
def forward_views(model, x: torch.Tensor, flips: list[str], device, rt, multilabel=False) -> torch.Tensor:
    """x: (B, n_crops, C, H, W). Probabilities (B, n_crops * n_flips, K), crop-major,
    from a single forward pass over every crop and flip of the batch. `multilabel`: engine.activate's
    act (a number's target scale, for a number)."""
    b, nc = x.shape[:2]
    flat = engine.to_input(x.flatten(0, 1), device, rt)
    batch = torch.cat([FLIPS[f](flat) for f in flips])  # (n_flips * B * nc, C, H, W)
    with engine.autocast(device, rt):
        logits = model(batch)
    probs = engine.activate(logits, multilabel).reshape(len(flips), b, nc, -1)
    return probs.permute(1, 2, 0, 3).reshape(b, nc * len(flips), -1).cpu()


def predict_views(
    model,
    paths,
    dc: DataConfig,
    views: list[View],
    batch_size: int,
    device,
    rt,
    multilabel=False,
    source=None,
) -> np.ndarray:
    """Probabilities of every view, (n_views, N, K), in the order of `views`. The loader's batch
    shrinks with the number of views per size, so a forward pass holds about batch_size images.
    `source`: the decode cache (path -> image), or None to decode the files."""
    model.eval()
    out = []
    for size in dict.fromkeys(v.size for v in views):
        crops = tuple(dict.fromkeys(v.crop for v in views if v.size == size))
        flips = list(dict.fromkeys(v.flip for v in views if v.size == size))
        ds = CropsDataset(paths, dc, size, crops, source)
        per_batch = max(1, batch_size // (len(crops) * len(flips)))
        dl = make_loader(ds, per_batch, False, engine.loader_options(rt, device))
        batches = progress.bar(dl, len(dl), f"predict {size} px x {len(crops) * len(flips)} views")
        probs = torch.cat([forward_views(model, x, flips, device, rt, multilabel) for x, _ in batches])  # (N, V_s, K)
        names = [(c, f) for c in crops for f in flips]
        want = [names.index((v.crop, v.flip)) for v in views if v.size == size]
        out.append(probs[:, want].numpy())
    return np.concatenate(out, axis=1).transpose(1, 0, 2)


def fold_views(fm: FoldModel, tta: Tta) -> list[View]:
    """The views infer.tta asks for, at the fold model's size; extra sizes are refused for a
    model built for one size."""
    base = fm.data_config.size
    if fm.fixed_size and any(s != base for s in tta.sizes):
        raise PipelineError(
            f"infer.tta.sizes: {fm.model.pretrained_cfg.get('architecture')} has a fixed input size ({base} px)"
        )
    return make_views(base, tta)


def predict_merged(fm: FoldModel, paths, cfg: Config, device) -> np.ndarray:
    """(N, K) probabilities of a fold model on the images, under infer.tta's views, merged."""
    views = fold_views(fm, cfg.infer.tta)
    source = run_cache(cfg, fm.data_config)
    probs = predict_views(
        fm.model, paths, fm.data_config, views, cfg.infer.batch_size, device, cfg.runtime,
        fm.act(cfg.data.multilabel), source,
    )  # fmt: skip
    return merge(probs, cfg.infer.tta.merge, cfg.data.independent)


def view_sets(views: list[View]) -> dict[str, list[int]]:
    """Named subsets of `views` (indices) for the CV table: none, each size, crop set and flip
    added on its own to the plain view, and all of them."""
    base = views[0]
    sets = {"none": [0]}
    for v in views[1:]:
        if v.flip != "none" and v.size == base.size and v.crop == base.crop:
            sets[f"+{v.flip}"] = [0, views.index(v)]
        if v.size != base.size and v.crop == base.crop and v.flip == "none":
            sets[f"+{v.size}px"] = [0, views.index(v)]
    crops = [i for i, v in enumerate(views) if v.size == base.size and v.flip == "none"]
    if len(crops) > 1:
        sets["five crops"] = crops
    if len(views) > 1:
        sets["all"] = list(range(len(views)))
    return sets
