"""TensorRT backend: engine choice and profile checks on the CPU; the real run is a `gpu` test."""

import numpy as np
import pytest
from bundle_factory import make_bundle, tiny_bundle, tone_wavs  # noqa: F401 - fixtures

from s2i_runtime.backends.tensorrt_backend import GpuDevice, TensorRTBackend, engine_limits, select_engine
from s2i_runtime.bundle import load_bundle
from s2i_runtime.errors import BackendUnavailable, BundleError

H100 = GpuDevice("NVIDIA H100 80GB HBM3", "9.0")


def record(dir_name, cc="9.0", trt="10.13.0.35", precision="fp16", built_at="2026-01-01T00:00:00+00:00",
           max_batch=8, max_frames=3000, dims=(8, 4, 3), n_mels=40):
    emb, z, ca = dims
    return {
        "dir": f"engines/{dir_name}",
        "plans": {"encoder": f"engines/{dir_name}/encoder.plan", "generator": f"engines/{dir_name}/generator.plan"},
        "trt_version": trt,
        "compute_capability": cc,
        "gpu": "NVIDIA H100 80GB HBM3",
        "precision": precision,
        "built_at": built_at,
        "max_batch": max_batch,
        "max_frames": max_frames,
        "profiles": {
            "encoder": {
                "mel": {"min": [1, n_mels, 64], "opt": [4, n_mels, 400], "max": [max_batch, n_mels, max_frames]},
                "lengths": {"min": [1], "opt": [4], "max": [max_batch]},
            },
            "generator": {
                name: {"min": [1, w], "opt": [4, w], "max": [max_batch, w]}
                for name, w in (("embedding", emb), ("z", z), ("eps", ca))
            },
        },
    }


def test_select_engine_matches_compute_capability_and_release():
    engines = [
        record("a100", cc="8.0"),
        record("h100-old", trt="10.12.0.36"),
        record("h100-fp32", precision="fp32"),
        record("h100-fp16-old", built_at="2025-01-01T00:00:00+00:00"),
        record("h100-fp16"),
    ]
    chosen, reasons = select_engine(engines, H100, "10.13.0.99")  # the build number does not matter
    assert chosen["dir"] == "engines/h100-fp16"  # fp16 preferred, then the newest
    assert any("compute capability 8.0" in r for r in reasons)
    assert any("TensorRT 10.12.0.36" in r for r in reasons)
    chosen, _ = select_engine(engines, H100, "10.13.0", precision="fp32")
    assert chosen["dir"] == "engines/h100-fp32"
    chosen, reasons = select_engine(engines, GpuDevice("RTX 4090", "8.9"), "10.13.0")
    assert chosen is None and len(reasons) == 5


def test_engine_limits_checks_profiles_against_manifest(tiny_bundle):  # noqa: F811
    bundle = load_bundle(tiny_bundle)
    limits = engine_limits(record("h100", max_batch=4, max_frames=1500), bundle)
    assert (limits.max_batch, limits.min_frames, limits.max_frames) == (4, 64, 1500)
    with pytest.raises(BundleError, match="width 8"):
        engine_limits(record("h100", dims=(16, 4, 3)), bundle)
    with pytest.raises(BundleError, match=r"does not fit \(B, 40, T\)"):
        engine_limits(record("h100", n_mels=80), bundle)
    broken = record("h100")
    del broken["profiles"]["generator"]["z"]
    with pytest.raises(BundleError, match="malformed"):
        engine_limits(broken, bundle)


def test_engine_limits_read_profiles_written_by_export(tiny_bundle):  # noqa: F811
    build = pytest.importorskip("s2i_export.tensorrt_build", reason="s2i_export is not importable here")
    bundle = load_bundle(tiny_bundle)
    request = build.EngineRequest(max_batch=6, max_seconds=10.0)
    profiles = build.engine_profiles(bundle, request)
    entry = {"dir": "engines/x", "profiles": {c: {n: r.to_dict() for n, r in p.items()} for c, p in profiles.items()}}
    limits = engine_limits(entry, bundle)
    assert limits.max_batch == 6
    assert limits.max_frames == 1001  # a centred clip of exactly 10 s: 1 + 160000 // 160 frames


def test_tensorrt_backend_without_tensorrt_is_one_clear_error(tmp_path):
    bundle = load_bundle(make_bundle(tmp_path / "b", extra={"engines": [record("h100")]}))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="tensorrt is not importable"):
            TensorRTBackend(bundle)
    else:
        pytest.skip("tensorrt is installed here; the gpu test covers it")


@pytest.mark.gpu
def test_tensorrt_matches_onnxruntime_on_the_gpu(tmp_path, tone_wavs):  # noqa: F811
    """Needs tensorrt, pycuda and a CUDA GPU: fp32 engines (TF32 off) for a tiny bundle against ONNX Runtime."""
    pytest.importorskip("tensorrt", reason="tensorrt is not installed")
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
    build = pytest.importorskip("s2i_export.tensorrt_build", reason="s2i_export is not importable")
    from s2i_runtime import Pipeline

    path = make_bundle(tmp_path / "b")
    record = build.build_engines(path, build.EngineRequest(max_batch=4, max_seconds=10.0, workspace_gb=1.0))
    assert record["precision"] == "fp32" and record["tf32"] is False and "TF32" not in record["builder_flags"]
    inputs = [str(p) for p in tone_wavs]
    with Pipeline.load(path, backend="onnxruntime", device="cpu") as reference:
        want = reference.generate_arrays(inputs, seed=1, num_images=3)
    with Pipeline.load(path, backend="tensorrt", batch_size=4, precision="fp32") as trt_pipe:
        assert trt_pipe.describe()["backend"] == "tensorrt"
        got = trt_pipe.generate_arrays(inputs, seed=1, num_images=3)  # 15 rows: generator chunks of 4
        strip = trt_pipe.interpolate(inputs[0], inputs[1], steps=3)
    for a, b in zip(got, want, strict=True):  # the CUDA front end differs from numpy by ~1e-5 dB at most
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert len(strip) == 3
    with Pipeline.load(path, backend="auto") as auto:
        assert auto.describe()["backend"] == "tensorrt"


@pytest.mark.gpu
def test_gpu_checks_on_a_tiny_bundle(tmp_path):
    """benchmarks/gpu_checks.py on the GPU: fp32 parity at 1e-4 with TF32 off, a clip of exactly
    --max-seconds, and 1,000 calls from 8 threads with free device memory unchanged."""
    pytest.importorskip("tensorrt", reason="tensorrt is not installed")
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
    pytest.importorskip("s2i_export.tensorrt_build", reason="s2i_export is not importable")
    from benchmarks.gpu_checks import run_checks

    result = run_checks(make_bundle(tmp_path / "b"), tmp_path / "work", max_batch=4, max_seconds=10.0,
                        calls=1000, threads=8)
    assert result["engine"]["tf32"] is False and result["engine"]["max_frames"] == 1001
    assert result["parity"]["ok"], result["parity"]
    assert result["exact_clip"]["ok"] and max(result["exact_clip"]["frames"]) == 1001, result["exact_clip"]
    assert result["memory"]["ok"], result["memory"]
