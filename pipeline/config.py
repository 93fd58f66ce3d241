"""Experiment configs: YAML (optionally inheriting a base file) loaded into frozen, typed objects.

Usage: python -m pipeline.config CONFIG [key=value ...]     # print the resolved config
       python -m pipeline.config CONFIG [key=value ...] --make [--dry]  # Make variables, stamps

This module must not import torch: Make calls it at parse time.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import PipelineError
from .io import write_text_if_changed


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`, users don't)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Data(_Section):
    name: str | None = None  # competition name; folds/<name>.csv. Default: the folder name of root
    root: str
    train_csv: str = "train.csv"
    sample_submission: str = "sample_submission.csv"
    id_col: str = "image_id"
    label_col: str = "label"
    group_col: str | None = None
    train_images: str = "train/{id}.jpg"  # {id} is replaced by the id column's value
    test_images: str = "test/{id}.jpg"
    # The class a detector must not fire on (no_ship, normal, ...): what make mine mines, and
    # whose false-positive rate infer reports. null: no negative class.
    negative_class: str | None = None
    # multiclass: one label per image (softmax, cross-entropy); multilabel: label_col holds
    # several labels separated by label_sep (sigmoid, binary cross-entropy per label)
    task: Literal["multiclass", "multilabel"] = "multiclass"
    label_sep: str = " "

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    @property
    def sep(self) -> str | None:
        """The separator of several labels in one cell (multi-label), else None."""
        return self.label_sep if self.multilabel else None

    @property
    def competition(self) -> str:
        return self.name or Path(self.root).resolve().name

    def path(self, rel: str) -> Path:
        return Path(self.root) / rel


class Model(_Section):
    backbone: str
    # none | hub | hub:<tag> | <path to a weights file> | py:<module>:<callable returning a path>
    pretrained: str = "none"
    drop_rate: float = Field(0.0, ge=0.0, lt=1.0)  # dropout before the new head
    # null: the backbone's own pooling; catavgmax concatenates average and max pooling (CNNs)
    global_pool: Literal["avg", "max", "avgmax", "catavgmax"] | None = None
    head_init: Literal["timm", "kaiming"] = "timm"  # timm: the backbone's own init of its classifier
    img_size: int | None = Field(None, ge=16)  # inference size; default: the backbone's, from timm


class Aug(_Section):
    scale_min: float = Field(0.35, gt=0.0, le=1.0)  # RandomResizedCrop's smallest area fraction
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    vflip: float = Field(0.0, ge=0.0, le=1.0)
    color_jitter: float = Field(0.2, ge=0.0, le=1.0)


class Phase(_Section):
    """A stretch of training at one image size and schedule; phases run in order on the same model
    and optimizer. Frozen: only the head learns, and BatchNorm statistics stay as pretrained."""
    epochs: int = Field(ge=1)
    lr: float = Field(gt=0.0)  # peak LR of the head; lower layers get less (layer_decay / lr_ratio)
    img_size: int | None = Field(None, ge=16)  # default: model.img_size
    frozen: bool = False
    # BatchNorm in eval mode (running statistics kept as they are). Default: as frozen. True while
    # unfrozen is Keras's advice for small datasets: batch statistics of a few dozen images are noisy.
    freeze_bn: bool | None = None
    # onecycle: fastai's (LR up then down, momentum 0.95 -> 0.85 -> 0.95); cosine: warmup then
    # cosine decay; sgdr: cosine with warm restarts every cycle_epochs (times cycle_mul each time)
    sched: Literal["onecycle", "cosine", "sgdr", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)  # cosine and sgdr
    pct_start: float = Field(0.25, gt=0.0, lt=1.0)  # onecycle: fraction of the phase spent rising
    max_momentum: float = Field(0.95, ge=0.0, lt=1.0)  # onecycle: momentum (or Adam's beta1) bounds
    base_momentum: float = Field(0.85, ge=0.0, lt=1.0)
    cycle_epochs: float | None = Field(None, gt=0.0)  # sgdr: first cycle; default: a third of epochs
    cycle_mul: float = Field(1.0, ge=1.0)

    @property
    def bn_eval(self) -> bool:
        return self.frozen if self.freeze_bn is None else self.freeze_bn

    @model_validator(mode="after")
    def _fits(self):
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})")
        if self.base_momentum > self.max_momentum:
            raise ValueError("base_momentum must not exceed max_momentum")
        return self


def _default_phases() -> list[Phase]:
    return [Phase(epochs=5, lr=1e-3, warmup_epochs=0.5)]


class Train(_Section):
    phases: list[Phase] = Field(default_factory=_default_phases, min_length=1)
    batch_size: int = Field(32, ge=1)
    accum_steps: int = Field(1, ge=1)  # gradient accumulation: one update per accum_steps batches
    # Linear LR scaling: every phase lr is multiplied by batch_size * accum_steps / lr_ref_batch
    lr_ref_batch: int | None = Field(None, ge=1)
    weight_decay: float = Field(0.01, ge=0.0)
    optimizer: str = "adamw"  # any name timm.optim.create_optimizer_v2 knows; sgd is Nesterov SGD
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # SGD momentum, outside one-cycle phases
    # Discriminative LRs once unfrozen, over timm's layer groups (stem ... head). Set at most one:
    # layer_decay: each group below the head trains at decay x the one above (timm's layer decay);
    # lr_ratio: the stem trains at lr / ratio, the groups between spaced geometrically up to lr.
    layer_decay: float | None = Field(None, gt=0.0, le=1.0)
    lr_ratio: float | None = Field(None, ge=1.0)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    monitor: Literal["loss", "accuracy", "last"] = "loss"  # which epoch's model a fold keeps
    # oversample: minority classes repeated in the training folds up to the largest class;
    # weighted: a sampler drawing each class equally often. Validation folds are never touched.
    sampling: Literal["none", "oversample", "weighted"] = "none"
    aug: Aug = Aug()
    seed: int = 42
    # The share of the training folds' data.negative_class images each fold trains on (a seeded
    # sample); the rest is what make mine searches for false positives. Validation is never sampled.
    neg_fraction: float = Field(1.0, gt=0.0, le=1.0)
    # Config files of finished experiments whose outputs join each fold's training: the hard
    # negatives their make mine found, the pseudo-labels their make pseudo kept. Make builds them.
    hard_negatives_from: str | None = None
    pseudo_labels_from: str | None = None

    @model_validator(mode="after")
    def _one_discriminative_rule(self):
        if self.layer_decay is not None and self.lr_ratio is not None:
            raise ValueError("set layer_decay or lr_ratio, not both")
        return self

    @property
    def epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    @property
    def phase_starts(self) -> list[int]:
        """The global epoch at which each phase begins."""
        return [sum(p.epochs for p in self.phases[:i]) for i in range(len(self.phases))]


class LrFind(_Section):
    """The LR range test (make lr-find): the LR rises exponentially from start_lr to end_lr."""
    start_lr: float = Field(1e-7, gt=0.0)
    end_lr: float = Field(10.0, gt=0.0)
    num_iter: int = Field(100, ge=5)
    phase: int = Field(0, ge=0)  # which phase's conditions (frozen or not, image size)
    fold: int = Field(0, ge=0)  # whose training images
    stop_factor: float = Field(4.0, gt=1.0)  # stop once the smoothed loss passes this x its best
    smooth: float = Field(0.98, ge=0.0, lt=1.0)  # EMA factor of the loss (bias-corrected)

    @model_validator(mode="after")
    def _rises(self):
        if self.end_lr <= self.start_lr:
            raise ValueError(f"end_lr ({self.end_lr}) must be above start_lr ({self.start_lr})")
        return self


class Mine(_Section):
    """Hard-negative mining (make mine): each fold's model scores a pool of negatives it never
    validated on; the most confident false positives are written for another experiment to train on."""
    # unused: the training folds' negatives that train.neg_fraction left out; otherwise a folder of
    # extra negative images, relative to data.root
    pool: str = "unused"
    min_score: float = Field(0.5, ge=0.0, le=1.0)  # keep images whose non-negative probability is at least this
    top_k: int | None = Field(None, ge=1)  # and at most this many per fold, the highest scores


class Pseudo(_Section):
    """Pseudo-labels (make pseudo): fold k's model labels unlabelled images for fold k of another
    experiment, so no fold's teacher has seen that fold's validation labels."""
    source: str = "test"  # test: the test images; otherwise a folder of images, relative to data.root
    threshold: float = Field(0.9, ge=0.0, le=1.0)  # keep images whose top probability is at least this
    soft: bool = False  # train on the probabilities instead of the top class


class Runtime(_Section):
    """Where and how the work runs; changing it never makes a stage's outputs stale."""
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    amp: bool = True  # autocast, on CUDA only
    amp_dtype: Literal["bfloat16", "float16"] = "bfloat16"  # float16 (with loss scaling) for pre-Ampere GPUs
    channels_last: bool = True  # faster on CPU too, for convnets
    num_workers: int | None = Field(None, ge=0)  # default: 0 on CPU, up to 8 on CUDA


class Folds(_Section):
    n_folds: int = Field(5, ge=2)
    seed: int = 42
    dir: str = "folds"


Flip = Literal["hflip", "vflip", "transpose", "rot90", "rot180", "rot270"]


class Tta(_Section):
    """Test-time augmentation: every combination of size, crop and flip is one view; the plain
    view (model.img_size, centre crop, no flip) is always one of them."""
    flips: list[Flip] = ["hflip"]
    sizes: list[int] = []  # more inference sizes besides model.img_size (CNNs only)
    crops: Literal["center", "five"] = "center"  # five: centre plus the four corners
    merge: Literal["mean", "gmean", "max"] = "mean"  # of the views' probabilities

    @model_validator(mode="after")
    def _sizes(self):
        if any(s < 16 for s in self.sizes):
            raise ValueError(f"sizes must be at least 16 px (got {self.sizes})")
        return self


class Infer(_Section):
    batch_size: int = Field(64, ge=1)  # images per forward pass, all their TTA views included
    tta: Tta = Tta()


class Config(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")  # experiment name: runs/<name>/
    runs_dir: str = "runs"
    # The competition's metric: CV is reported with it, and ensemble weights are fitted to it.
    metric: Literal["accuracy", "log_loss", "roc_auc", "f1_macro", "qwk"] = "accuracy"
    data: Data
    model: Model
    train: Train = Train()
    folds: Folds = Folds()
    infer: Infer = Infer()
    lr_find: LrFind = LrFind()
    mine: Mine = Mine()
    pseudo: Pseudo = Pseudo()
    runtime: Runtime = Runtime()

    @model_validator(mode="after")
    def _multilabel_fits(self):
        if self.data.task == "multilabel":
            if self.train.sampling != "none":
                raise ValueError("train.sampling: oversampling needs one label per image (data.task multiclass)")
            if self.metric == "qwk":
                raise ValueError("metric: qwk needs one ordered label per image (data.task multiclass)")
        return self

    @model_validator(mode="after")
    def _negatives_named(self):
        if self.train.neg_fraction < 1.0 and self.data.negative_class is None:
            raise ValueError("train.neg_fraction < 1 needs data.negative_class (which images to sample)")
        return self

    @model_validator(mode="after")
    def _lr_find_in_range(self):
        if self.lr_find.phase >= len(self.train.phases):
            raise ValueError(f"lr_find.phase {self.lr_find.phase}: train has {len(self.train.phases)} phases")
        if self.lr_find.fold >= self.folds.n_folds:
            raise ValueError(f"lr_find.fold {self.lr_find.fold}: there are {self.folds.n_folds} folds")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def folds_file(self) -> Path:
        return Path(self.folds.dir) / f"{self.data.competition}.csv"


# Which sections each stage's outputs depend on: a change elsewhere does not make them stale.
STAGE_SECTIONS = {
    "train": ("data", "model", "train", "folds"),
    "infer": ("data", "model", "folds", "infer", "metric"),
    "lr_find": ("data", "model", "train", "folds", "lr_find"),
    "mine": ("data", "infer", "mine"),
    "pseudo": ("data", "infer", "pseudo"),
}


def _read_yaml(path: Path) -> dict:
    try:
        with open(path) as f:
            doc = yaml.load(f, Loader=_Loader)
    except FileNotFoundError:
        raise PipelineError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PipelineError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise PipelineError(f"{path}: top level must be a mapping of keys, got {type(doc).__name__}")
    return doc


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _leaves(doc: dict, prefix: tuple = ()):
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, prefix + (key,))
        else:
            yield prefix + (key,)


def read_chain(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, dict[tuple, str]]:
    """The merged dict of a config and the files it inherits from (`base:`, relative to it),
    with the file each key came from, so an error can name the file that holds the bad key."""
    if path.resolve() in seen:
        raise PipelineError(f"{path}: base: inheritance loops back to itself")
    doc = _read_yaml(path)
    base = doc.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise PipelineError(f"{path}: base: expected a file name, got {base!r}")
    parent, origin = read_chain(path.parent / base, seen + (path.resolve(),)) if base else ({}, {})
    origin.update({leaf: str(path) for leaf in _leaves(doc)})
    return _merge(parent, doc), origin


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w.]*", key):
        raise PipelineError(f"override {text!r}: expected key=value, e.g. train.epochs=3")
    return key.split("."), yaml.load(value, Loader=_Loader) if value else ""


def _set(doc: dict, keys: list[str], value: Any) -> None:
    """Set doc[k1][k2]... = value; a number indexes a list (train.phases.1.lr=1e-3)."""
    for depth, k in enumerate(keys):
        last = depth == len(keys) - 1
        if isinstance(doc, list):
            if not k.isdigit() or int(k) >= len(doc):
                raise PipelineError(f"override {'.'.join(keys)}: {k} is not an index of the list "
                                    f"(it has {len(doc)} items)")
            k = int(k)
        elif not isinstance(doc, dict):
            raise PipelineError(f"override {'.'.join(keys)}: {keys[depth - 1]} is not a section")
        if last:
            doc[k] = value
        else:
            doc = doc.setdefault(k, {}) if isinstance(doc, dict) else doc[k]


def _describe(err: dict, origin: dict[tuple, str], default: str) -> str:
    loc = tuple(str(p) for p in err["loc"])
    source = next((origin[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in origin), default)
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    if err["type"] == "missing":
        return f"{source}: missing key '{key}'"
    got = repr(err.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"{source}: {key}: {err['msg']} (got {got})"


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    doc, origin = read_chain(path)
    for text in overrides:
        keys, value = parse_override(text)
        _set(doc, keys, value)
        origin[tuple(keys)] = f"{path} (override {text})"
    try:
        cfg = Config.model_validate(doc)
    except ValidationError as e:
        raise PipelineError(_describe(e.errors()[0], origin, str(path))) from None
    check_files(cfg, path)
    return cfg


def check_files(cfg: Config, path: Path) -> None:
    d = cfg.data
    needed = {"data.root": Path(d.root), "data.train_csv": d.path(d.train_csv),
              "data.sample_submission": d.path(d.sample_submission)}
    for key, p in needed.items():
        if not p.exists():
            raise PipelineError(f"{path}: {key}: {p} does not exist")
    pre = cfg.model.pretrained
    if pre not in ("none", "hub") and not pre.startswith(("hub:", "py:")) and not Path(pre).is_file():
        raise PipelineError(f"{path}: model.pretrained: {pre} is not a file "
                            "(nor none, hub, hub:<tag> or py:<module>:<function>)")


def to_yaml(cfg: Config, sections: tuple[str, ...] | None = None) -> str:
    doc = cfg.model_dump(mode="json")
    if sections is not None:
        doc = {k: doc[k] for k in sections}
    return yaml.safe_dump(doc, sort_keys=False)


def write_stamps(cfg: Config, dry: bool = False) -> list[str]:
    """Write the resolved config and per-stage stamps, touching only the files whose text changed,
    so Make reruns a stage only when a section it reads has changed. Returns the changed stages;
    with dry (make -n / -q) nothing is written, so a dry run with other settings changes nothing."""
    files = {"config": (cfg.run_dir / "config.yaml", to_yaml(cfg))}
    for stage, sections in STAGE_SECTIONS.items():
        files[stage] = (cfg.run_dir / "stamps" / f"{stage}.yaml", to_yaml(cfg, sections))
    if dry:
        return [k for k, (p, text) in files.items() if not p.is_file() or p.read_text() != text]
    return [k for k, (p, text) in files.items() if write_text_if_changed(p, text)]


# train.<key>: (the file of the other experiment this one trains on, the make target writing it)
UPSTREAM = {"hard_negatives_from": ("hard_negatives.csv", "mine"),
            "pseudo_labels_from": ("pseudo_labels.csv", "pseudo")}


def upstream(cfg: Config, key: str, need_file: bool = False) -> tuple[Config, Path] | None:
    """The experiment named by train.<key> and the file of it that this one trains on. It must
    use the same folds file, so that its fold k and this one's fold k validate the same images."""
    path = getattr(cfg.train, key)
    if path is None:
        return None
    try:
        up = load_config(path)
    except PipelineError as e:
        raise PipelineError(f"train.{key}: {e}") from None
    if up.name == cfg.name:
        raise PipelineError(f"train.{key}: {path} is this experiment ({cfg.name}); name another one")
    if up.folds_file != cfg.folds_file or up.folds.n_folds != cfg.folds.n_folds:
        raise PipelineError(f"train.{key}: {up.name} uses {up.folds.n_folds} folds of {up.folds_file}, this "
                            f"experiment {cfg.folds.n_folds} of {cfg.folds_file}; its folds would not be ours")
    name, target = UPSTREAM[key]
    if need_file and not (up.run_dir / name).is_file():
        raise PipelineError(f"{up.run_dir / name}: not found (run make {target} CONFIG={path})")
    return up, up.run_dir / name


def make_vars(cfg: Config) -> str:
    """`NAME=value` words for the Makefile's foreach/eval (so no value may hold a space)."""
    d = cfg.data
    pairs = [("RUN", cfg.run_dir), ("EXP", cfg.name), ("FOLDS_FILE", cfg.folds_file),
             ("N_FOLDS", cfg.folds.n_folds), ("TRAIN_CSV", d.path(d.train_csv)),
             ("SAMPLE_SUB", d.path(d.sample_submission))]
    for key, var in [("hard_negatives_from", "HARD_NEG"), ("pseudo_labels_from", "PSEUDO")]:
        up = upstream(cfg, key)
        pairs += [(f"{var}_CONFIG", getattr(cfg.train, key) or ""), (f"{var}_FILE", up[1] if up else "")]
    for key, value in pairs:
        if " " in str(value):
            raise PipelineError(f"Make cannot handle the space in {key} '{value}'")
    return " ".join(f"{k}={v}" for k, v in pairs)


def main(argv: list[str]) -> int:
    args = [a for a in argv if a not in ("--make", "--dry")]
    if not args:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        cfg = load_config(args[0], args[1:])
        if "--make" in argv:
            stale = write_stamps(cfg, dry="--dry" in argv)
            print(make_vars(cfg), *(f"STALE+={s}" for s in stale if "--dry" in argv))
        else:
            print(to_yaml(cfg), end="")
    except PipelineError as e:
        if "--make" in argv:  # the Makefile shows it through $(error ...)
            print(f"CONFIG_ERROR: {e}")
            return 0
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
