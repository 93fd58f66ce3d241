"""The competition as one process reads it: the folds file checked against train.csv, the classes
or the targets, every training and test image's path, and the sample submission.

`read_competition` makes it once per process and the stages pass it down, so no module re-reads
train.csv, the folds file or the sample submission for something this object holds, and every
image path is checked once, not once per phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import Config, Data
from .errors import PipelineError
from .folds_file import Images, load_folds, train_image_paths
from .io import image_paths, read_table
from .labels import class_list, y_true
from .preflight import check_competition
from .submission import read_sample


@dataclass(frozen=True)
class Competition:
    """What the training side of one competition holds, read once (read_competition)."""

    data: Data
    folds: pd.DataFrame  # the folds file: train.csv's rows, in its order and index, with "fold"
    classes: list[str]  # the probability tables' columns (PREDICTION alone for a number)
    paths: list[Path]  # every row's image, checked to exist
    targets: np.ndarray  # every row's target (labels.y_true)
    sample: pd.DataFrame  # the sample submission
    test_paths: list[Path]  # every test image the sample names, checked to exist

    def rows(self, fold: int) -> pd.DataFrame:
        """Fold `fold`'s rows: its validation images."""
        return self.folds[self.folds["fold"] == fold]

    def images(self, rows: pd.DataFrame) -> Images:
        """The paths and targets of some of the folds file's rows."""
        at = self.folds.index.get_indexer(rows.index)
        return Images([self.paths[i] for i in at], self.targets[at])

    @property
    def every_image(self) -> list[Path]:
        """The training images, then the test images: what the decode cache holds."""
        return self.paths + self.test_paths


def read_competition(cfg: Config, check: str | None = None) -> Competition:
    """The folds file (checked against the config and train.csv), its classes, targets and image
    paths, and the sample submission. `check`: "train" or "infer", the check before that stage
    first (preflight.check_competition: the sample's layout, for training the backbone and the
    transforms, every image), so a bad image is named by that check's line."""
    d = cfg.data
    folds = load_folds(cfg)
    sample = read_sample(d)
    if check:
        check_competition(cfg, folds, model=check == "train", sample=sample)
    classes = class_list(folds[d.label_col], d)
    targets = y_true(folds[d.label_col], classes, d)
    test_paths = image_paths(d.root, d.test_images, sample[d.sample_id], d.path(d.sample_submission))
    paths = train_image_paths(cfg, folds)
    return Competition(d, folds, classes, paths, targets, sample, test_paths)


def read_gallery(cfg: Config, classes: list[str]) -> Competition:
    """A retrieval task's test side where no folds file is at hand (a bundle's test-only run): the
    training images, every one the gallery, with their individuals as the trained models' `classes`
    index them, and the test images. Its folds table is train.csv's rows, with no fold."""
    d = cfg.data
    sample = check_competition(cfg, None, model=False, classes=classes)
    train = read_table(d.path(d.train_csv), [d.id_col, d.label_col], id_col=d.id_col)
    unknown = ~train[d.label_col].isin(classes)
    if unknown.any():
        line = int(np.flatnonzero(unknown)[0]) + 2
        raise PipelineError(
            f"{d.path(d.train_csv)} line {line}: individual '{train[d.label_col][unknown].iloc[0]}' is not one the "
            "models were trained on (train.csv changed since training: retrain)"
        )
    paths = image_paths(d.root, d.train_images, train[d.id_col], d.path(d.train_csv))
    test_paths = image_paths(d.root, d.test_images, sample[d.sample_id], d.path(d.sample_submission))
    return Competition(d, train, classes, paths, y_true(train[d.label_col], classes, d), sample, test_paths)
