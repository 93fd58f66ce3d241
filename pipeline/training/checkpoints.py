"""A fold's files: last.pt after every epoch (the fold's state and where it stopped, to resume
from), best.pt for the kept epoch (what infer loads), and the checks that decide whether they
still hold for this config: both record the effective config's train settings and the rows'
digest (stamps.made_with), compared as Make compares its stamps. best.pt also holds the record of
the kept epoch (its score and validation probabilities), and a resumed fold takes that record from
best.pt, not last.pt: one file, replaced whole, so no interrupt between the two writes can leave
the OOF of one epoch beside the weights of another."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..io import atomic_path, damaged
from ..models import save_checkpoint
from ..stamps import matches, recorded
from .fold import FoldRun, FoldSpec, Kept


@dataclass(frozen=True)
class Resume:
    """Where a fold's last.pt left off."""

    epoch: int  # the last finished epoch
    phase: int
    schedule: dict | None  # the phase schedule's state
    done: bool


def save_state(run: FoldRun, epoch: int, phase: int, schedule, done: bool) -> None:
    """last.pt; `schedule` None once training is over (SWA's final step)."""
    state = {
        **run.state.state_dict(),
        "schedule": schedule.state_dict() if schedule is not None else None,
        "epoch": epoch,
        "phase": phase,
        "done": done,
        **run.spec.made_with,
    }
    with atomic_path(run.spec.paths.last(run.spec.fold)) as tmp:
        torch.save(state, tmp)


def load_state(run: FoldRun) -> Resume | None:
    """Restore last.pt if it was written with these train settings (compared as Make compares
    stamps, so a key added by a newer release does not restart a fold) and these rows; None
    (train from the start) otherwise. One written by an earlier release is refused."""
    spec = run.spec
    path = spec.paths.last(spec.fold)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a checkpoint torn by a kill mid-write cannot exist (atomic), but a foreign one can
        return None
    recorded(state, path, f"delete {path.parent}/ and run make train to train the fold again")
    if state.get("data") != spec.made_with["data"] or not matches(spec.cfg, "train", state["settings"]):
        return None
    if not run.state.fits(state):
        return None
    run.state.load_state_dict(state)
    return Resume(state["epoch"], state["phase"], state["schedule"], state["done"])


def save_best(run: FoldRun, model: torch.nn.Module, row: dict, weights: str) -> None:
    spec = run.spec
    save_checkpoint(
        spec.paths.best(spec.fold),
        model,
        config=spec.cfg.model_dump(mode="json"),
        classes=spec.classes,
        data_config=spec.final_dc.to_timm(),
        fold=spec.fold,
        epoch=row["epoch"],
        weights=weights,
        valid=row,
        made_with=spec.made_with,  # what infer checks against its effective config (stamps.differences)
        kept=run.state.state_dict_kept(),  # the record a resumed fold keeps (read_best)
        **({"target_scale": spec.scale.to_dict()} if spec.scale else {}),
    )


def stopped_at(spec: FoldSpec) -> str:
    """Where an interrupted fold stopped and how to go on, from what last.pt holds (an epoch whose
    last.pt was not written when the signal came counts as not finished)."""
    try:
        state = torch.load(spec.paths.last(spec.fold), map_location="cpu", weights_only=True, mmap=True)
        done, kept = state["epoch"], state["kept"]["epoch"]
    except Exception:  # no last.pt yet: the first epoch did not finish
        return f"fold {spec.fold} stopped in its first epoch; make train starts it again"
    return (
        f"fold {spec.fold} stopped after epoch {done} (last.pt; best.pt holds epoch {kept}); "
        f"make train resumes it at epoch {done + 1}"
    )


def readable_csv(path) -> bool:
    """Whether a fold's oof.csv is there and whole; a damaged one is rewritten from last.pt."""
    return path.is_file() and not damaged(path)


def read_best(spec: FoldSpec) -> dict | None:
    """best.pt's contents when it loads and was made with these settings, else None: a finished
    fold is skipped only then, so a deleted or damaged best.pt is rebuilt by the next make train."""
    try:
        ckpt = torch.load(spec.paths.best(spec.fold), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # missing, or damaged in any of the ways torch.load reports
        return None
    if not isinstance(ckpt, dict):
        return None
    made = ckpt.get("made_with")
    return ckpt if isinstance(made, dict) and matches(spec.cfg, "train", made.get("settings")) else None


def best_kept(best: dict) -> Kept | None:
    """The kept epoch's record as best.pt holds it (None for a best.pt written before it did)."""
    k = best.get("kept")
    return None if k is None else Kept(k["score"], k["epoch"], k["probs"].numpy().copy(), k["weights"])
