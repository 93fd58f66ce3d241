"""pipeline/stages/report.py: one self-contained page, every image embedded and drawable."""

import numpy as np
import pandas as pd
from helpers import embedded_images, make_config, run_chain

from pipeline.config_files import load_config
from pipeline.stages import report


def test_report_of_a_tiny_run(tmp_path, comp):
    cfg = run_chain(load_config(make_config(tmp_path, comp)))
    page = report.main(cfg)
    assert (cfg.run_dir / "report.html").read_text() == page
    for heading in ("CV (accuracy)", "TTA", "Training curves", "Errors (OOF)", "Config"):
        assert f"<h2>{heading}</h2>" in page
    images = embedded_images(page)
    oof = pd.read_csv(cfg.run_dir / "oof.csv")
    wrong = int((oof[["ants", "bees"]].to_numpy().argmax(1) != (oof.label == "bees").to_numpy()).sum())
    assert len(images) == 2 + 1 + min(wrong, report.WRONG)  # two folds' curves, the confusion matrix, thumbnails
    for img in images:  # actually drawn: not one flat colour
        assert np.asarray(img.convert("L")).std() > 1
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched when it opens


def test_multilabel_report_has_no_confusion_matrix(multilabel):
    _, _, cfg = multilabel
    page = report.main(cfg)
    assert "Errors (OOF)" not in page and "CV (f1_macro)" in page
    assert len(embedded_images(page)) == cfg.folds.n_folds
