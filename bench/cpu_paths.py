"""Two paths the suite does not run, checked on the CPU: `runtime.compile: true` against eager, and a
2-process DDP fold killed mid-run and resumed under torchrun against an uninterrupted one.

Usage: python bench/cpu_paths.py [--keep DIR]

On a tiny competition from tests/helpers.py with timm's `test_efficientnet` at 32 px. Prints the
compiled run's losses beside eager's, whether its checkpoint holds the bare state_dict (no
`_orig_mod.` prefix), and the largest weight difference between the resumed and the uninterrupted
DDP runs. Exits 1 when a check fails. About three minutes on 2 cores, most of it compiling.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import make_competition, make_config  # noqa: E402

from pipeline.config_files import load_config  # noqa: E402

# BatchNorm as pretrained and no dropout: deterministic given the images, whatever the batch split.
PHASES = [{"epochs": 12, "lr": 3e-3, "freeze_bn": True}]
KILL_AFTER = 9  # the epoch (counted from 0, as training prints) whose end line sends SIGTERM
CLEAN = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PIPELINE_JOBS")}


def command(config: Path, processes: int) -> list[str]:
    """`python -m pipeline train CONFIG --fold 0`, under torchrun for more than one process."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    return [sys.executable, *launcher, "-m", "pipeline", "train", str(config), "--fold", "0"]


def run_dir(config: Path) -> Path:
    return load_config(config).run_dir / "fold0"


def train(config: Path, processes: int = 1) -> str:
    cmd = command(config, processes)
    res = subprocess.run(cmd, cwd=ROOT, env=CLEAN, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return res.stdout


def killed(config: Path) -> None:
    """2-process training, SIGTERM to torchrun once process 0 reports epoch KILL_AFTER's end."""
    env = {**CLEAN, "PYTHONUNBUFFERED": "1"}  # each line as it is printed, not at exit
    pipe = subprocess.PIPE
    proc = subprocess.Popen(command(config, 2), cwd=ROOT, env=env, stdout=pipe, stderr=pipe, text=True)
    for line in proc.stdout:
        if line.startswith(f"fold 0 epoch {KILL_AFTER} "):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate()  # torchrun's agent answers SIGTERM with a traceback of its own: left out
    print("".join(line for line in err.splitlines(keepends=True) if line.startswith("interrupted:")), end="")
    last = PHASES[0]["epochs"] - 1
    print(f"DDP: SIGTERM to torchrun at the end of epoch {KILL_AFTER} (of 0..{last}), exit {proc.returncode}")


def weights(config: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir(config) / "last.pt", weights_only=True, map_location="cpu")["model"]


def check_compile(tmp: Path, comp: Path) -> bool:
    short = {"phases": [{"epochs": 3, "lr": 3e-3, "freeze_bn": True}], "batch_size": 8}
    eager = make_config(tmp, comp, name="eager", train=short)
    compiled = make_config(tmp, comp, name="compiled", train=short, runtime={"compile": True})
    subprocess.run(
        [sys.executable, "-m", "pipeline", "folds", str(eager)], cwd=ROOT, env=CLEAN, check=True, capture_output=True
    )
    times = {}
    for config in (eager, compiled):
        start = time.time()
        train(config)
        times[config.stem] = time.time() - start
    a, b = (pd.read_csv(run_dir(c) / "history.csv") for c in (eager, compiled))
    same = all((a[k].round(3) == b[k].round(3)).all() for k in ("train_loss", "valid_loss"))
    bare = not any(k.startswith("_orig_mod.") for k in weights(compiled))
    print(f"compile: {times['compiled']:.0f} s against eager's {times['eager']:.0f} s for 3 epochs")
    print(pd.DataFrame({"eager": a["valid_loss"], "compiled": b["valid_loss"]}).round(4).to_string())
    print(f"compile: losses equal to three decimals: {same}; checkpoint holds the bare state_dict: {bare}")
    return same and bare


def check_ddp_resume(tmp: Path, comp: Path) -> bool:
    keys = {"phases": PHASES, "batch_size": 4}
    whole = make_config(tmp, comp, name="ddp-whole", train=keys)
    resumed = make_config(tmp, comp, name="ddp-resumed", train=keys)
    train(whole, processes=2)
    killed(resumed)
    out = train(resumed, processes=2)
    said = next((line for line in out.splitlines() if "resuming after epoch" in line), "no resume line")
    print(f"DDP: the second torchrun printed: {said}")
    a, b = weights(whole), weights(resumed)
    gap = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    print(f"DDP: largest weight difference, resumed against uninterrupted: {gap}")
    last = PHASES[0]["epochs"] - 1
    return any(f"after epoch {e} " in said for e in range(KILL_AFTER, last)) and gap == 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        comp = make_competition(tmp / "comp")
        ok = [check_compile(tmp, comp), check_ddp_resume(tmp, comp)]
    print("all checks passed" if all(ok) else "a check FAILED")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
