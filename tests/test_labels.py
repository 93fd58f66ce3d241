"""pipeline/labels.py: the class list, names to indices, and probability tables."""

import numpy as np
import pandas as pd
import pytest

from pipeline.config import Data
from pipeline.errors import PipelineError
from pipeline.labels import class_list, encode, prob_frame


def test_classes_are_sorted_and_encoded_in_that_order():
    labels = pd.Series(["bees", "ants", "bees"])
    classes = class_list(labels, Data(root="x"))
    assert classes == ["ants", "bees"] and encode(labels, classes).tolist() == [1, 0, 1]


def test_multilabel_classes_are_every_label_and_rows_are_0_1():
    labels = pd.Series(["red blue", "green", "blue"])
    d = Data(root="x", task="multilabel")
    classes = class_list(labels, d)
    assert classes == ["blue", "green", "red"]
    assert encode(labels, classes, d.sep).tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]


def test_a_class_named_like_a_column_is_refused():
    with pytest.raises(PipelineError, match="train.csv: class name 'fold' clashes with a column name"):
        class_list(pd.Series(["fold", "a"]), Data(root="x"))


def test_probability_table_columns():
    df = prob_frame(["x", "y"], ["a", "b"], np.array([[0.2, 0.8], [1.0, 0.0]]), "image_id", fold=[0, 1])
    assert list(df.columns) == ["image_id", "fold", "a", "b"] and df.b.tolist() == [0.8, 0.0]


def test_a_class_named_like_the_samples_id_column_is_refused():
    with pytest.raises(PipelineError, match="class name 'id' clashes with a column name"):
        class_list(pd.Series(["id", "a"]), Data(root="x", sample_id_col="id"))
