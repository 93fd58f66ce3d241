"""The decode cache changes nothing a model learns from: 5-fold CV with the cache against decoding
the originals at equal settings, and the cache's size and loader speed (docs/speed-scale.md).

Usage: python bench/cache_cv.py [--only DATASET ...] [--out FILE]
       make bench-cache      (clothing and digits; about 40 minutes on a 2-core CPU)

Datasets (each trained through `python -m pipeline folds|train` twice, runtime.cache true and
false, a finished run reused; scored on the folds' out-of-fold predictions, no TTA):
  digits    configs/digits-10.yaml                          (python bench/make_digits.py --ten)
  clothing  configs/clothing.yaml at 96 px with 1 + 2 epochs (bench/aug_cv.py's SHORT)
            (../shared/competitions/clothing)
For each dataset the table also gives the cache this release keeps (stored_short: the smallest
random crop of the largest phase scaled down, never up; a smaller image kept as it is) against the
one it kept before (size / crop_pct on the short side, every image resized to it, up or down):
short side, bytes of pixels, and a training loader's images/s reading each (best of 3 passes).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from ablation import markdown
from aug_cv import SHORT, cv, trained

from pipeline.cache import run_cache, stored_short
from pipeline.config_files import load_config
from pipeline.data import DataConfig, ImageDataset, make_loader, read_image, resize_short, train_transform
from pipeline.models import data_config
from pipeline.stages import folds as folds_stage

DATASETS = {"digits": ("configs/digits-10.yaml", []), "clothing": ("configs/clothing.yaml", SHORT)}


class ResizedAlways:
    """The cache before this release, in memory: every image resized to size / crop_pct, up or down."""

    def __init__(self, paths, short: int, interpolation: str):
        resize = resize_short(DataConfig(short, (0.5,) * 3, (0.5,) * 3, interpolation, crop_pct=1.0))
        self.images = {str(p): resize(image=read_image(p))["image"] for p in paths}

    def __call__(self, path) -> np.ndarray:
        return self.images[str(path)]


def loader_speed(paths, source, dc: DataConfig, aug) -> float:
    """Training loader images/s (augmentation included), best of 3 passes after a warm-up one."""
    ds = ImageDataset(paths, np.zeros(len(paths), dtype=int), train_transform(dc, aug), source)
    dl = make_loader(ds, 32, True, {"num_workers": 0})
    best = float("inf")
    for k in range(4):
        dl.sampler.set_epoch(k)
        t = time.perf_counter()
        for _ in dl:
            pass
        best = min(best, time.perf_counter() - t) if k else best
    return len(dl) * dl.batch_size / best


def cache_row(config: str, overrides: list[str]) -> dict:
    """The cache now against the cache before: short side, bytes of pixels, loader images/s."""
    import timm

    cfg = load_config(config, overrides)
    final = data_config(timm.create_model(cfg.model.backbone, pretrained=False), cfg.model.img_size)
    folds_stage.main(cfg)
    now = run_cache(cfg, final)
    paths = [Path(p) for p in now.where]
    old_short = max(round(s / final.crop_pct) for s in [p.img_size or final.size for p in cfg.train.phases])
    before = ResizedAlways(paths, old_short, final.interpolation)
    sizes = {k: sum(int(np.prod(src(p).shape)) for p in paths) for k, src in (("now", now), ("before", before))}
    train = paths[: min(len(paths), 2000)]
    speeds = {k: loader_speed(train, src, final, cfg.train.aug) for k, src in (("now", now), ("before", before))}
    return {
        "short_px": f"{stored_short(cfg, final)} (before {old_short})",
        "pixels_MB": f"{sizes['now'] / 1e6:.0f} (before {sizes['before'] / 1e6:.0f})",
        "loader_img_s": f"{speeds['now']:.0f} (before {speeds['before']:.0f})",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, choices=list(DATASETS))
    ap.add_argument("--out", default=None, help="write the Markdown table here too")
    args = ap.parse_args()
    rows = []
    for dataset in args.only or DATASETS:
        config, overrides = DATASETS[dataset]
        row = {"dataset": dataset, "metric": load_config(config, overrides).metric}
        for cache in ("true", "false"):
            name = f"cache-{dataset}-{'cache' if cache == 'true' else 'decode'}"
            over = [*overrides, f"runtime.cache={cache}"]
            minutes = trained(config, name, over)
            row[f"cv_{'cache' if cache == 'true' else 'decode'}"] = round(cv(config, name, over), 4)
            row[f"minutes_{'cache' if cache == 'true' else 'decode'}"] = f"{minutes:.1f}"
            print(row, flush=True)
        rows.append({**row, **cache_row(config, overrides)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(markdown(table))
    if args.out:
        if os.path.isfile(args.out):  # keep the rows of the datasets not run this time
            with open(args.out) as f:
                lines = [[c.strip() for c in line.strip().strip("|").split("|")] for line in f if line.startswith("| ")]
            if len(lines) > 1:
                kept = pd.DataFrame(lines[1:], columns=lines[0])
                table = pd.concat([kept[~kept.dataset.isin(table.dataset)], table], ignore_index=True)
        with open(args.out, "w") as f:
            f.write(markdown(table) + "\n")


if __name__ == "__main__":
    main()
