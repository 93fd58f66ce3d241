"""An offline bundle at real size: installed into an image-like environment, it must predict the
submission make ensemble wrote, byte for byte. Prints the time that took.

Usage: python bench/bundle_check.py BUNDLE COMPETITION_DIR SUBMISSION [--has PACKAGE ...]
  e.g. python bench/bundle_check.py bundles/ants-bees-lite2 data/ants-bees submissions/ants-bees-lite2.csv

The bundle is copied to a fresh folder outside the repository, and a venv is made that holds only
the packages --has names (default: those of the target file the bundle was packed for, as its
bundle.json records them), their dependencies and pip, linked from this
environment (tests/helpers.image_env): the project itself is not importable there. The bundle's
predict.py then installs it from its wheels with pip --no-index and predicts.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path
from shutil import copytree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import image_env, outside  # noqa: E402

from pipeline.bundles import BundleDir, read_spec  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("competition", type=Path)
    ap.add_argument("submission", type=Path)
    ap.add_argument("--has", nargs="+", help="what the image has (default: the bundle's target file)")
    args = ap.parse_args()
    args.has = args.has or read_spec(BundleDir(args.bundle))["target"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        copytree(args.bundle, tmp / "input" / "bundle")
        python = image_env(tmp, args.has)
        (tmp / "working").mkdir()
        out = tmp / "working" / "submission.csv"
        start = time.time()
        done = outside(
            python, tmp / "input" / "bundle" / "predict.py", args.competition.resolve(), "--out", out, cwd=out.parent
        )
        seconds = time.time() - start
        if done.returncode:
            print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
            return 1
        same = out.read_bytes() == args.submission.read_bytes()
    print(
        f"{args.bundle} on an image with {' '.join(args.has)}: installed and predicted in {seconds:.0f} s; "
        f"{'identical to' if same else 'DIFFERS from'} {args.submission}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
