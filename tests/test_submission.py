"""pipeline/submission.py: every layout round-trips against its sample; whatever the competition
would reject is refused before anything is written."""

import numpy as np
import pandas as pd
import pytest
from helpers import CLASSES

from pipeline.errors import PipelineError
from pipeline.submission import (
    build_guesses,
    build_numbers,
    build_submission,
    check_guesses,
    check_numbers,
    check_submission,
    number_layout,
)

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
    test.loc[0, "b"] = 0.5  # y: no label reaches its threshold; a is nearest
    kept = build_submission(sample, test, ["a", "b"], "image_id", "s.csv", thresholds=[0.95, 0.65], empty_allowed=False)
    assert kept.tags.tolist() == ["b", "a"]
    check_submission(sub, sample, ["a", "b"], "image_id", "s.csv", sep=" ")
    with pytest.raises(PipelineError, match="'tags' = 'a c' is not a valid label list"):
        check_submission(sub.assign(tags=["a c", "a"]), sample, ["a", "b"], "image_id", "s.csv", sep=" ")


def _likeliest(classes, ids, top):
    """A probability table whose likeliest class of each id is `top`'s."""
    p = np.full((len(ids), len(classes)), 0.01)
    p[np.arange(len(ids)), [classes.index(t) for t in top]] = 1.0
    return pd.concat([pd.DataFrame({"image_id": ids}), pd.DataFrame(p, columns=classes)], axis=1)


INTS_1_5 = [str(i) for i in range(1, 6)]


@pytest.mark.parametrize(
    "classes, filler, top",
    [
        (INTS_1_5, 1, ["3", "5", "1"]),  # as codes, 3 would be 2
        ([str(i) for i in range(10)], 0, ["3", "9", "0"]),
        (sorted(str(i) for i in range(11)), 0, ["2", "10", "9"]),  # sorted as text: '2' is the 4th class
        (INTS_1_5, 9, ["3", "5", "1"]),  # a placeholder that is neither a class nor a code
    ],
)
def test_integer_classes_are_written_as_themselves(tmp_path, classes, filler, top):
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], "label": [str(filler)] * 3})  # read_table reads strings
    sub = build_submission(sample, _likeliest(classes, ["x", "y", "z"], top), classes, "image_id", "s.csv")
    check_submission(sub, sample, classes, "image_id", "s.csv")
    sub.to_csv(tmp_path / "s.csv", index=False)
    back = pd.read_csv(tmp_path / "s.csv")
    assert back.label.tolist() == [int(t) for t in top]
    check_submission(back, sample, classes, "image_id", "s.csv")


def test_integer_classes_and_a_sample_of_codes_range_are_refused_until_the_key_decides():
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], "label": ["0"] * 3})
    test = _likeliest(INTS_1_5, ["x", "y", "z"], ["3", "5", "1"])
    message = (
        r"s.csv: 'label' holds integers in 0..4 \(0\) that are not all classes \(1..5\): .*data.submission_classes"
    )
    with pytest.raises(PipelineError, match=message):
        build_submission(sample, test, INTS_1_5, "image_id", "s.csv")
    with pytest.raises(PipelineError, match=message):
        check_submission(sample, sample, INTS_1_5, "image_id", "s.csv")
    for form, want in (("labels", ["3", "5", "1"]), ("codes", [2, 4, 0])):
        sub = build_submission(sample, test, INTS_1_5, "image_id", "s.csv", classes_as=form)
        assert sub.label.tolist() == want
        check_submission(sub, sample, INTS_1_5, "image_id", "s.csv", classes_as=form)
    with pytest.raises(PipelineError, match="'label' = '5' is not a valid code"):
        check_submission(sample.assign(label=[5] * 3), sample, INTS_1_5, "image_id", "s.csv", classes_as="codes")
    with pytest.raises(PipelineError, match="'label' = '0' is not a valid label"):
        check_submission(sample, sample, INTS_1_5, "image_id", "s.csv", classes_as="labels")


def test_codes_of_integer_classes_count_in_numeric_order():
    classes = sorted(str(i) for i in range(11))  # '0', '1', '10', '2', ...
    sample = pd.DataFrame({"image_id": ["x", "y"], "label": ["0"] * 2})
    sub = build_submission(
        sample, _likeliest(classes, ["x", "y"], ["2", "10"]), classes, "image_id", "s.csv", classes_as="codes"
    )
    assert sub.label.tolist() == [2, 10]


def test_forced_labels_and_codes_with_class_names():
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], "label": ["0"] * 3})  # auto: codes
    assert build_submission(sample, TEST, CLASSES, "image_id", "s.csv").label.tolist() == [0, 1, 0]
    sub = build_submission(sample, TEST, CLASSES, "image_id", "s.csv", classes_as="labels")
    assert sub.label.tolist() == ["ants", "bees", "ants"]
    check_submission(sub, sample, CLASSES, "image_id", "s.csv", classes_as="labels")
    with pytest.raises(PipelineError, match="'label' = 'ants' is not a valid code"):
        check_submission(sub, sample, CLASSES, "image_id", "s.csv")


def test_numbers_that_are_neither_names_nor_codes_are_refused():
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], "label": ["7"] * 3})
    with pytest.raises(PipelineError, match=r"holds numbers \(7\) that are neither classes nor codes 0..1: set data"):
        build_submission(sample, TEST, CLASSES, "image_id", "s.csv")


def test_a_sample_naming_its_id_column_otherwise_suggests_the_key(sample):
    with pytest.raises(
        PipelineError,
        match=r"s.csv: first column is 'id', expected the id column 'image_id' \(set data.sample_id_col if",
    ):
        build_submission(sample.rename(columns={"image_id": "id"}), TEST, CLASSES, "image_id", "s.csv")
    sub = build_submission(
        sample.rename(columns={"image_id": "id"}), TEST.rename(columns={"image_id": "id"}), CLASSES, "id", "s.csv"
    )
    assert list(sub.columns) == ["id", "label"] and sub.label.tolist() == ["ants", "bees", "ants"]


# ----------------------------------------------------------------------------- a number per id

NUMBERS = pd.DataFrame({"image_id": ["z", "x", "y"], "prediction": [7.5, 0.25, 3.0]})


def test_a_number_per_id_in_the_samples_order_and_column():
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], "Pawpularity": ["0", "0", "0"]})
    sub = build_numbers(sample, NUMBERS, "image_id", "s.csv")
    assert list(sub.columns) == ["image_id", "Pawpularity"] and sub.Pawpularity.tolist() == [0.25, 3.0, 7.5]
    check_numbers(sub, sample, "image_id", "s.csv")


def test_an_ordinal_grade_is_written_as_train_csv_spells_it():
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], "diagnosis": ["", "", ""]})  # an empty placeholder
    graded = NUMBERS.assign(prediction=[2.0, 0.0, 1.0])
    sub = build_numbers(sample, graded, "image_id", "s.csv", {0.0: "0", 1.0: "1", 2.0: "2"})
    assert sub.diagnosis.tolist() == ["0", "1", "2"]
    check_numbers(sub, sample, "image_id", "s.csv", ["0", "1", "2"])
    with pytest.raises(PipelineError, match=r"submission line 3: 'diagnosis' = '1.5' is not a grade"):
        check_numbers(sub.assign(diagnosis=["0", "1.5", "2"]), sample, "image_id", "s.csv", ["0", "1", "2"])


@pytest.mark.parametrize("bad, shown", [(np.nan, "nan"), (np.inf, "inf"), ("high", "'high'")])
def test_a_number_that_is_not_finite_is_refused_naming_its_line(bad, shown):
    sample = pd.DataFrame({"image_id": ["x", "y", "z"], "age": [0, 0, 0]})
    sub = build_numbers(sample, NUMBERS, "image_id", "s.csv").astype({"age": object})
    sub.loc[2, "age"] = bad
    with pytest.raises(PipelineError, match=rf"submission line 4: 'age' = {shown} is not a finite number"):
        check_numbers(sub, sample, "image_id", "s.csv")


@pytest.mark.parametrize(
    "sample, message",
    [
        (
            pd.DataFrame({"image_id": ["x"], "ants": [0.5], "bees": [0.5]}),
            r"s.csv: columns \['image_id', 'ants', 'bees'\]: a number per id needs 'image_id' then one column",
        ),
        (pd.DataFrame({"image_id": ["x", "y"], "label": ["0", "ants"]}), r"s.csv: line 3: 'label' = 'ants' is text"),
    ],
)
def test_a_sample_that_cannot_take_a_number_is_refused_naming_it(sample, message):
    with pytest.raises(PipelineError, match=message):
        number_layout(sample, "image_id", "s.csv")


def test_guesses_follow_the_samples_layout_and_bad_ones_are_refused():
    sample = pd.DataFrame({"image": ["b", "a"], "predictions": "new_whale"})
    sub = build_guesses(sample, ["a", "b"], ["w1 new_whale", "w2 w1"], "image", "s.csv")
    assert sub.to_dict("list") == {"image": ["b", "a"], "predictions": ["w2 w1", "w1 new_whale"]}
    known = {"w1", "w2", "new_whale"}
    check_guesses(sub, sample, "image", "s.csv", known, 5)
    for cell, why in [
        ("w1 w3", "'w3' is no individual"),
        ("w1 w1", "distinct"),
        ("", "1 to 2"),
        ("w1 w2 new_whale", "1 to 2"),
    ]:
        with pytest.raises(PipelineError, match=f"submission line 2: 'predictions' = .*{why}"):
            check_guesses(sub.assign(predictions=[cell, "w1"]), sample, "image", "s.csv", known, 2)
    with pytest.raises(PipelineError, match="guesses per id need 'image' then one column"):
        build_guesses(sample.assign(extra=1), ["a", "b"], ["w1", "w2"], "image", "s.csv")
    with pytest.raises(PipelineError, match="no prediction for id 'b'"):
        build_guesses(sample, ["a"], ["w1"], "image", "s.csv")
