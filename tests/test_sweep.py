"""make sweep: one real config per combination of the lists, named from the values, an ensemble
file of them, and a plan (make -n sweep) that trains each through Make."""

import pytest
import yaml
from helpers import make, make_config

from pipeline.config_files import load_config, load_ensemble
from pipeline.errors import PipelineError
from pipeline.sweep import short_keys, value_text, write_sweep


def test_short_keys_and_values_make_file_names():
    assert short_keys(["model.backbone", "train.seed"]) == {"model.backbone": "backbone", "train.seed": "seed"}
    two = short_keys(["train.phases.0.lr", "train.phases.1.lr"])
    assert two == {"train.phases.0.lr": "phases.0.lr", "train.phases.1.lr": "phases.1.lr"}
    assert value_text("hf-hub:timm/vit_small") == "hf-hub_timm_vit_small" and value_text(1e-3) == "0.001"


def test_each_combination_is_a_config_that_loads_named_from_its_values(tmp_path, comp):
    config = make_config(tmp_path, comp, train={"phases": [{"epochs": 2, "lr": 3e-3, "sched": "onecycle"}]})
    words = ["model.backbone=test_efficientnet,test_resnet", "train.phases.0.lr=0.1,0.01", "train.seed=7"]
    ens_path, notes = write_sweep(config, words, submissions=str(tmp_path / "subs"))
    names = sorted(p.stem for p in (tmp_path / "sweeps").glob("tiny--*.yaml") if ".ensemble" not in p.name)
    assert names == [
        "tiny--backbone=test_efficientnet--lr=0.01",
        "tiny--backbone=test_efficientnet--lr=0.1",
        "tiny--backbone=test_resnet--lr=0.01",
        "tiny--backbone=test_resnet--lr=0.1",
    ]  # the seed, one value, is set in each but names none
    cfg = load_config(tmp_path / "sweeps" / "tiny--backbone=test_resnet--lr=0.01.yaml")
    assert cfg.name == "tiny--backbone=test_resnet--lr=0.01" and cfg.model.backbone == "test_resnet"
    assert cfg.train.seed == 7 and cfg.train.phases[0].lr == 0.01 and cfg.train.phases[0].sched == "onecycle"
    doc = yaml.safe_load((tmp_path / "sweeps" / f"{cfg.name}.yaml").read_text())
    assert doc["base"] == "../tiny.yaml" and set(doc) == {"base", "name", "model", "train"}  # the rest inherited
    assert doc["train"]["phases"] == {0: {"lr": 0.01}}  # the item's key, not a copy of the whole list
    ens = load_ensemble(ens_path)
    assert ens.name == "tiny--sweep--backbone-lr" and ens.method == "fit" and len(ens.members) == 4
    assert ens.out_dir == str(tmp_path / "subs") and notes == []
    # an edited config is kept, and said so; the others are left as they are
    edited = tmp_path / "sweeps" / f"{cfg.name}.yaml"
    edited.write_text(edited.read_text() + "folds: {n_folds: 3}\n")
    _, notes = write_sweep(config, words, submissions=str(tmp_path / "subs"))
    assert notes == [f"{edited}: kept as edited"] and "n_folds: 3" in edited.read_text()


def test_a_later_edit_of_the_bases_list_reaches_the_members(tmp_path, comp):
    phases = [{"epochs": 2, "lr": 3e-3, "sched": "onecycle"}, {"epochs": 1, "lr": 1e-3}]
    config = make_config(tmp_path, comp, train={"phases": phases})
    write_sweep(config, ["train.phases.0.lr=0.1,0.01"], submissions=str(tmp_path / "subs"))
    doc = yaml.safe_load(config.read_text())
    doc["train"]["phases"][0]["epochs"] = 5  # the base edited after the sweep
    doc["train"]["phases"][1]["lr"] = 5e-4
    config.write_text(yaml.safe_dump(doc))
    cfg = load_config(tmp_path / "sweeps" / "tiny--lr=0.01.yaml")
    assert [(p.epochs, p.lr, p.sched) for p in cfg.train.phases] == [(5, 0.01, "onecycle"), (1, 5e-4, "cosine")]
    member = tmp_path / "sweeps" / "tiny--lr=0.1.yaml"
    member.write_text(member.read_text().replace("    0:", "    3:"))
    with pytest.raises(PipelineError, match=r"tiny--lr=0.1.yaml: train.phases.3: the list it inherits has 2 items"):
        load_config(member)


@pytest.mark.parametrize(
    "words, message",
    [
        ([], "SWEEP: empty"),
        (["model.backbon=a,b"], "unknown key 'model.backbon'"),
        (["train.seed=1,,2"], "SWEEP: train.seed has an empty value"),
        (["train.seed="], "SWEEP: train.seed has an empty value"),
        (["train.phases.0.lr=0.1,-1"], "train.phases.0.lr: Input should be greater than 0"),
        (["train.seed"], "is not key=a,b,c"),
    ],
)
def test_a_bad_sweep_is_a_one_line_error_and_writes_nothing(tmp_path, comp, words, message):
    config = make_config(tmp_path, comp)
    with pytest.raises(PipelineError, match=message) as e:
        write_sweep(config, words)
    assert "\n" not in str(e.value) and not (tmp_path / "sweeps").exists()


def test_make_n_sweep_plans_every_experiment_the_ensemble_and_the_leaderboard(tmp_path, comp):
    config = make_config(tmp_path, comp)
    subs = tmp_path / "subs"
    plan = make("-n", "sweep", f"CONFIG={config}", "SWEEP=train.seed=1,2", f"SUBMISSIONS={subs}").stdout
    for seed in (1, 2):
        sweep_config = tmp_path / "sweeps" / f"tiny--seed={seed}.yaml"
        assert load_config(sweep_config).train.seed == seed
        for fold in (0, 1):
            assert f"pipeline train {sweep_config} --fold {fold}" in plan
        assert f"pipeline infer {sweep_config}" in plan
    ensemble = tmp_path / "sweeps" / "tiny--sweep--seed.ensemble.yaml"
    assert f"pipeline ensemble --spec {ensemble}" in plan and "pipeline leaderboard runs" in plan
    assert not (tmp_path / "runs").exists() and not subs.exists()  # a plan: only the configs are written
    bad = make("-n", "sweep", f"CONFIG={config}", "SWEEP=train.sead=1,2", check=False)
    assert bad.returncode != 0 and "unknown key 'train.sead'" in bad.stderr and len(bad.stderr.splitlines()) == 1
