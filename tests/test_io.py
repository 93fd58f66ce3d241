"""pipeline/io.py: tables read with errors naming the file and line, images checked to exist,
and writes that leave a complete file or none."""

import os

import pandas as pd
import pytest

from pipeline import io
from pipeline.errors import PipelineError


def test_read_table_errors_name_file_and_line(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"image_id": ["a", "b", "a"], "label": ["x", "y", "x"]}).to_csv(path, index=False)
    with pytest.raises(PipelineError, match=r"t\.csv: line 4: duplicate image_id 'a'"):
        io.read_table(path, ["image_id", "label"], id_col="image_id")
    with pytest.raises(PipelineError, match=r"t\.csv: no column 'target'"):
        io.read_table(path, ["target"])
    pd.DataFrame({"image_id": ["a", "b"], "label": ["x", ""]}).to_csv(path, index=False)
    with pytest.raises(PipelineError, match=r"t\.csv: line 3: empty 'label'"):
        io.read_table(path, ["image_id", "label"])


def test_missing_image_names_the_table_line(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert io.image_paths(tmp_path, "{id}.jpg", ["a"], "train.csv") == [tmp_path / "a.jpg"]
    with pytest.raises(PipelineError, match=r"b\.jpg: image not found \(train\.csv line 3\)"):
        io.image_paths(tmp_path, "{id}.jpg", ["a", "b"], "train.csv")


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.csv"
    io.write_text(path, "old\n")
    with pytest.raises(RuntimeError), io.atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert not io.write_text_if_changed(path, "old\n") and io.write_text_if_changed(path, "new\n")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_take_the_umask_not_the_temp_files_privacy(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        io.write_text(tmp_path / "submission.csv", "id,label\n")
    finally:
        os.umask(old)
    assert (tmp_path / "submission.csv").stat().st_mode & 0o777 == mode
