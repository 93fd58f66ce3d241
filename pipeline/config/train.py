"""The train section and its parts (phases, augmentation, EMA, SWA, mixup, FGM): every setting the
train stamp reads, so changing any of them retrains. Only what is cheap is checked here; the
augmentation list is tried by preflight before the first epoch (albumentations loads slowly)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import _Section


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
    def _named(cls, v):
        """Each entry names its transform; building and trying them is preflight.check_augmentations'."""
        for i, spec in enumerate(v):
            if not isinstance(spec.get("name"), str):
                raise ValueError(f"[{i}]: expected a mapping with a 'name' (got {spec!r})")
        return v

    @field_validator("policy")
    @classmethod
    def _policy(cls, v):
        from ..augment import policy  # timm only for a config that names one

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
