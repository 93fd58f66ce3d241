import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline import data
from pipeline.errors import PipelineError


def test_reads_gif_named_jpg(tmp_path):
    path = tmp_path / "really_a_gif.jpg"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(path, format="GIF")
    img = data.read_image(path)
    assert img.shape == (20, 30, 3) and img.dtype == np.uint8


def test_falls_back_to_pil_when_opencv_cannot_decode(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(path)
    monkeypatch.setattr(data.cv2, "imread", lambda *a, **k: None)
    assert data.read_image(path).shape == (8, 9, 3)


def test_unreadable_and_missing_images_are_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(PipelineError, match="broken.jpg: cannot read image"):
        data.read_image(bad)
    with pytest.raises(PipelineError, match="gone.jpg: image not found"):
        data.read_image(tmp_path / "gone.jpg")
    (tmp_path / "a.jpg").write_bytes(bad.read_bytes())
    with pytest.raises(PipelineError, match=r"b\.jpg: image not found \(train\.csv line 3\)"):
        data.image_paths(tmp_path, "{id}.jpg", ["a", "b"], "train.csv")


def test_read_table_errors_name_file_and_line(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"image_id": ["a", "b", "a"], "label": ["x", "y", "x"]}).to_csv(path, index=False)
    with pytest.raises(PipelineError, match=r"t\.csv: line 4: duplicate image_id 'a'"):
        data.read_table(path, ["image_id", "label"], id_col="image_id")
    with pytest.raises(PipelineError, match=r"t\.csv: no column 'target'"):
        data.read_table(path, ["target"])
    pd.DataFrame({"image_id": ["a", "b"], "label": ["x", ""]}).to_csv(path, index=False)
    with pytest.raises(PipelineError, match=r"t\.csv: line 3: empty 'label'"):
        data.read_table(path, ["image_id", "label"])


def test_transforms_give_normalised_tensors_of_the_size():
    dc = {"input_size": (3, 32, 32), "mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 0.9,
          "interpolation": "bicubic"}
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    from pipeline.config import Aug
    for tf in (data.train_transform(dc, Aug()), data.eval_transform(dc)):
        x = tf(image=img)["image"]
        assert tuple(x.shape) == (3, 32, 32) and -1.01 <= float(x.min()) and float(x.max()) <= 1.01
