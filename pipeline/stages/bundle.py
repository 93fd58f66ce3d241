"""Stage 6: an offline bundle of one experiment or ensemble, for a code competition's notebook
(no internet, no package index).

Usage: python -m pipeline bundle RUN [RUN ...] [--name NAME] [--method M] [--weights W,W] [--target FILE]
       python -m pipeline bundle --spec ensembles/x.yaml [--target FILE]      (make bundle [ENSEMBLE=...])

Packs bundles/<name>/ (pipeline/bundles.py has the layout) from finished experiments: each
member's fold checkpoints, resolved config, OOF and calibration; the ensemble's rule, as make
ensemble was given it; the project's own wheel and a wheel of each dependency the target image
lacks, at the version installed here (--target: a file naming what the image has, one package a
line; configs/bundle-target.txt declares torch and timm; their own dependencies count as present
too); and predict.py. On the target, with no internet:

    python predict.py COMPETITION_DIR [--out submission.csv] [key=value ...]

installs from wheels/ with pip --no-index, predicts the test images of COMPETITION_DIR with every
fold of every member under the TTA each was inferred with, and combines them by the ensemble's
rule: on the competition make ensemble ran on, byte for byte its submission.
--pip-args passes options to pip download, for a target of another Python or platform
(e.g. "--python-version 3.10 --platform manylinux2014_x86_64").
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .. import blend
from ..bundles import PROJECT, BundleDir, member_files
from ..config import NAME
from ..config_files import load_ensemble
from ..errors import PipelineError
from ..io import write_text
from ..runs import RunDir
from ..upstream import check_compatible, read_predictions

# ----------------------------------------------------------------------------- which wheels


def read_target(path: Path) -> list[str]:
    """The package names a target file declares, one requirement a line ('#' starts a comment; a
    version or extras after the name are allowed and not read)."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: cannot read the target's package list ({e})") from None
    names = []
    for n, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            names.append(Requirement(text).name)
        except InvalidRequirement:
            raise PipelineError(f"{path} line {n}: {text!r} is not a package name") from None
    return names


def closure(names: list[str]) -> dict[str, Distribution | None]:
    """The installed distributions of `names` and everything they require, with the extras they
    ask of each other (torch's cuda-toolkit[cublas, ...]), by canonical name; None for a name
    not installed here."""
    found: dict[str, Distribution | None] = {}
    done: set[tuple[str, str]] = set()
    todo = [(name, "") for name in names]
    while todo:
        name, extra = todo.pop()
        name = canonicalize_name(name)
        if (name, extra) in done:
            continue
        done.add((name, extra))
        if name not in found:
            try:
                found[name] = distribution(name)
            except PackageNotFoundError:
                found[name] = None
        if found[name] is None:
            continue
        for text in found[name].requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, "")] + [(req.name, e) for e in req.extras]
    return found


def needed_wheels(target: list[str]) -> list[str]:
    """name==version of each dependency of the project that the target's packages (and theirs)
    do not bring, sorted."""
    present = closure(target)
    unknown = [n for n, d in present.items() if d is None and n in map(canonicalize_name, target)]
    if unknown:  # its dependencies cannot be counted as present: the bundle packs them
        print(f"note: {', '.join(unknown)}: not installed here, so what they require is not known to be present")
    mine = closure([PROJECT])
    missing = [n for n, d in mine.items() if d is None and n not in present]
    if missing:
        raise PipelineError(f"{', '.join(missing)}: required by {PROJECT} but not installed here (run make setup)")
    return sorted(
        f"{d.metadata['Name']}=={d.version}"
        for n, d in mine.items()
        if n not in present and n != canonicalize_name(PROJECT)
    )


def pip(args: list[str], what: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
        raise PipelineError(f"{what}: pip failed: {errors[-1] if errors else done.returncode}")


def build_wheels(dest: Path, needed: list[str], pip_args: list[str]) -> str:
    """The project's wheel, built from its source folder, and the dependencies' from the index
    (pip's cache first). The project's version gets a local part, a digest of its code
    (0.1.0+g1a2b3c4d5e6f), so pip never keeps another bundle's or checkout's 0.1.0 in its place.
    Returns that version."""
    source = Path(__file__).resolve().parents[2]
    if not (source / "pyproject.toml").is_file():
        raise PipelineError(f"{source}: make bundle needs the project's source (pyproject.toml beside pipeline/)")
    with tempfile.TemporaryDirectory() as tmp:  # a clean copy: setuptools' build/ keeps deleted modules
        shutil.copyfile(source / "README.md", Path(tmp) / "README.md")
        shutil.copytree(source / "pipeline", Path(tmp) / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
        version = f"{distribution(PROJECT).version.split('+')[0]}+g{code_digest(Path(tmp) / 'pipeline')}"
        pyproject = (source / "pyproject.toml").read_text()
        (Path(tmp) / "pyproject.toml").write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject))
        # a venv of Python 3.12+ has no setuptools: pip then fetches it into an isolated build
        isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
        pip(["wheel", "--quiet", "--no-deps", *isolation, "--wheel-dir", str(dest.resolve()), tmp], PROJECT)
    if needed:
        download = ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(dest)]
        pip(download + pip_args + needed, "the dependency wheels")
    return version


def code_digest(package: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        digest.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:12]


# ----------------------------------------------------------------------------- the bundle


def pack(tmp: BundleDir, members: list, rule: dict, target: Path, pip_args: list[str]) -> dict:
    """Fill `tmp` with the members' files, the wheels, predict.py and bundle.json (written last)."""
    for m in members:
        into = tmp.member(m.cfg.name)
        for rel in member_files(RunDir(m.run), m.cfg.folds.n_folds):
            if not (m.run / rel).is_file():
                raise PipelineError(f"{m.run / rel}: not found (run make train and make infer for {m.cfg.name})")
            (into.root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(m.run / rel, into.root / rel)
    needed = needed_wheels(read_target(target))
    version = build_wheels(tmp.wheels, needed, pip_args)
    shutil.copyfile(Path(__file__).resolve().parents[1] / "bundle_predict.py", tmp.predict)
    tmp.target(target).parent.mkdir()
    shutil.copyfile(target, tmp.target(target))
    spec = {
        **rule,
        "members": [m.cfg.name for m in members],
        "project": PROJECT,
        "version": version,
        "target": read_target(target),
        "wheels": sorted(p.name for p in tmp.wheels.glob("*.whl")),
    }
    write_text(tmp.spec, json.dumps(spec, indent=1) + "\n")
    return spec


def main(
    runs: list[str | Path],
    name: str | None = None,
    method: str = "mean",
    weights=None,
    metric: str | None = None,
    calibrate: str = "auto",
    out_dir: str | Path = "bundles",
    target: str | Path = "configs/bundle-target.txt",
    pip_args: list[str] = (),
) -> Path:
    """bundles/<name>/, built beside it and renamed into place: a failed pack leaves the old
    bundle (or none), never half of one."""
    members = [read_predictions(r) for r in runs]
    check_compatible(members)  # what make ensemble checks: a bad rule must not wait for the notebook
    d = members[0].cfg.data
    blend.allowed_methods(method, metric or members[0].cfg.metric, d.multilabel, d.numeric, d.retrieval)
    names = [m.cfg.name for m in members]
    if len(set(names)) < len(names):
        raise PipelineError(f"bundle: two members share an experiment name ({', '.join(names)})")
    name = name or (names[0] if len(members) == 1 else "ensemble")
    if not re.fullmatch(NAME, name) or name.startswith("."):
        raise PipelineError(f"bundle --name {name}: letters, digits, '.', '_' and '-', not starting with '.'")
    rule = {"name": name, "method": method, "weights": weights, "metric": metric, "calibrate": calibrate}
    final = Path(out_dir) / name
    if final.exists() and not BundleDir(final).spec.is_file():  # rmtree'd below: only ever a bundle
        raise PipelineError(f"{final}: exists and is not a bundle; give another --name or --out-dir")
    tmp = BundleDir(final.with_name(f".{name}.tmp"))
    shutil.rmtree(tmp.root, ignore_errors=True)
    try:
        spec = pack(tmp, members, rule, Path(target), list(pip_args))
        shutil.rmtree(final, ignore_errors=True)
        tmp.root.rename(final)
    finally:
        shutil.rmtree(tmp.root, ignore_errors=True)
    size = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
    wheels = sum(f.stat().st_size for f in BundleDir(final).wheels.glob("*.whl"))
    print(
        f"{final}: {len(members)} member{'s' if len(members) > 1 else ''} ({', '.join(names)}), "
        f"{len(spec['wheels'])} wheels; {size / 2**20:.1f} MiB ({wheels / 2**20:.1f} MiB of wheels). "
        f"Offline: python {final / 'predict.py'} COMPETITION_DIR --out submission.csv"
    )
    return final


def run_cli(args) -> None:
    """From the command line: an ensemble file, or members with --method/--weights (as ensemble)."""
    extra = {"out_dir": args.out_dir, "target": args.target, "pip_args": shlex.split(args.pip_args or "")}
    if args.spec:
        if args.runs:
            raise PipelineError("bundle: give members in the ensemble file or on the command line, not both")
        spec = load_ensemble(args.spec)
        main(spec.members, spec.name, spec.method, spec.weights, spec.metric, spec.calibrate, **extra)
        return
    if not args.runs:
        raise PipelineError("bundle: name at least one experiment (or --spec FILE)")
    weights = blend.parse_weights(args.weights, len(args.runs)) if args.weights else None
    main(args.runs, args.name, args.method, weights, None, args.calibrate, **extra)
