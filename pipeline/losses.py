"""Training losses: cross-entropy with label smoothing, or binary cross-entropy per label, each
also in its focal form (train.loss: focal), optionally class-weighted; and R-Drop's consistency
term on top of any of them. A number's losses are targets.NumberLoss."""

from __future__ import annotations

import math

import numpy as np
import torch

from .config import Config
from .errors import PipelineError
from .targets import NumberLoss, TargetScale


class SmoothBCE(torch.nn.Module):
    """Binary cross-entropy per label, targets smoothed towards 1/2 by `smoothing`."""

    def __init__(self, smoothing: float):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits, target):
        target = target.float() * (1 - self.smoothing) + 0.5 * self.smoothing
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)


class FocalLoss(torch.nn.Module):
    """Focal loss (Lin et al.): each class's cross-entropy term weighted by (1 - p)^gamma, so
    confident, easy examples count less. Takes class indices or probability rows, smoothed as
    cross-entropy smooths them; at gamma 0 it is that cross-entropy. `multilabel`: the sigmoid
    form, each label's binary cross-entropy weighted by (1 - p_t)^gamma."""

    def __init__(self, gamma: float, smoothing: float, multilabel: bool = False, weight: torch.Tensor | None = None):
        super().__init__()
        self.gamma, self.smoothing, self.multilabel = gamma, smoothing, multilabel
        self.register_buffer("weight", weight)

    def forward(self, logits, target):
        logits = logits.float()
        if self.multilabel:
            t = target.float() * (1 - self.smoothing) + 0.5 * self.smoothing
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
            p = logits.sigmoid()
            p_t = p * t + (1 - p) * (1 - t)
            return ((1 - p_t) ** self.gamma * bce).mean()
        k = logits.shape[-1]
        q0 = torch.nn.functional.one_hot(target, k).float() if target.ndim == 1 else target.float()
        q = q0 * (1 - self.smoothing) + self.smoothing / k
        logp = logits.log_softmax(-1)
        terms = q * (1 - logp.exp()) ** self.gamma * logp
        if self.weight is None:
            return -terms.sum(-1).mean()
        # as weighted cross-entropy: each class's term by its weight, over the targets' total weight
        return -(terms * self.weight).sum() / (q0 * self.weight).sum()


class MarginLoss(torch.nn.Module):
    """A margin head's loss (heads.MarginHead): its logits are scale x cosine; the true class's
    cosine is pushed back by the margin before `base` (cross-entropy, smoothed or focal) sees them.
    ArcFace adds the margin to the angle, cos(theta + m), continued linearly past theta = pi - m so
    the logit keeps falling as the angle grows; CosFace subtracts it from the cosine. Probability
    rows (mixup, cutmix) push each class back by its share."""

    def __init__(self, base: torch.nn.Module, kind: str, margin: float, scale: float):
        super().__init__()
        self.base, self.kind, self.margin, self.scale = base, kind, margin, scale

    def forward(self, logits, target):
        cos = (logits.float() / self.scale).clamp(-1 + 1e-6, 1 - 1e-6)
        q = torch.nn.functional.one_hot(target, cos.shape[-1]).float() if target.ndim == 1 else target.float()
        m = self.margin
        if self.kind == "cosface":
            return self.base((cos - m * q) * self.scale, target)
        sin = (1 - cos * cos).sqrt()
        phi = cos * math.cos(m) - sin * math.sin(m)
        phi = torch.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)
        return self.base((cos + q * (phi - cos)) * self.scale, target)


def class_weights(cfg: Config, labels: np.ndarray | None, n_classes: int) -> torch.Tensor | None:
    """train.class_weights as a tensor: the listed ones, or balanced from the training rows'
    class indices (`labels`): n / (classes x count), a missing class counted once."""
    w = cfg.train.class_weights
    if w is None:
        return None
    if w == "balanced":
        if labels is None:
            return None
        counts = np.maximum(np.bincount(labels, minlength=n_classes), 1)
        return torch.tensor(len(labels) / (n_classes * counts), dtype=torch.float32)
    if len(w) != n_classes:
        raise PipelineError(f"train.class_weights: {len(w)} weights for {n_classes} classes")
    return torch.tensor(w, dtype=torch.float32)


def make_loss(
    cfg: Config, labels: np.ndarray | None = None, n_classes: int = 0, scale: TargetScale | None = None
) -> torch.nn.Module:
    """Cross-entropy with label smoothing (it takes class indices or probability rows); binary
    cross-entropy per label for a multi-label task; their focal forms under train.loss: focal.
    `labels`: the training rows' class indices, for class_weights: balanced. A number: train.loss
    at the fold's target scale (`scale`; a range unless model.y_range is null)."""
    t = cfg.train
    if cfg.data.numeric:
        return NumberLoss(t.loss, scale.kind if scale else ("standard" if cfg.model.y_range is None else "range"))
    base = _class_loss(cfg, labels, n_classes)
    m = cfg.model
    return MarginLoss(base, m.head.removeprefix("subcenter_"), m.head_margin, m.scale) if m.margin_head else base


def _class_loss(cfg: Config, labels: np.ndarray | None, n_classes: int) -> torch.nn.Module:
    t = cfg.train
    weight = class_weights(cfg, labels, n_classes) if n_classes else None
    if t.loss == "focal" or weight is not None:
        # weighted cross-entropy is focal at gamma 0, normalised by the targets' weight for class
        # indices and probability rows alike (torch's divides the two differently)
        return FocalLoss(t.focal_gamma if t.loss == "focal" else 0.0, t.label_smoothing, cfg.data.multilabel, weight)
    if cfg.data.multilabel:
        return SmoothBCE(t.label_smoothing)
    return torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=t.label_smoothing)


def rdrop_loss(logits: torch.Tensor, target: torch.Tensor, loss_fn, weight: float, multilabel: bool) -> torch.Tensor:
    """R-Drop (Liang et al.): `logits` of the batch seen twice (stacked: two dropout masks), loss =
    the mean of both passes' losses + weight x the symmetric KL between their predictions."""
    a, b = logits.float().chunk(2)
    base = (loss_fn(a, target) + loss_fn(b, target)) / 2
    if isinstance(loss_fn, NumberLoss):  # a number: the squared difference of the two predictions
        return base + weight * loss_fn.consistency(a, b)
    if multilabel:  # each label a Bernoulli: KL(a||b) + KL(b||a) = (p_a - p_b)(logit_a - logit_b)
        return base + weight * ((a.sigmoid() - b.sigmoid()) * (a - b)).sum(-1).mean() / 2
    la, lb = a.log_softmax(-1), b.log_softmax(-1)
    kl = ((la.exp() - lb.exp()) * (la - lb)).sum(-1)  # KL(a||b) + KL(b||a)
    return base + weight * kl.mean() / 2
