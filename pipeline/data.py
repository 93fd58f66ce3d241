"""Images: decoding, the backbone's data config, albumentations transforms, datasets and loaders."""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from PIL import Image, ImageOps, UnidentifiedImageError

from . import augment, distributed
from .config import Data
from .errors import PipelineError
from .io import read_table

cv2.setNumThreads(0)  # torch owns the cores; cv2's own pool only oversubscribes them


def read_image(path: str | Path) -> np.ndarray:
    """An upright RGB uint8 (H, W, 3) image, decoded whole: a truncated or corrupt file is refused,
    never trained on (OpenCV's libjpeg fills a cut JPEG's missing rows with grey and only warns,
    without the file's name). A JPEG or PNG whose end marker is in place goes to OpenCV (fast, the
    common case); anything else goes to PIL, which raises where the data ends early: other formats,
    and JPEG or PNG files whose end is missing (or followed by more than padding). The format is
    read from the bytes, never the suffix (a PNG named .jpg is a PNG)."""
    data = read_bytes(path)
    if ends_whole(data):
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF orientation
        if img is not None:
            return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return pil_decode(path, data)


def read_bytes(path: str | Path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"{path}: image not found") from None
    except OSError as e:
        raise PipelineError(f"{path}: cannot read image ({e.strerror})") from None
    if not data:
        raise PipelineError(f"{path}: image is empty (0 bytes)")
    return data


JPEG_START, JPEG_END, JPEG_SCAN = b"\xff\xd8\xff", b"\xff\xd9", b"\xff\xda"
PNG_START, PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"  # IEND: the last chunk, with its CRC
PADDING = 1024  # bytes an end marker may sit before the file's end (cameras and tools pad, append)


def ends_whole(data: bytes) -> bool:
    """Whether a JPEG's end of image (after its last scan's start) or a PNG's IEND chunk is within
    PADDING bytes of the end: a look at the tail, not a decode. False sends the file to PIL, which
    decides; a JPEG cut after its EXIF thumbnail ends with the thumbnail's end marker, but then a
    scan's start follows it or the main image has no scan at all (no decoder returns pixels)."""
    tail = max(0, len(data) - PADDING)
    if data.startswith(JPEG_START):
        end = data.rfind(JPEG_END, tail)
        return end >= 0 and data.find(JPEG_SCAN, end) < 0
    if data.startswith(PNG_START):
        return data.find(PNG_END, tail) >= 0
    return False


def pil_decode(path: str | Path, data: bytes) -> np.ndarray:
    """PIL's decode of the whole file (it raises on data that ends early, as ImageFile's default
    LOAD_TRUNCATED_IMAGES = False has it), turned upright by its EXIF orientation as OpenCV does."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return pil_rgb(ImageOps.exif_transpose(im))
    except UnidentifiedImageError:
        raise PipelineError(f"{path}: cannot read image (not an image file, or a format PIL does not know)") from None
    except Image.DecompressionBombError as e:
        raise PipelineError(f"{path}: cannot read image ({e})") from None
    except Exception:  # PIL raises many types for a file that ends early or holds bad data
        raise PipelineError(f"{path}: image is truncated or corrupt") from None


def pil_rgb(im: Image.Image) -> np.ndarray:
    """RGB uint8. 16- and 32-bit greyscale is scaled down by 256 as OpenCV does (PIL's convert
    clips it at 255: almost white); alpha is dropped, as OpenCV's IMREAD_COLOR drops it."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.clip(np.rint(np.asarray(im, dtype=np.float32) / 256), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def folder_images(d: Data, folder: str, key: str) -> list[str]:
    """Image files under data.root/folder (the config key `key` names it), as paths relative to
    data.root, sorted; none of them may be a labelled training image (its label would be overridden)."""
    root = d.path(folder)
    if not root.is_dir():
        raise PipelineError(f"{key}: {root} is not a folder")
    rel = sorted(p.relative_to(d.root).as_posix() for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not rel:
        raise PipelineError(f"{key}: no images in {root}")
    train = read_table(d.path(d.train_csv), [d.id_col])[d.id_col]
    labelled = {d.train_images.format(id=i): n for n, i in enumerate(train, start=2)}
    clash = next((r for r in rel if r in labelled), None)
    if clash:
        raise PipelineError(
            f"{key}: {clash} is a labelled image ({d.train_csv} line {labelled[clash]}); "
            "the folder must hold unlabelled images only"
        )
    return rel


@dataclass(frozen=True)
class DataConfig:
    """timm's data config of a backbone: the size, normalisation, resize and crop its weights expect.
    Checkpoints store it as timm's dict (`to_timm`)."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    @classmethod
    def from_timm(cls, dc: dict) -> DataConfig:
        return cls(
            size=int(dc["input_size"][-1]),
            mean=tuple(dc["mean"]),
            std=tuple(dc["std"]),
            interpolation=dc.get("interpolation") or "bilinear",
            crop_pct=float(dc.get("crop_pct", 1.0)),
        )

    def to_timm(self) -> dict:
        return {
            "input_size": [3, self.size, self.size],
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }

    def at(self, size: int) -> DataConfig:
        """The same recipe at another image size (a training phase, a TTA view)."""
        return replace(self, size=size)


class ImageDataset(torch.utils.data.Dataset):
    """`source`: path -> RGB uint8 image; the decode cache (cache.DecodedImages) or read_image."""

    def __init__(self, paths: list[Path], targets: np.ndarray | None, transform: A.Compose, source=None):
        self.paths, self.transform, self.source = paths, transform, source or read_image
        self.targets = np.full(len(paths), -1) if targets is None else np.asarray(targets)
        # rows of class probabilities (soft pseudo-labels) or numbers (normalised), else class indices
        self.soft = self.targets.ndim == 2 or np.issubdtype(self.targets.dtype, np.floating)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int | tuple[int, int]):
        if isinstance(i, tuple):  # (index, epoch seed) from a training loader's ShardSampler
            i, seed = i
            self.transform.set_random_seed((seed * 1_000_003 + i) % 2**32)
        image = self.transform(image=self.source(self.paths[i]))["image"]
        t = self.targets[i]
        return image, (torch.as_tensor(t, dtype=torch.float32) if self.soft else int(t))


_LOG_LO, _LOG_HI = math.log(3 / 4), math.log(4 / 3)  # RandomResizedCrop's aspect ratios, log-uniform
_INTERP = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST}


def normalize(dc: DataConfig) -> list:
    return [A.Normalize(mean=dc.mean, std=dc.std, max_pixel_value=255.0), ToTensorV2()]


_LEVELS = np.arange(256, dtype=np.float32)
_SEED = random.Random.__mro__[1].seed  # the generator's own seed: random.Random.seed's checks cost more per image


class TrainAugment:
    """Training augmentation (`aug`: train.aug) on uint8 images with OpenCV: a random-resized crop
    to the data config's size, flips, colour jitter. Called as an albumentations Compose is
    (`t(image=img)["image"]`), it returns the crop as a uint8 (H, W, 3) tensor: engine.to_input
    normalises the whole batch at once, on the device. Per image this costs a tenth of the same
    steps through albumentations, which at small sizes on a CPU was a third of an epoch
    (bench/speed.py). The crop follows torchvision's RandomResizedCrop: ten tries at an area in
    [scale_min, 1] and an aspect ratio in [3/4, 4/3] (log-uniform), then the centre.
    train.aug.transforms run around these steps (augment.py): geometric ones on the whole image
    before the crop, pixel-level ones on the crop after the jitter; train.aug.policy after the flips."""

    def __init__(self, dc: DataConfig, aug):
        self.size, self.aug = dc.size, aug
        self.interp = _INTERP.get(dc.interpolation, cv2.INTER_LINEAR)
        self.rng = random.Random(0)
        self.before, self.after = augment.split(aug.transforms)  # train.aug.transforms, around the crop
        made = augment.policy(aug.policy, dc.size, dc.mean)
        self.policy = augment.Seeded(made) if made is not None else None

    def set_random_seed(self, seed: int) -> None:
        _SEED(self.rng, seed)  # as self.rng.seed(seed) seeds it
        self.rng.gauss_next = None
        for k, side in enumerate((self.before, self.after), start=1):
            if side is not None:  # each side its own stream, so their draws are not the crop's
                side.set_random_seed((seed + k * 0x9E3779B9) % 2**32)

    def crop_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        # r.uniform(a, b) and r.randint(0, n) written out as the standard library computes them
        # (a + (b - a) * random(), _randbelow(n + 1)): the same draws, without their call layers
        r, lo = self.rng, self.aug.scale_min
        for _ in range(10):
            area = h * w * (lo + (1.0 - lo) * r.random())
            ratio = math.exp(_LOG_LO + (_LOG_HI - _LOG_LO) * r.random())
            cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                return r._randbelow(h - ch + 1), r._randbelow(w - cw + 1), ch, cw
        cw, ch = (w, min(h, round(w * 4 / 3))) if w / h < 3 / 4 else (min(w, round(h * 4 / 3)), h)
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def jitter(self, img: np.ndarray) -> np.ndarray:
        """Brightness and contrast (one lookup table), then saturation (a blend with the grey image)."""
        j, r = self.aug.color_jitter, self.rng
        lo, span = 1 - j, (1 + j) - (1 - j)  # r.uniform(1 - j, 1 + j), three times, written out
        b, c, s = lo + span * r.random(), lo + span * r.random(), lo + span * r.random()
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        mean = cv2.mean(grey)[0] * b
        lut = _LEVELS * (b * c)
        lut += mean * (1 - c)
        lut = np.clip(lut, 0, 255, out=lut).astype(np.uint8)
        img = cv2.LUT(img, lut)
        grey = cv2.cvtColor(cv2.LUT(grey, lut), cv2.COLOR_GRAY2RGB)
        return cv2.addWeighted(img, s, grey, 1.0 - s, 0.0)

    def __call__(self, image: np.ndarray) -> dict:
        if self.before is not None:
            image = self.before(image=image)["image"]
        y, x, h, w = self.crop_box(*image.shape[:2])
        img = cv2.resize(image[y : y + h, x : x + w], (self.size, self.size), interpolation=self.interp)
        if self.rng.random() < self.aug.hflip:
            img = cv2.flip(img, 1)
        if self.rng.random() < self.aug.vflip:
            img = cv2.flip(img, 0)
        if self.policy is not None:
            img = augment.apply_policy(self.policy, img, self.rng.getrandbits(32))
        if self.aug.color_jitter and self.rng.random() < 0.8:
            img = self.jitter(img)
        if self.after is not None:
            img = np.ascontiguousarray(self.after(image=img)["image"])
        return {"image": torch.from_numpy(img)}


def train_transform(dc: DataConfig, aug) -> TrainAugment:
    """Random-resized crop at the data config's size, flips, colour jitter, and train.aug.transforms
    around them (`aug`: train.aug)."""
    return TrainAugment(dc, aug)


def resize_short(dc: DataConfig) -> A.SmallestMaxSize:
    """timm's eval resize: the short side to size / crop_pct, so a size x size crop remains."""
    interp = _INTERP.get(dc.interpolation, cv2.INTER_LINEAR)
    return A.SmallestMaxSize(max_size=int(round(dc.size / dc.crop_pct)), interpolation=interp)


def eval_transform(dc: DataConfig) -> A.Compose:
    """timm's eval recipe: resize the short side to size / crop_pct, then centre-crop."""
    return A.Compose([resize_short(dc), A.CenterCrop(height=dc.size, width=dc.size)] + normalize(dc))


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
    return torch.utils.data.WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),
        num_samples=int(counts.max()) * int((counts > 0).sum()),
        generator=torch.Generator(),
    )


def make_loader(ds, batch_size: int, train: bool, opts: dict | None = None, sampler=None):
    """A loader over ds. `opts`: engine.loader_options (workers, pinning, prefetch). A training
    loader shards `sampler` (default: a reshuffle each epoch) across DDP processes, each taking
    batch_size / world of every batch; reseed it with loader.sampler.set_epoch."""
    opts = opts or {}
    if train:
        world = distributed.world_size()
        if batch_size % world:
            raise PipelineError(f"train.batch_size: {batch_size} does not split over {world} processes")
        base = sampler or torch.utils.data.RandomSampler(ds, generator=torch.Generator())
        sampler, batch_size = distributed.ShardSampler(base), batch_size // world
    return torch.utils.data.DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        # BatchNorm cannot train on a batch of one, which a ragged last batch can be
        drop_last=train and len(sampler) > batch_size,
        worker_init_fn=_worker_init if opts.get("num_workers") else None,
        **opts,
    )
