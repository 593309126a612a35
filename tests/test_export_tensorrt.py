"""`s2i-export build-engine`: everything but the TensorRT build itself runs here; the build is `gpu`-marked."""

from __future__ import annotations

import json

import pytest
from export_fixtures import CA_DIM, EMBEDDING_DIM, Z_DIM, make_tiny_run

from s2i_export import tensorrt_build as trtb
from s2i_export.cli import app
from s2i_export.onnx_export import export_bundle
from s2i_runtime.bundle import ENCODER_FILE, ENCODER_FP16_FILE, GENERATOR_FILE, GENERATOR_FP16_FILE, load_bundle
from s2i_runtime.errors import BackendUnavailable, BundleError, InputError
from s2i_runtime.frontend import FrontendSpec


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    run = make_tiny_run(tmp_path_factory.mktemp("run") / "run", branches=1)
    return export_bundle(run, tmp_path_factory.mktemp("export") / "bundle")


def test_plan_precision_switches_on_the_major_version():
    fp32_files = {"encoder": ENCODER_FILE, "generator": GENERATOR_FILE}
    assert trtb.plan_precision(10, False) == trtb.PrecisionPlan("fp32", fp32_files, ())
    assert trtb.plan_precision(11, False) == trtb.PrecisionPlan("fp32", fp32_files, ())
    # FP16 is strongly typed on every version: the FP16 ONNX carries the precision, its float32 islands too
    # (TensorRT 10 needs the creation flag; 11 ignores it and has no BuilderFlag.FP16).
    fp16_files = {"encoder": ENCODER_FP16_FILE, "generator": GENERATOR_FP16_FILE}
    for major in (10, 11, 12):
        assert trtb.plan_precision(major, True) == trtb.PrecisionPlan("fp16", fp16_files, (), ("STRONGLY_TYPED",))
    assert trtb.plan_precision(10, False).network_flags == ()
    with pytest.raises(BackendUnavailable, match="too old"):
        trtb.plan_precision(8, True)


def test_tf32_is_cleared_unless_asked_for():
    for fp16 in (False, True):
        plan = trtb.plan_precision(10, fp16)
        assert plan.cleared_flags == ("TF32",) and plan.builder_flags == ()
        plan = trtb.plan_precision(11, fp16, tf32=True)
        assert plan.cleared_flags == () and plan.builder_flags == ("TF32",)


def test_max_frames_for_counts_the_frames_of_a_clip_of_exactly_that_length():
    spec = FrontendSpec()
    assert trtb.max_frames_for(10.0, spec) == 1001  # 1 + 160000 // 160: centred framing
    assert trtb.max_frames_for(2.0, spec) == 201
    assert trtb.max_frames_for(30.0, spec) == 3000  # 3001, but no input may pass the model's max_frames
    assert trtb.max_frames_for(10.0, FrontendSpec(center=False)) == 998  # 1 + (160000 - 400) // 160
    for seconds in (0.7, 2.0, 9.99, 10.0, 17.3):
        assert trtb.max_frames_for(seconds, spec) == spec.num_frames(int(round(seconds * spec.sample_rate)))


def test_profiles():
    spec = FrontendSpec()
    enc = trtb.encoder_profile(8, 30.0, spec)
    assert enc["mel"] == trtb.ShapeRange((1, 40, 64), (4, 40, 400), (8, 40, 3000))
    assert enc["lengths"] == trtb.ShapeRange((1,), (4,), (8,))
    short = trtb.encoder_profile(1, 2.0, spec)  # opt frames never exceed max
    assert short["mel"] == trtb.ShapeRange((1, 40, 64), (1, 40, 201), (1, 40, 201))
    assert trtb.batch_range(3) == (1, 2, 3)
    with pytest.raises(InputError, match="max-batch"):
        trtb.batch_range(0)
    with pytest.raises(InputError, match="fewer than"):
        trtb.encoder_profile(4, 0.5, spec)
    with pytest.raises(InputError, match="positive"):
        trtb.max_frames_for(0, spec)
    from s2i_runtime.bundle import ModelDims

    gen = trtb.generator_profile(16, ModelDims(32, 16, 8, (64,)))
    assert gen["embedding"].to_dict() == {"min": [1, 32], "opt": [8, 32], "max": [16, 32]}
    assert gen["z"].max == (16, 16) and gen["eps"].opt == (8, 8)


def test_names_and_paths():
    assert trtb.slugify("NVIDIA GeForce RTX 4090") == "nvidia-geforce-rtx-4090"
    assert trtb.slugify("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert trtb.slugify("  /// ") == "unknown-gpu"
    assert trtb.short_version("10.13.0.35") == "10.13.0"
    assert trtb.engine_dir("NVIDIA A10G", "11.4.0.7") == "engines/nvidia-a10g-trt11.4.0"
    assert trtb.trt_major_of("11.4.0.7") == 11


def test_parse_nvidia_smi():
    text = "NVIDIA A100-SXM4-80GB, 8.0\nNVIDIA GeForce RTX 3090, 8.6\n"
    assert trtb.parse_nvidia_smi(text) == trtb.GpuInfo("NVIDIA A100-SXM4-80GB", "8.0")
    assert trtb.parse_nvidia_smi(text, 1) == trtb.GpuInfo("NVIDIA GeForce RTX 3090", "8.6")
    assert trtb.parse_nvidia_smi(text, 2) is None
    assert trtb.parse_nvidia_smi("No devices were found") is None


def test_missing_tensorrt_and_gpu_is_one_clear_error():
    with pytest.raises(BackendUnavailable) as info:
        trtb.check_prerequisites(lambda: None, lambda: None)
    message = str(info.value)
    assert "TensorRT is not installed" in message and "no CUDA GPU" in message
    assert "s2i[gpu]" in message and "NVIDIA's package index" in message
    with pytest.raises(BackendUnavailable, match="no CUDA GPU") as info:
        trtb.check_prerequisites(lambda: object(), lambda: None)
    assert "not installed" not in str(info.value)


def test_cli_error_path_exits_2_with_one_line(bundle_dir, monkeypatch, capsys):
    monkeypatch.setattr(trtb, "import_tensorrt", lambda: None)
    monkeypatch.setattr(trtb, "detect_gpu", lambda: None)
    from s2i_runtime.cliutil import run_app

    with pytest.raises(SystemExit) as info:
        run_app(app, "s2i-export", ["build-engine", str(bundle_dir), "--fp16"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot build TensorRT engines")
    with pytest.raises(SystemExit) as info:  # bad arguments are reported before TensorRT is looked for
        run_app(app, "s2i-export", ["build-engine", str(bundle_dir), "--max-batch", "0"])
    assert info.value.code == 2
    assert "--max-batch must be at least 1" in capsys.readouterr().err


def test_fp16_engines_need_the_fp16_onnx(bundle_dir):
    bundle = load_bundle(bundle_dir)
    for major in (10, 11):
        with pytest.raises(BundleError, match="run `s2i-export fp16 BUNDLE` first"):
            trtb.require_onnx_files(bundle, trtb.plan_precision(major, True))
    paths = trtb.require_onnx_files(bundle, trtb.plan_precision(10, False))
    assert paths["encoder"] == bundle_dir / ENCODER_FILE


def _record(bundle, gpu=trtb.GpuInfo("NVIDIA L4", "8.9"), version="10.13.0.35", fp16=True):
    request = trtb.EngineRequest(fp16=fp16, max_batch=4, max_seconds=20.0)
    return trtb.engine_record(
        bundle=bundle, request=request, plan=trtb.plan_precision(trtb.trt_major_of(version), fp16),
        profiles=trtb.engine_profiles(bundle, request), trt_version=version, gpu=gpu,
        build_seconds={"encoder": 1.23456, "generator": 2.0}, built_at="2026-01-01T00:00:00+00:00",
    )


def test_engine_record_and_manifest_update(bundle_dir, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    bundle = load_bundle(copy)
    record = _record(bundle)
    assert record["dir"] == "engines/nvidia-l4-trt10.13.0"
    assert record["plans"] == {"encoder": "engines/nvidia-l4-trt10.13.0/encoder.plan",
                               "generator": "engines/nvidia-l4-trt10.13.0/generator.plan"}
    assert record["precision"] == "fp16" and record["builder_flags"] == [] and record["tf32"] is False
    assert record["network_flags"] == ["STRONGLY_TYPED"]
    assert record["onnx_sources"]["encoder"] == ENCODER_FP16_FILE
    assert record["compute_capability"] == "8.9" and record["trt_major"] == 10
    assert record["profiles"]["encoder"]["mel"] == {"min": [1, 40, 64], "opt": [2, 40, 400], "max": [4, 40, 2001]}
    assert record["profiles"]["generator"]["embedding"]["max"] == [4, EMBEDDING_DIM]
    assert record["profiles"]["generator"]["z"]["min"] == [1, Z_DIM]
    assert record["profiles"]["generator"]["eps"]["opt"] == [2, CA_DIM]
    assert record["max_frames"] == 2001 and record["build_seconds"]["encoder"] == 1.235

    # plans are opaque bytes to the writer; these stand in for real ones only to test the file layout
    trtb.write_engine_files(bundle, record, {"encoder": b"plan-e", "generator": b"plan-g"})
    reloaded = load_bundle(copy)
    assert reloaded.engines == [record]
    assert json.loads((copy / record["dir"] / "engines.json").read_text()) == record
    assert {record["plans"]["encoder"], record["plans"]["generator"]} <= set(reloaded.manifest["files"])
    # a rebuild for the same GPU and version replaces its entry; another GPU adds one
    trtb.write_engine_files(reloaded, record, {"encoder": b"plan-e2", "generator": b"plan-g2"})
    other = _record(reloaded, gpu=trtb.GpuInfo("NVIDIA H100 80GB HBM3", "9.0"), version="11.4.0.1")
    assert other["onnx_sources"]["encoder"] == ENCODER_FP16_FILE and other["network_flags"] == ["STRONGLY_TYPED"]
    trtb.write_engine_files(load_bundle(copy), other, {"encoder": b"e", "generator": b"g"})
    assert [e["dir"] for e in load_bundle(copy).engines] == [record["dir"], other["dir"]]


# -- the builder's calls, on a recording stand-in for TensorRT (tests/fake_tensorrt.py) ---------------
# It mirrors TensorRT's documented defaults and return values; it checks our calls, not TensorRT.

FAKE_GPU = trtb.GpuInfo("Fake GPU", "8.6")


@pytest.fixture
def bundle_copy(bundle_dir, tmp_path):
    import shutil

    return shutil.copytree(bundle_dir, tmp_path / "bundle")


def _fake_build(bundle, trt, **request):
    return trtb.build_engines(bundle, trtb.EngineRequest(**{"max_batch": 4, "max_seconds": 10.0, **request}),
                              importer=lambda: trt, gpu_probe=lambda: FAKE_GPU)


def test_fp32_build_clears_tf32_and_records_the_flags_it_really_had(bundle_copy):
    from fake_tensorrt import FakeTensorRT

    trt = FakeTensorRT()
    record = _fake_build(bundle_copy, trt)
    assert record["builder_flags"] == [] and record["tf32"] is False and record["precision"] == "fp32"
    for config in trt.configs:  # one per engine; TF32 was on by default and is cleared before the build
        assert ("clear_flag", "TF32") in config.calls and not config.flags
    plan = json.loads((bundle_copy / record["plans"]["encoder"]).read_bytes())
    assert plan["builder_flags"] == [] and plan["profile"]["mel"]["max"] == [4, 40, 1001]

    record = _fake_build(bundle_copy, trt, tf32=True)
    assert record["builder_flags"] == ["TF32"] and record["tf32"] is True
    assert load_bundle(bundle_copy).engines == [record]


def test_cli_passes_tf32(bundle_dir, monkeypatch):
    from typer.testing import CliRunner

    seen = {}

    def fake_build(bundle, request, progress):
        seen["request"] = request
        return {"precision": "fp32", "gpu": "Fake GPU", "trt_version": "10.13.0", "dir": "engines/x",
                "build_seconds": {"encoder": 1.0}}

    monkeypatch.setattr(trtb, "build_engines", fake_build)
    result = CliRunner().invoke(app, ["build-engine", str(bundle_dir), "--tf32", "--max-seconds", "10"])
    assert result.exit_code == 0, result.output
    assert seen["request"].tf32 is True and seen["request"].max_seconds == 10.0


def test_a_timing_cache_from_another_gpu_is_replaced_not_fatal(bundle_copy, tmp_path):
    from fake_tensorrt import FakeTensorRT

    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"fake-timing-cache|Some Other GPU|7")
    messages = []
    record = trtb.build_engines(bundle_copy, trtb.EngineRequest(max_batch=2, max_seconds=5.0, timing_cache=cache),
                                importer=lambda: FakeTensorRT(), gpu_probe=lambda: FAKE_GPU, progress=messages.append)
    assert record["timing_cache_status"] == "replaced"
    assert any("does not fit this GPU" in m for m in messages)
    assert cache.read_bytes() == b"fake-timing-cache|Fake GPU|2"  # one entry per engine built, this GPU's
    record = trtb.build_engines(bundle_copy, trtb.EngineRequest(max_batch=2, max_seconds=5.0, timing_cache=cache),
                                importer=lambda: FakeTensorRT(), gpu_probe=lambda: FAKE_GPU)
    assert record["timing_cache_status"] == "reused" and cache.read_bytes() == b"fake-timing-cache|Fake GPU|4"


def test_builder_failing_cuda_init_is_backend_unavailable(bundle_copy):
    from fake_tensorrt import FakeTensorRT

    with pytest.raises(BackendUnavailable, match="cannot initialise CUDA"):
        _fake_build(bundle_copy, FakeTensorRT(fail_cuda_init=True))


def test_stand_in_engines_run_a_clip_of_exactly_max_seconds(bundle_copy, monkeypatch):
    """Export's profile and the runtime's batching agree: clips of 9.93-10 s in one batch fit --max-seconds 10."""
    import numpy as np
    from bundle_factory import tone
    from fake_pycuda import FakeCuda
    from fake_tensorrt import FakeTensorRT

    from s2i_runtime import Pipeline
    from s2i_runtime.backends import tensorrt_backend
    from s2i_runtime.cuda import frontend_cuda

    cuda = FakeCuda(name=FAKE_GPU.name)
    trt = FakeTensorRT(cuda)
    _fake_build(bundle_copy, trt)
    cuda.module_from_buffer = lambda data: (_ for _ in ()).throw(cuda.Error("no kernels on the stand-in"))
    monkeypatch.setattr(tensorrt_backend, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_backend, "import_pycuda", lambda: cuda)
    monkeypatch.setattr(frontend_cuda, "_import_pycuda", lambda: cuda)
    clips = [tone(10.0, 440.0), tone(9.96, 700.0, seed=1), tone(9.93, 300.0, seed=2), tone(2.0, 900.0, seed=3)]
    with Pipeline.load(bundle_copy, backend="tensorrt", batch_size=4, precision="fp32") as pipe:
        assert pipe.backend.frame_range[1] == 1001
        got = pipe.generate_arrays(clips, seed=5, num_images=2)
    with Pipeline.load(bundle_copy, backend="onnxruntime", device="cpu") as reference:
        want = reference.generate_arrays(clips, seed=5, num_images=2)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert trt.violations == [] and cuda.leaks == [] and cuda.live_bytes() == 0


@pytest.mark.gpu
def test_build_real_engines_on_the_gpu(bundle_dir, tmp_path):
    """Builds with the real TensorRT on a CUDA GPU, then runs both engines against ONNX Runtime."""
    import shutil

    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (NVIDIA's package index)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here: needed for device buffers in this test")
    import numpy as np

    from s2i_export.fp16 import export_fp16
    from s2i_export.probes import noise_for, ort_session, synthetic_features

    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    export_fp16(copy)
    cache = tmp_path / "timing.cache"
    for fp16 in (False, True):
        record = trtb.build_engines(copy, trtb.EngineRequest(fp16=fp16, max_batch=4, max_seconds=10.0,
                                                             workspace_gb=1.0, timing_cache=cache))
        assert cache.stat().st_size > 0
        bundle = load_bundle(copy)
        assert record in bundle.engines
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        feats = synthetic_features(3, 500, bundle.frontend)
        z, eps = noise_for(3, Z_DIM, CA_DIM)
        emb_ref = ort_session(copy / ENCODER_FILE).run(None, {"mel": feats.mel, "lengths": feats.lengths})[0]
        img_ref = ort_session(copy / GENERATOR_FILE).run(None, {"embedding": emb_ref, "z": z, "eps": eps})[0]
        outputs = {}
        for component, feeds in (("encoder", {"mel": feats.mel, "lengths": feats.lengths}),
                                 ("generator", {"embedding": emb_ref, "z": z, "eps": eps})):
            engine = runtime.deserialize_cuda_engine((copy / record["plans"][component]).read_bytes())
            context = engine.create_execution_context()
            tensors = {name: torch.from_numpy(value).cuda() for name, value in feeds.items()}
            for name, tensor in tensors.items():
                context.set_input_shape(name, tuple(tensor.shape))
                context.set_tensor_address(name, tensor.data_ptr())
            out_name = "embedding" if component == "encoder" else "image"
            out = torch.empty(tuple(context.get_tensor_shape(out_name)), dtype=torch.float32, device="cuda")
            context.set_tensor_address(out_name, out.data_ptr())
            stream = torch.cuda.current_stream()
            assert context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            outputs[component] = out.cpu().numpy()
        tol = 5e-2 if fp16 else 1e-4  # fp32 is float32 throughout: TF32 is cleared (record["tf32"])
        assert record["tf32"] is False and "TF32" not in record["builder_flags"]
        assert np.isfinite(outputs["image"]).all()
        assert np.abs(outputs["embedding"] - emb_ref).max() < tol
        assert np.abs(outputs["image"] - img_ref).mean() < tol
        if not fp16:
            assert np.abs(outputs["image"] - img_ref).max() < tol
