"""A number's target scale and losses (pipeline/targets.py), against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.losses import make_loss, rdrop_loss
from pipeline.targets import NumberLoss, TargetScale, fit_scale, prediction_loss

Y = np.array([2.0, 4.0, 6.0, 12.0])


def test_the_sigmoid_range_never_leaves_it_and_meets_its_middle():
    scale = fit_scale([0.0, 20.0], Y)
    z = torch.tensor([[-1e4], [-3.0], [0.0], [3.0], [1e4]])
    out = scale.output(z)[:, 0]
    assert out.min() >= 0.0 and out.max() <= 20.0
    assert out[2] == pytest.approx(10.0)  # sigmoid(0) is the middle
    assert out[3] == pytest.approx(20 / (1 + math.exp(-3)))
    assert (out.diff() >= 0).all()


def test_auto_widens_the_training_range_by_five_percent_each_side():
    scale = fit_scale("auto", Y)
    assert (scale.kind, scale.a, scale.b) == ("range", pytest.approx(2 - 0.5), pytest.approx(12 + 0.5))
    assert scale.normalise(Y).min() > 0 and scale.normalise(Y).max() < 1


@pytest.mark.parametrize("y_range", [None, "auto", [0.0, 20.0]])
def test_the_scale_round_trips_a_prediction_through_the_raw_output(y_range):
    scale = fit_scale(y_range, Y)
    raw = torch.as_tensor(scale.raw(Y))[:, None]
    assert scale.output(raw)[:, 0].double().numpy() == pytest.approx(Y, rel=1e-5)
    assert TargetScale.from_dict(scale.to_dict()) == scale


def test_standardised_on_the_training_targets():
    scale = fit_scale(None, Y)
    assert (scale.a, scale.b) == (pytest.approx(Y.mean()), pytest.approx(Y.std()))
    u = scale.normalise(Y)
    assert u.mean() == pytest.approx(0) and u.std() == pytest.approx(1)
    assert scale.output(torch.tensor([[1.0]]))[0, 0] == pytest.approx(Y.mean() + Y.std())


def test_a_range_that_leaves_out_a_training_target_is_refused():
    with pytest.raises(PipelineError, match=r"model.y_range: \[0.0, 10.0\] leaves out training targets .*2 to 12"):
        fit_scale([0.0, 10.0], Y)


Z = torch.tensor([[0.0], [2.0], [-1.0]])  # raw outputs
U = torch.tensor([0.5, 0.6, 0.1])  # normalised targets


def hand(name: str, bounded: bool) -> float:
    """The losses written out, one image at a time."""
    z, u = [0.0, 2.0, -1.0], [0.5, 0.6, 0.1]
    v = [1 / (1 + math.exp(-a)) for a in z] if bounded else z
    if name == "bce":
        return -sum(t * math.log(p) + (1 - t) * math.log(1 - p) for t, p in zip(u, v)) / 3
    d = [a - b for a, b in zip(v, u)]
    beta = 0.1 if bounded else 1.0
    per = {
        "mse": [x * x for x in d],
        "l1": [abs(x) for x in d],
        "smooth_l1": [0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta for x in d],
    }[name]
    return sum(per) / 3


@pytest.mark.parametrize("name", ["mse", "l1", "smooth_l1", "bce"])
@pytest.mark.parametrize("kind", ["range", "standard"])
def test_each_loss_against_its_hand_computed_value(name, kind):
    if name == "bce" and kind == "standard":
        return  # refused by the config (tests/test_config.py): bce needs a range
    loss = NumberLoss(name, kind)
    assert float(loss(Z, U)) == pytest.approx(hand(name, kind == "range"), rel=1e-5)


def test_the_validation_loss_of_predictions_is_the_training_loss_of_their_outputs():
    scale = fit_scale("auto", Y)
    loss = NumberLoss("smooth_l1", "range")
    z = torch.tensor([[0.3], [-0.2], [1.1], [0.0]])
    pred = scale.output(z)[:, 0].numpy()
    expected = float(loss(z, torch.as_tensor(scale.normalise(Y), dtype=torch.float32)))
    assert prediction_loss(loss, scale, pred, Y) == pytest.approx(expected, rel=1e-4)


def test_rdrop_for_a_number_adds_the_squared_difference_of_the_two_passes():
    loss = NumberLoss("mse", "standard")
    a, b = torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [1.0]])
    u = torch.tensor([1.0, 1.0])
    base = (float(loss(a, u)) + float(loss(b, u))) / 2
    got = rdrop_loss(torch.cat([a, b]), u, loss, 2.0, multilabel=False)
    assert float(got) == pytest.approx(base + 2.0 * (0.25 + 1.0) / 2)


def test_make_loss_gives_the_configured_number_loss(tmp_path):
    from helpers import make_numbers, number_config

    from pipeline.config_files import load_config

    comp = make_numbers(tmp_path / "comp")
    cfg = load_config(number_config(tmp_path, comp, train={"loss": "l1"}, model={"y_range": None}))
    loss = make_loss(cfg, scale=fit_scale(None, Y))
    assert isinstance(loss, NumberLoss) and (loss.name, loss.bounded) == ("l1", False)
