"""Run one stage of the pipeline.

Usage: python -m pipeline {folds,train,infer,lr_find,mine,pseudo} CONFIG [key=value ...] [--fold K]
       python -m pipeline ensemble RUN_OR_CONFIG [...] [--name NAME] [--method M] [--out-dir submissions]
       python -m pipeline ensemble --spec ensembles/x.yaml
"""
from __future__ import annotations

import argparse
import sys

from .errors import PipelineError


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    for stage in ("folds", "train", "infer", "lr_find", "mine", "pseudo"):
        p = sub.add_parser(stage)
        p.add_argument("config")
        p.add_argument("overrides", nargs="*", metavar="key=value")
        if stage == "train":
            p.add_argument("--fold", type=int, default=None, help="train only this fold")
    p = sub.add_parser("ensemble")
    p.add_argument("runs", nargs="*", help="experiment folders (runs/<name>) or their configs")
    p.add_argument("--spec", default=None, help="an ensemble YAML file (members, method, weights)")
    p.add_argument("--name", default=None, help="submissions/<name>.csv")
    p.add_argument("--method", default="mean", help="mean | fit | rank | vote | hierarchical")
    p.add_argument("--weights", default=None, help="mean: comma-separated, one per member")
    p.add_argument("--out-dir", default="submissions")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    if args.stage == "ensemble":
        from . import ensemble
        ensemble.run_cli(args)
        return
    from .config import load_config, write_stamps
    cfg = load_config(args.config, args.overrides)
    write_stamps(cfg)  # the resolved config lives next to the run's outputs
    if args.stage == "folds":
        from . import folds
        folds.main(cfg)
    elif args.stage == "train":
        from . import train
        train.main(cfg, args.fold)
    elif args.stage == "lr_find":
        from . import lr_find
        lr_find.main(cfg)
    elif args.stage == "mine":
        from . import mine
        mine.main(cfg)
    elif args.stage == "pseudo":
        from . import pseudo
        pseudo.main(cfg)
    else:
        from . import infer
        infer.main(cfg)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except PipelineError as e:
        # A DataLoader worker re-raises with its traceback in the message; the last line is ours.
        msg = str(e).strip().splitlines()[-1].split("PipelineError: ", 1)[-1]
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
