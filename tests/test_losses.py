"""pipeline/losses.py: cross-entropy, BCE per label, their focal forms, class weights (R-Drop's
loss is tested with the other tricks, in test_tricks.py)."""

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.losses import FocalLoss, SmoothBCE, make_loss


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


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_class_weighted_focal_at_gamma_zero_is_weighted_cross_entropy(smoothing):
    gen = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(10, 3, generator=gen), torch.randint(0, 3, (10,), generator=gen)
    w = torch.tensor([0.5, 2.0, 1.0])
    ce = torch.nn.CrossEntropyLoss(weight=w, label_smoothing=smoothing)
    assert FocalLoss(0.0, smoothing, weight=w)(logits, labels) == pytest.approx(ce(logits, labels).item(), rel=1e-5)


def test_balanced_class_weights_come_from_the_training_rows(tmp_path):
    from helpers import make_competition, make_config

    from pipeline.config_files import load_config

    comp = make_competition(tmp_path / "comp")
    cfg = load_config(make_config(tmp_path, comp, train={"class_weights": "balanced", "loss": "focal"}))
    loss = make_loss(cfg, np.array([0, 0, 0, 1]), 2)
    assert torch.allclose(loss.weight, torch.tensor([4 / 6, 2.0]))
    listed = load_config(make_config(tmp_path, comp, train={"class_weights": [1.0, 3.0]}))
    assert torch.equal(make_loss(listed, None, 2).weight, torch.tensor([1.0, 3.0]))
    with pytest.raises(PipelineError, match="train.class_weights: 2 weights for 3 classes"):
        make_loss(listed, None, 3)


def test_class_weights_scale_the_loss_alike_for_indices_and_probability_rows(tmp_path):
    from helpers import make_competition, make_config

    from pipeline.config_files import load_config

    cfg = load_config(make_config(tmp_path, make_competition(tmp_path / "c"), train={"class_weights": [1.0, 3.0]}))
    loss, logits = make_loss(cfg, None, 2), torch.randn(6, 2)
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    rows = torch.nn.functional.one_hot(labels, 2).float()  # what mixup makes of an unmixed batch
    assert loss(logits, labels).item() == pytest.approx(loss(logits, rows).item(), rel=1e-6)
