"""The training recipe: discriminative LRs, schedules, freezing, resume, and sampling."""
import numpy as np
import pandas as pd
import pytest
import timm
import torch

from conftest import make_competition, make_config
from pipeline import folds as folds_stage
from pipeline import optim, train
from pipeline.config import Phase, Train, load_config
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
        assert lrs[0] < 1e-2 * 0.5 ** 2


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
    assert np.all(np.diff(lrs[:top + 1]) > 0) and np.all(np.diff(lrs[top:]) < 0)
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

# ----------------------------------------------------------------------------- whole folds


def _setup(tmp_path, comp, name="tiny", **train_keys):
    path = make_config(tmp_path, comp, name=name, train=train_keys)
    cfg = load_config(path)
    folds_stage.main(cfg)
    return cfg, folds_stage.load_folds(cfg)


def _body_state(state: dict, model) -> dict:
    head = {k for k, _ in model.get_classifier().named_parameters(prefix="classifier")}
    return {k: v for k, v in state.items() if k not in head}


def test_frozen_phase_moves_only_the_head(tmp_path, comp):
    cfg, folds = _setup(tmp_path, comp, phases=[{"epochs": 2, "lr": 1e-2, "frozen": True}])
    before = {k: v.clone() for k, v in train.build(cfg, folds, 0).model.state_dict().items()}
    train.train_fold(cfg, folds, 0)
    after = torch.load(cfg.run_dir / "fold0" / "last.pt", weights_only=True)["model"]
    model = _model()
    for key, value in _body_state(after, model).items():  # weights and BN running statistics alike
        assert torch.equal(value, before[key]), key
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])


def test_phases_run_in_order_with_sizes_and_lrs(tmp_path, comp, capsys):
    cfg, folds = _setup(tmp_path, comp, lr_ratio=10.0, phases=[
        {"epochs": 1, "lr": 1e-2, "frozen": True, "img_size": 24, "sched": "onecycle"},
        {"epochs": 2, "lr": 1e-3, "img_size": 32}])
    train.train_fold(cfg, folds, 0)
    hist = pd.read_csv(cfg.run_dir / "fold0" / "history.csv")
    assert hist.phase.tolist() == [0, 1, 1] and hist.img_size.tolist() == [24, 32, 32]
    assert hist.frozen.tolist() == [True, False, False]
    assert hist.lr_stem.iloc[1] == pytest.approx(1e-4) and hist.lr_head.iloc[1] == pytest.approx(1e-3)
    out = capsys.readouterr().out
    assert "peak lr by layer group (stem to head): 1.00e-04" in out and "1.00e-03" in out
    assert (cfg.run_dir / "fold0" / "curves.png").stat().st_size > 1000


@pytest.mark.parametrize("dies_in", [2, 4], ids=["inside-onecycle-phase", "inside-cosine-phase"])
def test_killed_run_resumes_to_the_same_end(tmp_path, comp, monkeypatch, dies_in):
    phases = [{"epochs": 3, "lr": 1e-2, "frozen": True, "sched": "onecycle"},
              {"epochs": 2, "lr": 1e-3, "img_size": 24, "warmup_epochs": 0.5}]
    ref_cfg, folds = _setup(tmp_path, comp, name="ref", phases=phases)
    train.train_fold(ref_cfg, folds, 0)
    cfg, _ = _setup(tmp_path, comp, name="killed", phases=phases)

    real, calls, killed = train.train_one_epoch, [], []

    def dies(*args, **kw):
        calls.append(1)
        if len(calls) == dies_in and not killed:
            killed.append(1)
            raise KeyboardInterrupt  # as a kill in the middle of that epoch
        return real(*args, **kw)

    monkeypatch.setattr(train, "train_one_epoch", dies)
    with pytest.raises(KeyboardInterrupt):
        train.train_fold(cfg, folds, 0)
    out = cfg.run_dir / "fold0"
    assert not (out / "oof.csv").exists()
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == dies_in - 2

    calls.clear()
    train.train_fold(cfg, folds, 0)
    assert len(calls) == 5 - (dies_in - 1)  # only the epochs that were missing
    hist = pd.read_csv(out / "history.csv")
    assert hist.epoch.tolist() == [0, 1, 2, 3, 4]
    ref = torch.load(ref_cfg.run_dir / "fold0" / "last.pt", weights_only=True)
    got = torch.load(out / "last.pt", weights_only=True)
    assert got["epoch"] == ref["epoch"] == 4 and got["done"]
    ref_hist = pd.read_csv(ref_cfg.run_dir / "fold0" / "history.csv")
    assert np.allclose(hist.train_loss, ref_hist.train_loss)  # the schedule picked up where it was
    for key, value in ref["model"].items():  # the same model as a run never interrupted
        assert torch.allclose(got["model"][key].float(), value.float(), atol=1e-6), key

    calls.clear()
    train.train_fold(cfg, folds, 0)  # finished: not retrained
    assert calls == []


def test_changed_config_does_not_resume(tmp_path, comp, capsys):
    cfg, folds = _setup(tmp_path, comp, phases=[{"epochs": 1, "lr": 1e-3}])
    train.train_fold(cfg, folds, 0)
    cfg, folds = _setup(tmp_path, comp, phases=[{"epochs": 2, "lr": 1e-3}])
    train.train_fold(cfg, folds, 0)
    assert "resuming" not in capsys.readouterr().out
    assert pd.read_csv(cfg.run_dir / "fold0" / "history.csv").epoch.tolist() == [0, 1]


def test_accumulation_updates_once_per_k_batches(tmp_path, comp, monkeypatch):
    cfg, folds = _setup(tmp_path, comp, accum_steps=3, batch_size=4,
                        phases=[{"epochs": 1, "lr": 1e-3, "sched": "constant"}])
    steps = []
    monkeypatch.setattr(optim.PhaseSchedule, "step", lambda self: steps.append(1))
    train.train_fold(cfg, folds, 0)
    assert len(steps) == 2  # 16 training images = 4 batches of 4: updates after batches 3 and 4


def test_progressive_resizing_refused_for_fixed_size_models(tmp_path, comp):
    path = make_config(tmp_path, comp, model={"backbone": "test_vit", "img_size": 32},
                       train={"phases": [{"epochs": 1, "lr": 1e-3, "img_size": 24}]})
    cfg = load_config(path)
    folds_stage.main(cfg)
    with pytest.raises(PipelineError, match=r"train.phases.0.img_size: test_vit has a fixed input size"):
        train.train_fold(cfg, folds_stage.load_folds(cfg), 0)

# ----------------------------------------------------------------------------- imbalance


@pytest.mark.parametrize("sampling", ["oversample", "weighted"])
def test_oversampling_balances_training_and_never_touches_validation(tmp_path, sampling):
    comp = make_competition(tmp_path / "imb", n_train=44, counts={"ants": 40, "bees": 4})
    cfg, folds = _setup(tmp_path, comp, sampling=sampling)
    classes = train.class_list(folds, cfg)
    for k in (0, 1):
        dl = train.train_loader(cfg, folds, k, classes, cfg.train.phases[0], {
            "input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}, torch.device("cpu"))
        valid_paths = {p.name for p in train.valid_loader(cfg, folds, k, classes, {
            "input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3, "crop_pct": 1.0},
            torch.device("cpu"))[0].dataset.paths}
        ds = dl.dataset
        assert not {p.name for p in ds.paths} & valid_paths
        drawn = ds.targets if sampling == "oversample" else ds.targets[list(dl.sampler)]
        counts = np.bincount(drawn, minlength=2)
        assert counts.sum() == 40 and (counts[1] == 20 if sampling == "oversample" else counts[1] > 10)


def _minority_recall(cfg, folds) -> float:
    train.main(cfg)
    oof = pd.concat(pd.read_csv(cfg.run_dir / f"fold{k}" / "oof.csv") for k in (0, 1))
    minority = oof[oof.label == "bees"]
    return float((minority.bees > minority.ants).mean())


def test_oversampling_raises_minority_recall(tmp_path):
    comp = make_competition(tmp_path / "imb", counts={"ants": 60, "bees": 6}, noise=150)
    keys = dict(phases=[{"epochs": 2, "lr": 3e-3}], label_smoothing=0.0)
    plain = _minority_recall(*_setup(tmp_path, comp, name="plain", **keys))
    over = _minority_recall(*_setup(tmp_path, comp, name="over", sampling="oversample", **keys))
    assert over > plain
