"""Every image a stage will read, decoded once before it starts: a missing, truncated or corrupt
image stops training before the first epoch, instead of the first fold's loader (or, for a test
image, inference after every fold has trained). The check decodes with data.read_image, so it
refuses exactly what training would.

Images that passed are remembered in <runtime.cache_dir>/checked.json by resolved path, size and
modification time; a later check (the next fold's run, infer, another experiment on the same
competition) decodes only the images that changed since. runtime.check_images: false skips it.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from . import distributed
from .augment import build
from .config import Config
from .data import read_image
from .errors import PipelineError
from .io import write_text
from .labels import class_list
from .models import check_model
from .progress import on_terminal
from .submission import guesses_layout, layout, number_layout, read_sample

CHECKED = "checked.json"
RULES = 1  # bump when read_image refuses more than before: images passed under older rules are checked again


def check_competition(
    cfg: Config,
    folds: pd.DataFrame | None,
    model: bool = True,
    classes: list[str] | None = None,
    sample: pd.DataFrame | None = None,
) -> pd.DataFrame | None:
    """The check before train or infer: the sample submission (its id column, unique ids, and a
    layout the submission can follow); with `model` (training) the backbone and its weights file,
    and train.aug.transforms tried (check_augmentations); then every training image of the folds
    file (named by its train.csv line: the folds file keeps train.csv's rows and order,
    folds_file.load_folds) and every test image of the sample submission. By process 0 alone
    under DDP: the others go on to join the process group, which waits for it (and torchrun stops
    them if it fails). Returns the sample (None on the others). folds None: the test side alone (a
    bundle's prediction, which has no training images), for the trained models' `classes`."""
    if not distributed.is_main():
        return None
    d = cfg.data
    sample = read_sample(d) if sample is None else sample
    classes = classes if folds is None else class_list(folds[d.label_col], d)
    if d.numeric:
        number_layout(sample, d.sample_id, d.path(d.sample_submission))
    elif d.retrieval:
        guesses_layout(sample, d.sample_id, d.path(d.sample_submission))
    else:
        layout(
            sample, classes, d.sample_id, d.negative_class, d.path(d.sample_submission),
            d.multilabel, d.submission_classes,
        )  # fmt: skip
    if model:
        check_model(cfg.model)
        check_augmentations(cfg)
    if not cfg.runtime.check_images:
        return sample
    train_csv, sample_csv = d.path(d.train_csv), d.path(d.sample_submission)
    test_ids = sample[d.sample_id]
    train = folds if folds is not None else pd.DataFrame({d.id_col: []})
    paths = [d.path(d.train_images.format(id=i)) for i in train[d.id_col]]
    paths += [d.path(d.test_images.format(id=i)) for i in test_ids]
    where = [f"{train_csv} line {i + 2}" for i in train.index]
    where += [f"{sample_csv} line {n}" for n in range(2, len(test_ids) + 2)]
    check_images(paths, where, Path(cfg.runtime.cache_dir))
    return sample


def check_augmentations(cfg: Config) -> None:
    """train.aug.transforms built and each tried once on a blank image (augment.build), so a
    transform that needs a mask, boxes or other images stops training before its first epoch. Here
    rather than when the config loads: Make reads configs at every call, and albumentations (with
    torch) is seconds to import. One line naming the key, as a config error would."""
    try:
        build(cfg.train.aug.transforms)
    except ValueError as e:
        raise PipelineError(f"train.aug.transforms: {e}") from None


def check_images(
    paths: list[Path], where: list[str] | None = None, cache_dir: Path | None = None, workers: int | None = None
) -> None:
    """Each path exists and decodes whole (data.read_image), `workers` threads at a time (OpenCV
    and PIL release the GIL while decoding; default one per core). `where[i]`: the table and line
    that name paths[i]. One error for the first bad image in input order, with how many others are
    bad, so a parallel check fails as a sequential one would. With `cache_dir`, images whose size
    and modification time match those they passed with are not decoded again."""
    where = where or [""] * len(paths)
    known = read_checked(cache_dir / CHECKED) if cache_dir else {}
    keys = [os.path.realpath(p) for p in paths]
    todo = [i for i, k in enumerate(keys) if k not in known or known[k] != file_stamp(k)]
    results = []
    if todo:
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            checks = pool.map(lambda i: check_one(paths[i], keys[i]), todo)
            bar = tqdm(checks, total=len(todo), desc="check images", unit="img", disable=not on_terminal())
            results = list(zip(todo, list(bar)))  # the bar runs to its end (zip would stop one short)
    bad = [(i, error) for i, (_, error) in results if error]
    if cache_dir and todo:
        passed = {keys[i]: stamp for i, (stamp, error) in results if not error}
        failed = {keys[i] for i, _ in bad}
        write_checked(cache_dir / CHECKED, passed, failed)
    if bad:
        (i, error), more = bad[0], len(bad) - 1
        notes = [n for n in (where[i], more and f"and {more} more bad image{'s' if more > 1 else ''}") if n]
        raise PipelineError(f"{error} ({'; '.join(notes)})" if notes else error)


def check_one(path: Path, key: str) -> tuple[list[int] | None, str | None]:
    """([size, mtime_ns] as before the decode, None) when the image decodes, else (None, the error).
    Statted first: a file rewritten during the decode then looks changed to the next check."""
    try:
        stamp = file_stamp(key)
        read_image(path)
    except PipelineError as e:
        return None, str(e)
    return stamp, None


def file_stamp(path: str) -> list[int] | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return [s.st_size, s.st_mtime_ns]


def read_checked(path: Path) -> dict[str, list[int]]:
    """The images that passed: resolved path -> [size, mtime_ns]. An unreadable file, or one
    written under other rules, is an empty cache (everything is checked again)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("rules") != RULES or not isinstance(doc.get("images"), dict):
        return {}
    return doc["images"]


def write_checked(path: Path, passed: dict[str, list[int]], failed: set[str]) -> None:
    """Merged into what is on disk now (another experiment may have added to it meanwhile), and
    written atomically: a reader sees the old file or the new one, never half of one."""
    images = {k: v for k, v in read_checked(path).items() if k not in failed} | passed
    write_text(path, json.dumps({"rules": RULES, "images": images}, indent=0, sort_keys=True) + "\n")
