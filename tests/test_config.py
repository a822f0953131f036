"""The experiment config: one schema, YAML round trip, defaults, and errors that name the key."""
import pytest
import yaml

from mgkd.config import (ExperimentConfig, Granularity, apply_overrides, default_config,
                         load_config, resolve, save_config)
from mgkd.errors import ConfigError
from mgkd.methods import METHOD_NAMES, get_method


def test_yaml_round_trip_is_identity(tmp_path, tiny_config):
    config = resolve(tiny_config(method="crd", mode="mas"))
    save_config(config, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == config
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["granularities"][1] == {
        "dim": 16, "temperature": 8.0, "weight": 0.5}


def test_paper_defaults():
    config = ExperimentConfig()
    assert config.granularities == [Granularity(64, 2.0, 1.0), Granularity(256, 8.0, 1.0)]
    assert config.lr_milestones == [0.625, 0.75, 0.875]
    assert (config.val_fraction, config.temperature, config.epochs) == (0.1, 4.0, 240)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_default_config_fills_method_defaults(method):
    config = default_config("resnet32x4", "resnet8x4", "cifar100", method=method, mode="mag")
    cls = get_method(method)
    assert config.ce_weight == cls.defaults.ce_weight
    assert config.feature_weight == cls.defaults.feature_weight
    assert config.method_options == cls.resolve_options({}, "resnet32x4", "resnet8x4")
    assert None not in (config.ce_weight, config.logit_weight, config.feature_weight, config.lr)


def test_kd_uses_the_papers_weights_and_mas_keeps_a_logit_term():
    kd = default_config("resnet32x4", "resnet8x4", "cifar100", method="kd")
    assert (kd.ce_weight, kd.logit_weight) == (0.2, 0.8)
    at_mas = default_config("resnet32x4", "resnet8x4", "cifar100", method="at", mode="mas")
    at_mag = default_config("resnet32x4", "resnet8x4", "cifar100", method="at", mode="mag")
    at_plain = default_config("resnet32x4", "resnet8x4", "cifar100", method="at", mode="plain")
    # The paper's scripts pass --div_weight 1.0 in mag and mas; plain is RepDistiller's -a 0.
    assert (at_mas.logit_weight, at_mag.logit_weight, at_plain.logit_weight) == (1.0, 1.0, 0.0)
    assert at_mag.feature_weight == 1000
    for mode in ("plain", "mag", "mas"):
        kd_mode = default_config("resnet32x4", "resnet8x4", "cifar100", method="kd", mode=mode)
        assert (kd_mode.ce_weight, kd_mode.logit_weight) == (0.2, 0.8)


def test_lr_default_depends_on_student():
    assert default_config("resnet32x4", "ShuffleV1", "cifar100").lr == 0.01
    assert default_config("resnet32x4", "resnet8x4", "cifar100").lr == 0.05


def test_plain_mode_resolves_to_no_granularities():
    assert default_config("resnet32x4", "resnet8x4", "cifar100", mode="plain").granularities == []


@pytest.mark.parametrize("changes, words", [
    ({"teacher": "resnet9"}, ["teacher", "resnet9", "resnet32x4"]),
    ({"student": "vgg99"}, ["student", "vgg99", "ShuffleV2"]),
    ({"method": "foo"}, ["method", "foo", "crd"]),
    ({"mode": "both"}, ["mode", "plain, mag, mas"]),
    ({"dataset": "imagenet"}, ["dataset", "cifar100", "digits"]),
    ({"epochs": 0}, ["epochs", "out of range"]),
    ({"val_fraction": 0.9}, ["val_fraction", "0.5"]),
    ({"temperature": 0}, ["temperature"]),
    ({"lr_milestones": [0.9, 0.5]}, ["lr_milestones", "increasing"]),
    ({"granularities": [{"dim": 0, "temperature": 2}]}, ["granularities[0].dim"]),
    ({"granularities": [{"dim": 8, "temp": 2}]}, ["granularities[0]", "temperature"]),
    ({"granularities": [{"dim": 8, "temperature": 2}] * 9}, ["granularities", "0 to 8"]),
    ({"method_options": {"nope": 1}}, ["method_options", "nope"]),
    ({"mode": "mas", "logit_weight": 0}, ["logit_weight", "mas"]),
    ({"batch_size": "64"}, ["batch_size", "integer"]),
    ({"colour": "red"}, ["unknown key(s)", "colour", "teacher"]),
    ({"device": "tpu"}, ["device", "cpu"]),
])
def test_bad_values_are_rejected_naming_key_and_allowed(changes, words):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({**ExperimentConfig().to_dict(), **changes})
    for word in words:
        assert word in str(info.value)


def test_overrides_are_yaml_values(tiny_config):
    config = apply_overrides(tiny_config(), ["epochs=7", "granularities=[{dim: 32, temperature: 4}]",
                                             "teacher_checkpoint=null"])
    assert config.epochs == 7
    assert config.granularities == [Granularity(32, 4.0, 1.0)]
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(tiny_config(), ["epochs"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("epochs: -3\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: epochs"):
        load_config(wrong)


@pytest.mark.parametrize("changes, message", [
    ({"epochs": True}, "epochs: expected an integer, got True."),
    ({"epochs": 3.5}, "epochs: expected an integer, got 3.5."),
    ({"lr": float("inf")}, "lr: expected a finite number, got inf."),
    ({"momentum": "0.9"}, "momentum: expected a number, got '0.9'."),
    ({"data_dir": 3}, "data_dir: expected a string, got 3."),
    ({"amp": 1}, "amp: expected auto, true or false, got 1."),
    ({"granularities": [{"dim": 8, "temperature": 2}, {"dim": 8, "temperature": 2, "weight": -1}]},
     "granularities[1].weight: -1 is out of range; allowed: [0.0, 10000.0]."),
    ({"granularities": [{"dim": 8}]}, "granularities[0]: missing required key(s) ['temperature']; "
                                      "a level is {dim, temperature, weight (default 1)}."),
])
def test_strict_values_give_one_exact_paragraph(changes, message):
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({**ExperimentConfig().to_dict(), **changes})
    assert str(info.value) == message


def test_whole_floats_are_integers_and_empty_values_are_empty():
    config = ExperimentConfig.from_dict({"epochs": 3.0, "lr": 1, "method_options": None,
                                         "granularities": None})
    assert type(config.epochs) is int and config.epochs == 3
    assert type(config.lr) is float and config.lr == 1.0
    assert (config.method_options, config.granularities) == ({}, [])


def test_a_trial_config_is_validated_once_and_resolving_adds_no_validation(monkeypatch,
                                                                          tiny_config):
    from mgkd.config import experiment
    from mgkd.data import load_config_splits
    from mgkd.distill.learner import make_trainer
    from mgkd.knowledge.prepare import Knowledge
    from spaces import build_space

    space = build_space("full", tiny_config())
    flat = space.paper_default()
    splits = load_config_splits(space.base)
    parses = []

    class Counting:
        def parse(self, data):
            parses.append(data)
            return schema.parse(data)

    schema = experiment._SCHEMA
    monkeypatch.setattr(experiment, "_SCHEMA", Counting())
    config = space.to_config(flat)  # what the searcher hands a trial
    assert len(parses) == 1
    again = ExperimentConfig.from_validated(config.to_dict())  # the trial rebuilds it
    assert resolve(again) == again == config
    make_trainer(again, splits, Knowledge.untrained(again, splits.spec.num_classes))
    assert len(parses) == 1  # the trainable, resolve() and make_trainer validated nothing again
