"""The decode cache: each image of a competition decoded once, resized, and kept on disk as uint8.

Without it every epoch decodes every JPEG again, at full size, even for a phase at 128 px. With it
an image is read from one memory-mapped file at the size the run needs (its largest phase or TTA
size, with timm's crop margin: size / crop_pct on the short side), so a loader only crops, flips
and normalises. A cache holds every train and test image of a competition at one size:

    cache/<short>px-<interpolation>-<digest>/pixels.u8    the images, one after another (H, W, 3)
                                              index.npy    offset, height, width of each image
                                              files.csv    path, bytes, mtime_ns of each source file

The digest covers the resize and every source file's path, size and modification time, so a
changed, added or removed image (or another size) names another folder: a cache is never read
stale. Experiments at the same size share one; a folder appears whole (built beside it, renamed)
and concurrent builders (make -j) wait on a lock instead of building twice. runtime.cache: false
decodes the originals every time, as before.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .config import Config
from .data import DataConfig, read_image, resize_short
from .io import image_paths, read_table
from .submission import read_sample


def stored_short(cfg: Config, final: DataConfig) -> int:
    """The short side a run's images are kept at: enough for its largest phase or TTA size."""
    sizes = [p.img_size or final.size for p in cfg.train.phases] + list(cfg.infer.tta.sizes) + [final.size]
    return max(int(round(s / final.crop_pct)) for s in sizes)


def competition_images(cfg: Config) -> list[Path]:
    """Every train and test image the competition's tables name (checked to exist)."""
    d = cfg.data
    train, sample = d.path(d.train_csv), d.path(d.sample_submission)
    return image_paths(d.root, d.train_images, read_table(train, [d.id_col])[d.id_col], train) + image_paths(
        d.root, d.test_images, read_sample(d)[d.sample_id], sample
    )


def source_files(paths: list[Path]) -> pd.DataFrame:
    stats = [p.stat() for p in paths]
    return pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "bytes": [s.st_size for s in stats],
            "mtime_ns": [s.st_mtime_ns for s in stats],
        }
    )


def folder_name(files: pd.DataFrame, dc: DataConfig) -> str:
    text = f"{dc.size} {dc.interpolation}\n" + files.to_csv(index=False)
    return f"{dc.size}px-{dc.interpolation}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class DecodedImages:
    """path -> the image resized to the cache's short side; an image outside the cache is decoded
    and resized the same way. Pickles without its memory map, so loader workers open their own."""

    def __init__(self, folder: Path, dc: DataConfig):
        self.folder, self.resize = folder, resize_short(dc)
        self.where = {p: i for i, p in enumerate(pd.read_csv(folder / "files.csv")["path"])}
        self.index = np.load(folder / "index.npy")
        self._pixels = None

    def __len__(self) -> int:
        return len(self.where)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}

    def __call__(self, path) -> np.ndarray:
        i = self.where.get(str(path))
        if i is None:
            return self.resize(image=read_image(path))["image"]
        if self._pixels is None:
            self._pixels = np.memmap(self.folder / "pixels.u8", dtype=np.uint8, mode="r")
        start, h, w = self.index[i]
        return np.asarray(self._pixels[start : start + h * w * 3]).reshape(h, w, 3)


@contextmanager
def locked(path: Path):
    """An exclusive lock between processes (make -j, DDP ranks) for the life of the block."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # a waiter holds the file open; it checks the folder again
            fcntl.flock(f, fcntl.LOCK_UN)


def build(folder: Path, files: pd.DataFrame, dc: DataConfig, workers: int) -> None:
    """Decode and resize every file (OpenCV releases the GIL, so threads run in parallel) into a
    folder beside `folder`, renamed into place once whole."""
    resize = resize_short(dc)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index = np.zeros((len(files), 3), dtype=np.int64)
    offset = 0
    try:
        with open(tmp / "pixels.u8", "wb") as out, ThreadPoolExecutor(workers) as pool:
            images = pool.map(lambda p: resize(image=read_image(p))["image"], files["path"])
            desc = f"decode cache {folder.name[: folder.name.rindex('-')]}"
            for i, img in enumerate(tqdm(images, total=len(files), desc=desc, unit="img", mininterval=2, disable=None)):
                out.write(np.ascontiguousarray(img).tobytes())
                index[i] = offset, img.shape[0], img.shape[1]
                offset += img.size
        np.save(tmp / "index.npy", index)
        files.to_csv(tmp / "files.csv", index=False)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_cache(paths: list[Path], dc: DataConfig, root: str | Path, workers: int | None = None) -> DecodedImages:
    """The cache of these images at dc's short side (dc.size is that side here), built first if
    no folder matches them as they are on disk now."""
    files = source_files(paths)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / folder_name(files, dc)
    if not (folder / "index.npy").is_file():
        with locked(root / f"{folder.name}.lock"):
            if not (folder / "index.npy").is_file():  # another process may have built it meanwhile
                build(folder, files, dc, workers or os.cpu_count() or 1)
    return DecodedImages(folder, dc)


def run_cache(cfg: Config, final: DataConfig, paths: list[Path] | None = None) -> DecodedImages | None:
    """The competition's cache at the run's largest size (of `paths` alone when given: the test
    images of a bundle's prediction, with no training images at hand); None under runtime.cache:
    false. An image is stored alike in any cache, so predictions do not depend on which."""
    if not cfg.runtime.cache:
        return None
    dc = DataConfig(stored_short(cfg, final), final.mean, final.std, final.interpolation, crop_pct=1.0)
    return open_cache(competition_images(cfg) if paths is None else paths, dc, cfg.runtime.cache_dir)
