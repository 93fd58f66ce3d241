"""A bundle's predict.py (make bundle copies this file into every bundle): submission.csv for a
competition folder, offline, with the bundle's models and its ensemble rule.

Usage: python predict.py COMPETITION_DIR [--out submission.csv] [--work DIR] [key=value ...]
       (in a Kaggle notebook: !python /kaggle/input/<bundle>/predict.py /kaggle/input/<competition>)

COMPETITION_DIR holds sample_submission.csv and the test images, laid out as in the competition
the bundle was trained on (data.test_images). The pipeline is installed first from wheels/ beside
this file with pip --no-index (no internet; a dependency already installed at a version that fits
is kept; a checkout installed with pip install -e is used as it is), then `python -m pipeline
predict` runs. key=value overrides apply to every member's
config (runtime.device=cpu, infer.batch_size=64, ...).

It runs before the pipeline is installed, so it uses the standard library alone.
"""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def editable(project: str) -> bool:
    """Whether this Python runs a checkout of the project (pip install -e): predicting with it
    leaves that environment as it is, instead of replacing the checkout with the bundle's wheel."""
    try:
        text = importlib.metadata.distribution(project).read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        return False
    return bool(text) and json.loads(text).get("dir_info", {}).get("editable", False)


def install() -> None:
    try:
        spec = json.loads((HERE / "bundle.json").read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"error: {HERE / 'bundle.json'}: unreadable ({e}); make bundle again")
    if editable(spec["project"]):
        return
    want = f"{spec['project']}=={spec['version']}"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(HERE / "wheels"), want]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
        sys.exit(
            f"error: pip could not install {want} from {HERE / 'wheels'}: {errors[-1] if errors else done.returncode} "
            "(a dependency this image lacks is not in the bundle: remove it from the target file and make bundle again)"
        )


if __name__ == "__main__":
    install()
    sys.exit(subprocess.run([sys.executable, "-m", "pipeline", "predict", str(HERE), *sys.argv[1:]]).returncode)
