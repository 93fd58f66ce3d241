"""The decode cache: each image of a competition decoded once, resized, and kept on disk as uint8
pixels (raw) or, where those would not fit the disk or the memory, as a JPEG re-encoded once at
the cached size (runtime.cache_format; auto chooses, and the choice and size are printed).

Without it every epoch decodes every JPEG again, at full size, even for a phase at 128 px. With it
an image is read from one memory-mapped file at the size the run needs (stored_short: enough that
the smallest random crop of its largest phase is scaled down, never up, and for eval's resize at
every TTA size; an image smaller than that is kept as it is), so a loader only crops, flips and
normalises, and sees the pixels it would see from the original. A cache holds every train and
test image of a competition at one size:

    cache/<short>px-<interpolation>-<digest>/pixels.u8    the images, one after another (H, W, 3)
                                              index.npy    offset, height, width of each image
                                              files.csv    path, bytes, mtime_ns of each source file
    cache/<short>px-<interpolation>-jpeg-<digest>/pixels.jpg   the JPEGs, one after another
                                                   index.npy    offset and length of each

The digest covers the resize and every source file's path, size and modification time, so a
changed, added or removed image (or another size) names another folder: a cache is never read
stale. Experiments at the same size share one; a folder appears whole (built beside it, renamed)
and concurrent builders (make -j) wait on a lock instead of building twice. runtime.cache: false
decodes the originals every time, as before.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from .config import Config
from .data import DataConfig, read_image, resize_short
from .errors import PipelineError
from .io import image_paths, read_table
from .submission import read_sample

MAX_GROWTH = 2.5  # the cache's short side over a phase's size, at most (timm's scale 0.08 would ask 4.1)


def stored_short(cfg: Config, final: DataConfig) -> int:
    """The short side a run's images are kept at (an image smaller than that is kept as it is):
    enough for eval's resize at every TTA size (size / crop_pct), and for the smallest crop a
    training phase can draw (train.aug.scale_min of the area at an aspect ratio of 3/4) to be
    scaled down to the phase's size, never up, so a crop from the cache is a crop from the
    original, as with the cache off. At scale_min 0.35 that is 1.95x the phase's size; at most
    MAX_GROWTH times it."""
    # the image's side over its smallest crop's, at most MAX_GROWTH (below scale_min 0.21 the
    # smallest crops are then scaled up a little, as the cost of a cache 2.5x, not 4x, the size)
    grow = min(MAX_GROWTH, 1.0 / math.sqrt(cfg.train.aug.scale_min * 3 / 4))
    phases = [(p.img_size or final.size) * max(grow, 1 / final.crop_pct) for p in cfg.train.phases]
    evals = [s / final.crop_pct for s in [*cfg.infer.tta.sizes, final.size]]
    return max(math.ceil(s - 1e-9) for s in phases + evals)


class shrink_short:  # noqa: N801 (used as a function: shrink_short(dc)(image))
    """image -> the image with its short side brought down to dc.size; a smaller one as it is (the
    cache never scales up: a crop of it is then scaled once, as from the original). A class, not a
    closure, so a loader worker's copy pickles."""

    def __init__(self, dc: DataConfig):
        self.size, self.resize = dc.size, resize_short(dc)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.resize(image=image)["image"] if min(image.shape[:2]) > self.size else image


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


def folder_name(files: pd.DataFrame, dc: DataConfig, fmt: str = "raw") -> str:
    # "down only": the images are never scaled up; a cache from before that rule is not this one
    text = f"{dc.size} {dc.interpolation} down only\n" + files.to_csv(index=False)
    tag = "" if fmt == "raw" else f"-{fmt}"  # a raw cache keeps the name it had before formats
    return f"{dc.size}px-{dc.interpolation}{tag}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


# ----------------------------------------------------------------------------- raw or jpeg

JPEG_QUALITY = 95  # re-encoded once, at the cached size: visually lossless for training
RAW_SHARE = 0.5  # auto: raw while it takes at most this share of the free disk and of the memory
SAMPLED = 256  # image headers read to estimate a raw cache's size


def raw_bytes(paths: list[Path], short: int) -> int:
    """About how many bytes a raw cache of these images takes at this short side, from the sizes in
    the headers of up to SAMPLED of them (spread over the list)."""
    from PIL import Image

    ratios = []
    for p in paths[:: max(1, len(paths) // SAMPLED)][:SAMPLED]:
        try:
            with Image.open(p) as im:
                w, h = im.size
            ratios.append(max(w, h) / max(1, min(w, h)))
        except Exception:  # noqa: BLE001 (not one PIL reads: counted as square)
            ratios.append(1.0)
    return round(len(paths) * short * short * 3 * (float(np.mean(ratios)) if ratios else 1.0))


def memory_limit() -> int:
    """The bytes of memory this process may still use: the memory available on the machine, or
    less where its cgroup (a container, systemd-run -p MemoryMax=) allows less."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limit = int(line.split()[1]) * 1024
        groups = dict(line.split(":", 2)[1:] for line in Path("/proc/self/cgroup").read_text().splitlines())
    except (OSError, ValueError):
        return limit
    # cgroup v2 (one hierarchy, named ""), else v1's memory controller
    v1 = Path("/sys/fs/cgroup/memory") / groups.get("memory", "").lstrip("/")
    for top, most, used in (
        (Path("/sys/fs/cgroup") / groups.get("", "").lstrip("/"), "memory.max", "memory.current"),
        (v1, "memory.limit_in_bytes", "memory.usage_in_bytes"),
    ):
        try:
            cap, now = (top / most).read_text().strip(), int((top / used).read_text())
        except (OSError, ValueError):
            continue
        if cap != "max" and int(cap) < 2**60:  # v1 writes "no limit" as a huge number
            limit = min(limit, int(cap) - now)
    return max(0, limit)


def choose_format(fmt: str, paths: list[Path], short: int, root: Path) -> tuple[str, str]:
    """runtime.cache_format, with auto decided by the estimated raw size against the room; and why."""
    if fmt != "auto":
        return fmt, "runtime.cache_format"
    need, disk, memory = raw_bytes(paths, short), shutil.disk_usage(root).free, memory_limit()
    sizes = f"raw about {gb(need)}; free disk {gb(disk)}, memory {gb(memory)}"
    if need <= RAW_SHARE * min(disk, memory):
        return "raw", f"auto: {sizes}"
    return "jpeg", f"auto: {sizes}; raw would take more than {RAW_SHARE:.0%} of one of them"


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def encode(img: np.ndarray, fmt: str) -> bytes:
    """An image's bytes in the cache: its pixels, or a JPEG of them."""
    if fmt == "raw":
        return np.ascontiguousarray(img).tobytes()
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise PipelineError(f"decode cache: OpenCV could not encode an image of {img.shape} as JPEG")
    return buf.tobytes()


class DecodedImages:
    """path -> the image with its short side brought down to the cache's (shrink_short); an image
    outside the cache is decoded and brought down the same way. Pickles without its memory map, so
    loader workers open their own."""

    def __init__(self, folder: Path, dc: DataConfig):
        self.folder, self.shrink = folder, shrink_short(dc)
        self.where = {p: i for i, p in enumerate(pd.read_csv(folder / "files.csv")["path"])}
        self.index = np.load(folder / "index.npy")  # raw: offset, height, width; jpeg: offset, bytes
        self.jpeg = (folder / "pixels.jpg").is_file()
        self._pixels = None

    def __len__(self) -> int:
        return len(self.where)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None}

    def __call__(self, path) -> np.ndarray:
        i = self.where.get(str(path))
        if i is None:
            return self.shrink(read_image(path))
        if self._pixels is None:
            name = "pixels.jpg" if self.jpeg else "pixels.u8"
            # a plain array over the map: slicing it makes no memmap object per image
            self._pixels = np.memmap(self.folder / name, dtype=np.uint8, mode="r").view(np.ndarray)
        if self.jpeg:
            start, n = self.index[i][:2]
            return cv2.cvtColor(cv2.imdecode(self._pixels[start : start + n], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        start, h, w = self.index[i]
        return self._pixels[start : start + h * w * 3].reshape(h, w, 3)


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


def build(folder: Path, files: pd.DataFrame, dc: DataConfig, workers: int, fmt: str = "raw") -> None:
    """Decode, resize (and encode, for jpeg) every file (OpenCV releases the GIL, so threads run in
    parallel) into a folder beside `folder`, renamed into place once whole."""
    shrink = shrink_short(dc)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    index = np.zeros((len(files), 3 if fmt == "raw" else 2), dtype=np.int64)
    offset = 0

    def prepared(p):
        img = np.ascontiguousarray(shrink(read_image(p)))
        return encode(img, fmt), img.shape

    name = "pixels.u8" if fmt == "raw" else "pixels.jpg"
    try:
        with open(tmp / name, "wb") as out, ThreadPoolExecutor(workers) as pool:
            images = pool.map(prepared, files["path"])
            desc = f"decode cache {folder.name[: folder.name.rindex('-')]}"
            for i, (data, shape) in enumerate(
                tqdm(images, total=len(files), desc=desc, unit="img", mininterval=2, disable=None)
            ):
                out.write(data)
                index[i] = (offset, shape[0], shape[1]) if fmt == "raw" else (offset, len(data))
                offset += len(data)
        np.save(tmp / "index.npy", index)
        files.to_csv(tmp / "files.csv", index=False)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_cache(
    paths: list[Path], dc: DataConfig, root: str | Path, workers: int | None = None, fmt: str = "raw"
) -> DecodedImages:
    """The cache of these images at dc's short side (dc.size is that side here), built first if
    no folder matches them as they are on disk now; `fmt` raw, jpeg, or auto (a cache of either
    format that is already there, else choose_format's choice)."""
    files = source_files(paths)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    built = [f for f in ("raw", "jpeg") if (root / folder_name(files, dc, f) / "index.npy").is_file()]
    found = [f for f in built if fmt in (f, "auto")]
    if found:
        return DecodedImages(root / folder_name(files, dc, found[0]), dc)
    fmt, why = choose_format(fmt, paths, dc.size, root)
    folder = root / folder_name(files, dc, fmt)
    with locked(root / f"{folder.name}.lock"):
        if not (folder / "index.npy").is_file():  # another process may have built it meanwhile
            build(folder, files, dc, workers or os.cpu_count() or 1, fmt)
            size = sum(f.stat().st_size for f in folder.iterdir())
            print(f"decode cache {folder}: {len(files)} images at {dc.size} px, {fmt} ({why}): {gb(size)}", flush=True)
    return DecodedImages(folder, dc)


def run_cache(cfg: Config, final: DataConfig, paths: list[Path] | None = None) -> DecodedImages | None:
    """The competition's cache at the run's largest size, of `paths` when given (the images a
    stage's Competition holds, competition.every_image; or a bundle's test images, with no
    training images at hand), else of the images the tables name; None under runtime.cache:
    false. An image is stored alike in any raw cache, so predictions do not depend on which (a jpeg
    cache's are close, not equal: runtime.cache_format)."""
    if not cfg.runtime.cache:
        return None
    dc = DataConfig(stored_short(cfg, final), final.mean, final.std, final.interpolation, crop_pct=1.0)
    images = competition_images(cfg) if paths is None else paths
    return open_cache(images, dc, cfg.runtime.cache_dir, fmt=cfg.runtime.cache_format)
