"""How the pipeline's cost grows with the data: seconds per image at N = 1k, 8k and 64k, the decode
cache's size raw and as JPEG, and the training loader's speed from each.

Usage: python bench/scaling.py [--sizes 1000 8000 64000] [--img-size 128] [--keep DIR]
                               [--memory-limit 2G] [--loader-images 2000]

Builds a synthetic competition of N real-size JPEGs (random crops, 40-100% of each side, of the
full-size ants-bees photos in ../shared/competitions/ants-bees, labelled by the photo they came
from, and N/10 test images), then times, per image:
  folds         the folds file;
  cache_raw     the decode cache built as pixels (every train and test image), and
  cache_jpeg    the same as JPEGs (runtime.cache_format), with each one's size on disk;
  epoch         one training epoch of fold 0 (Lite0 head-only at --img-size, batch 32) with its
                validation and checkpoints, from the raw cache;
  infer         fold 0's model on the test images (no TTA).
Then the training loader's images/s (random crops and flips of --loader-images images drawn from
the whole competition) from a raw and a jpeg cache at 128 and 224 px, and at the largest N again
in a memory cgroup limited to --memory-limit (cgroup v1 or v2; skipped where it cannot be made),
so a raw cache larger than the memory is read from the disk. Last, Lite0's all-layer training
step at 224 px on random tensors: the speed the loader has to keep up with.
Flat per-image costs across N are the claim; jpeg at most a quarter of raw on disk (0.18 measured).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import engine, tta  # noqa: E402
from pipeline.cache import open_cache, run_cache, stored_short  # noqa: E402
from pipeline.competition import read_competition  # noqa: E402
from pipeline.config import Aug  # noqa: E402
from pipeline.config_files import load_config  # noqa: E402
from pipeline.data import DataConfig, ImageDataset, make_loader, train_transform  # noqa: E402
from pipeline.models import create_model, data_config, load_fold_model  # noqa: E402
from pipeline.runs import RunDir  # noqa: E402
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


def config(root: Path, work: Path, n: int, img_size: int, fmt: str = "raw"):
    return load_config(
        ROOT / "configs" / "ants-bees-lite0.yaml",
        [
            f"name=scale{n}",
            f"data.root={root}",
            f"runs_dir={work}/runs",
            f"folds.dir={work}/folds",
            f"runtime.cache_dir={work}/cache",
            f"runtime.cache_format={fmt}",
            "model.pretrained=none",
            f"model.img_size={img_size}",
            "train.batch_size=32",
            "train.phases=[{epochs: 1, lr: 0.01, frozen: true}]",
            "infer.tta.flips=[]",
        ],
    )


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


def time_stages(root: Path, work: Path, n: int, img_size: int) -> dict[str, float]:
    """Seconds of each stage, and the two caches' sizes in bytes."""
    cfg = config(root, work, n, img_size)
    out = {}
    t = time.perf_counter()
    folds_stage.main(cfg)
    out["folds"] = time.perf_counter() - t
    dc = data_config(create_model(cfg.model, 2), cfg.model.img_size)
    for fmt in ("raw", "jpeg"):
        t = time.perf_counter()
        cache = run_cache(config(root, work, n, img_size, fmt), dc)
        out[f"cache_{fmt}"] = time.perf_counter() - t
        out[f"{fmt}_bytes"] = folder_bytes(cache.folder)
    t = time.perf_counter()
    train.train_fold(cfg, read_competition(cfg), 0)  # opens the raw cache built above, trains, validates, saves
    out["epoch"] = time.perf_counter() - t
    test = sorted((root / "test").glob("*.jpg"))
    t = time.perf_counter()
    fm = load_fold_model(RunDir(cfg.run_dir), 0, torch.device("cpu"), cfg.runtime)
    tta.predict_merged(fm, test, cfg, torch.device("cpu"))
    out["infer"] = time.perf_counter() - t
    return out


# ----------------------------------------------------------------------------- the loader


def loader_rate(root: Path, cache_dir: Path, size: int, fmt: str, images: int, seed: int = 0) -> float:
    """Images/s of the training loader (random resized crop and flip, as the default recipe) over
    `images` images drawn from the whole competition, from a `fmt` cache for `size` px."""
    cfg = config(root, cache_dir.parent, 0, size, fmt)
    dc = data_config(create_model(cfg.model, 2), size)
    paths = sorted((root / "train").glob("*.jpg")) + sorted((root / "test").glob("*.jpg"))
    stored = DataConfig(stored_short(cfg, dc), dc.mean, dc.std, dc.interpolation, crop_pct=1.0)
    source = open_cache(paths, stored, cache_dir, fmt=fmt)  # as run_cache opens it
    pick = np.random.default_rng(seed).choice(len(paths), min(images, len(paths)), replace=False)
    ds = ImageDataset([paths[i] for i in pick], np.zeros(len(pick), int), train_transform(dc, Aug()), source)
    dl = make_loader(ds, 32, True, engine.loader_options(cfg.runtime, torch.device("cpu")))
    dl.sampler.set_epoch(0)
    t = time.perf_counter()
    for _ in dl:
        pass
    return len(pick) / (time.perf_counter() - t)


def evicted(folder: Path) -> None:
    """Drop a cache's pages from the page cache, so a process in a memory cgroup reads them from
    the disk (pages cached by another cgroup would be read from memory whatever the limit)."""
    for f in folder.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def limited_rate(root: Path, cache_dir: Path, size: int, fmt: str, images: int, limit: str) -> float | None:
    """loader_rate in a child process inside a memory cgroup of `limit` bytes; None where no
    cgroup can be made here."""
    group = memory_group(parse_bytes(limit))
    if group is None:
        print(f"memory limit {limit}: no cgroup can be made here; skipped", flush=True)
        return None
    for folder in cache_dir.iterdir():
        if folder.is_dir():
            evicted(folder)
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import scaling; "
        f"print(scaling.loader_rate(scaling.Path({str(root)!r}), scaling.Path({str(cache_dir)!r}), "
        f"{size}, {fmt!r}, {images}))"
    )
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: (group / "cgroup.procs").write_text(str(os.getpid())),
        )
        out = proc.communicate()[0].split()
        if proc.returncode != 0 or not out:  # killed: the limit is below what the process itself needs
            print(f"memory limit {limit}: the loader process failed ({proc.returncode}); raise --memory-limit")
            return None
        return float(out[-1])
    finally:
        group.rmdir()


def memory_group(limit: int) -> Path | None:
    """A new memory cgroup (v1's memory controller, else v2) holding at most `limit` bytes."""
    name = f"pipeline-bench-{os.getpid()}"
    for base, key in ((Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes"), (Path("/sys/fs/cgroup"), "memory.max")):
        group = base / name
        try:
            group.mkdir()
        except OSError:
            continue
        try:
            (group / key).write_text(str(limit))
            return group
        except OSError:
            group.rmdir()
    return None


def parse_bytes(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def step_rate(size: int, batch: int = 32, steps: int = 6) -> float:
    """Images/s of Lite0's all-layer training step on random tensors at `size` px."""
    cfg = load_config(ROOT / "configs" / "ants-bees-lite0.yaml", ["model.pretrained=none"])
    model = create_model(cfg.model, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last), torch.zeros(batch).long()
    model = model.to(memory_format=torch.channels_last).train()
    for i in range(steps + 1):
        if i == 1:
            t = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch / (time.perf_counter() - t)


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000, 64000])
    ap.add_argument("--img-size", type=int, default=128)
    ap.add_argument("--keep", type=Path, help="build the competitions here and keep them")
    ap.add_argument("--memory-limit", default="2G", help="the cgroup's memory for the last loader run")
    ap.add_argument("--loader-images", type=int, default=2000)
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="scaling-"))
    rows, loaders = [], []
    try:
        for n in args.sizes:
            root, work = base / f"synthetic-{n}", base / f"work-{n}"
            if not (root / "train.csv").is_file():
                t = time.perf_counter()
                make_competition(root, n)
                print(f"N={n}: wrote {n + n // 10} JPEGs in {time.perf_counter() - t:.0f}s", flush=True)
            shutil.rmtree(work, ignore_errors=True)
            sec = time_stages(root, work, n, args.img_size)
            total = n + n // 10
            row = {"N": n, **{f"{k}_ms_per_image": 1000 * sec[k] / total for k in ("folds", "cache_raw", "cache_jpeg")}}
            row.update(epoch_ms_per_image=1000 * sec["epoch"] / n, infer_ms_per_image=1000 * sec["infer"] / (n // 10))
            row.update(raw_MB=sec["raw_bytes"] / 1e6, jpeg_MB=sec["jpeg_bytes"] / 1e6)
            rows.append(row)
            print(json.dumps(row), flush=True)
            for size in (128, 224):
                for fmt in ("raw", "jpeg"):
                    rate = loader_rate(root, work / "cache", size, fmt, args.loader_images)
                    loaders.append({"N": n, "px": size, "format": fmt, "memory": "free", "img_per_s": rate})
                    print(json.dumps(loaders[-1]), flush=True)
            if n == args.sizes[-1]:
                for fmt in ("raw", "jpeg"):
                    rate = limited_rate(root, work / "cache", 224, fmt, args.loader_images, args.memory_limit)
                    if rate is not None:
                        row = {"N": n, "px": 224, "format": fmt, "memory": args.memory_limit, "img_per_s": rate}
                        loaders.append(row)
                        print(json.dumps(loaders[-1]), flush=True)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format="%.3f"))
    growth = table.filter(like="ms_per_image").apply(lambda c: c.iloc[-1] / c.iloc[0])
    print(
        f"per-image cost at N={args.sizes[-1]} / at N={args.sizes[0]}: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in growth.items())
    )
    print(f"jpeg / raw on disk: {', '.join(f'N={r.N} {r.jpeg_MB / r.raw_MB:.2f}' for r in table.itertuples())}")
    print(pd.DataFrame(loaders).to_string(index=False, float_format="%.0f"))
    print(f"Lite0 all-layer training step at 224 px: {step_rate(224):.0f} img/s (the loader must beat this)")


if __name__ == "__main__":
    main()
