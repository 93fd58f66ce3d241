"""What tests share (fixtures are in conftest.py): tiny synthetic competitions laid out like
Kaggle's, configs for them, experiments run or faked, Make run from the project root, and an
image-like environment for offline bundles (bench/bundle_check.py uses it too)."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

from pipeline.config_files import load_config, to_yaml
from pipeline.data import DataConfig
from pipeline.io import write_text
from pipeline.runs import RunDir

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
CLASSES = ["ants", "bees"]
COLOURS = ["blue", "green", "red"]  # the multi-label competition's labels, in class order
DC = DataConfig(size=32, mean=(0.5,) * 3, std=(0.25,) * 3, interpolation="bilinear", crop_pct=0.875)

# ----------------------------------------------------------------------------- competitions


def make_competition(
    root: Path,
    n_train: int = 32,
    n_test: int = 10,
    classes=("ants", "bees"),
    size: int = 40,
    seed: int = 0,
    groups: bool = False,
    counts: dict | None = None,
    noise: int = 80,
) -> Path:
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
    for _, row in train.iterrows():
        draw(root / "train" / f"{row.image_id}.jpg", classes.index(row.label))
    test_ids = [f"te{i:03d}" for i in range(n_test)]
    for i, tid in enumerate(test_ids):
        draw(root / "test" / f"{tid}.jpg", i % len(classes))
    train.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_id": test_ids, "label": classes[0]}).to_csv(root / "sample_submission.csv", index=False)
    return root


def make_multilabel(root, n_train=36, n_test=8, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)

    def draw(path):
        on = rng.random(3) < 0.5
        on[rng.integers(3)] = True  # at least one label
        img = rng.integers(0, 60, (40, 40, 3))
        img[..., on] += 170  # channel order r, g, b
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
        return " ".join(sorted(c for c, k in zip(["red", "green", "blue"], on) if k))

    train = pd.DataFrame({"image_id": [f"tr{i:03d}" for i in range(n_train)]})
    train["tags"] = [draw(root / "train" / f"{i}.png") for i in train.image_id]
    train.to_csv(root / "train.csv", index=False)
    test_ids = [f"te{i:03d}" for i in range(n_test)]
    for i in test_ids:
        draw(root / "test" / f"{i}.png")
    pd.DataFrame({"image_id": test_ids, "tags": "red"}).to_csv(root / "sample_submission.csv", index=False)
    return root


def make_individuals(root: Path, n_seen: int = 8, per: int = 3, n_new: int = 2, seed: int = 0) -> Path:
    """An identification set in Happywhale's layout: each individual a fixed pattern of coloured
    quarters (learnable at 32 px) under noise; `per` training images of each of `n_seen`, and in the
    test one more of each seen individual and `per` of each of `n_new` never in training. The sample
    holds `new_individual` per image; test_truth.csv beside it holds the answers."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    patterns = rng.integers(0, 3, (n_seen + n_new, 4))

    def draw(image: str, ind: int) -> None:
        img = rng.integers(0, 60, (40, 40, 3))
        for q, channel in enumerate(patterns[ind]):
            img[(q // 2) * 20 : (q // 2) * 20 + 20, (q % 2) * 20 : (q % 2) * 20 + 20, channel] += 180
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / f"{image}.jpg", quality=95)

    train = [(f"tr{ind:02d}{j}", f"ind{ind:02d}") for ind in range(n_seen) for j in range(per)]
    test = [(f"te{ind:02d}", f"ind{ind:02d}") for ind in range(n_seen)]
    test += [(f"te{ind:02d}{j}", f"ind{ind:02d}") for ind in range(n_seen, n_seen + n_new) for j in range(per)]
    for image, ind in train + test:
        draw(image, int(ind[3:]))
    pd.DataFrame(train, columns=["image", "whale"]).to_csv(root / "train.csv", index=False)
    truth = pd.DataFrame(test, columns=["image", "whale"])
    truth.loc[truth["whale"] >= f"ind{n_seen:02d}", "whale"] = "new_individual"
    truth.to_csv(root / "test_truth.csv", index=False)
    pd.DataFrame({"image": truth["image"], "predictions": "new_individual"}).to_csv(
        root / "sample_submission.csv", index=False
    )
    return root


def retrieval_config(tmp: Path, comp: Path, name: str = "ret", **sections) -> Path:
    """A config for make_individuals: an ArcFace head with GeM and a 16-wide neck, two folds."""
    base = {
        "metric": "map@5",
        "data": {"root": str(comp), "id_col": "image", "label_col": "whale", "task": "retrieval",
                 "train_images": "images/{id}.jpg", "test_images": "images/{id}.jpg"},
        "model": {"head": "arcface", "global_pool": "gem", "embedding_size": 16},
        "folds": {"new_share": 0.25},
        "train": {"phases": [{"epochs": 3, "lr": 1e-2}], "batch_size": 8},
        "infer": {"tta": {"flips": ["hflip"]}},
    }  # fmt: skip
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return make_config(tmp, comp, name=name, **base)


def make_numbers(root: Path, ordinal: bool = False, n_train: int = 40, n_test: int = 8, seed: int = 0) -> Path:
    """A number per image, learnable at 32 px: the image's brightness. Regression: a score in
    [0, 10] (one decimal); ordinal: grades 0..3. The sample holds a placeholder 0 per id."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)

    def draw(path: Path, level: float) -> None:
        img = rng.integers(0, 40, (40, 48, 3)) + int(level * 200)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=95)

    levels = rng.permutation(np.linspace(0, 1, n_train))
    values = [str(int(round(v * 3))) for v in levels] if ordinal else [f"{v * 10:.1f}" for v in levels]
    train = pd.DataFrame({"image_id": [f"tr{i:03d}" for i in range(n_train)], "score": values})
    for i, level in zip(train.image_id, levels):
        draw(root / "train" / f"{i}.jpg", level)
    test_ids = [f"te{i:03d}" for i in range(n_test)]
    for i, tid in enumerate(test_ids):
        draw(root / "test" / f"{tid}.jpg", i / max(1, n_test - 1))
    train.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"image_id": test_ids, "score": 0}).to_csv(root / "sample_submission.csv", index=False)
    return root


def number_config(tmp: Path, comp: Path, name: str = "num", task: str = "regression", **sections) -> Path:
    """A config for make_numbers' competition: a number from the tiny test model, 3 epochs."""
    base = {
        "data": {"root": str(comp), "label_col": "score", "task": task},
        "train": {"phases": [{"epochs": 3, "lr": 1e-2}], "batch_size": 8},
        "infer": {"batch_size": 16, "tta": {"flips": ["hflip"]}},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
    return make_config(tmp, comp, name=name, **base)


def neg_competition(root: Path) -> Path:
    """A detector's competition: 30 negatives, 10 positives, and a folder of 5 extra negatives."""
    comp = make_competition(root, classes=("neg", "pos"), counts={"neg": 30, "pos": 10})
    extra = comp / "extra_neg"
    extra.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(extra / f"x{i}.png")
    return comp


# ----------------------------------------------------------------------------- configs and runs


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
        "runtime": {"cache_dir": str(tmp_path / "cache")},
    }
    for section, values in sections.items():
        doc[section] = {**doc.get(section, {}), **values} if isinstance(values, dict) else values
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def neg_config(tmp: Path, comp: Path, name: str = "a", **sections):
    """A config for neg_competition: one epoch on every positive and 40% of the negatives."""
    base = {
        "data": {"root": str(comp), "negative_class": "neg"},
        "train": {"phases": [{"epochs": 1, "lr": 3e-3}], "batch_size": 8, "neg_fraction": 0.4},
        "infer": {"batch_size": 16, "tta": {"flips": []}},
    }
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return load_config(make_config(tmp, comp, name=name, **base))


def run_chain(cfg, infer: bool = True):
    """folds -> train (-> infer) in this process, with the run's config.yaml written as the
    command line writes it (ensemble reads it)."""
    from pipeline.stages import folds, train
    from pipeline.stages import infer as infer_stage

    write_text(RunDir(cfg.run_dir).config, to_yaml(cfg))
    folds.main(cfg)
    train.main(cfg)
    if infer:
        infer_stage.main(cfg)
    return cfg


def fake_run(tmp_path, comp, name, test_probs, oof_probs, classes=CLASSES):
    """A finished experiment folder as infer leaves it, with chosen probabilities."""
    cfg = load_config(make_config(tmp_path, comp, name=name))
    write_text(RunDir(cfg.run_dir).config, to_yaml(cfg))
    sample = pd.read_csv(comp / "sample_submission.csv")
    train = pd.read_csv(comp / "train.csv")
    test = pd.DataFrame({"image_id": sample.image_id})
    test[classes] = test_probs
    test.to_csv(cfg.run_dir / "test.csv", index=False)
    oof = pd.DataFrame({"image_id": train.image_id, "fold": np.arange(len(train)) % 2, "label": train.label})
    oof[classes] = oof_probs
    oof.to_csv(cfg.run_dir / "oof.csv", index=False)
    return cfg.run_dir


def probs(n, p_first):
    p = np.asarray(p_first, dtype=float).reshape(-1)[:n] if np.ndim(p_first) else np.full(n, p_first)
    return np.stack([p, 1 - p], axis=1)


def killed_in_epoch(cfg, competition, monkeypatch, epoch: int) -> None:
    """Train fold 0 until a kill in the middle of its `epoch`-th epoch (counted from 1)."""
    import pytest

    from pipeline.errors import Interrupted
    from pipeline.stages import train
    from pipeline.training import loop

    real, calls = loop.train_one_epoch, []

    def dies(*args, **kw):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(loop, "train_one_epoch", dies)
    with pytest.raises(Interrupted):  # what train_fold makes of Ctrl-C
        train.train_fold(cfg, competition, 0)
    monkeypatch.setattr(loop, "train_one_epoch", real)


def make_command(*args) -> list[str]:
    return ["make", "--no-print-directory", f"PY={sys.executable}", *args]


def make(*args, check=True) -> subprocess.CompletedProcess:
    """`make ARGS` in the project root, with this interpreter as PY."""
    res = subprocess.run(make_command(*args), cwd=ROOT, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(res.stdout + res.stderr)
    return res


def make_started(*args) -> subprocess.Popen:
    """`make ARGS` started in the background (communicate() waits for its output)."""
    return subprocess.Popen(make_command(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def image_env(tmp: Path, packages: list[str]) -> Path:
    """A venv holding only `packages`, pip, and what they require, as an image with them
    preinstalled would: their installed files linked in from this interpreter's environment
    through a .pth file (a venv's own pip and setuptools would shadow them). The project is not
    importable in it. Returns its python."""
    from pipeline.stages.bundle import closure

    site = tmp / "image-site"
    site.mkdir()
    for dist in closure([*packages, "pip"]).values():
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] != ".."}:
            src, dst = Path(dist.locate_file(top)), site / top
            if src.exists() and not dst.exists():
                dst.symlink_to(src)
    subprocess.run(
        [sys._base_executable, "-m", "venv", "--without-pip", str(tmp / "env")], check=True, capture_output=True
    )
    (next((tmp / "env" / "lib").glob("python*/site-packages")) / "image.pth").write_text(f"{site}\n")
    return tmp / "env" / "bin" / "python"


def outside(python: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    """Run in `cwd` with no trace of this checkout or its venv in the environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIPELINE_JOBS")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True)


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to `keep` of its bytes, as an interrupted download or copy leaves it."""
    whole = path.read_bytes()
    path.write_bytes(whole[: int(len(whole) * keep)])
    return path


# ----------------------------------------------------------------------------- pages


def embedded_images(page: str) -> list[Image.Image]:
    """Each <img> of the page, decoded: a src that is not an inline PNG fails (the page must open
    offline), as does one that does not decode or is empty."""
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    images = []
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.load()
        assert img.width > 0 and img.height > 0
        images.append(img)
    return images
