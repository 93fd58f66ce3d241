"""A number as a network's target (data.task regression or ordinal): the scale between the
target's units and the single output, fitted on a fold's training targets and kept in its
checkpoint, so inference rebuilds the prediction from the checkpoint alone.

model.y_range [lo, hi] (or auto: the training targets' range widened by MARGIN each side): the
output is lo + (hi - lo) x sigmoid(z), fastai's y_range; it can never leave the range, and the
loss compares sigmoid(z) with the target scaled to [0, 1] (bce: as a probability, the trick for
bounded scores). model.y_range null: the target is standardised with the training folds' mean and
standard deviation, the loss compares z with it, and the output is z x std + mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .errors import PipelineError

MARGIN = 0.05  # y_range auto: this share of the training targets' span added on each side
EPS = 1e-6


@dataclass(frozen=True)
class TargetScale:
    """kind range: a = lo, b = hi; kind standard: a = mean, b = standard deviation."""

    kind: str
    a: float
    b: float

    @property
    def bounded(self) -> bool:
        return self.kind == "range"

    def normalise(self, y) -> np.ndarray:
        """Target units to what the loss compares the output with."""
        y = np.asarray(y, dtype=float)
        return (y - self.a) / (self.b - self.a) if self.bounded else (y - self.a) / self.b

    def units(self, u) -> np.ndarray:
        """normalise's inverse: what the loss compares with, back in target units."""
        u = np.asarray(u, dtype=float)
        return self.a + (self.b - self.a) * u if self.bounded else u * self.b + self.a

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """The network's raw output (N, 1) to the prediction in target units."""
        z = z.float()
        return self.a + (self.b - self.a) * z.sigmoid() if self.bounded else z * self.b + self.a

    def raw(self, pred) -> np.ndarray:
        """output's inverse: a prediction back to the raw output (for the validation loss)."""
        u = self.normalise(pred)
        if not self.bounded:
            return u
        u = np.clip(u, EPS, 1 - EPS)
        return np.log(u) - np.log1p(-u)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TargetScale:
        return cls(str(d["kind"]), float(d["a"]), float(d["b"]))


def fit_scale(y_range, y: np.ndarray) -> TargetScale:
    """The scale of model.y_range ([lo, hi], auto or None) for training targets y. A range that
    leaves out a training target is refused (its sigmoid could never reach it)."""
    y = np.asarray(y, dtype=float)
    lo, hi = float(y.min()), float(y.max())
    if y_range is None:
        std = float(y.std())
        return TargetScale("standard", float(y.mean()), std if std > 0 else 1.0)
    if y_range == "auto":
        margin = MARGIN * (hi - lo) if hi > lo else 1.0
        return TargetScale("range", lo - margin, hi + margin)
    if lo < y_range[0] or hi > y_range[1]:
        raise PipelineError(
            f"model.y_range: {list(y_range)} leaves out training targets (they run from {lo:g} to {hi:g}); "
            "widen it, or use auto"
        )
    return TargetScale("range", float(y_range[0]), float(y_range[1]))


class NumberLoss(torch.nn.Module):
    """train.loss for a number, on the raw output z (N, 1) and the normalised target u (N,): mse,
    l1 or smooth_l1 (Huber: quadratic within HUBER_BETA of the target, in the normalised units)
    on sigmoid(z) under a range, on z when standardised; bce: binary cross-entropy of z's sigmoid
    against u in [0, 1] (a range only)."""

    HUBER_BETA = {"range": 0.1, "standard": 1.0}  # a tenth of the range; one standard deviation

    def __init__(self, name: str, scale_kind: str):
        super().__init__()
        self.name, self.bounded, self.beta = name, scale_kind == "range", self.HUBER_BETA[scale_kind]

    def value(self, z: torch.Tensor) -> torch.Tensor:
        z = z.float().reshape(len(z), -1)[:, 0]
        return z.sigmoid() if self.bounded else z

    def forward(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        u = u.float().reshape(-1)
        if self.name == "bce":
            return torch.nn.functional.binary_cross_entropy_with_logits(z.float().reshape(len(z), -1)[:, 0], u)
        v = self.value(z)
        if self.name == "l1":
            return torch.nn.functional.l1_loss(v, u)
        if self.name == "smooth_l1":
            return torch.nn.functional.smooth_l1_loss(v, u, beta=self.beta)
        return torch.nn.functional.mse_loss(v, u)

    def consistency(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """R-Drop for a number: the squared difference of two passes' normalised predictions."""
        return ((self.value(a) - self.value(b)) ** 2).mean()


def prediction_loss(loss_fn: NumberLoss, scale: TargetScale, pred: np.ndarray, y: np.ndarray) -> float:
    """The training loss of predictions already in target units (a validation fold's)."""
    z = torch.as_tensor(scale.raw(np.asarray(pred, dtype=float).reshape(-1)), dtype=torch.float64)[:, None]
    u = torch.as_tensor(scale.normalise(y), dtype=torch.float64)
    with torch.no_grad():
        return float(loss_fn(z, u))
