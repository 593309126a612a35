"""Speech encoders, generator, discriminators, image networks, EMA."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from s2i_runtime.errors import BackendUnavailable
from s2i_train.models import (
    EMA,
    Discriminator,
    DiscriminatorConfig,
    ExportableGenerator,
    Generator,
    GeneratorConfig,
    Judge,
    JudgeConfig,
    ShapesTeacher,
    ShapesTeacherConfig,
    SpeechEncoderConfig,
    build_discriminators,
    build_imagenet_teacher,
    build_speech_encoder,
    colour_scrambled,
    count_parameters,
    draw_one_hot,
    freeze,
)
from s2i_train.models.generator import LayoutShift, shift_matrices
from s2i_train.models.masking import (
    MaskedBatchNorm1d,
    conv_out_lengths,
    masked_instance_norm,
    reverse_within_lengths,
    time_mask,
)
from s2i_train.models.pcen import PCEN
from s2i_train.models.speech_encoder import BiRNN, cepstral_lifter, speech_mean, speech_mean_std

PAD = -80.0

SMALL_ENCODERS = {
    "cnn-rnn": SpeechEncoderConfig(
        arch="cnn-rnn", embedding_dim=32, hidden=16, conv_channels=(8, 8, 16, 16, 16, 32, 32, 32)
    ),
    "s2igan": SpeechEncoderConfig(arch="s2igan", embedding_dim=48, hidden=16, conv_channels=(16, 32)),
    "cnn-rnn-gru": SpeechEncoderConfig(
        arch="cnn-rnn", rnn="gru", rnn_layers=2, embedding_dim=32, hidden=16, conv_channels=(8,) * 8
    ),
    "s2igan-centred": SpeechEncoderConfig(
        arch="s2igan", embedding_dim=48, hidden=16, conv_channels=(16, 32), input_centering="speech_mean"
    ),
    "s2igan-local": SpeechEncoderConfig(
        arch="s2igan", embedding_dim=48, hidden=16, conv_channels=(16, 32), rnn="none", context_kernels=(5, 3)
    ),
    "s2igan-liftered": SpeechEncoderConfig(
        arch="s2igan", embedding_dim=48, hidden=16, conv_channels=(16, 32), input_centering="speech_mean",
        cepstral_lifter=12,
    ),
    "s2igan-instance-norm": SpeechEncoderConfig(
        arch="s2igan", embedding_dim=48, hidden=16, conv_channels=(16, 32), input_centering="speech_mean",
        instance_norm=True,
    ),
    "s2igan-cmvn": SpeechEncoderConfig(
        arch="s2igan", embedding_dim=48, hidden=16, conv_channels=(16, 32), input_centering="speech_mean_std",
        instance_norm=True,
    ),
    "s2igan-pcen": SpeechEncoderConfig(
        arch="s2igan", embedding_dim=48, hidden=16, conv_channels=(16, 32), input_centering="speech_mean",
        instance_norm=True, input_compression="pcen",
    ),
}


def _randomise_norm_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics, as after training."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.5)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 0.5)
            if isinstance(module, MaskedBatchNorm1d) and module.num_features == 40:
                module.running_mean.fill_(-40.0)
                module.running_var.fill_(400.0)


def _encoder(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_speech_encoder(SMALL_ENCODERS[name])
    _randomise_norm_stats(model, seed)
    return model.eval()


def _mels(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 40, frames, generator=gen) * -80.0).float()


# ---------------------------------------------------------------- length helpers


def test_conv_out_lengths_follow_the_conv_formula_and_never_reach_zero():
    lengths = torch.tensor([1, 2, 3, 63, 64, 65, 1000])
    for kernel, stride, padding in [(17, 2, 8), (6, 2, 2), (3, 2, 1), (1, 1, 0), (5, 2, 2)]:
        got = conv_out_lengths(lengths, kernel, stride, padding)
        expected = [max(1, (n + 2 * padding - kernel) // stride + 1) for n in lengths.tolist()]
        assert got.tolist() == expected
        conv = torch.nn.Conv1d(1, 1, kernel, stride=stride, padding=padding)
        for n in (64, 65, 1000):  # the formula is the real conv's output size
            assert conv(torch.zeros(1, 1, n)).shape[-1] == conv_out_lengths(torch.tensor([n]), kernel, stride, padding)


def test_reverse_within_lengths_reverses_valid_part_only_and_is_its_own_inverse():
    x = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    lengths = torch.tensor([3, 5])
    reversed_x = reverse_within_lengths(x, lengths)
    assert reversed_x[0, :, 0].tolist() == [2, 1, 0, 3, 4]
    assert reversed_x[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    assert torch.equal(reverse_within_lengths(reversed_x, lengths), x)


def test_masked_batchnorm_training_statistics_ignore_padding():
    torch.manual_seed(0)
    data = torch.randn(1, 3, 10) * 2 + 1
    padded = torch.cat([data, torch.full((1, 3, 30), 99.0)], dim=2)
    mask = torch.zeros(1, 1, 40, dtype=torch.bool)
    mask[..., :10] = True
    plain, masked = torch.nn.BatchNorm1d(3), MaskedBatchNorm1d(3)
    expected = plain(data)
    got = masked(padded, mask)[..., :10]
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(masked.running_mean, plain.running_mean, atol=1e-6)
    assert torch.allclose(masked.running_var, plain.running_var, atol=1e-5)


# ---------------------------------------------------------------- speech encoders


@pytest.mark.parametrize("name", sorted(SMALL_ENCODERS))
def test_encoder_shapes_batch_one_and_one_frame(name):
    model = _encoder(name)
    with torch.no_grad():
        out = model(_mels(1, 64), torch.tensor([1]))
        assert out.shape == (1, SMALL_ENCODERS[name].embedding_dim)
        assert torch.isfinite(out).all()
        out = model(_mels(3, 150), torch.tensor([150, 64, 1]))
        assert out.shape == (3, SMALL_ENCODERS[name].embedding_dim)
    assert model.output_lengths(torch.tensor([1])).item() == 1


def test_encoder_lengths_beyond_the_tensor_mean_all_of_it():
    model = _encoder("cnn-rnn")
    mel = _mels(2, 100)
    with torch.no_grad():
        assert torch.equal(model(mel, torch.tensor([500, 0])), model(mel, torch.tensor([100, 1])))


@pytest.mark.parametrize("name", sorted(SMALL_ENCODERS))
def test_encoder_padding_invariance(name):
    """Alone (padded to 64 frames) and inside a longer padded batch give the same embedding."""
    model = _encoder(name)
    lengths = [1, 5, 63, 64, 65, 130, 257]
    frames = 300
    batch = _mels(len(lengths), frames, seed=1)
    # Whatever the padding holds, it must not matter: fill it with loud garbage.
    for i, n in enumerate(lengths):
        batch[i, :, n:] = 17.0
    with torch.no_grad():
        together = model(batch, torch.tensor(lengths))
        for i, n in enumerate(lengths):
            alone = torch.full((1, 40, max(64, n)), PAD)
            alone[:, :, :n] = batch[i : i + 1, :, :n]
            single = model(alone, torch.tensor([n]))
            assert torch.allclose(single[0], together[i], atol=1e-5), (name, n)


def test_encoder_padding_invariance_at_paper_size():
    torch.manual_seed(0)
    model = build_speech_encoder(SpeechEncoderConfig())
    _randomise_norm_stats(model)
    model.eval()
    mel = _mels(2, 200, seed=3)
    mel[0, :, 70:] = PAD
    with torch.no_grad():
        together = model(mel, torch.tensor([70, 200]))
        alone = model(mel[:1, :, :70].contiguous(), torch.tensor([70]))
    assert together.shape == (2, 1024)
    assert torch.allclose(alone[0], together[0], atol=1e-5)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_birnn_equals_a_bidirectional_rnn_run_on_each_unpadded_sequence(kind):
    """The backward direction starts at each sequence's own last valid step, as a cuDNN-style
    bidirectional RNN over the unpadded sequence does; padding never reaches a valid step."""
    torch.manual_seed(0)
    birnn = BiRNN(kind, 5, 7, layers=1)
    rnn_class = torch.nn.GRU if kind == "gru" else torch.nn.LSTM
    reference = rnn_class(5, 7, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name, value in birnn.forward_rnns[0].named_parameters():
            getattr(reference, name).copy_(value)
        for name, value in birnn.backward_rnns[0].named_parameters():
            getattr(reference, name + "_reverse").copy_(value)
        x = torch.randn(3, 12, 5)
        lengths = torch.tensor([12, 7, 1])
        x[1, 7:] = 50.0  # loud padding must not leak in
        x[2, 1:] = -50.0
        out = birnn(x, lengths)
        for i, n in enumerate(lengths.tolist()):
            expected, _ = reference(x[i : i + 1, :n])
            assert torch.allclose(out[i, :n], expected[0], atol=1e-6)
            assert torch.equal(out[i, n:], torch.zeros_like(out[i, n:]))


def test_s2igan_embeddings_are_unit_length_and_cnn_rnn_are_not_normalised():
    with torch.no_grad():
        s2igan = _encoder("s2igan")(_mels(4, 100), torch.tensor([100, 80, 64, 3]))
        cnn = _encoder("cnn-rnn")(_mels(4, 100), torch.tensor([100, 80, 64, 3]))
    assert torch.allclose(s2igan.norm(dim=1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(cnn.norm(dim=1), torch.ones(4), atol=1e-2)


def test_encoder_trains_in_train_mode():
    torch.manual_seed(0)
    model = build_speech_encoder(SMALL_ENCODERS["cnn-rnn"]).train()
    out = model(_mels(3, 128), torch.tensor([128, 70, 10]))
    out.pow(2).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_local_context_encoder_steps_hear_only_their_own_stretch_of_speech():
    torch.manual_seed(0)
    model = build_speech_encoder(SMALL_ENCODERS["s2igan-local"])
    _randomise_norm_stats(model)
    model.eval()
    mel = _mels(1, 200)
    changed = mel.clone()
    changed[:, :, 120:] = torch.randn_like(changed[:, :, 120:]) * 10 - 40
    lengths = torch.tensor([200])
    with torch.no_grad():
        before, _ = model.steps(mel, lengths)
        after, _ = model.steps(changed, lengths)
    # Step j of the strided convs covers frames 4j - 6 .. 4j + 9; kernels 5 and 3 add 3 steps either side, so
    # step j hears frames up to 4j + 21 and steps below 24 never hear frame 120.
    reach = (120 - 21) // 4
    assert torch.equal(before[:, :reach], after[:, :reach])
    assert not torch.allclose(before[:, reach + 2 :], after[:, reach + 2 :])


def test_encoder_config_resolution_and_validation():
    cfg = SpeechEncoderConfig(arch="s2igan").resolved()
    assert (cfg.rnn, cfg.rnn_layers, cfg.conv_channels, cfg.normalize) == ("gru", 2, (64, 128), "l2")
    cfg = SpeechEncoderConfig().resolved()
    assert (cfg.rnn, cfg.rnn_layers, cfg.normalize) == ("lstm", 1, "none")
    assert cfg.conv_channels == (64, 64, 128, 256, 256, 512, 512, 1024)
    with pytest.raises(ValueError, match="arch"):
        SpeechEncoderConfig(arch="transformer")
    with pytest.raises(ValueError, match="conv_channels"):
        SpeechEncoderConfig(arch="s2igan", conv_channels=(1, 2, 3))
    with pytest.raises(ValueError, match="only built for the s2igan"):
        SpeechEncoderConfig(rnn="none")
    with pytest.raises(ValueError, match="odd and positive"):
        SpeechEncoderConfig(arch="s2igan", rnn="none", context_kernels=(4,))
    with pytest.raises(ValueError, match="at least one"):
        SpeechEncoderConfig(arch="s2igan", rnn="none", context_kernels=())
    assert SpeechEncoderConfig.from_dict(SpeechEncoderConfig(conv_channels=(1,) * 8).to_dict()) == SpeechEncoderConfig(
        conv_channels=(1,) * 8
    )
    with pytest.raises(ValueError, match="unknown settings: hiden"):
        SpeechEncoderConfig.from_dict({"hiden": 3})


def _onnx_session(model, args, input_names, output_names, dynamic_axes, path, opset=17):
    ort = pytest.importorskip("onnxruntime")
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=list(input_names),
        output_names=list(output_names),
        dynamic_axes=dynamic_axes,
        opset_version=opset,
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ["cnn-rnn", "s2igan", "s2igan-centred", "s2igan-liftered", "s2igan-local",
                                  "s2igan-instance-norm", "s2igan-pcen", "s2igan-cmvn"])
def test_encoder_onnx_export_matches_torch(name, tmp_path):
    model = _encoder(name)
    session = _onnx_session(
        model,
        (_mels(2, 128), torch.tensor([128, 40])),
        ("mel", "lengths"),
        ("embedding",),
        {"mel": {0: "batch", 2: "time"}, "lengths": {0: "batch"}, "embedding": {0: "batch"}},
        tmp_path / "encoder.onnx",
    )
    rng = np.random.default_rng(0)
    for batch, frames in [(1, 64), (3, 64), (2, 333), (5, 1000)]:
        mel = _mels(batch, frames, seed=batch * frames)
        lengths = torch.from_numpy(rng.integers(1, frames + 1, size=batch)).to(torch.int64)
        lengths[0] = frames
        with torch.no_grad():
            expected = model(mel, lengths).numpy()
        (got,) = session.run(None, {"mel": mel.numpy(), "lengths": lengths.numpy()})
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------- generator


def _generator(branches: int = 2, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    gen = Generator(GeneratorConfig(embedding_dim=32, z_dim=8, ca_dim=6, ngf=8, init_mult=8, branches=branches))
    _randomise_norm_stats(gen, seed)
    return gen.eval()


def _generator_inputs(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 32, generator=g), torch.randn(batch, 8, generator=g), torch.randn(batch, 6, generator=g)


@pytest.mark.parametrize("branches", [1, 2, 3])
def test_generator_branch_shapes_and_range(branches):
    gen = _generator(branches)
    with torch.no_grad():
        out = gen(*_generator_inputs(2))
    assert [tuple(img.shape) for img in out.images] == [(2, 3, s, s) for s in gen.config.image_sizes]
    assert all(img.abs().max() <= 1.0 for img in out.images)
    assert out.mu.shape == out.logvar.shape == (2, 6)


def test_generator_batch_one_is_deterministic_given_its_inputs():
    gen = _generator(2)
    inputs = _generator_inputs(1)
    with torch.no_grad():
        first = gen(*inputs).images[-1]
        second = gen(*inputs).images[-1]
        other_z = gen(inputs[0], torch.randn(1, 8), inputs[2]).images[-1]
    assert torch.equal(first, second)
    assert not torch.allclose(first, other_z)


def test_conditioning_augmentation_uses_eps_as_given():
    gen = _generator(1)
    embedding, _, _ = _generator_inputs(3)
    eps = torch.randn(3, 6)
    c, mu, logvar = gen.ca(embedding, eps)
    assert torch.allclose(c, mu + torch.exp(0.5 * logvar) * eps)
    c0, mu0, _ = gen.ca(embedding, torch.zeros(3, 6))
    assert torch.equal(c0, mu0)


def test_conditioning_statistics_centre_and_scale_the_embedding():
    gen = _generator(1)
    embeddings = torch.nn.functional.normalize(torch.randn(200, gen.config.embedding_dim), dim=1) + 0.3
    gen.ca.set_embedding_statistics(embeddings)
    centred = gen.ca.centred(embeddings)
    assert torch.allclose(centred.mean(0), torch.zeros(gen.config.embedding_dim), atol=1e-5)
    assert float(centred.var(0).mean()) == pytest.approx(1.0, rel=1e-4)
    # Checkpoints from before the statistics existed load as the identity.
    state = {k: v for k, v in gen.state_dict().items() if not k.startswith("ca.embedding_")}
    fresh = _generator(1)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.ca.centred(embeddings), embeddings)


def test_attribute_code_alone_conditions_through_frozen_readouts():
    config = GeneratorConfig(embedding_dim=6, z_dim=4, ca_dim=6, ngf=8, init_mult=4, attribute_code=(3, 2),
                             condition_on_embedding=False)
    gen = Generator(config)
    assert gen.ca.fc.in_features == 5
    assert not any(p.requires_grad for p in gen.ca.readouts.parameters())
    # Read-outs that look at the first embedding component only: embeddings that agree there (and so give
    # the same code) give the same condition, whatever the rest holds.
    weights = [torch.zeros(3, 6), torch.zeros(2, 6)]
    weights[0][:, 0] = torch.tensor([5.0, 0.0, -5.0])
    weights[1][:, 0] = torch.tensor([3.0, -3.0])
    gen.ca.set_readouts(weights, [torch.zeros(3), torch.zeros(2)])
    a, b = torch.randn(2, 6), torch.randn(2, 6)
    b[:, 0] = a[:, 0]
    eps = torch.zeros(2, 6)
    assert torch.allclose(gen.ca(a, eps)[1], gen.ca(b, eps)[1])
    a[:, 0] += 1.0
    assert not torch.allclose(gen.ca(a, eps)[1], gen.ca(b, eps)[1])
    with pytest.raises(ValueError, match="read-outs"):
        gen.ca.set_readouts(weights[:1], [torch.zeros(3)])
    # An explicit code stands in for the read-outs: the read-outs' own code gives the same condition,
    # a one-hot code conditions alone, and a generator that also reads the embedding refuses one.
    code = gen.ca.attribute_code(a)
    assert [tuple(block.shape) for block in code] == [(2, 3), (2, 2)]
    assert torch.allclose(gen.ca(a, eps, code)[1], gen.ca(a, eps)[1])
    one_hot = [torch.eye(3)[[0, 2]], torch.eye(2)[[1, 1]]]
    assert torch.allclose(gen.ca(a, eps, one_hot)[1], gen.ca(b, eps, one_hot)[1])
    gen.eval()
    z = torch.zeros(2, 4)
    assert torch.allclose(gen(a, z, eps, code).images[0], gen(a, z, eps).images[0])
    both = Generator(GeneratorConfig(embedding_dim=6, z_dim=4, ca_dim=6, ngf=8, init_mult=4, attribute_code=(3, 2)))
    with pytest.raises(ValueError, match="condition_on_embedding"):
        both.ca(a, eps, one_hot)


def test_exportable_generator_returns_last_branch_and_matches_onnx(tmp_path):
    gen = _generator(2)
    export = ExportableGenerator(gen).eval()
    inputs = _generator_inputs(2)
    with torch.no_grad():
        assert torch.equal(export(*inputs), gen(*inputs).images[-1])
    session = _onnx_session(
        export,
        inputs,
        ("embedding", "z", "eps"),
        ("image",),
        {name: {0: "batch"} for name in ("embedding", "z", "eps", "image")},
        tmp_path / "generator.onnx",
    )
    for batch in (1, 4):
        inputs = _generator_inputs(batch, seed=batch)
        with torch.no_grad():
            expected = export(*inputs).numpy()
        (got,) = session.run(None, {n: t.numpy() for n, t in zip(("embedding", "z", "eps"), inputs, strict=True)})
        assert got.shape == (batch, 3, 128, 128)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def _assert_small_generator_matches_onnx(gen, example, path, opset=17):
    """Export a generator of embedding_dim = ca_dim = 6, z_dim = 4; ONNX Runtime agrees with torch on fresh inputs."""
    export = ExportableGenerator(gen).eval()
    names = ("embedding", "z", "eps")
    session = _onnx_session(export, example, names, ("image",), {name: {0: "batch"} for name in (*names, "image")},
                            path, opset)
    inputs = (torch.randn(16, 6), torch.randn(16, 4), torch.randn(16, 6))
    with torch.no_grad():
        expected = export(*inputs).numpy()
    (got,) = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_draw_one_hot_picks_the_interval_the_uniform_number_falls_in():
    probs = torch.tensor([[0.2, 0.5, 0.3]]).repeat(5, 1)
    # CDF(normal) = 0.1, 0.5, 0.977, 1.0 (float32), 1e-23: classes 0, 1, 2, 2 (the last interval is closed), 0.
    normal = torch.tensor([-1.2815516, 0.0, 2.0, 12.0, -10.0])
    assert draw_one_hot(probs, normal).argmax(1).tolist() == [0, 1, 2, 2, 0]
    draws = draw_one_hot(torch.tensor([[0.25, 0.75]]).repeat(20000, 1),
                         torch.randn(20000, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(draws.sum(1), torch.ones(20000))
    assert draws[:, 1].mean().item() == pytest.approx(0.75, abs=0.01)
    # A confident read-out is drawn almost surely; probabilities a hair short of 1 in sum still give a class.
    confident = draw_one_hot(torch.tensor([[0.999, 0.0009999]]).repeat(1000, 1), torch.randn(1000))
    assert confident[:, 0].mean().item() > 0.99 and torch.equal(confident.sum(1), torch.ones(1000))


def test_drawn_blocks_vary_with_z_and_export_to_onnx(tmp_path):
    config = GeneratorConfig(embedding_dim=6, z_dim=4, ca_dim=6, ngf=8, init_mult=4, attribute_code=(3, 2),
                             condition_on_embedding=False, sampled_code_blocks=(1,))
    gen = Generator(config).eval()
    weights = [torch.randn(3, 6), torch.zeros(2, 6)]  # the second read-out says 50/50 whatever the speech
    gen.ca.set_readouts(weights, [torch.zeros(3), torch.zeros(2)])
    embedding, eps = torch.randn(1, 6).repeat(2, 1), torch.zeros(2, 6)
    z = torch.zeros(2, 4)
    z[:, 0] = torch.tensor([-1.0, 1.0])  # the drawn block's number: below and above the median
    drawn = [draw_one_hot(block, z[:, 0]) if i == 1 else block
             for i, block in enumerate(gen.ca.attribute_code(embedding))]
    assert drawn[1].argmax(1).tolist() == [0, 1]
    with torch.no_grad():
        assert torch.equal(gen(embedding, z, eps).images[0], gen(embedding, z, eps, drawn).images[0])
        assert not torch.allclose(gen(embedding, z, eps).images[0][0], gen(embedding, z, eps).images[0][1])
    _assert_small_generator_matches_onnx(gen, (embedding, z, eps), tmp_path / "drawn.onnx")
    with pytest.raises(ValueError, match="sampled_code_blocks"):
        GeneratorConfig(attribute_code=(8, 2), condition_on_embedding=False, sampled_code_blocks=(2,))
    with pytest.raises(ValueError, match="sampled_code_blocks"):
        GeneratorConfig(attribute_code=(8, 2), sampled_code_blocks=(1,))


def test_shift_matrices_move_by_whole_and_half_pixels_and_clamp_at_the_border():
    x = torch.randn(2, 3, 8, 8)
    moved = shift_matrices(torch.tensor([3.0, -0.5]), 8)[:, None] @ x
    assert torch.equal(moved[0, :, 3:], x[0, :, :-3])
    assert torch.equal(moved[0, :, :3], x[0, :, :1].expand(-1, 3, -1))  # the first row, repeated
    torch.testing.assert_close(moved[1, :, :-1], (x[1, :, :-1] + x[1, :, 1:]) / 2)
    assert torch.equal(moved[1, :, -1], x[1, :, -1])
    assert torch.equal(shift_matrices(torch.zeros(1), 5)[0], torch.eye(5))


def test_layout_shift_moves_a_map_by_the_uniform_number_times_the_gated_range():
    shift = LayoutShift(ca_dim=4, max_fraction=0.25)
    with torch.no_grad():
        shift.gate.weight.zero_()
        shift.gate.bias.fill_(30.0)  # gate open: the whole range, 0.25 * 16 = 4 pixels
    h = torch.zeros(2, 1, 16, 16)
    h[:, 0, 8, 8] = 1.0
    # erf(z / sqrt 2) = 0.5 at z = 0.6744898: two pixels; at z = 0, none.
    z_pair = torch.tensor([[0.6744898, 0.0], [0.0, -0.6744898]])
    with torch.no_grad():
        moved = shift(h, z_pair, torch.zeros(2, 4))
    rows, cols = np.unravel_index(moved.flatten(1).argmax(1).numpy(), (16, 16))
    assert rows.tolist() == [8, 6] and cols.tolist() == [10, 8]
    assert moved.sum().item() == pytest.approx(2.0, abs=1e-5)  # moved, not smeared or lost
    with torch.no_grad():
        shift.gate.bias.fill_(-30.0)  # gate shut: no movement whatever z says
        assert torch.allclose(shift(h, z_pair * 5, torch.zeros(2, 4)), h, atol=1e-6)


@pytest.mark.parametrize("opset", [13, 17])
def test_layout_shift_generator_varies_with_the_last_z_pair_and_exports(tmp_path, opset):
    config = GeneratorConfig(embedding_dim=6, z_dim=4, ca_dim=6, ngf=8, init_mult=4, layout_shift=0.3)
    gen = Generator(config).eval()
    embedding, eps = torch.randn(1, 6).repeat(2, 1), torch.zeros(2, 6)
    z = torch.zeros(2, 4)
    z[1, 2:] = 1.5  # only the layout pair differs
    with torch.no_grad():
        images = gen(embedding, z, eps).images[0]
    assert not torch.allclose(images[0], images[1])
    _assert_small_generator_matches_onnx(gen, (embedding, z, eps), tmp_path / "shifted.onnx", opset)
    with pytest.raises(ValueError, match="layout_shift"):
        GeneratorConfig(layout_shift=0.6)
    with pytest.raises(ValueError, match="layout_shift"):
        GeneratorConfig(z_dim=2, attribute_code=(3,), condition_on_embedding=False, sampled_code_blocks=(0,),
                        layout_shift=0.2)


def test_default_generator_is_the_calibrated_cpu_size():
    gen = Generator(GeneratorConfig())
    assert gen.config.image_sizes == (64,)
    assert 3.0e6 < count_parameters(gen) < 3.4e6  # the CPU-sized model of docs/design.md


def test_generator_config_validation():
    with pytest.raises(ValueError, match="branches"):
        GeneratorConfig(branches=4)
    assert GeneratorConfig(branches=3).image_sizes == (64, 128, 256)
    assert GeneratorConfig.from_dict(GeneratorConfig(ngf=16).to_dict()) == GeneratorConfig(ngf=16)
    with pytest.raises(ValueError, match="attribute_code"):
        GeneratorConfig(condition_on_embedding=False)
    with pytest.raises(ValueError, match="class count"):
        GeneratorConfig(attribute_code=(8, 1))
    coded = GeneratorConfig(attribute_code=(8, 8, 2, 2), condition_on_embedding=False)
    assert GeneratorConfig.from_dict(coded.to_dict()) == coded


# ---------------------------------------------------------------- discriminators


@pytest.mark.parametrize("size", [64, 128, 256])
def test_discriminator_outputs(size):
    torch.manual_seed(0)
    config = DiscriminatorConfig(
        image_size=size, ndf=4, condition_dim=6, attributes={"colour": 8, "shape": 5}, num_classes=3
    )
    disc = Discriminator(config)
    out = disc(torch.randn(2, 3, size, size), torch.randn(2, 6))
    assert out.uncond_logits.shape == out.cond_logits.shape == (2,)
    assert {k: tuple(v.shape) for k, v in out.attribute_logits.items()} == {"colour": (2, 8), "shape": (2, 5)}
    assert out.class_logits.shape == (2, 3)
    assert out.features.shape == (2, 32)
    plain = disc(torch.randn(1, 3, size, size).expand(2, -1, -1, -1))
    assert plain.cond_logits is None
    last = out.rows(slice(1, None))
    assert torch.equal(last.uncond_logits, out.uncond_logits[1:]) and torch.equal(last.cond_logits, out.cond_logits[1:])
    assert torch.equal(last.attribute_logits["shape"], out.attribute_logits["shape"][1:])
    assert last.class_logits.shape == (1, 3) and last.features.shape == (1, 32)
    assert plain.rows(slice(0, 1)).cond_logits is None


def test_discriminator_heads_reuse_the_image_code():
    torch.manual_seed(0)
    disc = Discriminator(DiscriminatorConfig(ndf=4, condition_dim=6)).eval()
    images, mu = torch.randn(2, 3, 64, 64), torch.randn(2, 6)
    code = disc.encode(images)
    assert torch.allclose(disc.heads(code, mu.flip(0)).cond_logits, disc(images, mu.flip(0)).cond_logits)
    assert disc(images).attribute_logits == {} and disc(images).class_logits is None


def test_build_discriminators_one_per_branch():
    discs = build_discriminators((64, 128), ndf=4, condition_dim=6)
    assert [d.config.image_size for d in discs] == [64, 128]


# ---------------------------------------------------------------- image networks


def test_teacher_and_judge_read_any_image_size():
    torch.manual_seed(0)
    teacher = ShapesTeacher(ShapesTeacherConfig(feature_dim=24, width=4, num_classes=5, attributes={"shape": 8}))
    for size in (64, 48, 128):
        out = teacher(torch.rand(2, 3, size, size) * 2 - 1)
        assert out.features.shape == (2, 24) and out.class_logits.shape == (2, 5)
        assert out.attribute_logits["shape"].shape == (2, 8)
    judge = Judge(JudgeConfig(width=4, attributes={"colour": 8, "size": 2})).eval()
    predictions = judge.predict(torch.rand(3, 3, 256, 256) * 2 - 1)
    assert {k: v.shape for k, v in predictions.items()} == {"colour": (3,), "size": (3,)}
    assert all(v.dtype == torch.int64 for v in predictions.values())


def test_colour_scrambled_permutes_or_greys_only_the_flagged_images():
    images = torch.rand(64, 3, 8, 8) * 2 - 1
    out, changed = colour_scrambled(images, fraction=0.5, generator=torch.Generator().manual_seed(0))
    assert 10 < int(changed.sum()) < 54
    assert torch.equal(out[~changed], images[~changed])
    for before, after in zip(images[changed], out[changed], strict=True):
        grey = torch.allclose(after[0], after[1]) and torch.allclose(after[1], after[2])
        permuted = sorted(after.sum(dim=(1, 2)).tolist()) == pytest.approx(sorted(before.sum(dim=(1, 2)).tolist()))
        assert grey or (permuted and not torch.equal(after, before))


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here")
def test_imagenet_teacher_without_torchvision_says_so():
    with pytest.raises(BackendUnavailable, match="torchvision"):
        build_imagenet_teacher("googlenet")
    with pytest.raises(ValueError, match="must be one of"):
        build_imagenet_teacher("resnet")


# ---------------------------------------------------------------- EMA and freezing


def test_ema_averages_parameters_and_copies_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9, warmup=False)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(3.0)
    ema.update(model)
    assert torch.allclose(ema.module[0].weight, start + 0.1)
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 3.0))
    assert not any(p.requires_grad for p in ema.module.parameters())

    restored = EMA(model, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 1 and restored.decay == 0.9
    assert torch.equal(restored.module[0].weight, ema.module[0].weight)


def test_ema_warmup_starts_fast_and_reaches_the_decay():
    ema = EMA(torch.nn.Linear(1, 1), decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)
    ema.updates = 100_000
    assert ema.current_decay() == 0.999


def test_freeze():
    model = freeze(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train())
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_speech_mean_centering_ignores_a_fixed_colouring_per_band():
    """A channel's fixed spectral colouring (an offset per band in dB) leaves a centred encoder's embedding as it was;
    without centring it moves the embedding."""
    gen = torch.Generator().manual_seed(3)
    mel = torch.randn(3, 40, 120, generator=gen) * 8 - 35
    lengths = torch.tensor([120, 90, 40])
    colouring = torch.linspace(-12.0, 6.0, 40)[None, :, None]
    moved = {}
    for centering in ("speech_mean", "none"):
        model = build_speech_encoder(dataclasses.replace(SMALL_ENCODERS["s2igan"], input_centering=centering))
        _randomise_norm_stats(model)
        model.eval()
        with torch.no_grad():
            moved[centering] = (model(mel + colouring, lengths) - model(mel, lengths)).abs().max().item()
    assert moved["speech_mean"] < 1e-5
    assert moved["none"] > 1e-3


def test_masked_instance_norm_standardises_each_utterance_over_its_own_steps():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 6, 30, generator=gen) * 3 + 2
    lengths = torch.tensor([30, 11])
    mask = time_mask(x, lengths)
    out = masked_instance_norm(x, mask)
    assert torch.all(out[1, :, 11:] == 0)
    for row, length in enumerate(lengths.tolist()):
        valid = out[row, :, :length]
        assert torch.allclose(valid.mean(dim=1), torch.zeros(6), atol=1e-5)
        assert torch.allclose(valid.var(dim=1, unbiased=False), torch.ones(6), atol=1e-3)
    # A gain and an offset per utterance and channel, as a voice's or a channel's constant colouring, vanish.
    scale = torch.rand(2, 6, 1, generator=gen) * 4 + 0.5
    shift = torch.randn(2, 6, 1, generator=gen) * 10
    assert torch.allclose(masked_instance_norm(x * scale + shift, mask), out, atol=1e-4)


def test_speech_mean_leaves_silence_out():
    speech = torch.full((1, 40, 50), -20.0)
    silence = torch.full((1, 40, 150), -80.0)
    mel = torch.cat([silence[:, :, :75], speech, silence[:, :, 75:]], dim=2)
    mask = torch.ones(1, 1, 200, dtype=torch.bool)
    assert torch.allclose(speech_mean(mel, mask, 30.0), torch.full((1, 40, 1), -20.0))
    with pytest.raises(ValueError, match="input_centering"):
        SpeechEncoderConfig(input_centering="per_band")


def test_cepstral_lifter_keeps_the_envelope_and_drops_the_pitch_ripple():
    phase = torch.pi * (torch.arange(40, dtype=torch.float32) + 0.5) / 40
    envelope = -30.0 + 10.0 * torch.cos(2 * phase) - 4.0 * torch.cos(7 * phase)  # slow swells across the bands
    ripple = 6.0 * torch.cos(27 * phase)  # harmonics about three bands apart
    lifter = cepstral_lifter(40, 12)
    assert torch.allclose(lifter @ envelope, envelope, atol=1e-4)
    assert (lifter @ ripple).abs().max() < 0.05
    assert torch.allclose(lifter @ lifter, lifter, atol=1e-5)  # a projection
    assert torch.allclose(lifter @ torch.full((40,), -80.0), torch.full((40,), -80.0), atol=1e-4)
    assert torch.allclose(cepstral_lifter(40, 40), torch.eye(40), atol=1e-5)


def test_liftered_encoder_ignores_a_ripple_and_keeps_its_weights_file():
    config = SMALL_ENCODERS["s2igan-liftered"]
    model = build_speech_encoder(config)
    _randomise_norm_stats(model)
    model.eval()
    assert "lifter" not in model.state_dict()  # derived from the config, not stored
    gen = torch.Generator().manual_seed(4)
    mel = torch.randn(2, 40, 80, generator=gen) * 8 - 35
    lengths = torch.tensor([80, 50])
    ripple = 3.0 * torch.cos(torch.pi * 30 * (torch.arange(40) + 0.5) / 40)[None, :, None]
    with torch.no_grad():
        assert (model(mel + ripple, lengths) - model(mel, lengths)).abs().max() < 1e-4
    with pytest.raises(ValueError, match="cepstral_lifter"):
        SpeechEncoderConfig(cepstral_lifter=41)


def test_pcen_smoother_is_the_recursive_average_and_causal():
    """Past its first `frames` frames the smoother is PCEN's recursion M[t] = (1 - s) M[t-1] + s E[t] (to the
    weight its truncation leaves out); a frame never hears frames after it."""
    pcen = PCEN(4, smoothing=0.1, frames=128)
    gen = torch.Generator().manual_seed(7)
    power = torch.rand(2, 4, 300, generator=gen, dtype=torch.float32)
    smoothed = pcen.smoothed(power)
    recursive = torch.empty_like(power)
    state = power[:, :, 0].clone()
    for t in range(power.shape[2]):
        state = 0.9 * state + 0.1 * power[:, :, t] if t else state
        recursive[:, :, t] = state
    assert torch.allclose(smoothed[:, :, 150:], recursive[:, :, 150:], rtol=1e-4)
    changed = power.clone()
    changed[:, :, 200:] *= 5.0
    assert torch.equal(pcen.smoothed(changed)[:, :, :200], smoothed[:, :, :200])


def test_pcen_maps_silence_to_zero_and_ignores_a_steady_gain():
    pcen = PCEN(40)
    silence = torch.full((1, 40, 60), -80.0)
    # Far below a steady level's (E / M near 1), so padding and pauses stay out of the way.
    assert pcen(silence).abs().max() < 0.01
    gen = torch.Generator().manual_seed(8)
    mel = torch.randn(1, 40, 400, generator=gen) * 6 - 30
    with torch.no_grad():
        # alpha = 0.98: a gain of 20 dB moves the features by 0.02 x 20 dB of the level (a few per cent), where the
        # log-Mels move by the whole 20 dB.
        base, louder = pcen(mel), pcen(mel + 20.0)
    assert ((louder - base).abs().mean() / base.abs().mean()) < 0.1


def test_pcen_encoder_is_padding_invariant_and_rejects_a_lifter():
    model = _encoder("s2igan-pcen")
    mel = _mels(1, 90, seed=9)
    padded = torch.cat([mel, torch.full((1, 40, 50), -80.0)], dim=2)
    with torch.no_grad():
        alone = model(mel, torch.tensor([90]))
        with_padding = model(padded, torch.tensor([90]))
    assert torch.allclose(alone, with_padding, atol=1e-5)
    assert {"pcen.log_alpha", "pcen.log_delta", "pcen.log_root"} <= set(model.state_dict())
    with pytest.raises(ValueError, match="cepstral_lifter"):
        SpeechEncoderConfig(input_compression="pcen", cepstral_lifter=12)
    with pytest.raises(ValueError, match="input_compression"):
        SpeechEncoderConfig(input_compression="cube-root")


def test_speech_mean_std_ignores_a_gain_in_db_per_band_over_speech_frames_only():
    """Mean and variance normalisation: a band's offset and its range in dB (what noise filling the valleys
    shrinks) both go; silence stays out of the statistics, and a flat band is not blown up."""
    gen = torch.Generator().manual_seed(10)
    speech = torch.randn(1, 40, 80, generator=gen) * 6 - 30
    silence = torch.full((1, 40, 40), -80.0)
    mel = torch.cat([silence, speech], dim=2)
    mask = torch.ones(1, 1, 120, dtype=torch.bool)
    mean, spread = speech_mean_std(mel, mask, 30.0)
    assert torch.allclose(mean, speech.mean(dim=2, keepdim=True), atol=1e-4)
    assert torch.allclose(spread, speech.std(dim=2, unbiased=False, keepdim=True), atol=1e-4)
    squeezed = mel.clone()
    squeezed[:, :, 40:] = (speech + 30) * 0.5 - 20  # half the range, 10 dB up, in every band
    normalised = [(m - mu) / sd for m, (mu, sd) in ((x, speech_mean_std(x, mask, 30.0)) for x in (mel, squeezed))]
    assert torch.allclose(normalised[0][:, :, 40:], normalised[1][:, :, 40:], atol=1e-4)
    flat = torch.full((1, 40, 50), -20.0)
    assert torch.all(speech_mean_std(flat, mask[:, :, :50], 30.0)[1] == 1.0)
