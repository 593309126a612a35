"""Training configs: dataclasses <-> TOML, overrides, built-in configs, errors."""

import dataclasses

import pytest

from s2i_runtime.errors import InputError
from s2i_train.train.config import (
    REMOVED_FIELDS,
    TrainConfig,
    apply_overrides,
    builtin_config_path,
    config_from_toml,
    config_to_toml,
    load_config,
    load_run_config,
    save_config,
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


def test_a_saved_run_config_with_removed_switches_still_loads(tmp_path):
    config = TrainConfig()
    config.encoder.background_weight = 0.3
    save_config(tmp_path, config)
    old = (tmp_path / "config.toml").read_text()
    # As an older version wrote it: the removed switches, one of them on.
    for section, names in REMOVED_FIELDS.items():
        lines = "".join(f"{name} = {1 if name == 'lr_decay_every' else 'true' if 'only' in name else 0.5}\n"
                        for name in names)
        old = old.replace(f"[{section}]\n", f"[{section}]\n{lines}", 1)
    assert "pair_weight = 0.5" in old and "lr_decay_every = 1" in old and "colour_free_scrambled_only = true" in old
    (tmp_path / "config.toml").write_text(old)
    assert load_run_config(tmp_path) == config  # the encoder's own background_weight is not a removed one
    # Named on the command line, a removed switch is still refused.
    with pytest.raises(InputError, match="unknown field.*pair_weight"):
        load_config(tmp_path / "config.toml", ["generator.pair_weight=1.0"])
