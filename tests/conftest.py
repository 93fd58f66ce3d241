"""Shared fixtures: a tiny synthetic competition laid out like a Kaggle one, and configs for it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_competition(root: Path, n_train: int = 32, n_test: int = 10, classes=("ants", "bees"),
                     size: int = 40, seed: int = 0, groups: bool = False, counts: dict | None = None,
                     noise: int = 80) -> Path:
    """Images whose class is their dominant colour (learnable at 32 px), in train/ and test/.
    counts: images per class (imbalanced sets); noise: the random level under the colour."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)

    def draw(path: Path, k: int) -> None:
        img = rng.integers(0, noise, (size, size + 8, 3)).astype(np.int32)
        img[..., k % 3] += 150
        img = np.clip(img, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(path, quality=95)

    labels = [classes[i % len(classes)] for i in range(n_train)]
    if counts:
        labels = list(rng.permutation([c for c, n in counts.items() for _ in range(n)]))
        n_train = len(labels)
    train = pd.DataFrame({"image_id": [f"tr{i:03d}" for i in range(n_train)], "label": labels})
    if groups:
        train["group"] = [f"g{i // 2}" for i in range(n_train)]
    for i, row in train.iterrows():
        draw(root / "train" / f"{row.image_id}.jpg", classes.index(row.label))
    test_ids = [f"te{i:03d}" for i in range(n_test)]
    for i, tid in enumerate(test_ids):
        draw(root / "test" / f"{tid}.jpg", i % len(classes))
    train.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_id": test_ids, "label": classes[0]}).to_csv(root / "sample_submission.csv",
                                                                      index=False)
    return root


def make_config(tmp_path: Path, comp: Path, name: str = "tiny", **sections) -> Path:
    """A config for the tiny competition with a tiny timm test model; sections override keys."""
    doc = {
        "name": name,
        "runs_dir": str(tmp_path / "runs"),
        "data": {"root": str(comp)},
        "model": {"backbone": "test_efficientnet", "pretrained": "none", "img_size": 32},
        "train": {"phases": [{"epochs": 2, "lr": 3e-3}], "batch_size": 8},
        "folds": {"n_folds": 2, "seed": 0, "dir": str(tmp_path / "folds")},
        "infer": {"batch_size": 16},
    }
    for section, values in sections.items():
        doc[section] = {**doc.get(section, {}), **values} if isinstance(values, dict) else values
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def comp(tmp_path: Path) -> Path:
    return make_competition(tmp_path / "comp")


def run_chain(cfg, infer: bool = True):
    """folds -> train (-> infer) in this process, with the run's config.yaml written as the
    command line writes it (ensemble reads it)."""
    from pipeline import folds, train
    from pipeline import infer as infer_stage
    from pipeline.config import write_stamps

    write_stamps(cfg)
    folds.main(cfg)
    train.main(cfg)
    if infer:
        infer_stage.main(cfg)
    return cfg
