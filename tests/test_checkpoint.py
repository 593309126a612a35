"""Run-directory checkpoints: safetensors + JSON, rebuilt without the training config."""

from __future__ import annotations

import json

import pytest
import torch

from s2i_runtime.errors import InputError
from s2i_train import checkpoint
from s2i_train.models import (
    EMA,
    Generator,
    GeneratorConfig,
    Judge,
    JudgeConfig,
    ShapesTeacher,
    ShapesTeacherConfig,
    SpeechEncoderConfig,
    build_speech_encoder,
)

ENCODER_CONFIG = SpeechEncoderConfig(arch="s2igan", embedding_dim=24, hidden=8, conv_channels=(8, 8))
GENERATOR_CONFIG = GeneratorConfig(embedding_dim=24, z_dim=4, ca_dim=3, ngf=4, init_mult=8, branches=2)


def _trained_like(module: torch.nn.Module) -> torch.nn.Module:
    """Weights and BN statistics that differ from a fresh build, so a bad load cannot pass by accident."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]:
            tensor.add_(torch.rand_like(tensor) * 0.1)
    return module.eval()


def test_encoder_round_trip_gives_the_same_embeddings(tmp_path):
    torch.manual_seed(0)
    encoder = _trained_like(build_speech_encoder(ENCODER_CONFIG))
    path = checkpoint.save_module(tmp_path, checkpoint.ENCODER, encoder, ENCODER_CONFIG, {"steps": 5})
    assert path == tmp_path / "encoder.safetensors"
    meta = json.loads((tmp_path / "encoder.json").read_text())
    assert meta["arch"] == "s2igan" and meta["summary"] == {"steps": 5} and meta["format"] == 1
    # "auto" settings are stored resolved, so they can never change meaning later.
    assert meta["config"]["rnn"] == "gru" and meta["config"]["rnn_layers"] == 2
    assert meta["parameters"] == sum(p.numel() for p in encoder.parameters())

    loaded = checkpoint.load_speech_encoder(tmp_path)
    assert not loaded.training
    mel, lengths = torch.rand(2, 40, 80) * -80, torch.tensor([80, 9])
    with torch.no_grad():
        assert torch.equal(loaded(mel, lengths), encoder(mel, lengths))
    assert checkpoint.load_config(tmp_path, "encoder") == ENCODER_CONFIG.resolved()


def test_generator_round_trip_from_ema(tmp_path):
    torch.manual_seed(0)
    generator = Generator(GENERATOR_CONFIG)
    ema = EMA(generator)
    _trained_like(generator).train()
    ema.update(generator)
    checkpoint.save_module(tmp_path, checkpoint.GENERATOR, ema.module, GENERATOR_CONFIG)
    assert json.loads((tmp_path / "generator.json").read_text())["arch"] == "stackgan-v2"
    loaded = checkpoint.load_generator(tmp_path)
    inputs = (torch.randn(1, 24), torch.randn(1, 4), torch.randn(1, 3))
    with torch.no_grad():
        assert torch.equal(loaded(*inputs).images[-1], ema.module(*inputs).images[-1])


def test_teacher_and_judge_round_trip(tmp_path):
    teacher_config = ShapesTeacherConfig(feature_dim=8, width=2, num_classes=3, attributes={"shape": 8})
    judge_config = JudgeConfig(width=2, attributes={"colour": 8, "shape": 8, "size": 2})
    checkpoint.save_module(tmp_path, checkpoint.TEACHER, _trained_like(ShapesTeacher(teacher_config)), teacher_config)
    checkpoint.save_module(tmp_path, checkpoint.JUDGE, _trained_like(Judge(judge_config)), judge_config)
    assert checkpoint.load_teacher(tmp_path).config == teacher_config
    judge = checkpoint.load_judge(tmp_path)
    assert judge.config.attributes == {"colour": 8, "shape": 8, "size": 2}


def test_custom_builder(tmp_path):
    module = torch.nn.Linear(3, 2)
    checkpoint.save_module(tmp_path, "probe", module, GENERATOR_CONFIG, arch="linear-probe")
    loaded = checkpoint.load_module(tmp_path, "probe", builder=lambda config: torch.nn.Linear(3, 2))
    assert torch.equal(loaded.weight, module.weight)
    with pytest.raises(InputError, match="unknown architecture 'linear-probe'"):
        checkpoint.load_module(tmp_path, "probe")


def test_missing_corrupt_and_mismatched_checkpoints_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no encoder checkpoint"):
        checkpoint.load_speech_encoder(tmp_path)
    encoder = build_speech_encoder(ENCODER_CONFIG)
    checkpoint.save_module(tmp_path, "encoder", encoder, ENCODER_CONFIG)
    weights = tmp_path / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(InputError, match="sha256"):
        checkpoint.load_speech_encoder(tmp_path)
    # Weights of one shape under a config of another.
    checkpoint.save_module(tmp_path, "encoder", encoder, ENCODER_CONFIG)
    meta = json.loads((tmp_path / "encoder.json").read_text())
    meta["config"]["hidden"] = 16
    (tmp_path / "encoder.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="do not fit"):
        checkpoint.load_speech_encoder(tmp_path)
    (tmp_path / "encoder.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        checkpoint.load_speech_encoder(tmp_path)


def test_no_temporary_files_left_behind(tmp_path):
    checkpoint.save_module(tmp_path, "encoder", build_speech_encoder(ENCODER_CONFIG), ENCODER_CONFIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.json", "encoder.safetensors"]
    assert checkpoint.has_module(tmp_path, "encoder") and not checkpoint.has_module(tmp_path, "generator")


def test_the_same_weights_save_to_the_same_bytes(tmp_path):
    """The sha256 in <name>.json identifies weights: a retrained, identical model must hash the same."""
    teacher = ShapesTeacher(ShapesTeacherConfig(feature_dim=8, width=4, attributes={"shape": 3}))
    hashes = set()
    for i in range(8):
        checkpoint.save_module(tmp_path / str(i), "teacher", teacher, teacher.config)
        hashes.add(json.loads((tmp_path / str(i) / "teacher.json").read_text())["sha256"])
    assert len(hashes) == 1


def test_training_state_round_trip_without_pickle(tmp_path):
    assert checkpoint.load_training_state(tmp_path) is None
    model = torch.nn.Linear(2, 2)
    optimiser = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 2)).sum().backward()
    optimiser.step()
    state = {
        "step": 7,
        "optimiser": optimiser.state_dict(),
        "ema": EMA(model).state_dict(),
        "rng": torch.get_rng_state(),
        "order": [3, 1, 2],
    }
    path = checkpoint.save_training_state(tmp_path, state)
    assert path == tmp_path / "state" / "training.pt"
    loaded = checkpoint.load_training_state(tmp_path)
    assert loaded["step"] == 7 and loaded["order"] == [3, 1, 2]
    assert torch.equal(loaded["rng"], state["rng"])
    fresh = torch.optim.Adam(model.parameters())
    fresh.load_state_dict(loaded["optimiser"])
    path.write_bytes(b"garbage")
    with pytest.raises(InputError, match="unreadable training state"):
        checkpoint.load_training_state(tmp_path)


def test_checkers_saved_under_their_old_name_still_load(tmp_path):
    """Runs saved before the critics became checkers hold critic-N.safetensors/.json and state/critic-N."""
    from s2i_train.train.state import latest_step, load_state, save_state, stage_state_dir

    config = ShapesTeacherConfig(feature_dim=8, width=2, num_classes=3, attributes={"shape": 8})
    module = _trained_like(ShapesTeacher(config))
    checkpoint.save_module(tmp_path, "critic-1", module, config, summary={"step": 3})
    save_state(tmp_path, "critic-1", 3, {"step": torch.tensor(3)})
    assert checkpoint.checker_name(1) == "checker-1"
    assert checkpoint.legacy_module_name("checker-1") == "critic-1"
    assert checkpoint.current_module_name("critic-2") == "checker-2"
    assert checkpoint.current_module_name("teacher") == "teacher"
    assert checkpoint.stored_module_name(tmp_path, "checker-1") == "critic-1"
    assert checkpoint.has_module(tmp_path, "checker-1") and not checkpoint.has_module(tmp_path, "checker-2")
    assert checkpoint.read_meta(tmp_path, "checker-1")["summary"]["step"] == 3
    loaded = checkpoint.load_checkers(tmp_path, 1)[0]
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), module.state_dict().values(),
                                                   strict=True))
    with pytest.raises(InputError, match="no checker-2 checkpoint.*s2i-train checkers"):
        checkpoint.load_checkers(tmp_path, 2)
    # An encoder taught by an old-named checker records that name; it reads as the new one and loads.
    encoder = build_speech_encoder(ENCODER_CONFIG)
    checkpoint.save_module(tmp_path, checkpoint.ENCODER, encoder, ENCODER_CONFIG, summary={"teacher": "critic-1"})
    assert checkpoint.encoder_teacher_name(tmp_path) == "checker-1"
    assert isinstance(checkpoint.encoder_image_space(tmp_path), ShapesTeacher)
    # Its training state resumes from the old folder.
    assert latest_step(tmp_path, "checker-1") == 3 and stage_state_dir(tmp_path, "checker-1").name == "critic-1"
    assert int(load_state(tmp_path, "checker-1")[1]["step"]) == 3
    # Once saved under the new name, the new files win.
    checkpoint.save_module(tmp_path, "checker-1", ShapesTeacher(config), config, summary={"step": 5})
    save_state(tmp_path, "checker-1", 5, {"step": torch.tensor(5)})
    assert checkpoint.read_meta(tmp_path, "checker-1")["summary"]["step"] == 5
    assert latest_step(tmp_path, "checker-1") == 5


def test_a_generator_saved_with_drawn_blocks_still_loads(tmp_path):
    config = GeneratorConfig(embedding_dim=24, z_dim=4, ca_dim=3, ngf=4, init_mult=8, attribute_code=(3, 2),
                             condition_on_embedding=False, sampled_code_blocks=(1,))
    checkpoint.save_module(tmp_path, checkpoint.GENERATOR, Generator(config), config)
    meta = json.loads((tmp_path / "generator.json").read_text())
    meta["config"]["drawn_blocks"] = meta["config"].pop("sampled_code_blocks")  # as written before the rename
    (tmp_path / "generator.json").write_text(json.dumps(meta))
    assert checkpoint.load_generator(tmp_path).config == config
    assert checkpoint.load_config(tmp_path, checkpoint.GENERATOR) == config
