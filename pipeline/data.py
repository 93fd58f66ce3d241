"""Tables and images: reading them with clear errors, datasets, and albumentations transforms."""
from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pandas as pd
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image

from .errors import PipelineError

cv2.setNumThreads(0)  # torch owns the cores; cv2's own pool only oversubscribes them


def read_table(path: str | Path, columns: list[str], id_col: str | None = None) -> pd.DataFrame:
    """A CSV as strings, with the named columns present, non-empty, and (id_col) unique."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    for col in columns:
        if col not in df.columns:
            raise PipelineError(f"{path}: no column '{col}' (columns: {', '.join(df.columns)})")
        empty = np.flatnonzero(df[col].str.strip() == "")
        if len(empty):
            raise PipelineError(f"{path}: line {empty[0] + 2}: empty '{col}'")
    if id_col is not None:
        dup = np.flatnonzero(df[id_col].duplicated())
        if len(dup):
            raise PipelineError(f"{path}: line {dup[0] + 2}: duplicate {id_col} '{df[id_col].iloc[dup[0]]}'")
    if df.empty:
        raise PipelineError(f"{path}: no rows")
    return df


def image_paths(root: str | Path, pattern: str, ids, table: str | Path) -> list[Path]:
    """Paths of the images named by `pattern` ({id} replaced), each checked to exist."""
    paths = [Path(root) / pattern.format(id=i) for i in ids]
    for line, p in enumerate(paths, start=2):
        if not p.is_file():
            raise PipelineError(f"{p}: image not found ({table} line {line})")
    return paths


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 image. OpenCV first (fast); PIL for what it cannot decode (GIF, some PNG)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is not None:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if not Path(path).is_file():
        raise PipelineError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many types for a bad file; all mean the same to the user
        raise PipelineError(f"{path}: cannot read image ({type(e).__name__})") from None


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path], targets: np.ndarray | None, transform: A.Compose):
        self.paths, self.transform = paths, transform
        self.targets = np.full(len(paths), -1) if targets is None else np.asarray(targets)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        image = self.transform(image=read_image(self.paths[i]))["image"]
        t = self.targets[i]
        # a row of class probabilities (soft pseudo-labels) or a class index
        return image, (torch.as_tensor(t, dtype=torch.float32) if np.ndim(t) else int(t))


_INTERP = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}


def normalize(dc: dict) -> list:
    return [A.Normalize(mean=dc["mean"], std=dc["std"], max_pixel_value=255.0), ToTensorV2()]


def train_transform(dc: dict, aug) -> A.Compose:
    """Random-resized crop at the training size, flips, colour jitter. `dc`: timm data config."""
    size = dc["input_size"][-1]
    interp = _INTERP.get(dc.get("interpolation"), cv2.INTER_LINEAR)
    ops = [A.RandomResizedCrop(size=(size, size), scale=(aug.scale_min, 1.0), interpolation=interp)]
    if aug.hflip:
        ops.append(A.HorizontalFlip(p=aug.hflip))
    if aug.vflip:
        ops.append(A.VerticalFlip(p=aug.vflip))
    if aug.color_jitter:
        j = aug.color_jitter
        ops.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=0.0, p=0.8))
    return A.Compose(ops + normalize(dc))


def resize_short(dc: dict, size: int) -> A.SmallestMaxSize:
    """timm's eval resize: the short side to size / crop_pct, so a size x size crop remains."""
    interp = _INTERP.get(dc.get("interpolation"), cv2.INTER_LINEAR)
    return A.SmallestMaxSize(max_size=int(round(size / dc.get("crop_pct", 1.0))), interpolation=interp)


def eval_transform(dc: dict) -> A.Compose:
    """timm's eval recipe: resize the short side to size / crop_pct, then centre-crop."""
    size = dc["input_size"][-1]
    return A.Compose([resize_short(dc, size), A.CenterCrop(height=size, width=size)] + normalize(dc))


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def oversample(y: np.ndarray, seed: int) -> np.ndarray:
    """Indices into y that repeat each smaller class until it matches the largest: whole copies,
    then a seeded random draw for the remainder, so every image appears as evenly as possible."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    out = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        copies, rest = divmod(counts.max(), len(idx))
        out += [np.tile(idx, copies), rng.choice(idx, rest, replace=False)]
    return np.sort(np.concatenate(out))


def balanced_sampler(y: np.ndarray) -> torch.utils.data.WeightedRandomSampler:
    """Draws every class equally often (with replacement), as many draws as oversampling makes."""
    counts = np.bincount(y)
    weights = 1.0 / counts[y]
    return torch.utils.data.WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double),
                                                  num_samples=int(counts.max()) * int((counts > 0).sum()))


def make_loader(ds, batch_size: int, train: bool, num_workers: int, device: torch.device, sampler=None):
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
        num_workers=num_workers,
        # BatchNorm cannot train on a batch of one, which a ragged last batch can be
        drop_last=train and len(ds) > batch_size,
        pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
        worker_init_fn=_worker_init if num_workers else None)
