"""The TensorRT backend's GPU plumbing, run against recording stand-ins for pycuda and TensorRT.

fake_pycuda.FakeCuda (host memory, pycuda's context and freeing rules) and fake_tensorrt.FakeTensorRT
(engines that run the bundle's ONNX in ONNX Runtime on the bytes our code bound) check *our* logic:
buffers made once and freed in their context whichever thread calls, staging through page-locked
memory, 256-byte aligned tensor addresses, chunked and repeated generator rows, fallbacks and precision
choice. They are not a GPU; the `gpu` tests in test_runtime_tensorrt.py are.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from bundle_factory import make_bundle, tone
from fake_pycuda import FakeCuda
from fake_tensorrt import FakeTensorRT, fake_plan

from s2i_runtime import Pipeline
from s2i_runtime.backends import open_backend, tensorrt_backend
from s2i_runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from s2i_runtime.backends.tensorrt_backend import TensorRTBackend, row_runs
from s2i_runtime.bundle import load_bundle, write_manifest
from s2i_runtime.cuda import frontend_cuda
from s2i_runtime.errors import BackendUnavailable, BundleError, InputError

TRT_VERSION = "10.13.0.35"


def engine_frames(seconds: float, spec) -> int:
    """What `s2i-export build-engine --max-seconds` puts in the profile (export's max_frames_for)."""
    return min(spec.num_frames(int(round(seconds * spec.sample_rate))), spec.max_frames)


def add_fake_engines(path, *, max_batch=4, max_seconds=10.0, precisions=("fp32",)):
    """Engine records and stand-in plan files, as build-engine would write them, into the bundle at `path`."""
    bundle = load_bundle(path)
    spec, dims = bundle.frontend, bundle.dims
    frames = engine_frames(max_seconds, spec)
    batch = {"min": 1, "opt": max(1, (max_batch + 1) // 2), "max": max_batch}
    profiles = {
        "encoder": {
            "mel": {k: [b, spec.n_mels, {"min": spec.min_frames, "opt": min(400, frames), "max": frames}[k]]
                    for k, b in batch.items()},
            "lengths": {k: [b] for k, b in batch.items()},
        },
        "generator": {name: {k: [b, width] for k, b in batch.items()}
                      for name, width in (("embedding", dims.embedding_dim), ("z", dims.z_dim), ("eps", dims.ca_dim))},
    }
    records = []
    for precision in precisions:
        directory = f"engines/fake-gpu-{precision}-trt10.13.0"
        plans = {role: f"{directory}/{role}.plan" for role in ("encoder", "generator")}
        for role, relpath in plans.items():
            flat = {name: ranges for name, ranges in profiles[role].items()}
            (path / directory).mkdir(parents=True, exist_ok=True)
            (path / relpath).write_bytes(fake_plan(role, path / f"{role}.onnx", flat))
        records.append({"dir": directory, "plans": plans, "trt_version": TRT_VERSION, "gpu": "Fake GPU",
                        "compute_capability": "8.6", "precision": precision, "tf32": False, "profiles": profiles,
                        "max_batch": max_batch, "max_frames": frames, "built_at": "2026-01-01T00:00:00+00:00"})
    write_manifest(path, {**bundle.manifest, "engines": records})
    return path


@pytest.fixture
def stand_ins(monkeypatch):
    """FakeCuda + FakeTensorRT wired in; the CUDA front end's PTX is refused (numpy front end), so the
    backend's own buffers are what the memory counts show."""
    cuda = FakeCuda()
    trt = FakeTensorRT(cuda)

    def no_ptx(data):
        raise cuda.Error("no kernels on the stand-in")

    cuda.module_from_buffer = no_ptx
    monkeypatch.setattr(tensorrt_backend, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_backend, "import_pycuda", lambda: cuda)
    monkeypatch.setattr(frontend_cuda, "_import_pycuda", lambda: cuda)
    return cuda, trt


@pytest.fixture
def engine_bundle(tmp_path):
    return add_fake_engines(make_bundle(tmp_path / "b"))  # embedding 8 floats: 32-byte rows


def test_row_runs_lay_out_repeated_rows():
    counts = np.array([1, 3, 2])  # rows 0 1 1 1 2 2: runs of consecutive source rows
    assert row_runs(counts, 0, 6) == [(0, 0, 2), (1, 2, 1), (1, 3, 2), (2, 5, 1)]
    assert row_runs(counts, 2, 5) == [(1, 0, 1), (1, 1, 2)]
    assert row_runs(np.ones(8, dtype=int), 4, 8) == [(4, 0, 4)]


def test_stand_in_backend_matches_onnxruntime_with_aligned_addresses(engine_bundle, stand_ins):
    cuda, trt = stand_ins
    bundle = load_bundle(engine_bundle)
    reference = OnnxRuntimeBackend(bundle, device="cpu")
    backend = TensorRTBackend(bundle, precision="fp32")
    assert "CUDA front end not used" in " ".join(backend.notes)
    rng = np.random.default_rng(0)
    dims = bundle.dims
    mel = rng.uniform(-80, 0, (4, 40, 96)).astype(np.float32)
    lengths = np.array([96, 70, 64, 90], dtype=np.int64)
    for counts, max_rows in (([1, 3, 2, 1], 4), ([1, 1, 1, 1], 3), ([2, 2, 2, 2], 4), ([5, 1, 1, 2], 2)):
        rows = int(np.sum(counts))
        z = rng.standard_normal((rows, dims.z_dim)).astype(np.float32)
        eps = rng.standard_normal((rows, dims.ca_dim)).astype(np.float32)
        got = backend.encode_generate(mel, lengths, z, eps, np.array(counts), max_rows)
        want = reference.encode_generate(mel, lengths, z, eps, np.array(counts), max_rows)
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(backend.encode(mel, lengths), reference.encode(mel, lengths), atol=1e-6)
    embedding = rng.standard_normal((3, dims.embedding_dim)).astype(np.float32)
    z, eps = rng.standard_normal((3, dims.z_dim)), rng.standard_normal((3, dims.ca_dim))
    np.testing.assert_allclose(backend.generate(embedding, z, eps), reference.generate(embedding, z, eps), atol=1e-6)
    # Chunks starting at rows 1..3 of the encoder output sit 32..96 bytes in: they were copied, not pointed at.
    assert trt.violations == []
    assert cuda.count("dtod") > 0
    backend.close()
    reference.close()


def test_a_thousand_calls_from_threads_allocate_nothing_and_leak_nothing(engine_bundle, stand_ins):
    cuda, trt = stand_ins
    bundle = load_bundle(engine_bundle)
    backend = TensorRTBackend(bundle)
    allocations = cuda.count("alloc")
    with backend._context.active():
        free_before, _ = cuda.mem_get_info()
    rng = np.random.default_rng(1)
    dims = bundle.dims

    def call(i: int) -> tuple[int, str]:
        batch = 1 + i % 4
        mel = rng.uniform(-80, 0, (batch, 40, 64 + i % 50)).astype(np.float32)
        counts = np.array([1 + (i + j) % 3 for j in range(batch)])
        rows = int(counts.sum())
        out = backend.encode_generate(mel, np.full(batch, 64, dtype=np.int64), np.zeros((rows, dims.z_dim)),
                                      np.zeros((rows, dims.ca_dim)), counts, 4)
        return out.shape[0], threading.current_thread().name

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="caller") as pool:
        results = list(pool.map(call, range(1000)))
    assert all(rows >= 1 for rows, _ in results)
    assert len({e["thread"] for e in trt.executions}) > 1 and threading.main_thread().name not in {
        e["thread"] for e in trt.executions}
    assert cuda.count("alloc") == allocations, "a call allocated GPU or page-locked memory"
    with backend._context.active():
        free_after, _ = cuda.mem_get_info()
    assert free_after == free_before and cuda.leaks == []
    async_copies = [e for e in cuda.events if e.pinned_host is not None]
    assert async_copies and all(e.pinned_host for e in async_copies), "an async copy used pageable memory"
    assert trt.violations == []
    backend.close()
    assert cuda.live_bytes("device") == cuda.live_bytes("pinned") == cuda.live_bytes("stream") == 0
    assert cuda.leaks == [] and cuda._stack() == []


def test_dynamic_batcher_worker_leaks_nothing(engine_bundle, stand_ins):
    cuda, trt = stand_ins
    with Pipeline.load(engine_bundle, backend="tensorrt", batch_size=4, max_wait_ms=2) as pipe:
        allocations = cuda.count("alloc")
        clips = [tone(0.5 + 0.25 * i, 300.0 + 50 * i) for i in range(6)]
        with ThreadPoolExecutor(max_workers=4) as pool:
            outputs = list(pool.map(lambda i: pipe.generate_arrays([clips[i % 6]], seed=i, num_images=2), range(24)))
        assert all(o[0].shape[0] == 2 for o in outputs)
        assert cuda.count("alloc") == allocations and cuda.leaks == []
        assert any(e["thread"].startswith("s2i-batcher") for e in trt.executions)
    assert cuda.live_bytes("device") == 0 and cuda.leaks == []


def test_a_clip_of_exactly_max_seconds_runs(tmp_path, stand_ins):
    """Engines for --max-seconds 10 take 1001 frames; batches of 9.93-10 s clips must not be padded past that."""
    path = add_fake_engines(make_bundle(tmp_path / "b"), max_seconds=10.0)
    clips = [tone(10.0, 440.0), tone(9.95, 880.0, seed=1), tone(3.0, 300.0, seed=2), tone(9.93, 500.0, seed=3)]
    with Pipeline.load(path, backend="tensorrt", batch_size=4) as pipe:
        assert pipe.backend.frame_range == (64, 1001)
        got = pipe.generate_arrays(clips, seed=3, num_images=2)
        with pytest.raises(InputError, match="longer than this tensorrt engine accepts"):
            pipe.generate_arrays([tone(10.01, 440.0)])
    with Pipeline.load(path, backend="onnxruntime", device="cpu") as reference:
        want = reference.generate_arrays(clips, seed=3, num_images=2)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_auto_falls_back_when_tensorrt_cannot_start_cuda(engine_bundle, stand_ins):
    cuda, trt = stand_ins
    bundle = load_bundle(engine_bundle)
    trt.fail_cuda_init = True
    chosen = open_backend(bundle, "auto")
    assert isinstance(chosen, OnnxRuntimeBackend)
    assert "TensorRT cannot initialise CUDA" in chosen.notes[0] and "nullptr" in chosen.notes[0]
    with pytest.raises(BackendUnavailable, match="nullptr"):
        open_backend(bundle, "tensorrt")
    assert cuda.live_bytes("device") == cuda.live_bytes("stream") == 0 and cuda._stack() == []
    trt.fail_cuda_init, cuda.fail_retain = False, True
    chosen = open_backend(bundle, "auto")
    assert isinstance(chosen, OnnxRuntimeBackend) and "cannot retain the primary context" in chosen.notes[0]


def test_auto_falls_back_on_an_unforeseen_cuda_failure(engine_bundle, stand_ins, monkeypatch):
    def broken(cuda, index=0):
        raise SystemError("cuInit returned an unexpected error")

    monkeypatch.setattr(tensorrt_backend, "detect_gpu", broken)
    chosen = open_backend(load_bundle(engine_bundle), "auto")
    assert isinstance(chosen, OnnxRuntimeBackend)
    assert chosen.notes[0] == "tensorrt not used: SystemError: cuInit returned an unexpected error"


def test_a_refused_tensor_address_is_an_error_not_garbage(engine_bundle, stand_ins):
    cuda, trt = stand_ins
    trt.refuse_addresses = True
    with pytest.raises(BackendUnavailable, match="refused the device address"):
        TensorRTBackend(load_bundle(engine_bundle))
    assert cuda.live_bytes("device") == cuda.live_bytes("pinned") == 0 and cuda.leaks == []


def test_requested_precision_reaches_tensorrt(tmp_path, stand_ins):
    both = add_fake_engines(make_bundle(tmp_path / "both"), precisions=("fp32", "fp16"))
    for precision, engine in (("fp32", "fp32"), ("fp16", "fp16"), ("auto", "fp16")):
        with Pipeline.load(both, precision=precision) as pipe:
            assert (pipe.describe()["backend"], pipe.describe()["precision"]) == ("tensorrt", engine)
    only16 = add_fake_engines(make_bundle(tmp_path / "only16"), precisions=("fp16",))
    with Pipeline.load(only16, precision="fp32") as pipe:
        described = pipe.describe()
        assert described["backend"] == "onnxruntime" and described["precision"] == "fp32"
        assert "precision fp16, fp32 requested" in described["notes"][0]
    with pytest.raises(InputError, match="unknown precision"):
        Pipeline.load(only16, precision="bf16")
    # No INT8 engines: `auto` goes to ONNX Runtime (here: no INT8 generator either), tensorrt refuses.
    with pytest.raises(BundleError, match="no generator.int8.onnx"):
        Pipeline.load(only16, precision="int8")
    with pytest.raises(InputError, match="no INT8 TensorRT engines"):
        Pipeline.load(only16, backend="tensorrt", precision="int8")
