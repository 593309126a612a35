"""Tiny but real model bundles for tests, built with onnx.helper (no torch needed).

encoder.onnx:   mel (B, 40, T), lengths (B,) -> embedding (B, D)
                masked mean over the valid frames (so padding never matters), /80, MatMul, Tanh
generator.onnx: embedding (B, D), z (B, z_dim), eps (B, ca_dim) -> image (B, 3, S, S)
                concat, MatMul, Tanh, Reshape
They run in real ONNX Runtime sessions; `write_manifest` writes s2i.json as export does.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from s2i_runtime.bundle import ENCODER_FILE, GENERATOR_FILE, write_manifest
from s2i_runtime.frontend import FrontendSpec

OPSET = 17
IR_VERSION = 8


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="s2i-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def encoder_model(n_mels: int = 40, embedding_dim: int = 8, seed: int = 0, fixed_batch: int | None = None,
                  time_axis: Any = "frames") -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((n_mels, embedding_dim)) * 3.0 / np.sqrt(n_mels)).astype(np.float32)
    bias = rng.standard_normal(embedding_dim).astype(np.float32)
    batch = fixed_batch if fixed_batch is not None else "batch"
    nodes = [
        helper.make_node("Shape", ["mel"], ["mel_shape"]),
        helper.make_node("Gather", ["mel_shape", "two"], ["time"], axis=0),
        helper.make_node("Range", ["zero", "time", "one"], ["steps"]),
        helper.make_node("Unsqueeze", ["steps", "axis0"], ["steps_row"]),
        helper.make_node("Unsqueeze", ["lengths", "axis1"], ["lengths_col"]),
        helper.make_node("Less", ["steps_row", "lengths_col"], ["valid"]),
        helper.make_node("Cast", ["valid"], ["valid_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["valid_f", "axis1"], ["mask"]),
        helper.make_node("Mul", ["mel", "mask"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis2"], ["total"], keepdims=0),
        helper.make_node("Cast", ["lengths_col"], ["count"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["total", "count"], ["mean"]),
        helper.make_node("Div", ["mean", "db_scale"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "weight"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["pre"]),
        helper.make_node("Tanh", ["pre"], ["embedding"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(2, np.int64), "two"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        numpy_helper.from_array(np.array(80.0, np.float32), "db_scale"),
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(bias, "bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "test_encoder",
        [
            helper.make_tensor_value_info("mel", TensorProto.FLOAT, [batch, n_mels, time_axis]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, [batch]),
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, embedding_dim])],
        inits,
    )
    return _model(graph)


def generator_model(embedding_dim: int = 8, z_dim: int = 4, ca_dim: int = 3, image_size: int = 16,
                    seed: int = 1, poison: str | None = None, output_name: str = "image") -> onnx.ModelProto:
    """`poison="nan"` adds sqrt(-1) to every pixel: a generator whose output is never finite."""
    rng = np.random.default_rng(seed)
    width = embedding_dim + z_dim + ca_dim
    pixels = 3 * image_size * image_size
    weight = (rng.standard_normal((width, pixels)) / np.sqrt(width)).astype(np.float32)
    weight[:embedding_dim] *= 3.0  # the speech matters more than the noise, as in a trained model
    nodes = [
        helper.make_node("Concat", ["embedding", "z", "eps"], ["joint"], axis=1),
        helper.make_node("MatMul", ["joint", "weight"], ["flat"]),
        helper.make_node("Tanh", ["flat"], ["flat_tanh"]),
        helper.make_node("Reshape", ["flat_tanh", "image_shape"], ["shaped"]),
    ]
    inits = [
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(np.array([-1, 3, image_size, image_size], np.int64), "image_shape"),
    ]
    if poison == "nan":
        nodes += [
            helper.make_node("Sqrt", ["minus_one"], ["nan"]),
            helper.make_node("Add", ["shaped", "nan"], [output_name]),
        ]
        inits.append(numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one"))
    else:
        nodes.append(helper.make_node("Identity", ["shaped"], [output_name]))
    graph = helper.make_graph(
        nodes,
        "test_generator",
        [
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", embedding_dim]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", z_dim]),
            helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["batch", ca_dim]),
        ],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", 3, image_size, image_size])],
        inits,
    )
    return _model(graph)


def make_bundle(path: str | Path, *, embedding_dim: int = 8, z_dim: int = 4, ca_dim: int = 3,
                image_size: int = 16, spec: FrontendSpec | None = None, poison: str | None = None,
                fixed_batch: int | None = None, output_name: str = "image",
                model_overrides: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write a complete bundle directory; `model_overrides` puts wrong numbers into s2i.json on purpose."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    spec = spec or FrontendSpec()
    onnx.save(encoder_model(spec.n_mels, embedding_dim, fixed_batch=fixed_batch), path / ENCODER_FILE)
    onnx.save(
        generator_model(embedding_dim, z_dim, ca_dim, image_size, poison=poison, output_name=output_name),
        path / GENERATOR_FILE,
    )
    model = {
        "embedding_dim": embedding_dim,
        "z_dim": z_dim,
        "ca_dim": ca_dim,
        "image_sizes": [image_size],
        "encoder_arch": "test-masked-mean",
    }
    model.update(model_overrides or {})
    manifest = {
        "frontend": spec.to_dict(),
        "model": model,
        "dataset": {"name": "test-tones", "vocabulary": ["tone"]},
        "training": {"note": "random weights built by tests/bundle_factory.py"},
    }
    manifest.update(extra or {})
    write_manifest(path, manifest)
    return path


def tone(seconds: float, freq: float, rate: int = 16000, amplitude: float = 0.5, seed: int = 0) -> np.ndarray:
    """A sine with a little noise (float32), different enough per frequency to give different images."""
    t = np.arange(int(round(seconds * rate))) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (amplitude * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def write_wav(path: str | Path, audio: np.ndarray, rate: int = 16000) -> Path:
    """16-bit PCM mono WAV."""
    path = Path(path)
    pcm = np.clip(np.rint(np.asarray(audio) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(pcm.tobytes())
    return path


try:  # fixtures for test modules that `from bundle_factory import tiny_bundle, tone_wavs`
    import pytest

    @pytest.fixture(scope="session")
    def tiny_bundle(tmp_path_factory) -> Path:
        return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny")

    @pytest.fixture(scope="session")
    def tone_wavs(tmp_path_factory) -> list[Path]:
        """Five WAVs of different lengths and pitches (0.3 s to 3 s)."""
        folder = tmp_path_factory.mktemp("wavs")
        specs = [(0.3, 300.0), (1.0, 440.0), (2.0, 1000.0), (3.0, 2500.0), (0.7, 5000.0)]
        return [write_wav(folder / f"tone{i}.wav", tone(s, f, seed=i)) for i, (s, f) in enumerate(specs)]
except ImportError:  # pragma: no cover - pytest is always there when tests run
    pass
