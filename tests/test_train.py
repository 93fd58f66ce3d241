"""pipeline/stages/train.py: phases, freezing, resume after a kill, accumulation, sampling, and
training on other experiments' rows."""

import hashlib
import types

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from helpers import COLOURS, CPU, DC, killed_in_epoch, make_competition, make_config, neg_config

from pipeline import engine, optim
from pipeline.competition import read_competition
from pipeline.config import Runtime
from pipeline.config_files import load_config
from pipeline.errors import Interrupted, PipelineError
from pipeline.losses import FocalLoss, make_loss
from pipeline.stages import folds as folds_stage
from pipeline.stages import pseudo, train
from pipeline.training import clock, epochs, keep, loaders, loop
from pipeline.training.fold import build

# ----------------------------------------------------------------------------- whole folds


def _setup(tmp_path, comp, name="tiny", model=None, **train_keys):
    path = make_config(tmp_path, comp, name=name, train=train_keys, **({"model": model} if model else {}))
    cfg = load_config(path)
    folds_stage.main(cfg)
    return cfg, read_competition(cfg)


def _body_state(state: dict, model) -> dict:
    head = {k for k, _ in model.get_classifier().named_parameters(prefix="classifier")}
    return {k: v for k, v in state.items() if k not in head}


def test_frozen_phase_moves_only_the_head(tmp_path, comp):
    cfg, competition = _setup(tmp_path, comp, phases=[{"epochs": 2, "lr": 1e-2, "frozen": True}])
    before = {k: v.clone() for k, v in build(cfg, competition, 0).state.model.state_dict().items()}
    train.train_fold(cfg, competition, 0)
    after = torch.load(cfg.run_dir / "fold0" / "last.pt", weights_only=True)["model"]
    model = timm.create_model("test_efficientnet", num_classes=2)
    for key, value in _body_state(after, model).items():  # weights and BN running statistics alike
        assert torch.equal(value, before[key]), key
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])


def test_a_head_only_phase_through_folded_batchnorm_trains_the_same_head(tmp_path, comp, capsys):
    heads, lines = [], []
    for fold_bn in (True, False):
        path = make_config(
            tmp_path,
            comp,
            name=f"fold-{fold_bn}",
            train={"phases": [{"epochs": 2, "lr": 1e-2, "frozen": True}], "ema": {"decay": 0.5}},
            runtime={"device": "cpu", "fold_frozen_bn": fold_bn},
        )
        cfg = load_config(path)
        folds_stage.main(cfg)
        train.train_fold(cfg, read_competition(cfg), 0)
        last = torch.load(cfg.run_dir / "fold0" / "last.pt", weights_only=True)
        heads.append((last["model"]["classifier.weight"], last["ema"]["model"]["classifier.weight"]))
        lines.append("(BatchNorm folded)" in capsys.readouterr().out)
    assert lines == [True, False]
    for folded, plain in zip(*heads):  # the weights and their EMA, up to float rounding
        assert torch.allclose(folded, plain, atol=1e-4)


def test_an_interrupt_between_best_pt_and_last_pt_cannot_separate_the_kept_weights_from_their_oof(
    tmp_path, comp, monkeypatch
):
    cfg, competition = _setup(tmp_path, comp, phases=[{"epochs": 2, "lr": 1e-2}])
    real_offer, real_save = epochs.offered, keep.save_state

    def each_epoch_better(run, row, probs, ema_probs):  # every epoch kept: best.pt written each time
        return float(row["epoch"]), "raw", probs

    def killed_after_best_of_epoch_1(run, epoch, *args, **kw):
        if epoch == 1:
            raise KeyboardInterrupt  # best.pt holds epoch 1; last.pt still epoch 0's, keeping epoch 0
        return real_save(run, epoch, *args, **kw)

    monkeypatch.setattr(epochs, "offered", each_epoch_better)
    monkeypatch.setattr(keep, "save_state", killed_after_best_of_epoch_1)
    with pytest.raises((KeyboardInterrupt, Interrupted)):
        train.train_fold(cfg, competition, 0)
    fold = cfg.run_dir / "fold0"
    first = torch.load(fold / "best.pt", weights_only=True)
    assert first["epoch"] == 1

    def rerun_scores_lower(run, row, probs, ema_probs):  # epoch 1 again, worse this time (a GPU's noise)
        return (float("-inf") if row["epoch"] == 1 else real_offer(run, row, probs, ema_probs)[0]), "raw", probs

    monkeypatch.setattr(epochs, "offered", rerun_scores_lower)
    monkeypatch.setattr(keep, "save_state", real_save)
    train.train_fold(cfg, competition, 0)
    best = torch.load(fold / "best.pt", weights_only=True)
    assert best["epoch"] == 1 and all(torch.equal(v, first["state_dict"][k]) for k, v in best["state_dict"].items())
    last = torch.load(fold / "last.pt", weights_only=True)
    assert last["kept"]["epoch"] == 1  # the record follows the weights best.pt holds
    oof = pd.read_csv(fold / "oof.csv")
    assert np.allclose(oof[["ants", "bees"]].to_numpy(), first["kept"]["probs"].numpy(), atol=1e-6)


def test_phases_run_in_order_with_sizes_and_lrs(tmp_path, comp, capsys):
    cfg, competition = _setup(
        tmp_path,
        comp,
        lr_ratio=10.0,
        phases=[
            {"epochs": 1, "lr": 1e-2, "frozen": True, "img_size": 24, "sched": "onecycle"},
            {"epochs": 2, "lr": 1e-3, "img_size": 32},
        ],
    )
    train.train_fold(cfg, competition, 0)
    hist = pd.read_csv(cfg.run_dir / "fold0" / "history.csv")
    assert hist.phase.tolist() == [0, 1, 1] and hist.img_size.tolist() == [24, 32, 32]
    assert hist.frozen.tolist() == [True, False, False]
    assert hist.lr_stem.iloc[1] == pytest.approx(1e-4) and hist.lr_head.iloc[1] == pytest.approx(1e-3)
    out = capsys.readouterr().out
    assert "peak lr by layer group (stem to head): 1.00e-04" in out and "1.00e-03" in out
    assert (cfg.run_dir / "fold0" / "curves.png").stat().st_size > 1000


RANDOM_TRANSFORMS = {
    "transforms": [{"name": "Affine", "rotate": [-30, 30]}, {"name": "GaussNoise", "p": 0.5}],
    "policy": "trivial",
    "random_erasing": 0.5,
}


MARGIN_HEAD = {"head": "subcenter_arcface", "global_pool": "gem", "embedding_size": 8}


@pytest.mark.parametrize(
    "dies_in, aug, model",
    [(2, {}, None), (4, {}, None), (4, RANDOM_TRANSFORMS, None), (4, {}, MARGIN_HEAD)],
    ids=["inside-onecycle-phase", "inside-cosine-phase", "with-random-transforms", "with-a-margin-head"],
)
def test_killed_run_resumes_to_the_same_end(tmp_path, comp, monkeypatch, dies_in, aug, model):
    phases = [
        {"epochs": 3, "lr": 1e-2, "frozen": True, "sched": "onecycle"},
        {"epochs": 2, "lr": 1e-3, "img_size": 24, "warmup_epochs": 0.5},
    ]
    ref_cfg, competition = _setup(tmp_path, comp, name="ref", model=model, phases=phases, aug=aug)
    train.train_fold(ref_cfg, competition, 0)
    cfg, _ = _setup(tmp_path, comp, name="killed", model=model, phases=phases, aug=aug)

    real, calls, killed = loop.train_one_epoch, [], []

    def dies(*args, **kw):
        calls.append(1)
        if len(calls) == dies_in and not killed:
            killed.append(1)
            raise KeyboardInterrupt  # as a kill in the middle of that epoch
        return real(*args, **kw)

    monkeypatch.setattr(loop, "train_one_epoch", dies)
    with pytest.raises(Interrupted, match="fold 0 stopped after epoch"):  # the one line Ctrl-C prints
        train.train_fold(cfg, competition, 0)
    out = cfg.run_dir / "fold0"
    assert not (out / "oof.csv").exists()
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == dies_in - 2

    calls.clear()
    train.train_fold(cfg, competition, 0)
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
    train.train_fold(cfg, competition, 0)  # finished: not retrained
    assert calls == []


def test_changed_config_does_not_resume(tmp_path, comp, capsys):
    cfg, competition = _setup(tmp_path, comp, phases=[{"epochs": 1, "lr": 1e-3}])
    train.train_fold(cfg, competition, 0)
    cfg, competition = _setup(tmp_path, comp, phases=[{"epochs": 2, "lr": 1e-3}])
    train.train_fold(cfg, competition, 0)
    assert "resuming" not in capsys.readouterr().out
    assert pd.read_csv(cfg.run_dir / "fold0" / "history.csv").epoch.tolist() == [0, 1]


def test_accumulation_updates_once_per_k_batches(tmp_path, comp, monkeypatch):
    cfg, competition = _setup(
        tmp_path, comp, accum_steps=3, batch_size=4, phases=[{"epochs": 1, "lr": 1e-3, "sched": "constant"}]
    )
    steps = []
    monkeypatch.setattr(optim.PhaseSchedule, "step", lambda self: steps.append(1))
    train.train_fold(cfg, competition, 0)
    assert len(steps) == 2  # 16 training images = 4 batches of 4: updates after batches 3 and 4


def test_progressive_resizing_refused_for_fixed_size_models(tmp_path, comp):
    path = make_config(
        tmp_path,
        comp,
        model={"backbone": "test_vit", "img_size": 32},
        train={"phases": [{"epochs": 1, "lr": 1e-3, "img_size": 24}]},
    )
    cfg = load_config(path)
    folds_stage.main(cfg)
    with pytest.raises(PipelineError, match=r"train.phases.0.img_size: test_vit has a fixed input size"):
        train.train_fold(cfg, read_competition(cfg), 0)


# ----------------------------------------------------------------------------- imbalance


@pytest.mark.parametrize("sampling", ["oversample", "weighted"])
def test_oversampling_balances_training_and_never_touches_validation(tmp_path, sampling):
    comp = make_competition(tmp_path / "imb", n_train=44, counts={"ants": 40, "bees": 4})
    cfg, competition = _setup(tmp_path, comp, sampling=sampling)
    for k in (0, 1):
        run = build(cfg, competition, k)
        dl = loaders.phase_loader(run, 0)
        valid_paths = {p.name for p in loaders.valid_loader(run.spec)[0].dataset.paths}
        ds = dl.dataset
        assert not {p.name for p in ds.paths} & valid_paths
        drawn = ds.targets if sampling == "oversample" else ds.targets[[i for i, _ in dl.sampler]]
        counts = np.bincount(drawn, minlength=2)
        assert counts.sum() == 40 and (counts[1] == 20 if sampling == "oversample" else counts[1] > 10)


def _minority_recall(cfg, competition) -> float:
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


def _killed_in_its_second_epoch(cfg, competition, monkeypatch) -> None:
    killed_in_epoch(cfg, competition, monkeypatch, 2)


def test_a_key_added_at_its_default_still_resumes(tmp_path, comp, monkeypatch, capsys):
    """last.pt records the train settings; one written before a key existed resumes all the same."""
    cfg, competition = _setup(tmp_path, comp, phases=[{"epochs": 2, "lr": 1e-3}])
    _killed_in_its_second_epoch(cfg, competition, monkeypatch)
    last = cfg.run_dir / "fold0" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["settings"] = {k: v for k, v in state["settings"].items() if not k.startswith("train.aug.")}
    torch.save(state, last)
    train.train_fold(cfg, competition, 0)
    assert "resuming after epoch 0" in capsys.readouterr().out
    state["settings"]["train.label_smoothing"] = 0.3  # a value the run did not use: start over
    torch.save(state, last)
    train.train_fold(cfg, competition, 0)
    assert "resuming" not in capsys.readouterr().out


def test_a_fold_left_half_done_by_an_earlier_release_is_refused_in_one_line(tmp_path, comp, monkeypatch):
    cfg, competition = _setup(tmp_path, comp, phases=[{"epochs": 2, "lr": 1e-3}])
    _killed_in_its_second_epoch(cfg, competition, monkeypatch)
    last = cfg.run_dir / "fold0" / "last.pt"
    state = torch.load(last, weights_only=True)
    # that release's last.pt: a fingerprint of the train sections' YAML and the rows, "best" for "kept"
    old = {k: v for k, v in state.items() if k not in ("settings", "data", "digest", "kept")}
    old.update(fingerprint="0" * 16, best=state["kept"])
    torch.save(old, last)
    refused = r"last.pt: written by an earlier release.*delete .*fold0/ and run make train"
    with pytest.raises(PipelineError, match=refused):
        train.train_fold(cfg, competition, 0)


def test_multilabel_folds_give_per_label_probabilities(multilabel):
    _, _, cfg = multilabel
    oof = pd.read_csv(cfg.run_dir / "fold0" / "oof.csv")
    assert list(oof.columns) == ["image_id", "fold", "tags"] + COLOURS
    p = oof[COLOURS].to_numpy()
    assert ((p >= 0) & (p <= 1)).all() and not np.allclose(p.sum(1), 1)  # sigmoids, not a softmax
    assert np.isfinite(pd.read_csv(cfg.run_dir / "fold0" / "history.csv").valid_loss).all()


def test_training_on_soft_pseudo_labels_runs(round1):
    tmp, comp, _ = round1
    pseudo.main(neg_config(tmp, comp, name="a", pseudo={"threshold": 0.0, "soft": True}))
    b = neg_config(tmp, comp, name="b2", train={"pseudo_labels_from": str(tmp / "a.yaml")})
    train.main(b, fold=0)
    assert np.isfinite(pd.read_csv(b.run_dir / "fold0" / "history.csv").train_loss).all()


def test_head_only_phases_validate_from_features_computed_once(tmp_path, comp):
    cfg, competition = _setup(tmp_path, comp, phases=[{"epochs": 1, "lr": 1e-2, "frozen": True}])
    run = build(cfg, competition, 0)
    optim.set_frozen(run.state.model, True)
    valid_dl, _ = loaders.valid_loader(run.spec)
    pooled = keep.pooled_features(run, valid_dl)
    assert pooled is not None and len(pooled) == len(valid_dl.dataset)
    with torch.no_grad():  # the classifier moves; the features stay valid
        run.state.model.get_classifier().weight.add_(0.5)
    assert np.allclose(keep.validate(run, valid_dl, pooled), keep.validate(run, valid_dl), atol=1e-5)


def test_clipping_bounds_the_gradient_norm():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    norms = []
    opt.register_step_pre_hook(
        lambda *_: norms.append(torch.norm(torch.stack([p.grad.norm() for p in net.parameters()])).item())
    )
    loader = [(torch.randn(4, 3, 2, 2) * 100, torch.tensor([0, 1, 0, 1])) for _ in range(3)]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    rt = Runtime(channels_last=False)
    loss = torch.nn.CrossEntropyLoss()
    loop.train_one_epoch(net, loader, opt, sched, engine.grad_scaler(CPU, rt), loss, CPU, rt, 1, False, clip=0.01)
    assert len(norms) == 3 and max(norms) <= 0.01 + 1e-6
    norms.clear()
    loop.train_one_epoch(net, loader, opt, sched, engine.grad_scaler(CPU, rt), loss, CPU, rt, 1, False)
    assert max(norms) > 0.01  # the same batches unclipped: the bound above was the clipping's


def test_a_fold_trains_with_focal_loss_and_clipping(tmp_path, comp):
    cfg, competition = _setup(tmp_path, comp, loss="focal", focal_gamma=1.5, clip_grad_norm=1.0)
    assert isinstance(make_loss(cfg), FocalLoss)
    train.train_fold(cfg, competition, 0)
    hist = pd.read_csv(cfg.run_dir / "fold0" / "history.csv")
    assert len(hist) == 2 and np.isfinite(hist.train_loss).all()


def test_a_finished_fold_rebuilds_what_is_lost_and_skips_otherwise(tmp_path, comp, capsys):
    """best.pt gone (with its oof.csv): the fold trains again; only oof.csv gone: rewritten from
    last.pt with the same probabilities; both there: skipped."""
    cfg = load_config(make_config(tmp_path, comp, train={"phases": [{"epochs": 1, "lr": 1e-3}], "batch_size": 8}))
    folds_stage.main(cfg)
    competition = read_competition(cfg)
    train.train_fold(cfg, competition, 0)
    fold = cfg.run_dir / "fold0"
    oof = (fold / "oof.csv").read_text()
    (fold / "oof.csv").unlink()
    capsys.readouterr()
    train.train_fold(cfg, competition, 0)
    assert (fold / "oof.csv").read_text() == oof and "training the fold again" not in capsys.readouterr().out
    (fold / "best.pt").unlink()
    (fold / "oof.csv").unlink()
    train.train_fold(cfg, competition, 0)
    assert "best.pt is missing or damaged; training the fold again" in capsys.readouterr().out
    assert (fold / "best.pt").is_file() and (fold / "oof.csv").read_text() == oof
    train.train_fold(cfg, competition, 0)
    assert "already trained" in capsys.readouterr().out


# ----------------------------------------------------------------------------- a number


def _number_setup(tmp_path, **train_keys):
    from helpers import make_numbers, number_config

    comp = make_numbers(tmp_path / "num", n_train=60)
    train_csv = pd.read_csv(comp / "train.csv")
    train_csv["score"] = np.where(np.arange(60) < 50, 1.0, 9.0) + np.arange(60) / 100  # 50 low, 10 high
    train_csv.to_csv(comp / "train.csv", index=False)
    cfg = load_config(number_config(tmp_path, comp, train=train_keys, model={"y_range": "auto"}))
    folds_stage.main(cfg)
    return cfg, read_competition(cfg)


@pytest.mark.parametrize("sampling", ["oversample", "weighted"])
def test_a_number_is_balanced_by_its_bins_and_its_targets_are_normalised(tmp_path, sampling):
    cfg, competition = _number_setup(tmp_path, sampling=sampling, batch_size=8)
    run = build(cfg, competition, 0)
    dl = loaders.phase_loader(run, 0)
    ds = dl.dataset
    scale = run.spec.scale
    values = scale.a + (scale.b - scale.a) * ds.targets  # back to target units
    drawn = values if sampling == "oversample" else values[[i for i, _ in dl.sampler]]
    high = (drawn > 5).mean()
    assert high > 0.25  # the rare high values drawn far more than their 1 in 6 (every bin equally often)
    assert ds.targets.dtype.kind == "f" and ds.targets.min() > 0 and ds.targets.max() < 1  # y_range auto
    assert isinstance(ds[0][1], torch.Tensor) and ds[0][1].dtype == torch.float32


def test_a_number_trains_with_every_trick_that_means_something_for_it(tmp_path):
    cfg, competition = _number_setup(
        tmp_path,
        phases=[{"epochs": 1, "lr": 1e-2, "frozen": True}, {"epochs": 2, "lr": 3e-3}],
        ema={"decay": 0.9},
        swa={"epochs": 2},
        mixup={"mixup_alpha": 0.4, "cutmix_alpha": 1.0},
        rdrop=1.0,
        fgm={"target": "input", "epsilon": 0.1},
        clip_grad_norm=1.0,
        accum_steps=2,
        loss="smooth_l1",
        monitor="metric",
    )
    train.train_fold(cfg, competition, 0)
    hist = pd.read_csv(cfg.run_dir / "fold0" / "history.csv")
    assert np.isfinite(hist.train_loss.iloc[:-1]).all() and np.isfinite(hist.valid_rmse).all()
    assert {"ema_valid_loss", "ema_valid_rmse"} <= set(hist.columns) and hist.weights.iloc[-1] == "swa"
    oof = pd.read_csv(cfg.run_dir / "fold0" / "oof.csv")
    assert np.isfinite(oof.prediction).all() and list(oof.columns) == ["image_id", "fold", "score", "prediction"]


def test_monitor_metric_keeps_the_epoch_with_the_lowest_rmse(tmp_path):
    cfg, competition = _number_setup(tmp_path, phases=[{"epochs": 4, "lr": 3e-2}], monitor="metric")
    train.train_fold(cfg, competition, 0)
    hist = pd.read_csv(cfg.run_dir / "fold0" / "history.csv")
    kept = torch.load(cfg.run_dir / "fold0" / "best.pt", weights_only=True)["epoch"]
    assert kept == int(hist.valid_rmse.idxmin())


def test_the_estimate_scales_the_timed_phase_to_the_rest_of_the_fold_and_the_run(tmp_path, comp):
    phases = [{"epochs": 1, "lr": 1e-2, "frozen": True}, {"epochs": 2, "lr": 1e-3}]  # both at DC's size
    cfg = load_config(make_config(tmp_path, comp, train={"phases": phases}))
    folds = pd.DataFrame({"fold": [0] * 50 + [1] * 100})
    spec = types.SimpleNamespace(
        cfg=cfg, valid_rows=folds[folds.fold == 0], fold=0, final_dc=DC, folds_after=4, folds_bn=True
    )
    timer = clock.Clock(spec, 0, 0, steps=10, images=100)
    # head-only at 100 img/s: 1 s of steps and 0.5 s of validation an epoch; every layer 4.8x that per
    # image (ALL_LAYERS_COST, BatchNorm folded), validation a third of it: 5.6 s; the fold 1.5 + 2 * 5.6 = 12.7 s
    line = timer.estimate(100.0)
    assert "100 img/s" in line and "an epoch takes about 2 s" in line
    assert "the rest of the fold 13 s" in line and "the rest of the run 64 s (4 more folds)" in line
    later = clock.Clock(spec, 1, 2, steps=10, images=100).estimate(25.0)  # the last epoch, timed itself
    assert "an epoch takes about 5 s" in later and "the rest of the fold 5 s" in later
    assert clock.duration(30) == "30 s" and clock.duration(600) == "10 min" and clock.duration(9000) == "2.5 h"


def test_the_rows_digest_is_the_one_the_release_before_recorded(tmp_path, comp):
    """last.pt's rows digest is hashed from the text fb07cf1 hashed, so its half-done folds resume."""
    cfg, competition = _setup(tmp_path, comp, phases=[{"epochs": 1, "lr": 1e-3}])
    spec = build(cfg, competition, 0).spec
    text = competition.folds.to_csv(index=False) + np.array2string(spec.extra.targets, threshold=np.inf)
    assert spec.made_with["data"] == hashlib.sha256(text.encode()).hexdigest()[:16]
