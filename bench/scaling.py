"""How the pipeline's cost grows with the data: seconds per image at N = 1k, 4k and 16k.

Usage: python bench/scaling.py [--sizes 1000 4000 16000] [--img-size 64] [--keep DIR]

Builds a synthetic competition of N real-size JPEGs (random crops, 40-100% of each side, of the
full-size ants-bees photos in ../shared/competitions/ants-bees, labelled by the photo they came
from), then times each stage of one fold as Make would run it: the folds file, the decode cache
(built once, every train and test image), and one training epoch of fold 0 (Lite0 head-only at
--img-size, batch 32) with its validation and checkpoints. Each cost is printed per image: flat
across N is the claim (nothing grows faster than the data).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.cache import run_cache  # noqa: E402
from pipeline.config_files import load_config  # noqa: E402
from pipeline.folds_file import load_folds  # noqa: E402
from pipeline.models import create_model, data_config  # noqa: E402
from pipeline.stages import folds as folds_stage  # noqa: E402
from pipeline.stages import train  # noqa: E402

ORIGINALS = ROOT.parent / "shared" / "competitions" / "ants-bees"


def make_competition(root: Path, n: int, seed: int = 0) -> None:
    """n train JPEGs (random crops of the originals, labelled with the original's class) and n/10 test."""
    src = pd.read_csv(ORIGINALS / "train.csv")
    photos = [cv2.imread(str(ORIGINALS / "train" / f"{i}.jpg")) for i in src.image_id]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(photos), n + n // 10)
    fractions = rng.uniform(0.4, 1.0, (len(picks), 2))
    corners = rng.uniform(0, 1, (len(picks), 2))

    def write(k: int) -> None:
        img = photos[picks[k]]
        h, w = (np.array(img.shape[:2]) * fractions[k]).astype(int)
        y, x = (corners[k] * (np.array(img.shape[:2]) - (h, w))).astype(int)
        folder = "train" if k < n else "test"
        cv2.imwrite(str(root / folder / f"s{k:06d}.jpg"), img[y : y + h, x : x + w], [cv2.IMWRITE_JPEG_QUALITY, 90])

    for folder in ("train", "test"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor() as pool:
        list(pool.map(write, range(len(picks))))
    ids = [f"s{k:06d}" for k in range(len(picks))]
    pd.DataFrame({"image_id": ids[:n], "label": src.label.to_numpy()[picks[:n]]}).to_csv(
        root / "train.csv", index=False
    )
    pd.DataFrame({"image_id": ids[n:], "label": src.label.iloc[0]}).to_csv(root / "sample_submission.csv", index=False)


def time_one(root: Path, work: Path, n: int, img_size: int) -> dict[str, float]:
    cfg = load_config(
        ROOT / "configs" / "ants-bees-lite0.yaml",
        [
            f"name=scale{n}",
            f"data.root={root}",
            f"runs_dir={work}/runs",
            f"folds.dir={work}/folds",
            f"runtime.cache_dir={work}/cache",
            "model.pretrained=none",
            f"model.img_size={img_size}",
            "train.batch_size=32",
            "train.phases=[{epochs: 1, lr: 0.01, frozen: true}]",
            "infer.tta.flips=[]",
        ],
    )
    out = {}
    t = time.perf_counter()
    folds_stage.main(cfg)
    out["folds"] = time.perf_counter() - t
    t = time.perf_counter()
    run_cache(cfg, data_config(create_model(cfg.model, 2), cfg.model.img_size))
    out["cache"] = time.perf_counter() - t
    t = time.perf_counter()
    train.train_fold(cfg, load_folds(cfg), 0)  # opens the cache built above, trains, validates, saves
    out["train_fold"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--keep", type=Path, help="build the competitions here and keep them")
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="scaling-"))
    rows = []
    try:
        for n in args.sizes:
            root = base / f"synthetic-{n}"
            if not (root / "train.csv").is_file():
                t = time.perf_counter()
                make_competition(root, n)
                print(f"N={n}: wrote {n + n // 10} JPEGs in {time.perf_counter() - t:.0f}s", flush=True)
            sec = time_one(root, base / f"work-{n}", n, args.img_size)
            rows.append({"N": n, **{f"{k}_ms_per_image": 1000 * v / n for k, v in sec.items()}})
            print(rows[-1], flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format="%.3f"))
    # at most 1: no cost grows faster than the data (fixed costs, start-up and the model, amortise)
    growth = table.filter(like="ms_per_image").apply(lambda c: c.iloc[-1] / c.iloc[0])
    print(
        f"per-image cost at N={args.sizes[-1]} / at N={args.sizes[0]}: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in growth.items())
    )


if __name__ == "__main__":
    main()
