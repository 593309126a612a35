"""`s2i-export triton`: every config.pbtxt must parse with Triton's own ModelConfig protobuf (tritonclient)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from export_fixtures import CA_DIM, EMBEDDING_DIM, Z_DIM, make_tiny_run
from typer.testing import CliRunner

from s2i_export import tensorrt_build as trtb
from s2i_export.cli import app
from s2i_export.fp16 import export_fp16
from s2i_export.onnx_export import export_bundle
from s2i_export.triton import ENCODER_MODEL, ENSEMBLE_MODEL, GENERATOR_MODEL, write_triton_repository
from s2i_runtime.bundle import load_bundle
from s2i_runtime.errors import BundleError, InputError


def _model_config_pb2():
    """tritonclient/grpc/model_config_pb2.py, loaded by path: the package's __init__ needs grpc, the file does not."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or spec.origin is None:
        pytest.skip("tritonclient is not installed (dev extra)")
    path = Path(spec.origin).parent / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("s2i_test_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pb2():
    return _model_config_pb2()


def parse(pb2, path: Path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), pb2.ModelConfig())


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    run = make_tiny_run(tmp_path_factory.mktemp("run") / "run", branches=1)
    bundle = export_bundle(run, tmp_path_factory.mktemp("export") / "bundle")
    export_fp16(bundle)
    return bundle


def test_onnxruntime_repository(bundle_dir, tmp_path, pb2):
    repo = write_triton_repository(bundle_dir, tmp_path / "repo", max_batch=8)
    enc = parse(pb2, repo / ENCODER_MODEL / "config.pbtxt")
    gen = parse(pb2, repo / GENERATOR_MODEL / "config.pbtxt")
    ens = parse(pb2, repo / ENSEMBLE_MODEL / "config.pbtxt")
    assert (repo / ENCODER_MODEL / "1" / "model.onnx").read_bytes() == (bundle_dir / "encoder.onnx").read_bytes()
    assert (repo / GENERATOR_MODEL / "1" / "model.onnx").is_file()
    assert (repo / ENSEMBLE_MODEL / "1").is_dir() and (repo / "README.md").is_file()

    assert enc.name == ENCODER_MODEL and enc.platform == "onnxruntime_onnx" and enc.max_batch_size == 8
    mel, lengths = enc.input
    assert (mel.name, list(mel.dims), mel.data_type) == ("mel", [40, -1], pb2.TYPE_FP32)
    assert (lengths.name, list(lengths.dims), lengths.data_type) == ("lengths", [1], pb2.TYPE_INT64)
    assert lengths.HasField("reshape") and list(lengths.reshape.shape) == []
    assert [(o.name, list(o.dims)) for o in enc.output] == [("embedding", [EMBEDDING_DIM])]
    assert list(enc.dynamic_batching.preferred_batch_size) == [4, 8]
    assert enc.dynamic_batching.max_queue_delay_microseconds > 0
    assert enc.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_GPU

    assert [(i.name, list(i.dims)) for i in gen.input] == [
        ("embedding", [EMBEDDING_DIM]), ("z", [Z_DIM]), ("eps", [CA_DIM])]
    assert [(o.name, list(o.dims)) for o in gen.output] == [("image", [3, 64, 64])]

    assert ens.platform == "ensemble" and ens.max_batch_size == 8 and not ens.instance_group
    assert [i.name for i in ens.input] == ["mel", "lengths", "z", "eps"]
    assert [o.name for o in ens.output] == ["image", "embedding"]
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [ENCODER_MODEL, GENERATOR_MODEL]
    assert dict(steps[0].input_map) == {"mel": "mel", "lengths": "lengths"}
    assert dict(steps[1].input_map) == {"embedding": "embedding", "z": "z", "eps": "eps"}
    assert dict(steps[1].output_map) == {"image": "image"}
    assert all(s.model_version == -1 for s in steps)
    readme = (repo / "README.md").read_text()
    assert "draw_noise" in readme and "cannot draw random numbers" in readme


def test_fp16_cpu_variant_and_overwrite(bundle_dir, tmp_path, pb2):
    repo = tmp_path / "repo"
    write_triton_repository(bundle_dir, repo)
    with pytest.raises(InputError, match="not empty"):
        write_triton_repository(bundle_dir, repo)
    write_triton_repository(bundle_dir, repo, fp16=True, device="cpu", max_batch=1, overwrite=True)
    enc = parse(pb2, repo / ENCODER_MODEL / "config.pbtxt")
    assert enc.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU
    assert list(enc.dynamic_batching.preferred_batch_size) == [1]
    assert (repo / ENCODER_MODEL / "1" / "model.onnx").read_bytes() == (bundle_dir / "encoder.fp16.onnx").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_tensorrt_repository_needs_engines(bundle_dir, tmp_path):
    with pytest.raises(BundleError, match="build-engine"):
        write_triton_repository(bundle_dir, tmp_path / "repo", backend="tensorrt")
    with pytest.raises(InputError, match="GPU only"):
        write_triton_repository(bundle_dir, tmp_path / "repo", backend="tensorrt", device="cpu")
    with pytest.raises(InputError, match="--backend"):
        write_triton_repository(bundle_dir, tmp_path / "repo", backend="tf")


def _add_engine(bundle_path: Path, gpu: trtb.GpuInfo, version: str, max_batch: int) -> dict:
    """An engines entry with stand-in plan bytes: tests the repository layout, not TensorRT."""
    bundle = load_bundle(bundle_path)
    request = trtb.EngineRequest(fp16=True, max_batch=max_batch, max_seconds=10.0)
    record = trtb.engine_record(
        bundle=bundle, request=request, plan=trtb.plan_precision(trtb.trt_major_of(version), True),
        profiles=trtb.engine_profiles(bundle, request), trt_version=version, gpu=gpu,
        build_seconds={"encoder": 1.0, "generator": 1.0}, built_at="2026-01-01T00:00:00+00:00",
    )
    trtb.write_engine_files(bundle, record, {"encoder": b"enc-" + gpu.name.encode(), "generator": b"gen"})
    return record


def test_tensorrt_repository(bundle_dir, tmp_path, pb2):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    _add_engine(bundle, trtb.GpuInfo("NVIDIA L4", "8.9"), "10.13.0.35", max_batch=4)
    repo = write_triton_repository(bundle, tmp_path / "one", backend="tensorrt", fp16=True)
    enc = parse(pb2, repo / ENCODER_MODEL / "config.pbtxt")
    assert enc.platform == "tensorrt_plan" and enc.max_batch_size == 4  # capped by the engine profile
    assert (repo / ENCODER_MODEL / "1" / "model.plan").read_bytes() == b"enc-NVIDIA L4"
    assert not enc.cc_model_filenames
    assert parse(pb2, repo / ENSEMBLE_MODEL / "config.pbtxt").max_batch_size == 4
    with pytest.raises(BundleError, match="no fp32 TensorRT engines"):
        write_triton_repository(bundle, tmp_path / "fp32", backend="tensorrt")

    _add_engine(bundle, trtb.GpuInfo("NVIDIA H100 80GB HBM3", "9.0"), "10.13.0.35", max_batch=8)
    repo = write_triton_repository(bundle, tmp_path / "two", backend="tensorrt", fp16=True)
    enc = parse(pb2, repo / ENCODER_MODEL / "config.pbtxt")
    gen = parse(pb2, repo / GENERATOR_MODEL / "config.pbtxt")
    assert dict(enc.cc_model_filenames) == {"8.9": "model_sm89.plan", "9.0": "model_sm90.plan"}
    assert dict(gen.cc_model_filenames) == dict(enc.cc_model_filenames)
    assert (repo / ENCODER_MODEL / "1" / "model_sm90.plan").read_bytes() == b"enc-NVIDIA H100 80GB HBM3"
    assert enc.max_batch_size == 4
    assert "compute capability 9.0" in (repo / "README.md").read_text()


def test_cli(bundle_dir, tmp_path, pb2):
    result = CliRunner().invoke(app, ["triton", str(bundle_dir), "--out", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    for model in (ENCODER_MODEL, GENERATOR_MODEL, ENSEMBLE_MODEL):
        parse(pb2, tmp_path / "repo" / model / "config.pbtxt")
