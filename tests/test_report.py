"""pipeline/stages/report.py: one self-contained page, every image embedded and drawable, as
headless Chromium shows it."""

import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from helpers import embedded_images, make_competition, make_config, run_chain

from pipeline.config_files import load_config
from pipeline.stages import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Added to a copy of the page: once it has loaded, each image's state as the browser decoded it
# (a broken image is complete with a natural size of 0x0).
PROBE = """<script>addEventListener("load", () => {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = [...document.images].map(i => `${i.complete} ${i.naturalWidth}x${i.naturalHeight}`).join(";");
  document.body.append(out);
});</script>"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny experiment, trained and inferred, and its report."""
    tmp = tmp_path_factory.mktemp("report")
    cfg = run_chain(load_config(make_config(tmp, make_competition(tmp / "comp"))))
    return cfg, report.main(cfg)


def drawn_by_chromium(page: str, tmp_path) -> list[str]:
    """'complete WxH' of each image of the page as headless Chromium loads it from a file."""
    path = tmp_path / "probed.html"
    path.write_text(page.replace("</body>", PROBE + "</body>"))
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom", path.as_uri()]
    res = subprocess.run([CHROMIUM, *args], capture_output=True, text=True, timeout=300)
    found = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert found, f"chromium showed no page: {res.stderr[-2000:]}"
    return found.group(1).split(";")


def test_report_of_a_tiny_run(tiny):
    cfg, page = tiny
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


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("REQUIRE_CHROMIUM"), reason="no chromium (.ci/run installs it)"
)
def test_headless_chromium_draws_every_image_of_the_report(tiny, tmp_path):
    assert CHROMIUM, "REQUIRE_CHROMIUM is set but chromium is not installed"
    _, page = tiny
    images = embedded_images(page)  # each an inline PNG that decodes, not one flat colour
    assert all(np.asarray(i.convert("L")).std() > 1 for i in images)
    assert drawn_by_chromium(page, tmp_path) == [f"true {i.width}x{i.height}" for i in images]
    broken = page.replace(page[page.index("base64,") + 7 :][:40], "AAAA", 1)  # a damaged PNG: drawn as broken
    assert drawn_by_chromium(broken, tmp_path)[0] == "true 0x0"


@pytest.mark.parametrize("task", ["regression", "ordinal"])
def test_a_numbers_report_shows_predicted_against_true_and_the_largest_errors(numbers, task):
    _, _, cfg, _ = numbers[task]
    page = report.main(cfg)
    for heading in (f"CV ({cfg.metric})", "TTA", "Training curves", "Errors (OOF)", "Config"):
        assert f"<h2>{heading}</h2>" in page
    assert "<h3>Error by target range</h3>" in page and "confusion" not in page
    assert ("<h2>Cut-points</h2>" in page) == (task == "ordinal")
    oof = pd.read_csv(cfg.run_dir / "oof.csv")
    images = embedded_images(page)
    lr_plot = (cfg.run_dir / "lr_find.png").is_file()  # when test_lr_find ran on this run first
    assert len(images) == 2 + lr_plot + 1 + min(len(oof), report.WRONG)  # curves, the scatter, the largest errors
    worst = (oof.prediction - oof.score).abs().idxmax()  # the first thumbnail: the largest error, captioned
    assert f"{oof.image_id[worst]}<br>true {oof.score[worst]:.4g}<br>predicted {oof.prediction[worst]:.4g}" in page
    table = report.error_by_range(oof.score.to_numpy(float), oof.prediction.to_numpy(float))
    assert table.images.sum() == len(oof) and (table["true from"].diff().dropna() > 0).all()
    low = oof[oof.score <= table["true to"].iloc[0]]  # the lowest bin, by hand
    assert table.bias.iloc[0] == pytest.approx((low.prediction - low.score).mean())
    assert table.rmse.iloc[0] == pytest.approx(np.sqrt(((low.prediction - low.score) ** 2).mean()))


def test_at_a_hundred_classes_the_matrix_shows_the_classes_with_the_most_errors():
    n = 101
    classes = [f"c{i:03d}" for i in range(n)]
    cm = np.diag(np.full(n, 10))
    cm[7, 50], cm[60, 3] = 4, 2  # class 7 taken for 50, 60 for 3: the four classes with errors
    shown, names, title = report.confusion_view(cm, classes)
    assert shown.shape == (report.MATRIX_CLASSES,) * 2 and "of 101" in title
    assert {"c003", "c007", "c050", "c060"} <= set(names) and names == sorted(names)
    assert shown[names.index("c007"), names.index("c050")] == 4 and shown.sum() == 10 * 25 + 6
    small, few, _ = report.confusion_view(cm[:5, :5], classes[:5])
    assert few == classes[:5] and (small == cm[:5, :5]).all()


def test_a_retrieval_report_shows_wrong_queries_beside_their_guesses(identification):
    _, _, cfg = identification
    page = report.main(cfg)
    assert "Retrieval (OOF)" in page and "cross-fitted" in page
    queries = page.count("query ")
    assert queries >= 1 and len(embedded_images(page)) >= 2 * queries  # a query and at least one guess each
    assert "map@5" in page
