"""Training losses: cross-entropy with label smoothing, or binary cross-entropy per label."""

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


def make_loss(cfg: Config) -> torch.nn.Module:
    """Cross-entropy with label smoothing (it takes class indices or probability rows); binary
    cross-entropy per label for a multi-label task."""
    if cfg.data.multilabel:
        return SmoothBCE(cfg.train.label_smoothing)
    return torch.nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
