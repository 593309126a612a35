"""Training configs: dataclasses <-> TOML, overrides, built-in configs, errors."""

import dataclasses

import pytest

from s2i_runtime.errors import InputError
from s2i_train.train.config import (
    REMOVED_FIELDS,
    RENAMED_FIELDS,
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


def test_a_saved_run_config_with_renamed_fields_loads_under_the_new_names(tmp_path):
    config = TrainConfig()
    config.teacher.checker_widths = (32, 24)
    config.encoder.teacher = "checker-2"
    config.generator.unsaid_attributes_uniform = True
    config.generator.model = dataclasses.replace(config.generator.model, attribute_code=(8, 8, 2, 2),
                                                 condition_on_embedding=False, sampled_code_blocks=(3,))
    save_config(tmp_path, config)
    new = (tmp_path / "config.toml").read_text()
    # As an older version wrote it: every renamed key under its old name, and the checker by its old module name.
    old = new.replace('teacher = "checker-2"', 'teacher = "critic-2"')
    for names in RENAMED_FIELDS.values():
        for old_name, new_name in names.items():
            assert f"\n{new_name} = " in old
            old = old.replace(f"\n{new_name} = ", f"\n{old_name} = ")
    assert "critic_widths = [" in old and "open_unspoken = true" in old and "drawn_blocks = [" in old
    (tmp_path / "config.toml").write_text(old)
    assert load_run_config(tmp_path) == config
    # An override by the new name applies on top of the old file.
    assert load_config(tmp_path / "config.toml", ["teacher.checker_widths=[6]"]).teacher.checker_widths == (6,)
    # Named on the command line, an old name is refused with the new one.
    for key, new_key in (("teacher.critic_widths", "teacher.checker_widths"),
                         ("generator.open_unspoken", "generator.unsaid_attributes_uniform"),
                         ("generator.model.drawn_blocks", "generator.model.sampled_code_blocks")):
        with pytest.raises(InputError, match=f"{key} has been renamed; use {new_key}"):
            load_config(tmp_path / "config.toml", [f"{key}=true"])
    # A file that gives both names is ambiguous.
    both = old.replace("critic_widths = [", "checker_widths = [6]\ncritic_widths = [", 1)
    (tmp_path / "config.toml").write_text(both)
    with pytest.raises(InputError, match="both critic_widths and checker_widths"):
        load_run_config(tmp_path)


def test_stage_and_model_configs_follow_one_naming_pattern():
    from s2i_train import models
    from s2i_train.train import config as train_config

    stages = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for section in ("judge", "teacher", "encoder", "text_encoder", "generator"):
        assert str(stages[section]).endswith("TrainConfig"), section
    # One JudgeConfig: the judge network's; the stage's is JudgeTrainConfig.
    assert not hasattr(train_config, "JudgeConfig") and hasattr(models, "JudgeConfig")
    assert not hasattr(train_config, "TeacherConfig")


def test_model_configs_read_renamed_settings():
    from s2i_train.models import GeneratorConfig

    old = {"attribute_code": [8, 8, 2, 2], "condition_on_embedding": False, "drawn_blocks": [3]}
    assert GeneratorConfig.from_dict(old).sampled_code_blocks == (3,)
    with pytest.raises(ValueError, match="both drawn_blocks and sampled_code_blocks"):
        GeneratorConfig.from_dict({**old, "sampled_code_blocks": [3]})
