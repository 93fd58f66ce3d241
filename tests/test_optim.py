"""pipeline/optim.py: discriminative LRs, per-phase schedules and their momentum."""

import numpy as np
import pytest
import timm
import torch

from pipeline import optim
from pipeline.config import Phase, Train
from pipeline.errors import PipelineError


def _model():
    return timm.create_model("test_efficientnet", num_classes=2)


def _peaks_by_param(model, t: Train, phase: Phase) -> dict[int, float]:
    opt = optim.make_optimizer(model, t)
    peaks = optim.peak_lrs(opt, phase, t)
    return {id(p): pk for g, pk in zip(opt.param_groups, peaks) for p in g["params"]}


def _stem_to_head(model, lr_of: dict[int, float]) -> list[float]:
    """Peak LR of each module in forward order: stem, blocks, head."""
    mods = [model.conv_stem, *model.blocks, model.get_classifier()]
    return [max(lr_of[id(p)] for p in m.parameters()) for m in mods]


@pytest.mark.parametrize("rule", [{"layer_decay": 0.5}, {"lr_ratio": 10.0}])
def test_discriminative_lrs_rise_from_stem_to_head(rule):
    model, phase = _model(), Phase(epochs=1, lr=1e-2)
    lrs = _stem_to_head(model, _peaks_by_param(model, Train(**rule), phase))
    assert lrs == sorted(lrs) and lrs[0] < lrs[-1]
    assert lrs[-1] == pytest.approx(1e-2)
    if "lr_ratio" in rule:
        assert lrs[0] == pytest.approx(1e-3)  # the stem at lr / ratio exactly
    else:
        assert lrs[0] < 1e-2 * 0.5**2


def test_one_lr_without_a_rule_and_linear_batch_scaling():
    model, phase = _model(), Phase(epochs=1, lr=3e-3)
    assert set(_peaks_by_param(model, Train(), phase).values()) == {3e-3}
    scaled = _peaks_by_param(model, Train(batch_size=32, accum_steps=4, lr_ref_batch=64), phase)
    assert list(set(scaled.values())) == [pytest.approx(6e-3)]  # effective batch 128 = 2 x 64


def test_unknown_optimizer_named():
    with pytest.raises(PipelineError, match="train.optimizer: 'adamx'"):
        optim.make_optimizer(_model(), Train(optimizer="adamx"))


def _momentum(group: dict) -> float:
    return group["betas"][0] if "betas" in group else group["momentum"]


def _curve(phase: Phase, optimizer="adamw", updates_per_epoch=10):
    t = Train(optimizer=optimizer, phases=[phase])
    opt = optim.make_optimizer(torch.nn.Linear(2, 2), t)
    sched = optim.PhaseSchedule(opt, phase, optim.peak_lrs(opt, phase, t), updates_per_epoch)
    lrs, moms = [], []
    for _ in range(phase.epochs * updates_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(_momentum(opt.param_groups[0]))
        opt.step()
        sched.step()
    return np.array(lrs), np.array(moms)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_one_cycle_lr_and_momentum_shape(optimizer):
    lrs, moms = _curve(Phase(epochs=4, lr=1e-2, sched="onecycle", pct_start=0.25), optimizer)
    top = int(np.argmax(lrs))
    assert 8 <= top <= 10  # the peak a quarter of the way in
    assert lrs[top] == pytest.approx(1e-2, rel=1e-3)
    assert np.all(np.diff(lrs[: top + 1]) > 0) and np.all(np.diff(lrs[top:]) < 0)
    assert lrs[0] < 1e-2 / 10 and lrs[-1] < lrs[0]
    # momentum (Adam's beta1) mirrors it: 0.95 -> 0.85 at the LR peak -> back to 0.95
    assert moms[0] == pytest.approx(0.95) and moms[top] == pytest.approx(0.85, abs=1e-3)
    assert moms[-1] == pytest.approx(0.95, abs=1e-3) and int(np.argmin(moms)) == top


def test_cosine_with_warmup_per_batch():
    lrs, _ = _curve(Phase(epochs=4, lr=1e-2, warmup_epochs=1))
    warm, decay = lrs[:11], lrs[10:]
    assert np.all(np.diff(warm) > 0)  # rises through the first epoch
    assert lrs.max() == pytest.approx(1e-2)
    assert np.all(np.diff(decay) <= 0) and decay[-1] < 1e-2 * 0.05


def test_sgdr_restarts():
    lrs, _ = _curve(Phase(epochs=4, lr=1e-2, sched="sgdr", cycle_epochs=1))
    jumps = np.flatnonzero(np.diff(lrs) > 0) + 1
    assert jumps.tolist() == [10, 20, 30]  # back to the peak at each cycle start
    assert np.allclose(lrs[jumps], 1e-2)


def test_phase_resets_momentum_after_one_cycle():
    t = Train(optimizer="sgd", momentum=0.9)
    opt = optim.make_optimizer(torch.nn.Linear(2, 2), t)
    one = Phase(epochs=1, lr=1e-2, sched="onecycle")
    optim.PhaseSchedule(opt, one, optim.peak_lrs(opt, one, t), 5)
    cos = Phase(epochs=1, lr=1e-3)
    optim.PhaseSchedule(opt, cos, optim.peak_lrs(opt, cos, t), 5)
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["lr"] == pytest.approx(1e-3)
