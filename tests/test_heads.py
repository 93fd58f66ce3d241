"""GeM pooling, the embedding neck and the margin heads (pipeline/heads.py) and their loss
(losses.MarginLoss): each computes what its paper's formula says, a checkpoint rebuilds it, and a
margin head predicts an ordinary classification task."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import make_config, run_chain

from pipeline.config import Config
from pipeline.config_files import load_config
from pipeline.heads import GeM, MarginHead
from pipeline.losses import MarginLoss, make_loss
from pipeline.models import create_model, load_checkpoint, save_checkpoint
from pipeline.runs import RunDir


def config(head: str, backbone: str = "test_efficientnet", **model) -> Config:
    return Config.model_validate(
        dict(
            name="x",
            data=dict(root="r", task="retrieval"),
            model=dict(backbone=backbone, pretrained="none", head=head, **model),
        )
    )


def test_gem_is_average_pooling_at_power_one_and_nears_max_pooling_as_it_grows():
    x = torch.rand(2, 3, 5, 5) + 0.1
    gem = GeM(p=1.0)
    assert torch.allclose(gem(x), x.mean(dim=(-2, -1)), atol=1e-6)
    gem.p.data.fill_(300.0)
    assert torch.allclose(gem(x), x.amax(dim=(-2, -1)), rtol=0.02)


def test_margin_head_logits_are_scaled_cosines_and_subcenters_take_the_nearest():
    torch.manual_seed(0)
    f = torch.randn(4, 6)
    head = MarginHead(6, 3, "arcface", scale=10.0, margin=0.3, subcenters=2)
    w = F.normalize(head.weight).view(3, 2, 6)
    want = torch.einsum("nd,ckd->nck", F.normalize(f), w).amax(-1) * 10.0
    assert torch.allclose(head(f), want, atol=1e-5)
    assert head(f).abs().max() <= 10.0


def test_margin_losses_push_the_true_class_back_by_their_formula():
    torch.manual_seed(0)
    cos = torch.rand(5, 4) * 1.6 - 0.8
    y = torch.tensor([0, 1, 2, 3, 0])
    s, m = 16.0, 0.3
    ce = torch.nn.CrossEntropyLoss()
    onehot = F.one_hot(y, 4).float()
    assert torch.allclose(MarginLoss(ce, "cosface", m, s)(cos * s, y), ce(s * (cos - m * onehot), y), atol=1e-5)
    theta = torch.acos(cos)
    arc = torch.where(onehot.bool(), torch.cos(theta + m), cos)  # every angle here is below pi - m
    assert torch.allclose(MarginLoss(ce, "arcface", m, s)(cos * s, y), ce(s * arc, y), atol=1e-4)
    assert torch.allclose(MarginLoss(ce, "arcface", 0.0, s)(cos * s, y), ce(cos * s, y), atol=1e-5)
    # probability rows (mixup) of one class each are the class indices
    assert torch.allclose(MarginLoss(ce, "arcface", m, s)(cos * s, onehot), MarginLoss(ce, "arcface", m, s)(cos * s, y))
    # past theta = pi - m the target's logit keeps falling with the angle
    far = torch.tensor([[-0.99, 0.0], [-0.999, 0.0]]) * s
    losses = [MarginLoss(ce, "arcface", m, s)(far[i : i + 1], torch.tensor([0])) for i in range(2)]
    assert losses[1] > losses[0]


@pytest.mark.parametrize("head", ["linear", "arcface", "subcenter_arcface", "cosface"])
@pytest.mark.parametrize("backbone", ["test_efficientnet", "test_resnet", "test_vit"])
def test_every_head_trains_and_rebuilds_from_its_checkpoint(head, backbone, tmp_path):
    pool = "gem" if backbone != "test_vit" else None
    cfg = config(head, backbone, embedding_size=16, global_pool=pool)
    model = create_model(cfg.model, 5)
    x = torch.randn(4, 3, 32, 32)
    loss = make_loss(cfg)(model(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert math.isfinite(loss.item()) and model.get_classifier().neck.fc.weight.grad is not None
    save_checkpoint(tmp_path / "best.pt", model, config=cfg.model_dump(), classes=list("abcde"))
    again, _ = load_checkpoint(tmp_path / "best.pt")
    assert torch.allclose(again.eval()(x), model.eval()(x), atol=1e-5)


def test_gem_is_refused_for_a_model_without_timms_pooling():
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="model.global_pool: gem"):
        create_model(config("arcface", "test_vit", global_pool="gem").model, 3)


def test_a_margin_head_predicts_an_ordinary_classification_task(comp, tmp_path):
    cfg = load_config(
        make_config(
            tmp_path,
            comp,
            model={"head": "cosface", "embedding_size": 8},
            train={"phases": [{"epochs": 1, "lr": 3e-3}]},
        )
    )
    run_chain(cfg)
    test = pd.read_csv(RunDir(cfg.run_dir).test)
    assert np.allclose(test[["ants", "bees"]].sum(1), 1.0)
    ckpt = torch.load(RunDir(cfg.run_dir).best(0), weights_only=True)
    assert "classifier.weight" in ckpt["state_dict"] and ckpt["config"]["model"]["head"] == "cosface"
