"""pipeline/stages/show_batch.py: make show-batch, the training images as the model gets them."""

import numpy as np
from helpers import make, make_config
from PIL import Image

from pipeline.competition import read_competition
from pipeline.config_files import load_config
from pipeline.runs import RunDir
from pipeline.stages import folds as folds_stage
from pipeline.stages import report, show_batch, train
from pipeline.training import loop
from pipeline.training.fold import build

AUG = {
    "transforms": [{"name": "Affine", "rotate": [-30, 30], "p": 0.8}, {"name": "GaussNoise", "p": 0.5}],
    "policy": "trivial",
    "random_erasing": 0.5,
}


def test_the_grid_holds_what_training_feeds_the_model_in_each_phases_first_batch(tmp_path, comp, monkeypatch):
    phases = [{"epochs": 1, "lr": 1e-2}, {"epochs": 1, "lr": 1e-3, "img_size": 24}]
    path = make_config(
        tmp_path, comp, train={"phases": phases, "batch_size": 8, "aug": AUG}, infer={"tta": {"flips": ["hflip"]}}
    )
    cfg = load_config(path)
    folds_stage.main(cfg)
    competition = read_competition(cfg)
    run = build(cfg, competition, 0)
    shown = [show_batch.phase_batch(run, p) for p in (0, 1)]

    fed, real = [], loop.forward_backward

    def spy(model, x, y, *args, **kw):  # the batch the model trains on: normalised, erased
        fed.append((x.detach().clone(), y.clone()))
        return real(model, x, y, *args, **kw)

    monkeypatch.setattr(loop, "forward_backward", spy)
    train.train_fold(cfg, competition, 0)
    per_epoch = len(fed) // 2
    for p, (images, labels) in enumerate(shown):
        x, y = fed[p * per_epoch]  # each phase's first batch
        assert np.array_equal(show_batch.shown(x, run.spec.final_dc), images[: len(x)])
        assert labels[: len(y)] == [run.spec.classes[int(v)] for v in y]
    assert shown[0][0].shape[1:] == (32, 32, 3) and shown[1][0].shape[1:] == (24, 24, 3)

    show_batch.main(cfg)
    png = RunDir(cfg.run_dir).batch
    assert np.asarray(Image.open(png).convert("L")).std() > 1
    assert "What the model sees" in report.curves_section(cfg, RunDir(cfg.run_dir))
    assert "pipeline show_batch" in make("-n", "show-batch", f"CONFIG={path}").stdout  # Make knows the stage
    assert len(show_batch.tta_views(cfg, run)) == 2  # the plain view and its flip


def test_a_numbers_batch_is_labelled_in_the_targets_units(tmp_path):
    from helpers import make_numbers, number_config

    comp = make_numbers(tmp_path / "comp")
    cfg = load_config(number_config(tmp_path, comp))
    folds_stage.main(cfg)
    competition = read_competition(cfg)
    folds = competition.folds
    run = build(cfg, competition, 0)
    _, labels = show_batch.phase_batch(run, 0)
    values = {float(v) for v in folds.loc[folds.fold != 0, "score"]}
    assert all(any(abs(float(s) - v) < 1e-3 for v in values) for s in labels)
