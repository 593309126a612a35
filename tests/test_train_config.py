"""Training configs: dataclasses <-> TOML, overrides, built-in configs, errors."""

import dataclasses

import pytest

from s2i_runtime.errors import InputError
from s2i_train.train.config import (
    TrainConfig,
    apply_overrides,
    builtin_config_path,
    config_from_toml,
    config_to_toml,
    load_config,
)


def test_default_config_round_trips_through_toml():
    config = TrainConfig()
    assert config_from_toml(config_to_toml(config)) == config


def test_nested_model_configs_and_tuples_round_trip():
    config = load_config(builtin_config_path("tiny"))
    back = config_from_toml(config_to_toml(config))
    assert back == config
    assert back.encoder.model.conv_channels == (8, 8, 8, 16, 16, 16, 16, 32)
    assert isinstance(back.generator.betas, tuple)


@pytest.mark.parametrize("name", ["tiny", "shapes64"])
def test_builtin_configs_load(name):
    config = load_config(builtin_config_path(name))
    assert config.generator.model.branches >= 1
    assert dataclasses.is_dataclass(config.encoder.model)


def test_overrides_parse_toml_values_and_bare_words():
    config = load_config(None, ["generator.steps=7", "encoder.objective=classifier", "generator.betas=[0.0, 0.9]",
                                "generator.teacher_consistency=false", "encoder.model.hidden=8"])
    assert config.generator.steps == 7
    assert config.encoder.objective == "classifier"
    assert config.generator.betas == (0.0, 0.9)
    assert config.generator.teacher_consistency is False
    assert config.encoder.model.hidden == 8


def test_unknown_field_is_an_input_error():
    with pytest.raises(InputError, match="unknown field"):
        load_config(None, ["generator.stepz=3"])


def test_wrong_type_is_an_input_error():
    with pytest.raises(InputError, match="expected int"):
        load_config(None, ["generator.steps=fast"])


def test_bad_override_syntax():
    with pytest.raises(InputError):
        apply_overrides({}, ["novalue"])


def test_missing_file_and_unknown_builtin(tmp_path):
    with pytest.raises(InputError):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(InputError):
        builtin_config_path("nope")
