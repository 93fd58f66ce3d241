"""pipeline/config/: the schema's own rules, and that every key explains itself."""

import pytest
from helpers import ROOT, make_config, make_multilabel
from pydantic import BaseModel, ValidationError

from pipeline.config import Config, Ensemble
from pipeline.config_files import explain, load_config, read_chain
from pipeline.errors import PipelineError


def test_shipped_configs_load():
    for path in (ROOT / "configs").glob("*.yaml"):
        if path.name != "base.yaml":
            cfg = Config.model_validate(read_chain(path)[0])  # schema only: some data is generated
            assert cfg.model.backbone and cfg.folds.n_folds >= 2
            if (ROOT / cfg.data.root).is_dir():
                load_config(path)


def test_config_is_frozen(tmp_path, comp):
    cfg = load_config(make_config(tmp_path, comp))
    with pytest.raises(ValidationError):
        cfg.train.batch_size = 9


def _fields(schema: type[BaseModel], prefix=""):
    for name, field in schema.model_fields.items():
        yield prefix + name, field
        sub = field.annotation
        item = getattr(sub, "__args__", (None,))[0]
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from _fields(sub, f"{prefix}{name}.")
        elif isinstance(item, type) and issubclass(item, BaseModel) and type(None) in sub.__args__:  # X | None
            yield from _fields(item, f"{prefix}{name}.")
        elif isinstance(item, type) and issubclass(item, BaseModel):
            yield from _fields(item, f"{prefix}{name}.N.")


@pytest.mark.parametrize("schema", [Config, Ensemble])
def test_every_key_has_a_meaning_and_explain_lists_it(schema):
    keys = dict(_fields(schema))
    assert {"train.phases.N.lr", "infer.tta.flips", "runtime.device"} <= set(keys) or schema is Ensemble
    lines = explain(schema)
    for key, field in keys.items():
        assert field.description, f"{key} has no description"
        line = next(line for line in lines if line.startswith((f"{key} = ", f"{key}:")))
        assert field.description in line
    default = next(line for line in explain(Config) if line.startswith("train.batch_size = "))
    assert default.startswith("train.batch_size = 32  ")
    assert next(line for line in explain(Config) if line.startswith("data.root = ")).startswith(
        "data.root = (required)"
    )


def test_warmup_must_fit_in_epochs(tmp_path, comp):
    with pytest.raises(PipelineError, match=r"tiny\.yaml: train\.phases\.0: .*warmup_epochs \(5.0\) must be below"):
        load_config(make_config(tmp_path, comp), ["train.phases.0.warmup_epochs=5"])


def test_one_discriminative_rule_and_lr_find_phase(tmp_path, comp):
    with pytest.raises(PipelineError, match=r"train: .*set layer_decay or lr_ratio, not both"):
        load_config(make_config(tmp_path, comp), ["train.layer_decay=0.7", "train.lr_ratio=10"])
    with pytest.raises(PipelineError, match=r"lr_find.phase 3: train has 1 phases"):
        load_config(make_config(tmp_path, comp), ["lr_find.phase=3"])


def test_negative_sampling_needs_a_negative_class(tmp_path, comp):
    with pytest.raises(PipelineError, match="neg_fraction < 1 needs data.negative_class"):
        load_config(make_config(tmp_path, comp, train={"phases": [{"epochs": 1, "lr": 1e-3}], "neg_fraction": 0.5}))


def test_multilabel_refuses_what_needs_one_label(tmp_path):
    comp = make_multilabel(tmp_path / "comp", n_train=12)
    with pytest.raises(PipelineError, match="train.sampling: oversampling needs one label"):
        load_config(
            make_config(
                tmp_path,
                comp,
                data={"root": str(comp), "label_col": "tags", "task": "multilabel"},
                train={"sampling": "oversample"},
            )
        )


def test_a_multilabel_task_smooths_no_labels_unless_told_and_scores_f_beta_per_image(tmp_path, comp):
    ml = make_multilabel(tmp_path / "ml", n_train=12)
    data = {"root": str(ml), "label_col": "tags", "task": "multilabel"}
    assert load_config(make_config(tmp_path, ml, name="a", data=data)).train.label_smoothing == 0.0  # by CV
    told = load_config(make_config(tmp_path, ml, name="b", data=data, train={"label_smoothing": 0.1}))
    assert told.train.label_smoothing == 0.1
    assert load_config(make_config(tmp_path, ml, name="c", data=data, metric="f2_samples")).metric == "f2_samples"
    with pytest.raises(PipelineError, match="metric: f2_samples is the mean F-beta per image of several labels"):
        load_config(make_config(tmp_path, comp, name="d", metric="f2_samples"))
    with pytest.raises(PipelineError, match="data.empty_labels: says whether an image may get no label"):
        load_config(make_config(tmp_path, comp, name="e", data={"root": str(comp), "empty_labels": True}))


def test_balanced_class_weights_with_a_balancing_sampler_are_refused(tmp_path, comp):
    path = make_config(tmp_path, comp, train={"class_weights": "balanced", "sampling": "oversample"})
    with pytest.raises(PipelineError, match="balance the classes twice"):
        load_config(path)


def test_a_numbers_defaults_follow_its_task(tmp_path):
    from helpers import make_numbers, number_config

    comp = make_numbers(tmp_path / "comp")
    reg = load_config(number_config(tmp_path, comp))
    assert (reg.metric, reg.train.loss, reg.train.label_smoothing, reg.model.y_range) == ("rmse", "mse", 0.0, None)
    grades = load_config(number_config(tmp_path, comp, task="ordinal"))
    assert grades.metric == "qwk"
    classes = load_config(make_config(tmp_path, comp, data={"root": str(comp), "label_col": "score"}))
    assert (classes.metric, classes.train.loss, classes.train.label_smoothing) == ("accuracy", "ce", 0.1)
    with pytest.raises(PipelineError, match="metric: rmse scores a number"):
        load_config(make_config(tmp_path, comp, metric="rmse"))
    with pytest.raises(PipelineError, match=r"model.y_range: .*lo < hi"):
        load_config(number_config(tmp_path, comp, model={"y_range": [3, 1]}))


@pytest.mark.parametrize(
    "doc, key",
    [
        ({"data": {"task": "retrieval"}, "metric": "accuracy"}, "metric: accuracy does not score k guesses"),
        ({"data": {"task": "multilabel"}, "metric": "map@5"}, "metric: map@5 scores k guesses"),
        ({"data": {"task": "regression"}, "model": {"head": "arcface"}}, "model.head: arcface needs one class"),
        ({"data": {"new_individual": "new_whale"}}, "data.new_individual: names the answer"),
        ({"data": {"task": "retrieval"}, "infer": {"calibrate": "on"}}, "infer.calibrate: .* retrieval"),
        ({"data": {"task": "retrieval"}, "infer": {"tta": {"merge": "gmean"}}}, "infer.tta.merge: .* retrieval"),
        ({"data": {"task": "retrieval", "negative_class": "a"}}, "data.negative_class: .* retrieval"),
    ],
)
def test_retrieval_and_margin_heads_refuse_what_means_nothing_for_them(doc, key):
    base = {"name": "x", "data": {"root": "r"}, "model": {"backbone": "test_efficientnet"}}
    for section, values in doc.items():
        base[section] = {**base.get(section, {}), **values} if isinstance(values, dict) else values
    with pytest.raises(ValidationError, match=key):
        Config.model_validate(base)


def test_a_retrieval_task_scores_map_at_5_unless_told():
    cfg = Config.model_validate({"name": "x", "data": {"root": "r", "task": "retrieval"}, "model": {"backbone": "b"}})
    assert cfg.metric == "map@5" and cfg.data.new_individual == "new_individual"
    assert cfg.model.head == "subcenter_arcface" and cfg.model.head_margin == 0.3
