"""The command line: one stage of the pipeline, or a look at a config. The only module that
imports the stages (pipeline/stages/); each is imported only when it runs.

Usage: python -m pipeline {folds,train,infer,lr_find,show_batch,mine,pseudo,report} CONFIG [key=value ...] [--fold K]
       python -m pipeline ensemble RUN_OR_CONFIG [...] [--name NAME] [--method M] [--out-dir submissions]
       python -m pipeline ensemble --spec ensembles/x.yaml
       python -m pipeline bundle RUN_OR_CONFIG [...] | --spec ensembles/x.yaml [--target FILE]
       python -m pipeline init COMP_DIR [--name NAME] [--backbone NAME] [--sample FILE]   # configs/<name>.yaml
       python -m pipeline leaderboard [RUNS_DIR]            # runs/leaderboard.csv and .html
       python -m pipeline sweep CONFIG key=a,b [key=c,d ...]   # configs/sweeps/: a config per combination
       python -m pipeline search CONFIG SPACE [--budget 2h] [--trials N] [--full] [key=value ...]
       python -m pipeline predict BUNDLE COMPETITION_DIR [--out submission.csv] [key=value ...]
       python -m pipeline config CONFIG [key=value ...]    # the resolved config
       python -m pipeline config --explain                 # every key, its default and meaning
       python -m pipeline make-vars CONFIG [key=value ...] | --ensemble FILE   # for the Makefile
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys

from .errors import Interrupted, PipelineError, interrupts_say

STAGES = ("folds", "train", "infer", "lr_find", "show_batch", "mine", "pseudo", "sanity", "report")


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for stage in STAGES:
        p = sub.add_parser(stage)
        p.add_argument("config")
        p.add_argument("overrides", nargs="*", metavar="key=value")
        if stage == "train":
            p.add_argument("--fold", type=int, default=None, help="train only this fold")
    for command, out_dir in (("ensemble", "submissions"), ("bundle", "bundles")):
        p = sub.add_parser(command)
        p.add_argument("runs", nargs="*", help="experiment folders (runs/<name>) or their configs")
        p.add_argument("--spec", default=None, help="an ensemble YAML file (members, method, weights)")
        p.add_argument(
            "--calibrate",
            default="auto",
            choices=["auto", "on", "off"],
            help="temperature scaling (auto: log-loss)",
        )
        p.add_argument("--name", default=None, help=f"{out_dir}/<name>")
        p.add_argument("--method", default="mean", help="mean | fit | rank | vote | hierarchical")
        p.add_argument("--weights", default=None, help="mean: comma-separated, one per member")
        p.add_argument("--out-dir", default=out_dir)
        if command == "bundle":
            p.add_argument("--target", default="configs/bundle-target.txt", help="the packages the target image has")
            p.add_argument("--pip-args", default=None, help="options for pip download (--python-version, --platform)")
    p = sub.add_parser("init", help="a competition folder's first config, configs/<name>.yaml, read off its files")
    p.add_argument("comp_dir", help="the competition folder: train.csv, sample_submission.csv, images under it")
    p.add_argument("--name", default=None, help="configs/<name>.yaml and runs/<name> (default: the folder's name)")
    p.add_argument("--backbone", default=None, help="a timm model (default: EfficientNet-Lite2 or Lite0 by size)")
    p.add_argument("--sample", default=None, help="the sample submission, where the folder has several")
    p.add_argument("--train", default=None, help="the training table, where it is not train.csv")
    p.add_argument("--label", default=None, help="the label column, where the sample does not say")
    p.add_argument("--configs", default="configs", help="where the config goes")
    p = sub.add_parser("leaderboard", help="every experiment's CV side by side: RUNS_DIR/leaderboard.csv, .html")
    p.add_argument("runs_dir", nargs="?", default="runs")
    p.add_argument("--out-dir", default=None, help="where the CSV and HTML go (default: RUNS_DIR)")
    p = sub.add_parser("sweep", help="one config per combination of the lists, and their ensemble file")
    p.add_argument("config")
    p.add_argument("sweep", nargs="*", metavar="key=a,b,c")
    p.add_argument(
        "--dir", default=None, help="where the configs and their ensemble file go (default: sweeps/ beside CONFIG)"
    )
    p.add_argument("--submissions", default="submissions", help="where the ensemble's submission goes")
    p = sub.add_parser("search", help="Optuna over SPACE's keys, each trial fold 0, pruned on its valid loss")
    p.add_argument("config")
    p.add_argument("space", help="a YAML file: key: {low, high[, log]} or key: {choices: [...]}")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--budget", default=None, help="wall time for this process, e.g. 45m, 2h, 1h30m")
    p.add_argument("--trials", type=int, default=None, help="stop once the study has this many finished trials")
    p.add_argument("--full", action="store_true", help="then make ensemble on the best trial's config")
    p = sub.add_parser("predict", help="a bundle's submission for a competition folder (its predict.py runs this)")
    p.add_argument("bundle")
    p.add_argument("competition", help="the folder holding sample_submission.csv and the test images")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--out", default="submission.csv")
    p.add_argument("--work", default=None, help="keep the work files (decode cache, predictions) here")
    p = sub.add_parser("config", help="print the resolved config, or with --explain every key")
    p.add_argument("config", nargs="?")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--explain", action="store_true", help="every key with its default and meaning")
    p = sub.add_parser("make-vars", help="NAME=value words for the Makefile")
    p.add_argument("config", nargs="?")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--ensemble", default=None, help="an ensemble file instead of a config")
    args, rest = ap.parse_known_args(argv)
    # predict's key=value words may follow its options (COMPETITION_DIR --out F k=v), as its usage says
    if args.command == "predict" and all("=" in w and not w.startswith("-") for w in rest):
        args.overrides += rest
    elif rest:
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    return args


def run_stage(args: argparse.Namespace) -> None:
    """Load the config; take the experiment's lock (lock.py); record the config, the stage's stamp
    and its provenance beside the run's outputs; run the stage, its output kept in
    runs/<name>/logs/<stage>.log (progress.py)."""
    from .config_files import load_config, to_yaml
    from .io import write_text_if_changed
    from .lock import die_with_parent, held
    from .progress import logged
    from .provenance import record
    from .runs import RunDir
    from .stamps import STAGE_READS, stamp_path, write_stamp

    die_with_parent()
    cfg = load_config(args.config, args.overrides)
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, process 0 alone writes
    locked = main_process and args.command in STAGE_READS
    # the lock's digest of the config as written: under make -j, folds started before and after
    # runtime.budget's decision are one run, not two with other settings
    written = load_config(args.config, args.overrides, effective=False) if locked else None
    digest = stamp_path(written, args.command).stem if locked else ""
    fold = getattr(args, "fold", None)
    with held(cfg.run_dir, args.command, fold, digest) if locked else contextlib.nullcontext():
        if main_process:
            if args.command in STAGE_READS:
                write_stamp(cfg, args.command)  # before any output, so every output is newer than it
                record(cfg, args.command)
            write_text_if_changed(RunDir(cfg.run_dir).config, to_yaml(cfg))
        log = logged(RunDir(cfg.run_dir).log(args.command), " ".join(sys.argv)) if main_process else None
        with log or contextlib.nullcontext():
            stage = importlib.import_module(f".stages.{args.command}", __package__)
            stopped = f"{args.command} stopped before it finished; every file it wrote is whole: run it again to go on"
            with interrupts_say(lambda: stopped):
                stage.main(cfg, args.fold) if args.command == "train" else stage.main(cfg)


def run_predict(args: argparse.Namespace) -> None:
    """A bundle's submission (its predict.py runs this, offline): each member's test predictions
    as make infer makes them, its OOF as the bundle holds it (infer test_only), then the bundle's
    ensemble rule, as make ensemble applies it."""
    import shutil
    import tempfile
    from pathlib import Path

    from .bundles import BundleDir, unpack
    from .io import atomic_path
    from .stages import ensemble, infer

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bundle-work-"))
    try:
        spec, cfgs = unpack(BundleDir(Path(args.bundle)), Path(args.competition), work, args.overrides)
        for cfg in cfgs:
            infer.main(cfg, test_only=True)
        subs = work / "submission"
        rule = [spec[k] for k in ("name", "method", "weights", "metric", "calibrate")]
        ensemble.main([c.run_dir for c in cfgs], rule[0], subs, *rule[1:])
        with atomic_path(args.out) as tmp:
            shutil.copyfile(subs / f"{spec['name']}.csv", tmp)
        print(f"{args.out}: written")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> None:
    if args.command in STAGES:
        run_stage(args)
    elif args.command == "ensemble":
        from .stages import ensemble

        ensemble.run_cli(args)
    elif args.command == "bundle":
        from .stages import bundle

        bundle.run_cli(args)
    elif args.command == "predict":
        run_predict(args)
    elif args.command == "init":
        from .stages import init

        init.main(args.comp_dir, args.name, args.backbone, args.sample, args.train, args.label, args.configs)
    elif args.command == "leaderboard":
        from .stages import leaderboard

        leaderboard.main(args.runs_dir, args.out_dir)
    elif args.command == "search":
        from .stages import search

        search.main(args.config, args.space, args.budget, args.trials, args.full, args.overrides)
    elif args.command == "sweep":
        from .sweep import write_sweep

        path, notes = write_sweep(
            args.config, [w for item in args.sweep for w in item.split()], args.dir, args.submissions
        )
        print("\n".join(notes + [str(path)]))  # the path last: Make takes the last word
    elif args.command == "config":
        from .config import Config, Ensemble
        from .config_files import explain, load_config, to_yaml

        if args.explain:
            files = [("an experiment config, configs/*.yaml", Config), ("an ensemble file, ensembles/*.yaml", Ensemble)]
            print("\n\n".join(f"# {what}\n" + "\n".join(explain(schema)) for what, schema in files))
        elif args.config is None:
            raise PipelineError("config: name a config file, or --explain")
        else:
            print(to_yaml(load_config(args.config, args.overrides)), end="")
    else:
        from .config_files import load_config
        from .make_bridge import ensemble_vars, make_vars

        if args.ensemble:
            print(ensemble_vars(args.ensemble))
        elif args.config is None:
            raise PipelineError("make-vars: name a config file, or --ensemble FILE")
        else:
            print(make_vars(load_config(args.config, args.overrides), args.config))


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... config --explain | head` ends quietly
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except PipelineError as e:
        # A DataLoader worker re-raises with its traceback in the message; the last line is ours.
        msg = str(e).strip().splitlines()[-1].split("PipelineError: ", 1)[-1]
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
