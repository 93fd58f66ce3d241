"""ELPV solar cells as a competition that scores a number: a regression and an ordinal task.

Usage: python bench/make_elpv.py [OUT]      (default data/elpv; make elpv installs the package)

The package `elpv-dataset` (CC BY-NC-SA 4.0) ships 2,624 greyscale 300x300 electroluminescence
images of solar cells, each with the probability an expert gave of it being defective: 0, 1/3, 2/3
or 1. A fifth is held out as the test set (stratified by grade and cell type, seeded). Writes OUT/:
  train/, test/                 the cells as PNGs
  train.csv                     image_id, defect (the probability, a number), grade (0..3), type
  sample_submission_defect.csv  image_id, defect: the regression's layout (rmse)
  sample_submission_grade.csv   image_id, grade: the ordinal task's (qwk)
  test_labels.csv               the held-out answers, for reporting only (the pipeline never reads it)
configs/elpv-regression.yaml and configs/elpv-ordinal.yaml enter it. Does nothing if OUT/train.csv exists.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.model_selection import train_test_split


def load():
    """(images, defect probabilities, cell types) from the package, which holds the PNGs and a labels file."""
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        sys.exit("elpv-dataset is not installed: make elpv (or pip install elpv-dataset)")
    return load_dataset()


def main(out: Path) -> None:
    if (out / "train.csv").is_file():
        print(f"{out}: already there")
        return
    images, probs, types = load()
    grade = np.rint(probs * 3).astype(int)
    ids = np.array([f"cell{i:04d}" for i in range(len(grade))])
    strata = [f"{g}-{t}" for g, t in zip(grade, types)]
    tr, te = train_test_split(np.arange(len(grade)), test_size=0.2, stratify=strata, random_state=0)
    for split, idx in (("train", tr), ("test", te)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for i in idx:
            Image.fromarray(images[i]).save(out / split / f"{ids[i]}.png")
    table = pd.DataFrame({"image_id": ids, "defect": probs.round(6), "grade": grade, "type": types})
    table.iloc[tr].to_csv(out / "train.csv", index=False)
    table.iloc[te].to_csv(out / "test_labels.csv", index=False)
    for col in ("defect", "grade"):
        pd.DataFrame({"image_id": ids[te], col: 0}).to_csv(out / f"sample_submission_{col}.csv", index=False)
    counts = ", ".join(f"grade {g}: {n}" for g, n in zip(*np.unique(grade[tr], return_counts=True)))
    print(f"{out}: {len(tr)} train ({counts}), {len(te)} test")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data/elpv"))
