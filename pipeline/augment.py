"""train.aug.transforms: further albumentations transforms named in the config, in albumentations'
own terms ({name: CLAHE, clip_limit: 2, p: 0.3}; groups {name: OneOf, transforms: [...]}), built by
albumentations' own deserialisation (A.from_dict) and checked before training's first epoch
(preflight.check_augmentations).

Where they run (data.TrainAugment): the geometric ones (albumentations' geometric and crop
modules; a group holding any of them) on the whole image before the random-resized crop, which
then sets the size; the rest (pixel-level: colour, blur, noise, dropout) after the crop, flips
and colour jitter, on the crop. Each side keeps the listed order. They draw from a generator the
dataset seeds per (epoch seed, image), as the crop does, so a resumed fold or another loader
process draws the same.

albumentations is imported only when a list is given, and never when a config loads: Make's
parse-time config check stays free of it (and of torch).
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np

from .suggest import nearest

GROUPS = ("OneOf", "SomeOf", "Sequential", "RandomOrder")
# the pipeline's own steps (normalising on the device, tensors) and what needs more than an image
LEFT_OUT_MODULES = ("core.", "pytorch.", "augmentations.mixing", "augmentations.text", "augmentations.transforms3d")
LEFT_OUT = ("Normalize", "ToFloat", "FromFloat")
GEOMETRIC_MODULES = ("augmentations.geometric", "augmentations.crops")


def registry() -> dict:
    """Every transform a config may name: albumentations' serialisable image transforms and the
    groups, by class name."""
    import albumentations as A
    from albumentations.core.serialization import SERIALIZABLE_REGISTRY

    out = {}
    for name, cls in SERIALIZABLE_REGISTRY.items():
        module = cls.__module__.removeprefix("albumentations.")
        if name in GROUPS or (
            inspect.isclass(cls)
            and issubclass(cls, A.BasicTransform)
            and not name.startswith(("Base", "_"))
            and not module.startswith(LEFT_OUT_MODULES)
            and name not in LEFT_OUT
        ):
            out[name] = cls
    return out


def closest(word: str, names) -> str:
    near = nearest(word, names)
    return f"; closest: {', '.join(near)}" if near else ""


def to_albumentations(spec, where: str, known: dict) -> dict:
    """A config entry as albumentations' dict form, its name and every parameter checked."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ValueError(f"{where}: expected a mapping with a 'name' (got {spec!r})")
    name, params = spec["name"], {k: v for k, v in spec.items() if k != "name"}
    if name not in known:
        raise ValueError(f"{where}: unknown transform '{name}'{closest(name, known)}")
    allowed = [p for p in inspect.signature(known[name].__init__).parameters if p not in ("self", "strict")]
    for key in params:
        if key not in allowed:
            raise ValueError(f"{where} {name}: unknown parameter '{key}'{closest(key, allowed)}")
    if name in GROUPS:
        inner = params.get("transforms")
        if not isinstance(inner, list) or not inner:
            raise ValueError(f"{where} {name}: 'transforms' must be a non-empty list")
        params["transforms"] = [to_albumentations(t, f"{where}.transforms[{i}]", known) for i, t in enumerate(inner)]
    return {"__class_fullname__": name, **params}


def build(specs: list, try_each: bool = True) -> list:
    """The transforms of a config list, each built and (try_each: preflight's check before
    training) tried once on a blank 512 x 512 image: a transform that needs a mask, boxes or other
    images is refused then, not in the first epoch. A loader's list is not tried again."""
    if not specs:
        return []
    import albumentations as A

    known, out = registry(), []
    for i, spec in enumerate(specs):
        where = f"[{i}]"
        d = to_albumentations(spec, where, known)
        try:
            with warnings.catch_warnings():  # albumentations' advice (use Affine...) on every build
                warnings.simplefilter("ignore")
                t = A.from_dict({"transform": d})
                if try_each:
                    tried(d)
        except Exception as e:  # noqa: BLE001 - albumentations' own words, on one line
            raise ValueError(f"{where} {d['__class_fullname__']}: {one_line(e)}") from None
        out.append(t)
    return out


def tried(d: dict) -> None:
    """Run a transform once on a blank image, certain to apply (p 1; a group's members each on
    their own too), so what it needs besides an image shows now."""
    import albumentations as A

    certain = A.from_dict({"transform": {**d, "p": 1.0}})
    A.Compose([certain], p=1.0, strict=True)(image=np.zeros((512, 512, 3), np.uint8))
    for inner in d.get("transforms", []):
        tried(inner)


def one_line(e: Exception) -> str:
    """A transform's refusal: a parameter's validation ('clip_limit: All values ... must be >= 1'),
    which albumentations passes on as the text of pydantic's error, or the exception's words."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    if len(lines) >= 3 and " validation error" in lines[0]:
        return f"{lines[1]}: {lines[2].split(' [type=')[0].removeprefix('Value error, ')}"
    return f"{type(e).__name__}: {' '.join(lines)[:200]}"


def geometric(t) -> bool:
    """A transform that moves pixels (or a group holding one): it runs before the crop."""
    if type(t).__name__ in GROUPS:
        return any(geometric(c) for c in t.transforms)
    return type(t).__module__.removeprefix("albumentations.").startswith(GEOMETRIC_MODULES)


def split(specs: list):
    """(before the crop, after it): two albumentations Compose, or None where a side is empty."""
    import albumentations as A

    built = build(specs, try_each=False)
    sides = [t for t in built if geometric(t)], [t for t in built if not geometric(t)]
    return tuple(A.Compose(s, p=1.0) if s else None for s in sides)


# ----------------------------------------------------------------------------- policies


def policy(name: str | None, size: int = 224, mean=(0.485, 0.456, 0.406)):
    """train.aug.policy as a transform of a PIL image: 'trivial' (torchvision's TrivialAugmentWide)
    or a timm RandAugment string ('rand-m9-mstd0.5': magnitude 9, magnitude noise 0.5; timm's
    rand_augment_transform reads it), with timm's fill and translation for the crop's size."""
    if name is None:
        return None
    if name == "trivial":
        from torchvision.transforms import TrivialAugmentWide

        return TrivialAugmentWide(fill=[round(255 * m) for m in mean])
    if not name.startswith("rand-") and name != "rand":
        raise ValueError(f"expected trivial or a RandAugment string such as rand-m9-mstd0.5 (got {name!r})")
    from timm.data.auto_augment import rand_augment_transform

    hparams = {"translate_const": int(size * 0.45), "img_mean": tuple(round(255 * m) for m in mean)}
    try:
        return rand_augment_transform(name, hparams)
    except (AssertionError, ValueError, KeyError) as e:
        raise ValueError(f"{name!r} is not a RandAugment string timm reads ({type(e).__name__} {e})") from None


class Seeded:
    """A transform that draws from Python's, NumPy's and torch's global generators (timm's
    RandAugment, torchvision's TrivialAugment, timm's RandomErasing), run from a given seed with
    those generators put back after: each image draws by its own seed, whatever ran before it."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, x, seed: int, devices=()):
        import random

        import torch

        py, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=list(devices)):
                random.seed(seed)
                np.random.seed(seed % 2**32)
                torch.manual_seed(seed)
                return self.transform(x)
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def apply_policy(seeded: Seeded, img: np.ndarray, seed: int) -> np.ndarray:
    """A policy on a uint8 (H, W, 3) image, through PIL as timm's and torchvision's policies take it."""
    from PIL import Image

    return np.array(seeded(Image.fromarray(img), seed), dtype=np.uint8)  # a copy: PIL's is read-only


# ----------------------------------------------------------------------------- random erasing


class Eraser:
    """train.aug.random_erasing: timm's RandomErasing (per-pixel noise) on the normalised batch, on
    its device. Each image is erased by the seed of (epoch seed, step, its place in the whole batch),
    so a DDP process erasing its shard erases what one process would, and a resumed fold the same."""

    def __init__(self, probability: float, device):
        from timm.data.random_erasing import RandomErasing

        self.device = device
        self.seeded = Seeded(RandomErasing(probability, mode="pixel", device=device))

    def __call__(self, x, epoch_seed: int, step: int, rank: int = 0, world: int = 1):
        devices = [self.device] if getattr(self.device, "type", "cpu") == "cuda" else []
        for i in range(len(x)):  # ShardSampler deals a batch out round-robin: global place i * world + rank
            place = i * world + rank
            self.seeded(x[i], (epoch_seed * 1_000_003 + step * 4_099 + place) % 2**63, devices)
        return x
