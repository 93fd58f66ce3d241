"""The competition's sections (its folder and tables, the split) and the task and metric names
the rules and defaults test against: what a task is decides what else a config may say."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .base import _Section

# Kaggle's mean average precision at k: 1/rank of the first right guess among k (a retrieval task's k
# guesses per image, or the top k classes of a classification)
MAP_METRICS = tuple(f"map@{k}" for k in range(1, 11))
Metric = Literal[("accuracy", "log_loss", "roc_auc", "f1_macro", "f1_samples", "f2_samples", "qwk", "rmse", "mae", "r2") + MAP_METRICS]  # fmt: skip  # noqa: E501
CLASS_METRICS = ("accuracy", "log_loss", "roc_auc", "f1_macro", "f1_samples", "f2_samples", "qwk") + MAP_METRICS
SAMPLES_METRICS = ("f1_samples", "f2_samples")  # the mean F-beta per image: several labels per image
NUMBER_METRICS = ("rmse", "mae", "r2", "qwk")  # qwk of an ordinal task: of the grades after the cut-points
NUMERIC_TASKS = ("regression", "ordinal")
NUMBER_LOSSES = ("mse", "l1", "smooth_l1", "bce")


class Data(_Section):
    """The competition folder and how its tables name images and labels."""

    name: str | None = Field(None, description="competition name, for folds/<name>.csv; null: the folder name of root")
    root: str = Field(description="the competition folder (train.csv, images, sample_submission.csv)")
    train_csv: str = Field("train.csv", description="labelled rows, relative to root")
    sample_submission: str = Field(
        "sample_submission.csv", description="test ids and the exact submission layout, relative to root"
    )
    id_col: str = Field(
        "image_id", description="the id column of train_csv, of the run's prediction files, and of sample_submission"
    )
    sample_id_col: str | None = Field(
        None,
        description="the id column of sample_submission and of the submission, where the sample names it "
        "differently; null: id_col (the run's prediction files keep id_col either way)",
    )
    label_col: str = Field("label", description="the label column of train_csv")
    group_col: str | None = Field(None, description="rows sharing a value stay in one fold (StratifiedGroupKFold)")
    train_images: str = Field("train/{id}.jpg", description="training image path under root; {id} is the row's id")
    test_images: str = Field("test/{id}.jpg", description="test image path under root; {id} is the row's id")
    negative_class: str | None = Field(
        None,
        description="the class a detector must not fire on (no_ship, normal): "
        "what make mine mines, and whose false-positive rate infer reports",
    )
    task: Literal["multiclass", "multilabel", "regression", "ordinal", "retrieval"] = Field(
        "multiclass",
        description="multiclass: one label per image (softmax); multilabel: label_col holds "
        "several labels joined by label_sep (a sigmoid per label); regression: label_col is a number, "
        "predicted as one; ordinal: label_col is a grade (ordered numbers), trained as a regression and "
        "predicted as a grade through cut-points fitted on the OOF; retrieval: label_col names an individual "
        "(a whale, a landmark, a product), trained as its class, and each test image gets the k individuals "
        "(metric map@k) whose training images its embedding is nearest, best first, with data.new_individual "
        "where the nearest is too far (docs/retrieval.md)",
    )
    new_individual: str | None = Field(
        "new_individual",
        description="retrieval: the answer for an individual never seen in training (new_whale, say), put "
        "among the guesses where the similarity falls below a threshold tuned on the OOF; null: never answered",
    )
    label_sep: str = Field(" ", description="multilabel: the separator between labels in one cell")
    empty_labels: bool | None = Field(
        None,
        description="multilabel: whether a test image may get no label (an empty cell); false: one whose "
        "labels all fall below their thresholds gets the one nearest its threshold; null: allowed when a row "
        "of train_csv has no label",
    )
    submission_classes: Literal["auto", "labels", "codes"] = Field(
        "auto",
        description="how a one-column sample_submission wants the class: auto reads it off the sample; "
        "labels: the class as train_csv spells it; codes: its index in sorted order (numeric order when "
        "every class is an integer)",
    )

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    @property
    def retrieval(self) -> bool:
        return self.task == "retrieval"

    @property
    def numeric(self) -> bool:
        """The target is a number (regression) or a numeric grade (ordinal): one output, no classes."""
        return self.task in NUMERIC_TASKS

    @property
    def ordinal(self) -> bool:
        return self.task == "ordinal"

    @property
    def independent(self) -> bool:
        """Each output column stands alone (a label's probability, a number): nothing sums to 1."""
        return self.multilabel or self.numeric

    @property
    def sep(self) -> str | None:
        """The separator of several labels in one cell (multi-label), else None."""
        return self.label_sep if self.multilabel else None

    @property
    def sample_id(self) -> str:
        """The id column of sample_submission (and of the submission)."""
        return self.sample_id_col or self.id_col

    @property
    def competition(self) -> str:
        return self.name or Path(self.root).resolve().name

    def path(self, rel: str) -> Path:
        return Path(self.root) / rel


class Folds(_Section):
    """The K-fold split, made once per competition and shared by every experiment on it."""

    n_folds: int = Field(5, ge=2, description="number of folds")
    seed: int = Field(42, description="seed of the split")
    dir: str = Field("folds", description="where folds/<competition>.csv and its .json live")
    new_share: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="retrieval: the share of training images whose individual has all its images in one "
        "validation fold, so the CV sees individuals its training never saw as the test does: match the test's "
        "share of images of new individuals where known (what the new-individual answer alone scores); every "
        "other individual's images spread over the folds",
    )
