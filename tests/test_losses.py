"""pipeline/losses.py: cross-entropy, BCE per label, and their focal forms."""

import pytest
import torch

from pipeline.losses import FocalLoss, SmoothBCE


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_at_gamma_zero_is_cross_entropy(smoothing):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=gen) * 3
    labels = torch.randint(0, 5, (8,), generator=gen)
    rows = torch.softmax(torch.randn(8, 5, generator=gen), -1)  # soft targets (pseudo-labels, mixup)
    ce = torch.nn.CrossEntropyLoss(label_smoothing=smoothing)
    for target in (labels, rows):
        assert FocalLoss(0.0, smoothing)(logits, target) == pytest.approx(ce(logits, target).item(), rel=1e-5)
    tags = (torch.rand(8, 5, generator=gen) > 0.5).float()
    multi = FocalLoss(0.0, smoothing, multilabel=True)(logits, tags)
    assert multi == pytest.approx(SmoothBCE(smoothing)(logits, tags).item(), rel=1e-5)


def test_focal_down_weights_the_easy_examples():
    logits = torch.tensor([[4.0, 0.0], [0.2, 0.0]])  # the first is easy (confident and right)
    labels = torch.tensor([0, 0])
    per_example = [FocalLoss(2.0, 0.0)(logits[i : i + 1], labels[i : i + 1]) for i in (0, 1)]
    ce = [torch.nn.functional.cross_entropy(logits[i : i + 1], labels[i : i + 1]) for i in (0, 1)]
    assert per_example[0] / ce[0] < 0.01 < per_example[1] / ce[1]
