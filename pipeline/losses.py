"""Training losses: cross-entropy with label smoothing, or binary cross-entropy per label, each
also in its focal form (train.loss: focal)."""

from __future__ import annotations

import torch

from .config import Config


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

    def __init__(self, gamma: float, smoothing: float, multilabel: bool = False):
        super().__init__()
        self.gamma, self.smoothing, self.multilabel = gamma, smoothing, multilabel

    def forward(self, logits, target):
        logits = logits.float()
        if self.multilabel:
            t = target.float() * (1 - self.smoothing) + 0.5 * self.smoothing
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
            p = logits.sigmoid()
            p_t = p * t + (1 - p) * (1 - t)
            return ((1 - p_t) ** self.gamma * bce).mean()
        k = logits.shape[-1]
        q = torch.nn.functional.one_hot(target, k).float() if target.ndim == 1 else target.float()
        q = q * (1 - self.smoothing) + self.smoothing / k
        logp = logits.log_softmax(-1)
        return -(q * (1 - logp.exp()) ** self.gamma * logp).sum(-1).mean()


def make_loss(cfg: Config) -> torch.nn.Module:
    """Cross-entropy with label smoothing (it takes class indices or probability rows); binary
    cross-entropy per label for a multi-label task; their focal forms under train.loss: focal."""
    t = cfg.train
    if t.loss == "focal":
        return FocalLoss(t.focal_gamma, t.label_smoothing, cfg.data.multilabel)
    if cfg.data.multilabel:
        return SmoothBCE(t.label_smoothing)
    return torch.nn.CrossEntropyLoss(label_smoothing=t.label_smoothing)
