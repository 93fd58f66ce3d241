"""The pipeline's own cost against the model's, as ratios measured in one run (make bench).

Usage: python bench/speed.py [--only loop|cache|aug|checks|two|gpu] [--epochs 3] [--workers N]

  loop_vs_plain_frozen / _unfrozen: images/s of the training loop (train_one_epoch on the
      pipeline's loader: decode cache, augmentation, workers) against a minimal PyTorch loop on
      the same model, batch and images, already decoded, resized and normalised in memory.
      Lite0 at 64 px, batch 32, on data/ants-bees; a head-only phase and an all-layers one. The
      line above the ratios splits the difference: the loader's share (the pipeline against the
      same loop on the loader's batches held in memory) and the loop's own.
  cache_vs_decode: images/s of a training loader reading the decode cache against one decoding
      the full-size originals (../shared/competitions/ants-bees), at 128 px, same augmentation.
  default_vs_photo_list / _randaugment / _trivial: the training loader's images/s with the
      default OpenCV augmentation against the same with a photo competition's albumentations list
      (PHOTO_LIST), timm's RandAugment, or TrivialAugment, from the decode cache at 128 px.
  checks_again_vs_first: preflight's check of every data/ants-bees image, run again: the images
      that passed are remembered, so the second check decodes none.
  two_runs_each: two trainings started at once (the all-layer loop of loop_vs_plain, each its own
      process) against one alone: the slower one's images/s over the lone one's, the cores shared
      through pipeline/cores.py's registry; _unshared: the same with a cache dir each, so neither
      sees the other and both take every core, as before the registry.
  gpu_real_vs_synthetic (with a GPU): efficientnet_b0 at 224, bf16 autocast, channels-last:
      training on cached real images against random tensors already on the GPU.

Each figure is the best of --epochs timed passes after a warm-up one, the two sides alternating
(this machine is shared: the best pass is the least disturbed). The last lines are the ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import engine, optim  # noqa: E402
from pipeline.cache import open_cache, stored_short  # noqa: E402
from pipeline.competition import read_competition  # noqa: E402
from pipeline.config import Aug  # noqa: E402
from pipeline.config_files import load_config  # noqa: E402
from pipeline.data import DataConfig, ImageDataset, make_loader, train_transform  # noqa: E402
from pipeline.preflight import check_images  # noqa: E402
from pipeline.stages import folds as folds_stage  # noqa: E402
from pipeline.training import loop  # noqa: E402
from pipeline.training.epochs import step_net  # noqa: E402
from pipeline.training.fold import build  # noqa: E402
from pipeline.training.loaders import phase_loader  # noqa: E402

ORIGINALS = ROOT.parent / "shared" / "competitions" / "ants-bees"


def best_of(fns: dict, rounds: int) -> dict[str, float]:
    """Seconds of each function's fastest call; one warm-up call each, then rounds alternating."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


# ----------------------------------------------------------------------------- loop against plain


def plain_epoch(model, batches, optimizer, loss_fn, bn_eval: bool) -> None:
    """The minimal loop: tensors in memory, forward, backward, step."""
    model.train()
    if bn_eval:
        optim.freeze_bn(model)
    for x, y in batches:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def loop_vs_plain(tmp: Path, rounds: int, workers: str | None = None) -> dict[str, float]:
    overrides = [
        *([f"runtime.num_workers={workers}"] if workers else []),
        f"runs_dir={tmp}/runs",
        f"folds.dir={tmp}/folds",
        f"runtime.cache_dir={tmp}/cache",
        "model.pretrained=none",
        "model.img_size=64",
        "train.batch_size=32",
        "train.phases=[{epochs: 1, lr: 0.01, frozen: true}, {epochs: 1, lr: 0.001}]",
    ]
    cfg = load_config(ROOT / "configs" / "ants-bees-lite0.yaml", overrides)
    folds_stage.main(cfg)
    run = build(cfg, read_competition(cfg), 0)
    spec, model, opt, device = run.spec, run.state.model, run.state.optimizer, run.spec.device
    out = {}
    for p, name in enumerate(("frozen", "unfrozen")):
        phase = cfg.train.phases[p]
        optim.set_frozen(model, phase.frozen)
        net = step_net(run, phase)  # what the fold's steps run: a head-only phase's copy with BatchNorm folded
        # the fold's training images eight times over (about 1,600 a pass), through the pipeline's loader
        ds = phase_loader(run, p).dataset
        ds = ImageDataset(ds.paths * 8, np.tile(ds.targets, 8), ds.transform, ds.source)
        dl = make_loader(ds, cfg.train.batch_size, True, engine.loader_options(cfg.runtime, device))
        dl.sampler.set_epoch(0)
        # the same images, augmented once and normalised, in memory for the plain loop
        batches = [(engine.to_input(x, device, cfg.runtime, spec.final_dc), y) for x, y in dl]
        schedule = optim.PhaseSchedule(opt, phase, [phase.lr] * len(opt.param_groups), 10**6)
        loss_fn = torch.nn.CrossEntropyLoss()

        def pipeline_epoch(dl=dl, schedule=schedule, phase=phase, loss_fn=loss_fn, dc=spec.final_dc, net=net):
            scaler = run.state.scaler
            loop.train_one_epoch(net, dl, opt, schedule, scaler, loss_fn, device, cfg.runtime, 1, phase.bn_eval, dc)

        loaded = list(dl)  # the loader's uint8 batches, held: the loop's own cost without the loader's

        def loop_only(loaded=loaded, schedule=schedule, phase=phase, loss_fn=loss_fn, dc=spec.final_dc, net=net):
            scaler, rt = run.state.scaler, cfg.runtime
            loop.train_one_epoch(net, loaded, opt, schedule, scaler, loss_fn, device, rt, 1, phase.bn_eval, dc)

        def plain(batches=batches, phase=phase, loss_fn=loss_fn):
            plain_epoch(model, batches, opt, loss_fn, phase.bn_eval)

        t = best_of({"pipeline": pipeline_epoch, "loop": loop_only, "plain": plain}, rounds)
        n = len(dl) * dl.batch_size
        print(
            f"{name}: pipeline {n / t['pipeline']:.0f} img/s, the loop on loaded batches {n / t['loop']:.0f} img/s, "
            f"plain {n / t['plain']:.0f} img/s; of the pipeline's extra {t['pipeline'] - t['plain']:.2f} s a pass, "
            f"the loader {t['pipeline'] - t['loop']:.2f} s, the loop's own {t['loop'] - t['plain']:.2f} s",
            flush=True,
        )
        out[f"loop_vs_plain_{name}"] = t["plain"] / t["pipeline"]
    return out


# ----------------------------------------------------------------------------- cache against decode


def cache_vs_decode(tmp: Path, rounds: int) -> dict[str, float]:
    if not ORIGINALS.is_dir():
        print(f"cache_vs_decode: skipped, {ORIGINALS} not found")
        return {}
    cfg = load_config(
        ROOT / "configs" / "ants-bees-lite0.yaml",
        [f"data.root={ORIGINALS}", "model.img_size=128", "train.phases=[{epochs: 1, lr: 0.01}]"],
    )
    dc = DataConfig(128, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875)
    paths = sorted((ORIGINALS / "train").glob("*.jpg"))
    t = time.perf_counter()
    cached = open_cache(paths, replace(dc, size=stored_short(cfg, dc), crop_pct=1.0), tmp / "cache")
    print(f"decode cache: {len(paths)} full-size images in {time.perf_counter() - t:.1f}s", flush=True)
    opts = engine.loader_options(cfg.runtime, torch.device("cpu"))
    loaders = {
        src: make_loader(ImageDataset(paths, [0] * len(paths), train_transform(dc, cfg.train.aug), s), 32, True, opts)
        for src, s in (("cache", cached), ("decode", None))
    }
    t = best_of({k: (lambda dl=dl: sum(len(x) for x, _ in dl)) for k, dl in loaders.items()}, rounds)
    for k, s in t.items():
        print(f"loader from {k}: {len(paths) / s:.0f} img/s", flush=True)
    return {"cache_vs_decode": t["decode"] / t["cache"]}


# ----------------------------------------------------------------------------- augmentation


PHOTO_LIST = [  # a photo competition's list as winners write them (docs/augmentation.md)
    {"name": "Affine", "rotate": [-15, 15], "translate_percent": [-0.05, 0.05], "p": 0.5},
    {"name": "CLAHE", "clip_limit": [1, 3], "p": 0.3},
    {"name": "OneOf", "p": 0.3, "transforms": [{"name": "GaussianBlur"}, {"name": "GaussNoise"}]},
    {"name": "CoarseDropout", "num_holes_range": [1, 4], "p": 0.3},
]


def aug_vs_default(tmp: Path, rounds: int) -> dict[str, float]:
    """The training loader's images/s (decode cache, 128 px) with train.aug's named transforms, or a
    policy, against the default OpenCV path: above 1 the default is that many times faster."""
    dc = DataConfig(128, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875)
    paths = sorted((ROOT / "data" / "ants-bees" / "train").glob("*.jpg"))
    cached = open_cache(paths, replace(dc, size=146, crop_pct=1.0), tmp / "aug-cache")
    augs = {
        "default": Aug(),
        "photo_list": Aug(transforms=PHOTO_LIST),
        "randaugment": Aug(policy="rand-m9-mstd0.5", color_jitter=0.0),
        "trivial": Aug(policy="trivial", color_jitter=0.0),
    }
    loaders = {
        k: make_loader(ImageDataset(paths, [0] * len(paths), train_transform(dc, a), cached), 32, True)
        for k, a in augs.items()
    }
    t = best_of({k: (lambda dl=dl: sum(len(x) for x, _ in dl)) for k, dl in loaders.items()}, rounds)
    for k, s in t.items():
        print(f"loader with {k}: {len(paths) / s:.0f} img/s", flush=True)
    return {f"default_vs_{k}": t[k] / t["default"] for k in augs if k != "default"}


def checks_again_vs_first(tmp: Path, rounds: int) -> dict[str, float]:
    """preflight's check of every ants-bees image (decoded whole, one thread per core), then the
    same check again: the images that passed are remembered by size and modification time."""
    paths = sorted(p for p in (ROOT / "data" / "ants-bees").glob("*/*") if p.suffix != ".csv")
    start = time.perf_counter()
    check_images(paths, cache_dir=tmp / "checks")
    first = time.perf_counter() - start
    start = time.perf_counter()
    check_images(paths, cache_dir=tmp / "checks")
    again = time.perf_counter() - start
    print(f"image check: {len(paths)} images in {first:.2f} s, then {again:.3f} s", flush=True)
    return {"checks_again_vs_first": again / first}


# ----------------------------------------------------------------------------- GPU


def gpu_real_vs_synthetic(tmp: Path, rounds: int) -> dict[str, float]:
    if not torch.cuda.is_available():
        return {}
    import timm

    device = torch.device("cuda")
    cfg = load_config(
        ROOT / "configs" / "ants-bees-lite0.yaml",
        [f"runtime.cache_dir={tmp}/cache", f"folds.dir={tmp}/folds", f"runs_dir={tmp}/runs"],
    )
    model = engine.prepare(timm.create_model("efficientnet_b0", num_classes=2), device, cfg.runtime)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    dc = DataConfig(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic", 0.875)
    paths = sorted((ROOT / "data" / "ants-bees" / "train").glob("*.jpg")) * 8
    cached = open_cache(sorted(set(paths)), replace(dc, size=256, crop_pct=1.0), tmp / "cache")
    ds = ImageDataset(paths, [0] * len(paths), train_transform(dc, cfg.train.aug), cached)
    dl = make_loader(ds, 128, True, engine.loader_options(cfg.runtime, device))
    x = torch.randn(128, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
    synthetic = [(x, torch.zeros(128, dtype=torch.long, device=device))]
    synthetic *= len(dl)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(batches):
        model.train()
        for x, y in batches:
            with engine.autocast(device, cfg.runtime):
                x = engine.to_input(x, device, cfg.runtime, dc)
                loss = loss_fn(model(x), y.to(device, non_blocking=True))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()

    t = best_of({"real": lambda: epoch(dl), "synthetic": lambda: epoch(synthetic)}, rounds)
    n = len(dl) * 128
    print(f"{torch.cuda.get_device_name()}: real {n / t['real']:.0f} img/s, synthetic {n / t['synthetic']:.0f} img/s")
    return {"gpu_real_vs_synthetic": t["synthetic"] / t["real"]}


# ----------------------------------------------------------------------------- two runs at once


def one_run(tmp: Path, cache: str, ready: Path, others: int, passes: int) -> None:
    """One training process (its own run folder, `cache` its decode cache and so its registry of
    processes sharing the cores): the all-layer loop over the fold's images, `passes` times once
    `others` other processes are ready too; prints its images/s."""
    overrides = [
        f"runs_dir={tmp}/runs-{os.getpid()}",
        f"folds.dir={tmp}/folds",
        f"runtime.cache_dir={cache}",
        "model.pretrained=none",
        "model.img_size=64",
        "train.batch_size=32",
        "train.phases=[{epochs: 1, lr: 0.001}]",
    ]
    cfg = load_config(ROOT / "configs" / "ants-bees-lite0.yaml", overrides)
    run = build(cfg, read_competition(cfg), 0)
    spec, opt = run.spec, run.state.optimizer
    dl = phase_loader(run, 0)
    schedule = optim.PhaseSchedule(opt, cfg.train.phases[0], [0.001] * len(opt.param_groups), 10**6)
    loss_fn = torch.nn.CrossEntropyLoss()
    epoch = lambda: loop.train_one_epoch(  # noqa: E731
        run.net, dl, opt, schedule, run.state.scaler, loss_fn, spec.device, cfg.runtime, 1, False, spec.final_dc
    )
    epoch()  # warm-up, and the decode cache built
    (ready / str(os.getpid())).touch()
    while len(list(ready.iterdir())) < others + 1:
        time.sleep(0.05)
    t = time.perf_counter()
    for _ in range(passes):
        epoch()
    print(f"{passes * len(dl) * dl.batch_size / (time.perf_counter() - t):.1f}", flush=True)


def started_runs(tmp: Path, caches: list[str], passes: int, wait_policy: str | None = None) -> list[float]:
    """Images/s of len(caches) training processes started at once, each timed while all run;
    `wait_policy`: OpenMP's OMP_WAIT_POLICY for them (PASSIVE: idle threads sleep, not spin)."""
    ready = Path(tempfile.mkdtemp(dir=tmp))
    cmd = [sys.executable, __file__, "--one-run", str(tmp), "--ready", str(ready), "--passes", str(passes)]
    env = {**os.environ, **({"OMP_WAIT_POLICY": wait_policy} if wait_policy else {})}
    procs = [
        subprocess.Popen(
            [*cmd, "--cache", c, "--others", str(len(caches) - 1)], stdout=subprocess.PIPE, text=True, env=env
        )
        for c in caches
    ]
    return [float(p.communicate()[0].split()[-1]) for p in procs]


def two_runs(tmp: Path, rounds: int) -> dict[str, float]:
    """Two trainings at once against one alone: each process's images/s over the one's alone,
    with the cores shared through the registry (one cache dir), and as before it (two cache dirs:
    neither sees the other, both take every core)."""
    cfg = load_config(ROOT / "configs" / "ants-bees-lite0.yaml", [f"folds.dir={tmp}/folds"])
    folds_stage.main(cfg)
    passes, one, two = 4 * rounds, [f"{tmp}/cache"], [f"{tmp}/cache", f"{tmp}/cache-b"]
    rates = {
        "alone": started_runs(tmp, one, passes),
        "alone, passive": started_runs(tmp, one, passes, "PASSIVE"),
        "sharing": started_runs(tmp, one * 2, passes),
        "not sharing": started_runs(tmp, two, passes),
        "not sharing, passive": started_runs(tmp, two, passes, "PASSIVE"),
    }
    print("two runs, img/s: " + "; ".join(f"{k} {' and '.join(f'{r:.0f}' for r in v)}" for k, v in rates.items()))
    alone = rates["alone"][0]
    return {
        "two_runs_each": min(rates["sharing"]) / alone,
        "two_runs_each_unshared": min(rates["not sharing"]) / alone,
        "two_runs_each_unshared_passive": min(rates["not sharing, passive"]) / alone,
        "alone_passive_vs_alone": rates["alone, passive"][0] / alone,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["loop", "cache", "aug", "checks", "two", "gpu"])
    ap.add_argument("--epochs", type=int, default=3, help="timed passes per side (after one warm-up)")
    ap.add_argument("--workers", help="runtime.num_workers for the training loop (default: the machine's choice)")
    for flag in ("--one-run", "--ready", "--cache", "--others", "--passes"):  # two_runs' own processes
        ap.add_argument(flag, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_run:
        return one_run(Path(args.one_run), args.cache, Path(args.ready), int(args.others), int(args.passes))
    benches = {
        "loop": lambda tmp, rounds: loop_vs_plain(tmp, rounds, args.workers),
        "cache": cache_vs_decode,
        "aug": aug_vs_default,
        "checks": checks_again_vs_first,
        "two": two_runs,
        "gpu": gpu_real_vs_synthetic,
    }
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in benches.items():
            if args.only in (None, name):
                ratios.update(fn(Path(tmp), args.epochs))
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")


if __name__ == "__main__":
    main()
