"""pipeline/calibrate.py: temperature scaling fitted on OOF predictions, in infer and ensemble."""

import json

import numpy as np
import pytest
from helpers import fake_run, probs

from pipeline import calibrate
from pipeline.errors import PipelineError
from pipeline.metrics import log_loss
from pipeline.stages import ensemble, infer


def _predictions(n=400, k=4, sharpness=1.0, seed=0):
    """Probabilities whose true class is drawn from softmax(logits), then sharpened or softened:
    sharpness < 1 under-confident (as label smoothing leaves them), > 1 over-confident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, k))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return y, calibrate.scaled(p, 1 / sharpness)


@pytest.mark.parametrize("sharpness, side", [(0.5, "below"), (2.0, "above"), (1.0, "near")])
def test_temperature_never_raises_the_log_loss_and_keeps_the_classes(sharpness, side):
    y, p = _predictions(sharpness=sharpness)
    t = calibrate.fit_temperature(y, p)
    after = calibrate.scaled(p, t)
    assert log_loss(y, after) <= log_loss(y, p) + 1e-12
    assert (after.argmax(1) == p.argmax(1)).all()
    assert {"below": t < 0.8, "above": t > 1.5, "near": 0.8 < t < 1.25}[side]


def test_multilabel_temperature_keeps_each_label_on_its_side():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 3)) < 0.5).astype(float)
    p = np.clip(0.5 + (y - 0.5) * rng.uniform(0.05, 0.3, y.shape) + rng.normal(0, 0.1, y.shape), 0.01, 0.99)
    t = calibrate.fit_temperature(y, p, multilabel=True)
    after = calibrate.scaled(p, t, multilabel=True)
    assert t < 1 and log_loss(y, after) < log_loss(y, p)
    assert ((after >= 0.5) == (p >= 0.5)).all()


def test_cross_fitting_scales_each_fold_by_the_other_folds_temperature():
    y, p = _predictions(sharpness=0.5)
    folds = np.arange(len(y)) % 4
    oof, test, report = calibrate.calibrate(y, p, p[:10], folds)
    assert report["applied"] and report["oof_log_loss_after"] < report["oof_log_loss_before"]
    for k, t in report["fold_temperatures"].items():
        assert t == pytest.approx(calibrate.fit_temperature(y[folds != k], p[folds != k]))
        assert np.allclose(oof[folds == k], calibrate.scaled(p[folds == k], t))
    assert np.allclose(test, calibrate.scaled(p[:10], report["temperature"]))


def test_calibration_is_on_by_default_for_log_loss_only():
    assert calibrate.wanted("auto", "log_loss") and not calibrate.wanted("auto", "accuracy")
    assert calibrate.wanted("on", "accuracy") and not calibrate.wanted("off", "log_loss")


def test_infer_calibrates_a_log_loss_competition(trained, capsys):
    from helpers import make_config

    from pipeline.config_files import load_config

    tmp, comp = trained
    cfg = load_config(make_config(tmp, comp, metric="log_loss"))
    infer.main(cfg)
    report = json.loads((cfg.run_dir / "calibration.json").read_text())
    assert report["oof_log_loss_after"] <= report["oof_log_loss_before"] or not report["applied"]
    assert "calibration: temperature" in capsys.readouterr().out
    infer.main(load_config(make_config(tmp, comp, metric="accuracy")))
    assert not (cfg.run_dir / "calibration.json").exists()  # off for accuracy: no stale report


def test_a_log_loss_ensemble_offers_only_probability_methods(tmp_path, comp, capsys):
    y_first = np.array([0.8 if i % 2 == 0 else 0.3 for i in range(32)])
    a = fake_run(tmp_path, comp, "a", probs(10, 0.6), probs(32, y_first))
    b = fake_run(tmp_path, comp, "b", probs(10, 0.7), probs(32, np.clip(y_first + 0.1, 0, 1)))
    ensemble.main([a, b], name="ll", out_dir=tmp_path / "subs", metric="log_loss")
    out = capsys.readouterr().out
    assert "ensemble: mean" in out and "ensemble: rank" not in out and "ensemble: vote" not in out
    assert "calibration: temperature" in out
    saved = json.loads((tmp_path / "subs" / "ll.json").read_text())
    assert saved["calibration"]["temperature"] > 0 and set(saved["cv"]) >= {"a", "b", "ensemble: mean"}
    with pytest.raises(PipelineError, match="ensemble method rank: metric log_loss needs probabilities"):
        ensemble.main([a, b], name="r", out_dir=tmp_path / "subs", method="rank", metric="log_loss")
    ensemble.main([a, b], name="acc", out_dir=tmp_path / "subs", metric="accuracy")
    assert "ensemble: rank" in capsys.readouterr().out  # other metrics keep every method
