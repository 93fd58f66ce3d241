"""Fixtures. The trained ones are made once per session and shared: a test that needs a doctored
file writes it somewhere of its own (another experiment, another folds dir), never over theirs."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    make_competition,
    make_config,
    make_individuals,
    make_multilabel,
    make_numbers,
    make_started,
    neg_competition,
    neg_config,
    number_config,
    retrieval_config,
    run_chain,
)

from pipeline.config_files import load_config


@pytest.fixture
def comp(tmp_path: Path) -> Path:
    """A fresh two-class competition (32 training images, 10 test) for this test alone."""
    return make_competition(tmp_path / "comp")


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny experiment, trained (not inferred); each test infers it with its own settings."""
    tmp = tmp_path_factory.mktemp("trained")
    comp = make_competition(tmp / "comp")
    run_chain(load_config(make_config(tmp, comp)), infer=False)
    return tmp, comp


@pytest.fixture(scope="session")
def round1(tmp_path_factory):
    """Experiment a of a detector's competition: trained on the positives and 40% of the
    negatives, then inferred; mining and pseudo-labelling start from it."""
    tmp = tmp_path_factory.mktemp("round1")
    comp = neg_competition(tmp / "comp")
    return tmp, comp, run_chain(neg_config(tmp, comp))


@pytest.fixture(scope="session")
def multilabel(tmp_path_factory):
    """A multi-label experiment (red, green, blue), trained and inferred."""
    tmp = tmp_path_factory.mktemp("ml")
    comp = make_multilabel(tmp / "comp")
    cfg = load_config(
        make_config(
            tmp,
            comp,
            name="ml",
            metric="f1_macro",
            data={
                "root": str(comp),
                "label_col": "tags",
                "task": "multilabel",
                "train_images": "train/{id}.png",
                "test_images": "test/{id}.png",
            },
            train={"phases": [{"epochs": 3, "lr": 1e-2}], "batch_size": 8},
            infer={"batch_size": 16, "tta": {"flips": ["hflip"], "merge": "gmean"}},
        )
    )
    return tmp, comp, run_chain(cfg)


@pytest.fixture(scope="session")
def numbers(tmp_path_factory):
    """A tiny regression and a tiny ordinal competition, each through Make end to end (make
    ensemble: folds, train, infer, the submission), the two at once as two terminals would:
    {task: (tmp, comp, cfg, make's output)}."""
    started = {}
    for task in ("regression", "ordinal"):
        tmp = tmp_path_factory.mktemp(task)
        comp = make_numbers(tmp / "comp", ordinal=task == "ordinal")
        config = number_config(tmp, comp, name=task, task=task)
        started[task] = (tmp, comp, config, make_started("ensemble", f"CONFIG={config}", f"SUBMISSIONS={tmp / 'subs'}"))
    out = {}
    for task, (tmp, comp, config, proc) in started.items():
        stdout, stderr = proc.communicate()
        assert proc.returncode == 0, stdout + stderr
        out[task] = (tmp, comp, load_config(config), stdout)
    return out


@pytest.fixture(scope="session")
def identification(tmp_path_factory):
    """An identification experiment (data.task retrieval, an ArcFace head): folds, trained and
    inferred; (tmp, comp, cfg)."""
    tmp = tmp_path_factory.mktemp("retrieval")
    comp = make_individuals(tmp / "comp")
    return tmp, comp, run_chain(load_config(retrieval_config(tmp, comp)))
