import pytest
import timm
import torch

from pipeline.config import Train
from pipeline.errors import PipelineError
from pipeline.train import make_optimizer, make_scheduler


def test_layer_decay_gives_the_head_the_top_lr():
    model = timm.create_model("test_efficientnet", num_classes=2)
    opt = make_optimizer(model, Train(lr=1e-2, layer_decay=0.5, sched="none"))
    head = {id(p) for p in model.get_classifier().parameters()}
    stem = {id(p) for p in model.conv_stem.parameters()}
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert {lr_of[i] for i in head} == {1e-2}
    assert max(lr_of[i] for i in stem) < 1e-2 * 0.5 ** 2
    assert min(lr_of.values()) == min(lr_of[i] for i in stem)


def test_no_layer_decay_is_one_lr():
    model = timm.create_model("test_efficientnet", num_classes=2)
    opt = make_optimizer(model, Train(lr=3e-3))
    assert {g["lr"] for g in opt.param_groups} == {3e-3}


def test_unknown_optimizer_named():
    model = timm.create_model("test_efficientnet", num_classes=2)
    with pytest.raises(PipelineError, match="train.optimizer: 'adamx'"):
        make_optimizer(model, Train(optimizer="adamx"))


def test_cosine_with_warmup_per_batch():
    t = Train(lr=1e-2, epochs=4, warmup_epochs=1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=t.lr)
    sched = make_scheduler(opt, t, steps_per_epoch=10)
    lrs = []
    for step in range(1, 41):
        sched.step_update(num_updates=step)
        lrs.append(opt.param_groups[0]["lr"])
    warm, decay = lrs[:10], lrs[10:]
    assert all(a < b for a, b in zip(warm, warm[1:]))  # rises through the first epoch
    assert max(lrs) == pytest.approx(1e-2, rel=0.05)
    assert all(a >= b for a, b in zip(decay, decay[1:]))  # then only falls
    assert decay[-1] < 1e-2 * 0.05
