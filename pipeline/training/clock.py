"""The clock: times the first steps of each phase and says what the fold and the run will take at
that speed (and, for runtime.budget's first fold, ends the epoch there with the measurement)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import budget, distributed
from .fold import FoldSpec, phase_size

# The steps timed for the estimate: those after the first few (start-up, first allocations, the
# loader's workers), up to this many, or to the end of a shorter epoch.
WARM_STEPS, TIMED_STEPS = 3, 20
# An all-layer step's cost against a head-only one's at the same size (the head-only backward stops
# at the head), for a phase not yet timed, by whether head-only steps fold BatchNorm (FoldSpec.
# folds_bn: runtime.fold_frozen_bn, one process, not compiled, a model with BatchNorm): measured
# 4.9 and 2.8 on the demo's Lite2 at 260 px, 4.8 and 2.5 on make bench's Lite0 at 64 px (2026-12-07).
ALL_LAYERS_COST = {True: 4.8, False: 2.7}


@dataclass
class Clock:
    """Times the first steps of a phase (its first epoch in this process), then prints what the
    fold and the run will take at that speed: the phases not yet timed are scaled by their pixels
    and by ALL_LAYERS_COST, validation by its images at a forward's share of a step."""

    spec: FoldSpec
    p: int
    epoch: int  # the epoch being timed
    steps: int  # the epoch's steps
    images: int  # the epoch's training images (every process's)
    marks: list = field(default_factory=list)

    def step(self, done: int, images: int) -> None:
        if done == min(WARM_STEPS, self.steps - 1) or done == min(WARM_STEPS + TIMED_STEPS, self.steps):
            self.marks.append((images, time.perf_counter()))
            if len(self.marks) == 2 and self.marks[1][1] > self.marks[0][1]:
                rate = (self.marks[1][0] - self.marks[0][0]) / (self.marks[1][1] - self.marks[0][1])
                if self.spec.probe:  # runtime.budget's measurement: this epoch ends here
                    raise budget.Measured(rate, self.epoch_seconds(rate))
                distributed.say(self.estimate(rate))

    def epoch_seconds(self, rate: float) -> list[float]:
        """Each phase's epoch (its steps and its validation) at `rate` images/s in this phase's steps."""
        t = self.spec.cfg.train
        n_valid = len(self.spec.valid_rows)
        cost = [self.cost(q) / self.cost(self.p) / rate for q in range(len(t.phases))]  # seconds an image
        forward = [c / (1 if t.phases[q].frozen else 3) for q, c in enumerate(cost)]  # validation's share
        return [self.images * c + n_valid * f for c, f in zip(cost, forward)]

    def estimate(self, rate: float) -> str:
        """The message: `rate` images/s in this phase's steps."""
        spec, t = self.spec, self.spec.cfg.train
        epoch_s = self.epoch_seconds(rate)
        left_in_phase = t.phase_starts[self.p] + t.phases[self.p].epochs - self.epoch
        fold_left = left_in_phase * epoch_s[self.p] + sum(
            t.phases[q].epochs * epoch_s[q] for q in range(self.p + 1, len(t.phases))
        )
        whole = sum(ph.epochs * e for ph, e in zip(t.phases, epoch_s))
        run_left = fold_left + spec.folds_after * whole
        return (
            f"fold {spec.fold} phase {self.p}: {rate:.0f} img/s in training steps; at this speed an epoch takes "
            f"about {duration(epoch_s[self.p])}, the rest of the fold {duration(fold_left)}, the rest of the "
            f"run {duration(run_left)} ({spec.folds_after} more fold{'' if spec.folds_after == 1 else 's'})"
        )

    def cost(self, q: int) -> float:
        """Phase q's cost per image, relative: pixels, times ALL_LAYERS_COST with every layer training."""
        ph = self.spec.cfg.train.phases[q]
        all_layers = ALL_LAYERS_COST[self.spec.folds_bn]
        return phase_size(ph, self.spec.final_dc) ** 2 * (1 if ph.frozen else all_layers)


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3.5 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
