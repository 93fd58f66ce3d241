"""Search a few settings with Optuna, each trial fold 0 of a config of its own, trained by Make.

Usage: python -m pipeline search CONFIG SPACE [--budget 2h] [--trials N] [--full] [key=value ...]
       make search CONFIG=configs/x.yaml SPACE=configs/spaces/x.yaml [BUDGET=2h] [TRIALS=N] [FULL=1]

SPACE is a YAML file of keys and their ranges or choices:

    train.phases.0.lr: {low: 1.0e-3, high: 0.3, log: true}     # a float (log: sampled on a log scale)
    train.phases.0.epochs: {low: 2, high: 8}                     # whole numbers: an integer
    model.backbone: {choices: [tf_efficientnet_lite0, tf_efficientnet_lite1]}

Each trial is written as <CONFIG's folder>/search/<name>--t<digest of its values>.yaml (a config
like a sweep's) and `make train FOLD=0` trains it, so LAUNCH= places it and a killed trial resumes
from last.pt. After each epoch the fold's valid loss (history.csv) goes to Optuna's median pruner
at the share of its schedule that epoch ends (in thousandths: epoch 2 of 4 and epoch 4 of 8 are
both 500): a trial worse than the median of earlier trials at the same share is stopped (SIGTERM,
as Ctrl-C), so a long schedule is never stopped for being behind a short one at the same epoch. A
trial's score is the config's metric on fold 0's OOF; TPE chooses the next values.

The study is runs/<name>--search.db (SQLite, Optuna's own storage): a search run again resumes it
(a trial whose process died is run again with its values, resuming its fold), and several
`make search` processes, or SLURM jobs, share it. --trials counts the study's finished trials;
--budget is this process's wall time: no trial starts when less is left than the median trial
took. At the end it prints the trials table (also runs/<name>--search.csv), writes the best trial
as <folder>/search/<name>--best.yaml and, with --full, runs `make ensemble` on it (every fold, the
submission; fold 0 is the trial's, already trained).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config
from ..config_files import parse_override, read_chain, read_yaml, validate
from ..errors import PipelineError
from ..io import write_csv, write_text
from ..lock import alive
from ..metrics import higher_is_better
from ..runs import RunDir
from ..sweep import experiment, keep_or_write
from ..upstream import oof_scores, read_oof

STARTUP_TRIALS = 2  # the pruner compares with the median once this many trials have finished
TPE_STARTUP = 5  # TPE samples at random until this many trials have finished (Optuna's default: 10)
POLL_S = 1.0  # how often a running trial's history.csv is read
HEARTBEAT_S = 60  # a trial whose process on another host has been silent 3x this long is run again


# ----------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Dim:
    """One key of the space: choices, or a range of floats or whole numbers."""

    key: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    @property
    def integer(self) -> bool:
        return self.choices is None and all(
            isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)
        )


def read_space(path: str | Path) -> list[Dim]:
    """The space file as dimensions, each checked; a bad one is a one-line error naming it."""
    doc = read_yaml(Path(path))
    if not doc:
        raise PipelineError(f"{path}: empty; name keys with {{low, high}} or {{choices: [...]}}")
    dims = []
    for key, spec in doc.items():
        where = f"{path}: {key}"
        if not isinstance(spec, dict):
            raise PipelineError(f"{where}: expected {{low: .., high: ..}} or {{choices: [..]}}, got {spec!r}")
        unknown = set(spec) - {"low", "high", "log", "choices"}
        if unknown:
            raise PipelineError(f"{where}: unknown field {sorted(unknown)[0]!r} (low, high, log or choices)")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"] or len(spec) > 1:
                raise PipelineError(f"{where}: choices must be a non-empty list, alone")
            dims.append(Dim(key, choices=tuple(spec["choices"])))
            continue
        low, high = spec.get("low"), spec.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise PipelineError(f"{where}: low and high must be numbers with low < high (got {low!r}, {high!r})")
        if spec.get("log") and low <= 0:
            raise PipelineError(f"{where}: log needs low > 0")
        dims.append(Dim(key, low=low, high=high, log=bool(spec.get("log", False))))
    return dims


def suggest(trial, dim: Dim) -> Any:
    if dim.choices is not None:
        return trial.suggest_categorical(dim.key, list(dim.choices))
    if dim.integer:
        return trial.suggest_int(dim.key, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(dim.key, float(dim.low), float(dim.high), log=dim.log)


def parse_budget(text: str | None) -> float | None:
    """'90m', '2h', '1h30m', '45s', or minutes as a number -> seconds."""
    if text is None:
        return None
    t = str(text).strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
    if re.fullmatch(r"\d+(?:\.\d+)?", t):
        seconds = float(t) * 60
    elif parts and any(parts.groups()):
        h, m, s = (float(g or 0) for g in parts.groups())
        seconds = h * 3600 + m * 60 + s
    else:
        raise PipelineError(f"BUDGET: {text!r} is not a duration (e.g. 45m, 2h, 1h30m, 90s)")
    if seconds <= 0:
        raise PipelineError(f"BUDGET: {text!r} leaves no time for a trial")
    return seconds


def check_space(base: Path, dims: list[Dim], overrides: list[str], space: str | Path) -> None:
    """Every key of the space at its ends (or each choice) makes a valid config, before any trial."""
    for dim in dims:
        for value in dim.choices if dim.choices is not None else (dim.low, dim.high):
            try:
                validate(Config, base, [*overrides, f"{dim.key}={yaml_text(value)}"])
            except PipelineError as e:
                raise PipelineError(f"SPACE {space}: {dim.key}: {e}") from None


def yaml_text(value: Any) -> str:
    """A value as an override's right-hand side reads it back."""
    return json.dumps(value) if not isinstance(value, str) else value


# ----------------------------------------------------------------------------- one trial


class TrialFailed(Exception):
    """Its training stopped with an error: the study records a failed trial and goes on."""


def trial_config(base: Path, doc: dict, values: list[tuple[str, Any]], out_dir: Path) -> Path:
    """The trial's config file (written unless there): named by a digest of its values, so the
    same values (a rerun of a trial whose process died) find the same run and resume its fold."""
    digest = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]
    combo = [(k, yaml_text(v), v) for k, v in values]
    path, text = experiment(base, doc, combo, f"{doc['name']}--t{digest}", out_dir, who="SEARCH")
    keep_or_write(path, text)
    return path


def make_env() -> dict:
    """The environment for the trial's make: a parent Make's jobserver is not ours to use."""
    env = dict(os.environ)
    flags = [w for w in env.get("MAKEFLAGS", "").split() if not w.startswith("--jobserver")]
    env["MAKEFLAGS"] = " ".join(flags)
    return env


def _end_with_us() -> None:
    """In the trial's make (before exec): SIGTERM when this search process dies, even by SIGKILL;
    Make passes SIGTERM to the stage, which stops as after Ctrl-C."""
    _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


_LIBC = _libc() if sys.platform.startswith("linux") else None


def train_fold0(config: Path, run: RunDir, on_epoch) -> bool:
    """`make train FOLD=0` on the trial's config; on_epoch(epoch, valid_loss) after each epoch
    (history.csv), and a True from it stops the training. Whether it was stopped so."""
    cmd = ["make", "--no-print-directory", "train", "FOLD=0", f"CONFIG={config}", "SET=", f"PY={sys.executable}"]
    proc = subprocess.Popen(cmd, env=make_env(), start_new_session=True, preexec_fn=_end_with_us if _LIBC else None)
    seen = 0
    try:
        while True:
            ended = proc.poll() is not None
            rows = epochs_so_far(run)
            for epoch, loss in rows[seen:]:
                seen += 1
                if on_epoch(epoch, loss) and not ended:  # a finished fold keeps its score
                    stop(proc)
                    return True
            if ended:
                break
            time.sleep(POLL_S)
    finally:
        if proc.poll() is None:  # Ctrl-C or an error here: the trial stops with us
            stop(proc)
    if proc.returncode != 0:
        raise TrialFailed(f"make train FOLD=0 CONFIG={config} exited with {proc.returncode}")
    return False


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def schedule_share(epoch: int, epochs: int) -> int:
    """The pruner's step for an epoch: the share of the schedule done when it ends, in thousandths."""
    return round(1000 * (epoch + 1) / epochs)


def epochs_so_far(run: RunDir) -> list[tuple[int, float]]:
    """(epoch, valid_loss) of fold 0's finished epochs, as history.csv holds them."""
    try:
        h = pd.read_csv(run.history(0))
        return [(int(e), float(v)) for e, v in zip(h["epoch"], h["valid_loss"])]
    except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
        return []  # not yet written


# ----------------------------------------------------------------------------- the study


@dataclass
class Search:
    """What every trial of one search shares."""

    base: Path
    doc: dict
    cfg: Config
    dims: list[Dim]
    overrides: list[tuple[str, Any]]
    out_dir: Path

    @property
    def sign(self) -> float:
        """Valid loss as the study's direction reads it (a study that maximises gets -loss)."""
        return -1.0 if higher_is_better(self.cfg.metric) else 1.0

    def objective(self, trial) -> float:
        import optuna

        values = self.overrides + [(d.key, suggest(trial, d)) for d in self.dims]
        config = trial_config(self.base, self.doc, values, self.out_dir)
        cfg = validate(Config, config)
        for key, value in (("config", str(config)), ("host", socket.gethostname()), ("pid", os.getpid())):
            trial.set_user_attr(key, value)
        run = RunDir(cfg.run_dir)

        seen = []

        def on_epoch(epoch: int, loss: float) -> bool:
            trial.report(self.sign * loss, schedule_share(epoch, cfg.train.epochs))
            seen.append((epoch, loss))
            return trial.should_prune()

        if train_fold0(config, run, on_epoch):
            epoch, loss = seen[-1]
            print(f"trial {trial.number}: pruned at epoch {epoch}, valid loss {loss:.4f} over the median ({cfg.name})")
            raise optuna.TrialPruned()
        value = oof_scores(cfg, read_oof(cfg, run.fold_oof(0)))["overall"]
        print(f"trial {trial.number}: {cfg.metric} {value:.4f} on fold 0 ({cfg.name})")
        return value


def open_study(db: Path, name: str, maximize: bool):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    db.parent.mkdir(parents=True, exist_ok=True)
    st = optuna.storages
    if hasattr(st, "RetryHeartbeatStaleTrialCallback"):  # Optuna 4.9 renamed it
        retry = {"heartbeat_stale_trial_callback": st.RetryHeartbeatStaleTrialCallback(max_retry=2)}
    else:
        retry = {"failed_trial_callback": st.RetryFailedTrialCallback(max_retry=2)}
    storage = st.RDBStorage(f"sqlite:///{db}", heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S, **retry)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=optuna.samplers.TPESampler(n_startup_trials=TPE_STARTUP),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=0),
        direction="maximize" if maximize else "minimize",
        load_if_exists=True,
    )


def rerun_dead(study) -> list[int]:
    """Trials left running by a process of this host that has died (a killed search): failed, and
    their values queued again, so the next trial resumes their fold from last.pt."""
    from optuna.trial import TrialState

    host, out = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        a = t.user_attrs
        if a.get("host") == host and "pid" in a and not alive({"host": host, "pid": a["pid"]}):
            study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"rerun_of": t.number})
            out.append(t.number)
    if out:
        print(f"search: trial(s) {', '.join(map(str, out))} stopped with their process; run again, resuming")
    return out


def finished(study) -> list:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def seconds_of(trials: list) -> list[float]:
    return [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]


def why_stop(took: list[float], trials: int | None, budget: float | None, elapsed: float) -> str | None:
    """Why no further trial starts, or None: `took` the seconds of the study's finished trials,
    `elapsed` this process's seconds so far."""
    if trials is not None and len(took) >= trials:
        return f"the study holds {len(took)} finished trials (TRIALS={trials})"
    if budget is not None:
        left = budget - elapsed
        if left <= 0 or (took and left < float(np.median(took))):
            typical = f"; the median trial takes {np.median(took):.0f} s" if took else ""
            return f"{max(left, 0):.0f} s of the budget left{typical}"
    return None


# ----------------------------------------------------------------------------- the results


def trials_table(study) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "WAITING":  # queued, not started
            continue
        took = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        steps = sorted(t.intermediate_values)
        last = t.intermediate_values[steps[-1]] if steps else None
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "fold0": t.value if t.state.name == "COMPLETE" else None,  # a pruned trial's is its last loss
                **dict(t.params),
                "epochs": len(steps),
                "valid_loss": None if last is None else abs(last),
                "seconds": None if took is None else round(took, 1),
                "config": t.user_attrs.get("config", ""),
            }
        )
    return pd.DataFrame(rows)


def write_best(search: Search, study) -> Path | None:
    """<folder>/search/<name>--best.yaml: `base:` the best trial's config, so its name (and its
    trained fold 0) is the best trial's."""
    try:
        best = study.best_trial
    except ValueError:
        return None  # no trial has finished with a score
    config = Path(best.user_attrs["config"])
    path = search.out_dir / f"{search.doc['name']}--best.yaml"
    params = ", ".join(f"{k}={v}" for k, v in best.params.items())
    write_text(
        path,
        f"# The best trial of `make search` on {search.base}: trial {best.number}, {search.cfg.metric} "
        f"{best.value:.4f} on fold 0 ({params}). Rewritten when a better trial finishes.\n"
        f"base: {os.path.relpath(config, path.parent)}\n",
    )
    return path


def main(
    config: str | Path,
    space: str | Path,
    budget: str | None = None,
    trials: int | None = None,
    full: bool = False,
    overrides: list[str] = (),
) -> pd.DataFrame:
    """Run trials until TRIALS finished or the BUDGET would be passed; print and write the table,
    write the best trial's config and (full) make its submission."""
    base, seconds = Path(config), parse_budget(budget)
    if seconds is None and trials is None:
        raise PipelineError("search: give BUDGET= (e.g. 2h) or TRIALS= (or both): it needs a place to stop")
    if trials is not None and trials < 1:
        raise PipelineError(f"TRIALS: {trials}; at least 1")
    if not Path("Makefile").is_file():
        raise PipelineError("search: run it in the project folder (trials train through its Makefile)")
    cfg = validate(Config, base, list(overrides))
    dims = read_space(space)
    check_space(base, dims, list(overrides), space)
    fixed = [(".".join(keys), value) for keys, value in map(parse_override, overrides)]
    search = Search(base, read_chain(base)[0], cfg, dims, fixed, base.parent / "search")
    db = Path(cfg.runs_dir) / f"{cfg.name}--search.db"
    study = open_study(db, cfg.name, higher_is_better(cfg.metric))
    rerun_dead(study)
    started = time.time()
    print(f"search {cfg.name}: {len(dims)} keys, study {db} ({len(finished(study))} finished trials so far)")
    while (reason := why_stop(seconds_of(finished(study)), trials, seconds, time.time() - started)) is None:
        study.optimize(search.objective, n_trials=1, catch=(TrialFailed,))
    print(f"search stops: {reason}; {time.time() - started:.0f} s in this process")
    return report(search, study, db, full)


def report(search: Search, study, db: Path, full: bool) -> pd.DataFrame:
    table = trials_table(study)
    write_csv(db.with_suffix(".csv"), table)
    with pd.option_context("display.width", 200, "display.max_colwidth", 50):
        print(table.drop(columns=["config"]).to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""))
    best = write_best(search, study)
    if best is None:
        print("no trial has finished with a score yet")
        return table
    print(f"best: trial {study.best_trial.number}, {search.cfg.metric} {study.best_value:.4f} on fold 0 -> {best}")
    if full:
        cmd = ["make", "--no-print-directory", "ensemble", f"CONFIG={best}", "SET=", f"PY={sys.executable}"]
        if subprocess.run(cmd, env=make_env()).returncode != 0:
            raise PipelineError(f"search: make ensemble CONFIG={best} failed (its output is above)")
    return table
