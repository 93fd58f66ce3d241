"""The LR range test: train under a phase's exact conditions while the LR grows exponentially.

Usage: python -m pipeline lr_find CONFIG [key=value ...]      (make lr-find)

A variant of training: it builds the fold through the training package (fold.build,
epochs.train_phases_before, loaders.phase_loader) and replaces the schedule with a rising LR.

Same model, frozen or not, image size, augmentations, sampling, batch size and accumulation as
phase `lr_find.phase` on fold `lr_find.fold`'s training images; for a later phase, the phases
before it are trained first (in a temporary folder), so the test starts from the weights and
optimizer state that phase would start from. The loss is smoothed (EMA with
bias correction) and the test stops once it passes `stop_factor` x its best. Writes
runs/<name>/lr_find.csv (lr, loss, smoothed) and lr_find.png, and prints the suggested LRs:
the steepest descent of the smoothed loss, and the LR at its minimum / 10.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd

from .. import engine, optim, progress
from ..competition import Competition, read_competition
from ..config import Config
from ..io import write_csv
from ..preflight import check_augmentations
from ..runs import RunDir
from ..training.epochs import train_phases_before
from ..training.fold import FoldRun, build
from ..training.loaders import phase_loader

# ----------------------------------------------------------------------------- pure parts


def lr_schedule(start: float, end: float, n: int) -> np.ndarray:
    return start * (end / start) ** (np.arange(n) / (n - 1))


def smooth(losses: list[float], beta: float) -> np.ndarray:
    """Exponential moving average, divided by 1 - beta^k so the first values are not pulled to 0."""
    avg, out = 0.0, []
    for k, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**k))
    return np.array(out)


def diverged(smoothed: np.ndarray, factor: float) -> bool:
    return len(smoothed) > 1 and (smoothed[-1] > factor * smoothed.min() or not np.isfinite(smoothed[-1]))


def suggest(lrs: np.ndarray, smoothed: np.ndarray) -> dict[str, float]:
    """Steepest descent of the smoothed loss against log LR, and the LR at the minimum / 10,
    both taken before the divergence (so inside the range tried). The first tenth of the points
    is left out of the steepest descent: there the EMA is still settling, and on a flat curve its
    wobble would win."""
    lrs, smoothed = np.asarray(lrs), np.asarray(smoothed)
    ok = np.isfinite(smoothed)
    lrs, smoothed = lrs[ok], smoothed[ok]
    best = int(np.argmin(smoothed))
    skip = min(len(lrs) // 10, max(best - 1, 0))
    if best - skip >= 1:
        slope = np.gradient(smoothed[skip : best + 1], np.log(lrs[skip : best + 1]))
        steepest = lrs[skip + int(np.argmin(slope))]
    else:
        steepest = lrs[best]
    return {"steepest": float(steepest), "min/10": float(max(lrs[best] / 10, lrs[0]))}


# ----------------------------------------------------------------------------- the test


def range_test(cfg: Config, run: FoldRun, loader, lrs: np.ndarray) -> tuple[list[float], np.ndarray]:
    """One update per LR in `lrs` (each `accum_steps` batches), until the loss diverges."""
    t, rt, model, device = cfg.train, cfg.runtime, run.state.model, run.spec.device
    opt, scaler = run.state.optimizer, run.state.scaler
    phase = t.phases[cfg.lr_find.phase]
    loss_fn = run.loss_fn  # as the fold trains: class weights included
    optim.set_frozen(model, phase.frozen)
    batches, losses = iter(()), []
    steps = progress.bar(lrs, len(lrs), "LR range test", unit="step")
    for lr in steps:
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_mult"]  # the discriminative ratios hold throughout
        model.train()
        if phase.bn_eval:
            optim.freeze_bn(model)
        total = 0.0
        for _ in range(t.accum_steps):
            try:
                x, y = next(batches)
            except StopIteration:  # small datasets: go round again
                batches = iter(loader)
                x, y = next(batches)
            x, y = engine.to_input(x, device, rt, run.spec.final_dc), y.to(device)
            with engine.autocast(device, rt):
                loss = loss_fn(model(x), y) / t.accum_steps
            scaler.scale(loss).backward()
            total += loss.item()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        smoothed = smooth(losses, cfg.lr_find.smooth)
        progress.show(steps, lr=f"{lr:.2e}", loss=f"{smoothed[-1]:.4f}")
        if diverged(smoothed, cfg.lr_find.stop_factor):
            break
    return losses, smoothed


def start_of_phase(cfg: Config, comp: Competition) -> FoldRun:
    """The model and optimizer as phase `lr_find.phase` of the fold would begin with them."""
    lf = cfg.lr_find
    if lf.phase == 0:
        return build(cfg, comp, lf.fold)
    with tempfile.TemporaryDirectory() as tmp:  # the earlier phases' checkpoints are not kept
        run = build(cfg.model_copy(update={"runs_dir": tmp}), comp, lf.fold)
        train_phases_before(run, lf.phase)
    return run


def main(cfg: Config) -> dict[str, float]:
    from ..plots import plot_lr_find

    lf = cfg.lr_find
    check_augmentations(cfg)  # the transforms tried as training's check tries them
    run = start_of_phase(cfg, read_competition(cfg))
    loader = phase_loader(run, lf.phase)
    lrs = lr_schedule(lf.start_lr, lf.end_lr, lf.num_iter)
    losses, smoothed = range_test(cfg, run, loader, lrs)
    tried = lrs[: len(losses)]
    best = suggest(tried, smoothed)
    out = RunDir(cfg.run_dir).lr_find
    plot_lr_find(tried, smoothed, best, out.with_suffix(".png"), f"{cfg.name}: phase {lf.phase}, fold {lf.fold}")
    write_csv(out, pd.DataFrame({"lr": tried, "loss": losses, "smoothed": smoothed}))  # Make's target: last
    stop = "stopped: loss diverged" if len(losses) < len(lrs) else "reached end_lr"
    print(
        f"lr_find: {len(losses)} updates from {tried[0]:.1e} to {tried[-1]:.1e} ({stop}); "
        f"suggested lr {best['steepest']:.1e} (steepest descent), {best['min/10']:.1e} (min / 10); "
        f"see {out.with_suffix('.png')}"
    )
    return best
