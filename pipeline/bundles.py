"""An offline bundle, bundles/<name>/: what `make bundle` packs and the bundle's predict.py reads.
The one place that says where each file of a bundle lives, and how its members become experiment
folders again on the machine that predicts.

    bundles/<name>/bundle.json                the ensemble's rule (members, method, weights, metric,
                                              calibrate), the project's version, the wheels packed
    bundles/<name>/predict.py                 pipeline/bundle_predict.py: pip --no-index, then predict
    bundles/<name>/wheels/*.whl               the project's wheel and each dependency the target lacks
    bundles/<name>/target/<file>              the target file it was packed for (Make's goal: another
                                              TARGET= names another file, so the bundle is packed again)
    bundles/<name>/members/<exp>/config.yaml  each member's resolved config, oof.csv and
                                 oof.csv      calibration.json (its ensemble rule reads the OOF),
                                 fold<k>/best.pt   and each fold's kept model
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import Config
from .config_files import read_yaml, to_yaml, validate
from .errors import PipelineError
from .io import write_text
from .runs import RunDir

PROJECT = "kaggle-image-pipeline"  # pyproject.toml's name: what predict.py installs


@dataclass(frozen=True)
class BundleDir:
    root: Path

    @property
    def spec(self) -> Path:
        return self.root / "bundle.json"

    @property
    def predict(self) -> Path:
        return self.root / "predict.py"

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    def target(self, file: Path) -> Path:
        return self.root / "target" / Path(file).name

    def member(self, name: str) -> RunDir:
        """A member's files, laid out as in its experiment folder (RunDir names them)."""
        return RunDir(self.root / "members" / name)


SPEC_KEYS = ("name", "members", "method", "weights", "metric", "calibrate", "project", "version")


def read_spec(bundle: BundleDir) -> dict:
    """bundle.json, checked to hold the rule, and every member's config to be there."""
    try:
        spec = json.loads(bundle.spec.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{bundle.spec}: not found ({bundle.root} is not a bundle)") from None
    except ValueError as e:
        raise PipelineError(f"{bundle.spec}: not JSON ({e})") from None
    missing = [k for k in SPEC_KEYS if k not in spec] if isinstance(spec, dict) else list(SPEC_KEYS)
    if missing:
        raise PipelineError(f"{bundle.spec}: no {missing[0]} (a damaged bundle: make bundle again)")
    for name in spec["members"]:
        if not bundle.member(name).config.is_file():
            raise PipelineError(f"{bundle.member(name).config}: not found (a damaged bundle: make bundle again)")
    return spec


def member_files(run: RunDir, n_folds: int) -> list[Path]:
    """What prediction reads of an experiment: its config, OOF, calibration (when infer fitted one)
    and every fold's best.pt; relative to the experiment folder."""
    files = [run.config, run.oof, run.calibration] + [run.best(k) for k in range(n_folds)]
    return [f.relative_to(run.root) for f in files if f != run.calibration or f.is_file()]


def unpack(bundle: BundleDir, competition: Path, work: Path, overrides: list[str] = ()) -> tuple[dict, list[Config]]:
    """The bundle's rule, and each member as an experiment folder under work/runs: its config with
    data.root the competition folder (and the decode cache under work), the bundle's files linked
    in, never copied nor written (a Kaggle dataset is read-only). `overrides` (key=value) apply to
    every member, runtime.device=cpu say."""
    spec = read_spec(bundle)
    if not competition.is_dir():
        raise PipelineError(f"{competition}: no such folder (give the competition's folder)")
    cfgs = []
    for name in spec["members"]:
        member = bundle.member(name)
        doc = read_yaml(member.config)
        doc.setdefault("data", {})["root"] = str(competition.resolve())
        doc["runs_dir"] = str((work / "runs").resolve())
        doc.setdefault("runtime", {})["cache_dir"] = str((work / "cache").resolve())
        path = work / "configs" / f"{name}.yaml"
        write_text(path, yaml.safe_dump(doc, sort_keys=False))
        cfg = validate(Config, path, overrides)
        sample = cfg.data.path(cfg.data.sample_submission)
        if not sample.is_file():
            raise PipelineError(f"{sample}: not found (is {competition} the competition's folder?)")
        run = RunDir(cfg.run_dir)
        shutil.rmtree(run.root, ignore_errors=True)  # another bundle's links (a calibration) must not stay
        for rel in member_files(member, cfg.folds.n_folds):
            if rel == Path(member.config.name):
                continue
            link = run.root / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            os.symlink((member.root / rel).resolve(), link)
        write_text(run.config, to_yaml(cfg))  # the ensemble reads each member's config there
        cfgs.append(cfg)
    return spec, cfgs
