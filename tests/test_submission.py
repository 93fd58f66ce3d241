"""pipeline/submission.py: every layout round-trips against its sample; whatever the competition
would reject is refused before anything is written."""

import numpy as np
import pandas as pd
import pytest
from helpers import CLASSES

from pipeline.errors import PipelineError
from pipeline.submission import build_submission, check_submission

TEST = pd.DataFrame({"image_id": ["x", "y", "z"], "ants": [0.9, 0.2, 0.6], "bees": [0.1, 0.8, 0.4]})


@pytest.mark.parametrize(
    "sample_values, column, want",
    [
        ({"label": ["ants"] * 3}, "label", ["ants", "bees", "ants"]),  # class names
        ({"label": [0] * 3}, "label", [0, 1, 0]),  # integer codes
        ({"ants": [0.5] * 3, "bees": [0.5] * 3}, "bees", [0.1, 0.8, 0.4]),  # one column per class
        ({"bees": [0.5] * 3}, "bees", [0.1, 0.8, 0.4]),  # binary, named class
        ({"target": [0.5] * 3}, "target", [0.1, 0.8, 0.4]),  # binary: second class
    ],
)
def test_each_format_round_trips_against_its_sample(tmp_path, sample_values, column, want):
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], **sample_values})
    sub = build_submission(sample, TEST, CLASSES, "image_id", "s.csv")
    check_submission(sub, sample, CLASSES, "image_id", "s.csv")
    sub.to_csv(tmp_path / "s.csv", index=False)
    back = pd.read_csv(tmp_path / "s.csv")
    assert list(back.columns) == list(sample.columns) and back.image_id.tolist() == ["x", "y", "z"]
    got = back[column].tolist()
    assert got == want if isinstance(want[0], (str, int)) else np.allclose(got, want)
    check_submission(back, sample, CLASSES, "image_id", "s.csv")


def test_binary_column_is_the_class_that_is_not_negative():
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], "target": [0.5] * 3})
    sub = build_submission(sample, TEST, CLASSES, "image_id", "s.csv", negative="bees")
    assert np.allclose(sub.target, TEST.ants)


def test_codes_and_binary_values_are_checked():
    codes = pd.DataFrame({"image_id": ["x"], "label": [0]})
    with pytest.raises(PipelineError, match="'label' = '2' is not a valid code"):
        check_submission(codes.assign(label=[2]), codes, CLASSES, "image_id", "s.csv")
    binary = pd.DataFrame({"image_id": ["x"], "target": [0.5]})
    with pytest.raises(PipelineError, match="'target' = '1.2' is not a valid probability"):
        check_submission(binary.assign(target=[1.2]), binary, CLASSES, "image_id", "s.csv")


@pytest.fixture
def sample():
    return pd.DataFrame({"image_id": ["x", "y", "z"], "label": ["ants"] * 3})


def test_build_refuses_missing_prediction(sample):
    test = pd.DataFrame({"image_id": ["x", "y"], "ants": [0.1, 0.9], "bees": [0.9, 0.1]})
    with pytest.raises(PipelineError, match="no prediction for id 'z'"):
        build_submission(sample, test, CLASSES, "image_id", "s.csv")


def test_build_refuses_unknown_sample_layout(sample):
    test = pd.DataFrame({"image_id": ["x", "y", "z"], "ants": 0.5, "bees": 0.5})
    with pytest.raises(PipelineError, match="expected 'image_id' then one label column"):
        build_submission(sample.assign(other=1), test, CLASSES, "image_id", "s.csv")
    with pytest.raises(PipelineError, match="expected the id column 'image_id'"):
        build_submission(sample[["label", "image_id"]], test, CLASSES, "image_id", "s.csv")


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda s: s.assign(extra=1), "columns .* differ"),
        (lambda s: s.iloc[:2], "has 2 rows"),
        (lambda s: s.iloc[[1, 0, 2]].reset_index(drop=True), "line 2: id 'y'"),
        (lambda s: s.assign(label=["ants", None, "bees"]), "line 3: 'label' is empty"),
        (lambda s: s.assign(label=["ants", "wasps", "bees"]), "line 3: 'label' = 'wasps'"),
    ],
)
def test_check_submission_refuses(sample, break_it, message):
    good = sample.assign(label=["ants", "bees", "bees"])
    check_submission(good, sample, CLASSES, "image_id", "s.csv")
    with pytest.raises(PipelineError, match=message):
        check_submission(break_it(good), sample, CLASSES, "image_id", "s.csv")


def test_check_submission_probability_range():
    sample = pd.DataFrame({"image_id": ["x"], "ants": [0.5], "bees": [0.5]})
    with pytest.raises(PipelineError, match="'bees' = '1.5'"):
        check_submission(sample.assign(bees=[1.5]), sample, CLASSES, "image_id", "s.csv")


def test_multilabel_label_lists_at_their_thresholds():
    sample = pd.DataFrame({"image_id": ["x", "y"], "tags": ["a", "a"]})
    test = pd.DataFrame({"image_id": ["y", "x"], "a": [0.9, 0.2], "b": [0.6, 0.7]})
    sub = build_submission(sample, test, ["a", "b"], "image_id", "s.csv", thresholds=[0.5, 0.65], sep=" ")
    assert sub.tags.tolist() == ["b", "a"]
    check_submission(sub, sample, ["a", "b"], "image_id", "s.csv", sep=" ")
    with pytest.raises(PipelineError, match="'tags' = 'a c' is not a valid label list"):
        check_submission(sub.assign(tags=["a c", "a"]), sample, ["a", "b"], "image_id", "s.csv", sep=" ")
