"""Stage 5: combine one or more experiments into submissions/<name>.csv.

Usage: python -m pipeline ensemble RUN [RUN ...] [--name NAME] [--method M] [--weights W,W] [--out-dir DIR]
       python -m pipeline ensemble --spec ensembles/x.yaml

RUN is an experiment folder (runs/<name>, holding config.yaml, oof.csv, test.csv and
test_fold<k>.csv) or its config file. A spec file names the members and the method:

    name: lite2-lite0          # submissions/<name>.csv and <name>.json
    members: [configs/ants-bees.yaml, configs/ants-bees-lite0.yaml]
    method: fit                # mean | fit | rank | vote | hierarchical (pipeline/blend.py)
    weights: null              # mean only: one per member
    metric: null               # default: the members' config metric

It prints each member's CV per fold and overall, and the ensemble's CV under every method, each
computed on the OOF predictions by the rule that makes the test prediction. It writes the chosen
method's submission, in the layout of sample_submission.csv and checked against it, and a JSON
with the members, method, weights and CV.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sklearn.metrics import f1_score

from . import blend
from .config import Config, load_config
from .data import read_table
from .engine import encode
from .errors import PipelineError
from .io import write_csv, write_text
from .metrics import per_fold, tune_thresholds


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    members: list[str] = Field(min_length=1)
    method: Literal[blend.METHODS] = "mean"
    weights: list[float] | None = None
    metric: Literal["accuracy", "log_loss", "roc_auc", "f1_macro", "qwk"] | None = None
    out_dir: str = "submissions"


def load_spec(path: str | Path) -> Spec:
    try:
        doc = yaml.safe_load(Path(path).read_text())
        spec = Spec.model_validate(doc)
    except FileNotFoundError:
        raise PipelineError(f"{path}: ensemble file not found") from None
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: not valid YAML ({e})") from None
    except ValidationError as e:
        err = e.errors()[0]
        raise PipelineError(f"{path}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    if spec.weights is not None and (len(spec.weights) != len(spec.members) or min(spec.weights) < 0
                                     or sum(spec.weights) <= 0):
        raise PipelineError(f"{path}: weights: one non-negative weight per member ({len(spec.members)}), "
                            "not all zero")
    if spec.weights is not None and spec.method != "mean":
        raise PipelineError(f"{path}: weights: only method mean takes fixed weights")
    return spec


@dataclass(frozen=True)
class Member:
    run: Path
    cfg: Config
    classes: list[str]
    oof: pd.DataFrame
    test: pd.DataFrame
    test_folds: np.ndarray  # (folds, M, K): each fold model's test probabilities, in test's row order


def load_member(arg: str | Path) -> Member:
    arg = Path(arg)
    cfg = load_config(arg) if arg.is_file() else load_config(arg / "config.yaml")
    run = cfg.run_dir if arg.is_file() else arg
    d = cfg.data
    test_path = run / "test.csv"
    if not test_path.is_file():
        raise PipelineError(f"{test_path}: not found (run make infer for {cfg.name})")
    test = read_table(test_path, [d.id_col], id_col=d.id_col)
    classes = [c for c in test.columns if c != d.id_col]
    oof = read_table(run / "oof.csv", [d.id_col, "fold", d.label_col] + classes, id_col=d.id_col)
    for df in (test, oof):
        df[classes] = df[classes].astype(float)
    folds = []
    for p in sorted(run.glob("test_fold*.csv")):
        f = read_table(p, [d.id_col] + classes, id_col=d.id_col).set_index(d.id_col)
        folds.append(f.loc[test[d.id_col], classes].astype(float).to_numpy())
    test_folds = np.stack(folds) if folds else test[classes].to_numpy()[None]
    return Member(run, cfg, classes, oof, test, test_folds)


def check_compatible(members: list[Member]) -> None:
    """Members must predict the same classes for the same competition on the same folds."""
    first = members[0]
    for m in members[1:]:
        for what, a, b in [("classes", first.classes, m.classes),
                           ("folds file", first.cfg.folds_file, m.cfg.folds_file),
                           ("data", first.cfg.data, m.cfg.data),
                           ("OOF ids/folds", first.oof[[first.cfg.data.id_col, "fold"]].values.tolist(),
                            m.oof[[m.cfg.data.id_col, "fold"]].values.tolist())]:
            if a != b:
                raise PipelineError(f"{m.run}: {what} differ from {first.run}'s; cannot ensemble them")


def _numbers(values: pd.Series) -> np.ndarray | None:
    v = pd.to_numeric(values, errors="coerce")
    return None if v.isna().any() else v.to_numpy()


def layout(sample: pd.DataFrame, classes: list[str], id_col: str, negative: str | None,
           sample_path, multilabel: bool = False) -> tuple[str, str | None]:
    """How sample_submission.csv wants the predictions: (kind, the class a binary column is for).
    labels: a class name per row; codes: the class's index (the sample holds integers that are not
    class names); probs: one probability column per class; binary: one column, the probability of
    a class (the column's name if it is a class, else the class that is not data.negative_class,
    else the second in sorted order), chosen when the sample holds fractions."""
    cols = list(sample.columns)
    if cols[0] != id_col:
        raise PipelineError(f"{sample_path}: first column is '{cols[0]}', expected the id column '{id_col}'")
    if len(cols) > 2 or (len(cols) == 2 and len(classes) == 2 and cols[1] in classes):
        if sorted(cols[1:]) == sorted(classes):
            return "probs", None
        if len(cols) == 2:
            return "binary", cols[1]
        raise PipelineError(f"{sample_path}: columns {cols}: expected '{id_col}' then one label column, "
                            f"or one column per class {classes}")
    if len(cols) != 2:
        raise PipelineError(f"{sample_path}: columns {cols}: no prediction column")
    if multilabel:
        return "multilabels", None
    nums = _numbers(sample[cols[1]])
    values = set(sample[cols[1]].astype(str))
    if nums is not None and len(classes) == 2 and (nums != np.round(nums)).any():
        positive = next((c for c in classes if c != negative), classes[1]) if negative else classes[1]
        return "binary", positive
    if nums is not None and not values <= set(classes):
        return "codes", None
    return "labels", None


def build_submission(sample: pd.DataFrame, test: pd.DataFrame, classes: list[str], id_col: str,
                     sample_path, negative: str | None = None, thresholds=None, sep: str = " ") -> pd.DataFrame:
    """The submission in the sample's layout, ids in the sample's order. With thresholds (a
    multi-label task), a label column gets every label at or above its threshold, joined by sep."""
    probs = test.set_index(id_col)
    missing = [i for i in sample[id_col] if i not in probs.index]
    if missing:
        raise PipelineError(f"{sample_path}: no prediction for id '{missing[0]}' ({len(missing)} missing)")
    probs = probs.loc[sample[id_col], classes]
    kind, cls = layout(sample, classes, id_col, negative, sample_path, thresholds is not None)
    ids = sample[[id_col]].reset_index(drop=True)
    col = sample.columns[-1]
    if kind == "multilabels":
        hits = probs.to_numpy() >= np.asarray(thresholds)
        return ids.assign(**{col: [sep.join(c for c, h in zip(classes, row) if h) for row in hits]})
    if kind == "probs":
        return pd.concat([ids, probs[list(sample.columns[1:])].reset_index(drop=True)], axis=1)
    if kind == "binary":
        return ids.assign(**{col: probs[cls].to_numpy()})
    top = probs.to_numpy().argmax(1)
    return ids.assign(**{col: top if kind == "codes" else np.asarray(classes, dtype=object)[top]})


def check_submission(sub: pd.DataFrame, sample: pd.DataFrame, classes: list[str],
                     id_col: str, sample_path, negative: str | None = None, sep: str | None = None) -> None:
    """Refuse a submission the competition would reject: columns, ids and order, NaN, values."""
    if list(sub.columns) != list(sample.columns):
        raise PipelineError(f"submission columns {list(sub.columns)} differ from {sample_path}'s "
                            f"{list(sample.columns)}")
    if len(sub) != len(sample):
        raise PipelineError(f"submission has {len(sub)} rows, {sample_path} has {len(sample)}")
    differ = np.flatnonzero(sub[id_col].astype(str).to_numpy() != sample[id_col].astype(str).to_numpy())
    if len(differ):
        raise PipelineError(f"submission line {differ[0] + 2}: id '{sub[id_col].iloc[differ[0]]}', "
                            f"{sample_path} has '{sample[id_col].iloc[differ[0]]}' there")
    nan = sub.isna().to_numpy() if sep is None else sub[[id_col]].isna().to_numpy()  # no label is a fair answer
    if nan.any():
        row, col = np.argwhere(nan)[0]
        raise PipelineError(f"submission line {row + 2}: '{sub.columns[col]}' is empty (NaN)")
    kind, _ = layout(sample, classes, id_col, negative, sample_path, sep is not None)
    values = sub.drop(columns=[id_col])
    if kind == "multilabels":
        bad = ~values.map(lambda v: all(t in classes for t in str(v if v == v else "").split(sep) if t)).to_numpy()
    elif kind in ("probs", "binary"):
        bad = ~values.apply(pd.to_numeric, errors="coerce").apply(lambda c: c.between(0, 1)).to_numpy()
    elif kind == "codes":
        bad = ~values.isin(list(range(len(classes))) + [str(i) for i in range(len(classes))]).to_numpy()
    else:
        bad = ~values.isin(classes).to_numpy()
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PipelineError(f"submission line {row + 2}: '{values.columns[col]}' = "
                            f"{str(values.iat[row, col])!r} is not a valid "
                            f"{ {'binary': 'probability', 'multilabels': 'label list'}.get(kind, kind[:-1])}")


def cv_table(members: list[Member], y: np.ndarray, folds: np.ndarray, metric: str, methods) -> pd.DataFrame:
    """One row per member and per ensemble method: the metric on each fold and overall."""
    classes = members[0].classes
    rows = [{"model": m.cfg.name, **per_fold(metric, y, m.oof[classes].to_numpy(), folds)} for m in members]
    rows += [{"model": f"ensemble: {name}", **per_fold(metric, y, oof, folds)} for name, (oof, _, _) in methods.items()]
    return pd.DataFrame(rows)


def main(runs: list[str | Path], name: str | None = None, out_dir: str | Path = "submissions",
         method: str = "mean", weights=None, metric: str | None = None) -> pd.DataFrame:
    members = [load_member(r) for r in runs]
    check_compatible(members)
    first, d = members[0], members[0].cfg.data
    classes, metric = first.classes, metric or first.cfg.metric
    y, folds = encode(first.oof[d.label_col], classes, d.sep), first.oof["fold"].astype(int).to_numpy()
    ids = first.test[d.id_col]
    oofs = np.stack([m.oof[classes].to_numpy() for m in members])
    tests = np.stack([m.test.set_index(d.id_col).loc[ids, classes].to_numpy() for m in members])
    test_folds = [m.test_folds for m in members]
    methods = blend.MULTILABEL_METHODS if d.multilabel else blend.METHODS
    if method not in methods:
        raise PipelineError(f"ensemble method {method}: a multi-label task takes {', '.join(methods)}")
    results = {meth: blend.combine(meth, oofs, tests, test_folds, y, metric, weights if meth == "mean" else None)
               for meth in methods}
    table = cv_table(members, y, folds, metric, results)
    print(f"CV {metric} per fold and overall (ensembles on OOF, by the rule that makes their test prediction):")
    print(table.to_string(index=False, float_format="%.4f"))
    oof_probs, test_probs, w = results[method]
    thresholds = tune_thresholds(y, oof_probs) if d.multilabel else None
    if thresholds is not None:
        print("per-label thresholds tuned on the OOF F1: " + ", ".join(f"{c} {t:.2f}" for c, t in zip(classes, thresholds))
              + f"; OOF macro F1 {f1_score(y > 0.5, oof_probs >= thresholds, average='macro', zero_division=0):.4f}")
    sample_path = d.path(d.sample_submission)
    sample = read_table(sample_path, [d.id_col], id_col=d.id_col)
    test = pd.concat([pd.DataFrame({d.id_col: ids.to_list()}), pd.DataFrame(test_probs, columns=classes)], axis=1)
    sub = build_submission(sample, test, classes, d.id_col, sample_path, d.negative_class, thresholds, d.label_sep)
    check_submission(sub, sample, classes, d.id_col, sample_path, d.negative_class, d.sep)
    name = name or (first.cfg.name if len(members) == 1 else "ensemble")
    path = Path(out_dir) / f"{name}.csv"
    write_csv(path, sub)
    cv = {row["model"]: row["overall"] for _, row in table.iterrows()}
    write_text(path.with_suffix(".json"), json.dumps({
        "name": name, "members": [str(m.run) for m in members], "method": method, "metric": metric,
        "weights": None if w is None else [float(x) for x in w], "cv": cv,
        "thresholds": None if thresholds is None else dict(zip(classes, map(float, thresholds)))}, indent=1) + "\n")
    print(f"{name}: {method} of {len(members)}: CV {metric} {cv[f'ensemble: {method}']:.4f} -> {path}")
    return sub


def run_cli(args) -> None:
    """From the command line: a spec file, or members named with --method/--weights."""
    from .blend import METHODS

    if args.spec:
        if args.runs:
            raise PipelineError("ensemble: give members in the spec file or on the command line, not both")
        spec = load_spec(args.spec)
        main(spec.members, spec.name, spec.out_dir, spec.method, spec.weights, spec.metric)
        return
    if not args.runs:
        raise PipelineError("ensemble: name at least one experiment (or --spec FILE)")
    if args.method not in METHODS:
        raise PipelineError(f"ensemble --method {args.method}: expected one of {', '.join(METHODS)}")
    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise PipelineError(f"ensemble --weights {args.weights}: expected numbers like 0.7,0.3") from None
        if len(weights) != len(args.runs) or min(weights) < 0 or sum(weights) <= 0:
            raise PipelineError(f"ensemble --weights: one non-negative weight per member ({len(args.runs)})")
    main(args.runs, args.name, args.out_dir, args.method, weights)


def make_vars(spec_path: str) -> str:
    """Make variables for `make ensemble ENSEMBLE=<spec>`: the submission it writes, and for each
    member its test.csv, paired with the config that builds it (when the member is a config)."""
    spec = load_spec(spec_path)
    pairs = []
    for m in spec.members:
        p = Path(m)
        cfg = load_config(p) if p.is_file() else load_config(p / "config.yaml")
        run = cfg.run_dir if p.is_file() else p
        pairs.append(f"{run / 'test.csv'}={m if p.is_file() else ''}")
    words = [f"ENS_OUT={Path(spec.out_dir) / (spec.name + '.csv')}", *(f"ENS_MEMBER+={x}" for x in pairs)]
    if any(" " in w for w in words):
        raise PipelineError(f"{spec_path}: Make cannot handle a space in a member's path")
    return " ".join(words)


if __name__ == "__main__":  # python -m pipeline.ensemble SPEC --make: for the Makefile
    import sys

    try:
        print(make_vars(sys.argv[1]))
    except (PipelineError, IndexError) as e:
        print(f"CONFIG_ERROR: {e or 'usage: python -m pipeline.ensemble SPEC --make'}")
