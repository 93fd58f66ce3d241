"""What made an experiment's outputs: runs/<name>/provenance.json, one entry per stage, rewritten
each time the stage runs (the resolved config itself is runs/<name>/config.yaml).

    {"train": {"when", "host", "command", "python", "packages": {...}, "git": {"commit", "dirty"},
               "inputs": {"<file>": "sha256:<first 16 hex>", ...}}, "infer": {...}}

Must not import torch (packages are read from their metadata).
"""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from .config import Config
from .io import write_text
from .runs import RunDir

PACKAGES = ("torch", "torchvision", "timm", "albumentations", "opencv-python-headless", "numpy", "pandas",
            "scikit-learn", "pydantic", "pillow")  # fmt: skip


def file_digest(path: Path) -> str | None:
    """sha256 of a file's bytes (first 16 hex digits), or None when it does not exist."""
    if not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()[:16]


def input_files(cfg: Config) -> list[Path]:
    """The competition's tables and the folds file: what every stage's outputs rest on."""
    d = cfg.data
    return [d.path(d.train_csv), cfg.folds_file, d.path(d.sample_submission)]


def input_digests(cfg: Config) -> dict[str, str | None]:
    return {str(p): file_digest(p) for p in input_files(cfg)}


def packages() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(where: Path | None = None) -> dict | None:
    """The pipeline code's commit and whether its files differ from it; None outside a repo."""
    where = where or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def record(cfg: Config, stage: str, argv: list[str] | None = None) -> dict:
    """Write this stage's entry into runs/<name>/provenance.json, keeping the other stages'."""
    path = RunDir(cfg.run_dir).provenance
    try:
        doc = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        doc = {}  # a damaged record is replaced, not a reason to stop
    doc[stage] = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": socket.gethostname(),
        "command": " ".join(argv if argv is not None else sys.argv),
        "python": platform.python_version(),
        "packages": packages(),
        "git": git_state(),
        "inputs": input_digests(cfg),
    }
    write_text(path, json.dumps(doc, indent=1) + "\n")
    return doc[stage]
