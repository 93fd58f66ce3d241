"""The sections of the stages other than training (lr-find, infer and its TTA, mine, pseudo):
each read by its own stage's stamp, so changing one never retrains the folds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import _Section

Flip = Literal["hflip", "vflip", "transpose", "rot90", "rot180", "rot270"]


class LrFind(_Section):
    """The LR range test (make lr-find): the LR rises exponentially from start_lr to end_lr."""

    start_lr: float = Field(1e-7, gt=0.0, description="first LR tried")
    end_lr: float = Field(10.0, gt=0.0, description="last LR tried")
    num_iter: int = Field(100, ge=5, description="optimizer updates from start_lr to end_lr")
    phase: int = Field(0, ge=0, description="whose conditions (frozen or not, image size); earlier phases train first")
    fold: int = Field(0, ge=0, description="whose training images")
    stop_factor: float = Field(4.0, gt=1.0, description="stop once the smoothed loss passes this x its best")
    smooth: float = Field(0.98, ge=0.0, lt=1.0, description="EMA factor of the loss (bias-corrected)")

    @model_validator(mode="after")
    def _rises(self):
        if self.end_lr <= self.start_lr:
            raise ValueError(f"end_lr ({self.end_lr}) must be above start_lr ({self.start_lr})")
        return self


# ----------------------------------------------------------------------------- after training


class Tta(_Section):
    """Test-time augmentation: every combination of size, crop and flip is one view; the plain
    view (model.img_size, centre crop, no flip) is always one of them."""

    flips: list[Flip] = Field(["hflip"], description="flips and rotations, each an extra view")
    sizes: list[int] = Field([], description="more inference sizes besides model.img_size (CNNs only)")
    crops: Literal["center", "five"] = Field("center", description="five: centre plus the four corners")
    merge: Literal["mean", "gmean", "max", "median"] = Field(
        "mean", description="how the views' predictions combine (a number: mean or median)"
    )

    @model_validator(mode="after")
    def _sizes(self):
        if any(s < 16 for s in self.sizes):
            raise ValueError(f"sizes must be at least 16 px (got {self.sizes})")
        return self


class Infer(_Section):
    """Test and out-of-fold predictions (make infer)."""

    batch_size: int = Field(64, ge=1, description="images per forward pass, all their TTA views included")
    tta: Tta = Field(Tta(), description="test-time augmentation")
    calibrate: Literal["auto", "on", "off"] = Field(
        "auto",
        description="temperature scaling of the probabilities, fitted on the OOF; auto: on when the metric is log_loss",
    )


class Mine(_Section):
    """Hard-negative mining (make mine): each fold's model scores a pool of negatives it never
    validated on; the most confident false positives are written for another experiment to train on."""

    pool: str = Field(
        "unused",
        description="unused: the negatives train.neg_fraction left out; else a folder "
        "of extra negative images, relative to data.root",
    )
    min_score: float = Field(
        0.5, ge=0.0, le=1.0, description="keep images whose non-negative probability is at least this"
    )
    top_k: int | None = Field(None, ge=1, description="and at most this many per fold, the highest scores")


class Pseudo(_Section):
    """Pseudo-labels (make pseudo): fold k's model labels unlabelled images for fold k of another
    experiment, so no fold's teacher has seen that fold's validation labels."""

    source: str = Field("test", description="test: the test images; else a folder of images, relative to data.root")
    threshold: float = Field(0.9, ge=0.0, le=1.0, description="keep images whose top probability is at least this")
    soft: bool = Field(False, description="train on the probabilities instead of the top class")
    max_spread: float | None = Field(
        None,
        gt=0.0,
        description="a number: keep images whose fold models' predictions have a standard deviation at most this "
        "(target units); null: a tenth of the training targets' standard deviation",
    )
