"""pipeline/tricks.py and the training loop's use of it: EMA, SWA, mixup/cutmix, FGM, R-Drop."""

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from helpers import CPU, killed_in_epoch, make_config

from pipeline import engine, tricks
from pipeline.competition import read_competition
from pipeline.config import Ema, Fgm, Mixup, Runtime
from pipeline.config_files import load_config
from pipeline.losses import rdrop_loss
from pipeline.stages import folds as folds_stage
from pipeline.stages import train
from pipeline.training import loop


def _setup(tmp_path, comp, name="tiny", **train_keys):
    cfg = load_config(make_config(tmp_path, comp, name=name, train=train_keys))
    folds_stage.main(cfg)
    return cfg, read_competition(cfg)


def _tiny(drop_rate=0.0):
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", num_classes=3, drop_rate=drop_rate)


# ----------------------------------------------------------------------------- EMA


def test_ema_follows_the_decay_formula():
    model = torch.nn.Linear(3, 2)
    ema = tricks.WeightEma(model, Ema(decay=0.9, warmup=False))
    w1 = {k: v.clone() for k, v in model.state_dict().items()}
    ema.update(model)  # timm's first update copies the weights (decay 0)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert ema.updates == 2
    expected = 0.9 * w1["weight"] + 0.1 * model.weight.detach()
    assert torch.allclose(ema.module.weight, expected)
    assert not torch.allclose(ema.module.weight, model.weight)


def test_ema_warmup_fades_the_first_weights_faster():
    model = torch.nn.Linear(3, 2)
    slow, fast = tricks.WeightEma(model, Ema(decay=0.99, warmup=False)), tricks.WeightEma(model, Ema(decay=0.99))
    for _ in range(5):
        with torch.no_grad():
            model.weight.add_(1.0)
        slow.update(model), fast.update(model)
    gap = lambda e: (model.weight - e.module.weight).abs().mean()  # noqa: E731
    assert gap(fast) < gap(slow)


def test_a_fold_with_ema_validates_both_and_records_what_it_keeps(tmp_path, comp):
    phases = [{"epochs": 1, "lr": 1e-2, "frozen": True}, {"epochs": 2, "lr": 3e-3}]
    cfg, competition = _setup(tmp_path, comp, phases=phases, ema={"decay": 0.9, "keep": "ema"})
    train.train_fold(cfg, competition, 0)
    hist = pd.read_csv(cfg.run_dir / "fold0" / "history.csv")
    assert {"ema_valid_loss", "ema_valid_accuracy"} <= set(hist.columns) and (hist.weights == "ema").all()
    assert not np.allclose(hist.valid_loss, hist.ema_valid_loss)
    best = torch.load(cfg.run_dir / "fold0" / "best.pt", weights_only=False)
    last = torch.load(cfg.run_dir / "fold0" / "last.pt", weights_only=True)
    assert best["weights"] == "ema" and last["ema"]["updates"] > 0
    if best["epoch"] == 2:
        for k, v in last["ema"]["model"].items():
            assert torch.equal(best["state_dict"][k], v), k


def test_a_resumed_fold_ends_with_the_same_ema(tmp_path, comp, monkeypatch):
    phases = [{"epochs": 2, "lr": 1e-2, "frozen": True}, {"epochs": 2, "lr": 3e-3, "img_size": 24}]
    ema = {"decay": 0.95}
    ref, competition = _setup(tmp_path, comp, name="ref", phases=phases, ema=ema)
    train.train_fold(ref, competition, 0)
    cfg, _ = _setup(tmp_path, comp, name="killed", phases=phases, ema=ema)
    killed_in_epoch(cfg, competition, monkeypatch, 3)  # in the second phase
    train.train_fold(cfg, competition, 0)
    a = torch.load(ref.run_dir / "fold0" / "last.pt", weights_only=True)["ema"]
    b = torch.load(cfg.run_dir / "fold0" / "last.pt", weights_only=True)["ema"]
    assert a["updates"] == b["updates"]
    for k, v in a["model"].items():
        assert torch.allclose(v.float(), b["model"][k].float(), atol=1e-6), k


def test_ema_of_a_head_only_phase_shares_the_raw_features():
    model = _tiny()
    ema = tricks.WeightEma(model, Ema())
    with torch.no_grad():
        model.get_classifier().weight.add_(1.0)
    assert tricks.same_backbone(model, ema.module)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not tricks.same_backbone(model, ema.module)


# ----------------------------------------------------------------------------- SWA


def test_swa_keeps_the_average_with_batchnorm_recomputed(tmp_path, comp, capsys):
    cfg, competition = _setup(tmp_path, comp, phases=[{"epochs": 3, "lr": 3e-3}], swa={"epochs": 2})
    train.train_fold(cfg, competition, 0)
    out = cfg.run_dir / "fold0"
    best = torch.load(out / "best.pt", weights_only=False)
    last = torch.load(out / "last.pt", weights_only=True)
    assert best["weights"] == "swa" and best["epoch"] == 3 and last["swa"]["n_averaged"] == 2
    stats = [k for k in best["state_dict"] if k.endswith("running_mean")]
    assert stats and any(not torch.allclose(best["state_dict"][k], last["model"][k]) for k in stats)
    hist = pd.read_csv(out / "history.csv")
    assert hist.epoch.tolist() == [0, 1, 2, 3] and hist.weights.iloc[-1] == "swa"
    oof = pd.read_csv(out / "oof.csv")
    assert np.isclose(oof[["ants", "bees"]].to_numpy().sum(1), 1, atol=1e-3).all()
    assert "SWA of the last 2 epochs" in capsys.readouterr().out


def test_swa_averages_the_weights_it_is_given():
    model = torch.nn.Linear(2, 1)
    swa = tricks.WeightSwa(model, type("S", (), {"epochs": 2})())
    seen = []
    for step in range(3):
        with torch.no_grad():
            model.weight.fill_(float(step))
        swa.update(model)
        seen.append(float(step))
    assert swa.count == 3 and torch.allclose(swa.module.weight, torch.full_like(model.weight, np.mean(seen)))


# ----------------------------------------------------------------------------- mixup and cutmix


def _batch(n=6):
    gen = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 8, 8, generator=gen), torch.arange(n)


def test_mixup_makes_convex_combinations_and_rows_summing_to_one():
    np.random.seed(0)
    x, y = _batch()
    mixed, target = tricks.mix(tricks.make_mixer(Mixup(mixup_alpha=0.4)), x.clone(), y, num_classes=6)
    assert torch.allclose(target.sum(1), torch.ones(6))
    for i in range(6):
        lam = target[i, i]  # image i's own share; the rest is its mirror's (n - 1 - i)
        assert torch.allclose(mixed[i], lam * x[i] + (1 - lam) * x[5 - i], atol=1e-6)
    assert 0 < target[0, 0] < 1


def test_cutmix_pastes_a_box_of_the_mirror_image():
    np.random.seed(1)
    x, y = _batch()
    mixed, target = tricks.mix(tricks.make_mixer(Mixup(mixup_alpha=0.0, cutmix_alpha=1.0)), x.clone(), y, 6)
    assert torch.allclose(target.sum(1), torch.ones(6))
    for i in range(6):
        own = (mixed[i] == x[i]).all(0)
        assert (own | (mixed[i] == x[5 - i]).all(0)).all()  # every pixel from one of the two
        assert own.float().mean() == pytest.approx(target[i, i].item(), abs=1e-6)


def test_mixup_takes_soft_and_multi_hot_rows_and_skips_odd_batches():
    np.random.seed(2)
    x, _ = _batch(4)
    rows = torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
    _, target = tricks.mix(tricks.make_mixer(Mixup(mixup_alpha=1.0)), x.clone(), rows, 3)
    lam = target[0, 2]  # image 0 has label 2, its mirror (image 3) has not
    assert torch.allclose(target[0], lam * rows[0] + (1 - lam) * rows[3])
    odd, same = tricks.mix(tricks.make_mixer(Mixup()), x[:3].clone(), torch.tensor([0, 1, 2]), 3)
    assert torch.equal(odd, x[:3]) and torch.equal(same, torch.eye(3))


def test_mixup_is_off_in_frozen_phases_and_the_last_epochs(tmp_path, comp):
    phases = [{"epochs": 1, "lr": 1e-2, "frozen": True}, {"epochs": 3, "lr": 1e-3}]
    cfg, _ = _setup(tmp_path, comp, phases=phases, mixup={"off_last_epochs": 1})
    assert [cfg.train.mixes(p, e) for p, e in [(0, 0), (1, 1), (1, 2), (1, 3)]] == [False, True, True, False]


# ----------------------------------------------------------------------------- FGM and R-Drop


@pytest.mark.parametrize("target", ["input", "stem"])
def test_fgm_restores_the_perturbed_tensor_exactly(target):
    model, x = _tiny(), torch.rand(4, 3, 32, 32)
    x.requires_grad_(True)
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2, 0])).backward()
    tensor, per_sample = tricks.fgm_target(model, x, Fgm(epsilon=0.5, target=target))
    assert tensor is (x if target == "input" else model.conv_stem.weight)
    before = tensor.detach().clone()
    with tricks.perturbed(tensor, 0.5, per_sample) as moved:
        assert moved
        shift = (tensor.detach() - before).flatten(1 if per_sample else 0).norm(dim=-1)
        assert torch.allclose(shift, torch.full_like(shift, 0.5), atol=1e-4)
    assert torch.equal(tensor.detach(), before)


def test_a_training_step_with_fgm_adds_the_adversarial_gradient():
    rt = Runtime(channels_last=False)
    model, x, y = _tiny(), torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    scaler, loss_fn = engine.grad_scaler(CPU, rt), torch.nn.CrossEntropyLoss()
    stem = model.conv_stem.weight.detach().clone()
    loop.forward_backward(model, x, y, loss_fn, scaler, CPU, rt, 1, loop.StepTricks())
    plain = model.conv_stem.weight.grad.clone()
    model.zero_grad()
    fgm = loop.StepTricks(fgm=Fgm(epsilon=0.1, target="stem"))
    loop.forward_backward(model, x, y, loss_fn, scaler, CPU, rt, 1, fgm)
    assert torch.equal(model.conv_stem.weight.detach(), stem)  # restored after the extra pass
    assert not torch.allclose(model.conv_stem.weight.grad, plain)  # the two passes' gradients summed


def test_rdrop_is_cross_entropy_without_dropout_and_adds_kl_with_it():
    x, y, ce = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]), torch.nn.CrossEntropyLoss()
    model = _tiny(drop_rate=0.0).train()
    torch.manual_seed(1)
    plain = ce(model(x), y)
    assert rdrop_loss(model(torch.cat([x, x])), y, ce, 5.0, False).item() == pytest.approx(plain.item(), rel=1e-4)
    dropped = _tiny(drop_rate=0.5).train()
    torch.manual_seed(1)
    logits = dropped(torch.cat([x, x]))
    a, b = logits.chunk(2)
    assert not torch.allclose(a, b)  # two dropout masks
    mean_ce = (ce(a, y) + ce(b, y)) / 2
    assert rdrop_loss(logits, y, ce, 1.0, False) > mean_ce
    assert rdrop_loss(logits, y, ce, 0.0, False).item() == pytest.approx(mean_ce.item())
    tags = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    bce = torch.nn.BCEWithLogitsLoss()
    assert rdrop_loss(logits, tags, bce, 1.0, True) > (bce(a, tags) + bce(b, tags)) / 2


def test_a_fold_trains_with_every_trick_at_once(tmp_path, comp):
    phases = [{"epochs": 1, "lr": 1e-2, "frozen": True}, {"epochs": 2, "lr": 3e-3}]
    cfg, competition = _setup(
        tmp_path,
        comp,
        phases=phases,
        ema={"decay": 0.9},
        swa={"epochs": 2},
        mixup={"mixup_alpha": 0.2, "cutmix_alpha": 1.0},
        rdrop=1.0,
        fgm={"target": "stem", "epsilon": 0.1},
        class_weights="balanced",
        loss="focal",
    )
    train.train_fold(cfg, competition, 0)
    hist = pd.read_csv(cfg.run_dir / "fold0" / "history.csv")
    assert np.isfinite(hist.train_loss.iloc[:-1]).all() and np.isfinite(hist.valid_loss).all()
    assert (cfg.run_dir / "fold0" / "oof.csv").is_file()


def test_fgm_makes_its_pass_on_an_overflowed_gradient_without_moving():
    w = torch.nn.Parameter(torch.ones(3))
    w.grad = torch.tensor([float("inf"), 1.0, 0.0])
    with tricks.perturbed(w, 0.5, False) as moved:
        assert moved  # every DDP process makes the same passes
        assert torch.allclose(w.detach(), torch.tensor([1.0, 1.5, 1.0]))  # only the finite direction
    assert torch.equal(w.detach(), torch.ones(3))
    w.grad = None
    with tricks.perturbed(w, 0.5, False) as moved:
        assert not moved


def test_swa_keeps_the_statistics_of_a_last_phase_that_holds_batchnorm(tmp_path, comp):
    phases = [{"epochs": 3, "lr": 3e-3, "freeze_bn": True}]
    cfg, competition = _setup(tmp_path, comp, phases=phases, swa={"epochs": 2})
    train.train_fold(cfg, competition, 0)
    best = torch.load(cfg.run_dir / "fold0" / "best.pt", weights_only=False)["state_dict"]
    last = torch.load(cfg.run_dir / "fold0" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(best[k], last[k]) for k in best if "running_" in k)
