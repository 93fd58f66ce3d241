"""Real handwritten digits as a competition: "is it an eight?" (the hard-negative demo) or all ten.

Usage: python bench/make_digits.py [OUT] [--ten]     (default data/digits-eights; --ten: data/digits-10)

scikit-learn ships the UCI handwritten digits (1,797 real 8x8 scans, no download). The task is
"is it an eight?": about 1 image in 10 is positive, and 3, 5 and 9 look like eights at this size.
Writes OUT/train.csv (image_id,label: eight or other), train/, test/ (PNGs upscaled to 32 px),
sample_submission.csv, and test_labels.csv (for scoring; the pipeline never reads it).
--ten: the 10-class task (labels zero .. nine), far from ImageNet, for the training-tricks
ablation (bench/ablation.py). Does nothing if OUT/train.csv exists.
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def main(out: Path, ten: bool = False) -> None:
    if (out / "train.csv").is_file():
        print(f"{out}: already there")
        return
    digits = load_digits()
    images = (digits.images / 16.0 * 255).round().astype(np.uint8)
    labels = np.array(NAMES)[digits.target] if ten else np.where(digits.target == 8, "eight", "other")
    ids = np.array([f"d{i:04d}" for i in range(len(labels))])
    tr, te = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
    for split, idx in (("train", tr), ("test", te)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for i in idx:
            img = Image.fromarray(255 - images[i]).resize((32, 32), Image.BICUBIC)  # dark ink on white
            img.convert("RGB").save(out / split / f"{ids[i]}.png")
    pd.DataFrame({"image_id": ids[te], "label": labels[te]}).to_csv(out / "test_labels.csv", index=False)
    pd.DataFrame({"image_id": ids[te], "label": labels[tr][0]}).to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame({"image_id": ids[tr], "label": labels[tr]}).to_csv(out / "train.csv", index=False)
    print(f"{out}: {len(tr)} train ({(labels[tr] == 'eight').sum()} eights), {len(te)} test")


if __name__ == "__main__":
    ten = "--ten" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--ten"]
    main(Path(args[0] if args else "data/digits-10" if ten else "data/digits-eights"), ten)
