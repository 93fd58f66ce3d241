"""pipeline/stages/sanity.py: one batch overfits on a healthy set-up; shuffled labels or a zero LR fail."""

import subprocess
import sys

import pytest
import torch
from helpers import CPU, ROOT, make_config

from pipeline.config import Runtime
from pipeline.config_files import load_config
from pipeline.errors import PipelineError
from pipeline.stages import folds as folds_stage
from pipeline.stages import sanity


@pytest.fixture
def cfg(tmp_path, comp):
    c = load_config(make_config(tmp_path, comp, model={"drop_rate": 0.3}))
    folds_stage.main(c)
    return c


def test_a_healthy_set_up_overfits_one_batch(cfg):
    losses = sanity.main(cfg)
    assert len(losses) == sanity.STEPS and min(losses[-5:]) <= sanity.PASS_LOSS < losses[0]
    assert not (cfg.run_dir).exists()  # writes nothing


def _batch(n=16):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 2, (n,), generator=gen)


@pytest.mark.parametrize("broken", ["labels shuffled per step", "learning rate 0"])
def test_a_broken_set_up_fails(broken):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=2)
    x, y = _batch()
    if broken == "learning rate 0":
        batch, lr = (lambda step: (x, y)), 0.0
    else:
        batch, lr = (lambda step: (x, y[torch.randperm(len(y), generator=torch.Generator().manual_seed(step))])), 1e-3
    losses = sanity.overfit(model, batch, 40, lr, torch.nn.CrossEntropyLoss(), CPU, Runtime(channels_last=False))
    message = sanity.verdict(losses, len(x))
    assert message.startswith("sanity: one batch of 16 images did not overfit") and "check the labels" in message


def test_a_zero_lr_raises_and_a_healthy_command_exits_0(cfg, monkeypatch):
    monkeypatch.setattr(sanity, "LR", 0.0)
    with pytest.raises(PipelineError, match="did not overfit"):
        sanity.main(cfg)
    # and through the command line: exit 2, the message on one line
    res = subprocess.run(
        [sys.executable, "-m", "pipeline", "sanity", str(cfg.run_dir.parent.parent / "tiny.yaml"), "train.seed=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0 and "overfits" in res.stdout, res.stderr


@pytest.mark.parametrize("task", ["regression", "ordinal"])
def test_a_number_overfits_one_batch_with_its_own_loss(numbers, task):
    _, _, cfg, _ = numbers[task]
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"loss": "bce"})})  # checked with mse
    losses = sanity.main(cfg)
    assert len(losses) == sanity.STEPS and min(losses[-5:]) <= sanity.PASS_LOSS < losses[0]
