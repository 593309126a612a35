"""The CUDA log-Mel front end (s2i_runtime/cuda): kernels vs the numpy reference, PTX, loader.

Without a GPU the shipped logmel.cu is compiled with g++ (cpu_emulation.cpp) and its kernels run on the
CPU through the same launch sequence the GPU loader uses. The real GPU run is the `gpu`-marked test.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from s2i_runtime.cuda import build_ptx
from s2i_runtime.cuda.plan import (
    KERNEL_SIGNATURES,
    OLDEST_DRIVER_CUDA,
    PTX_FILE,
    PTX_ISA,
    PTX_TARGET,
    FrontendTables,
    ptx_bytes,
    sample_lengths,
)
from s2i_runtime.errors import BackendUnavailable, InputError
from s2i_runtime.frontend import FrontendSpec, logmel_batch, mel_filterbank

SR = 16000
TOLERANCE_DB = 1e-3
HAS_PYCUDA = importlib.util.find_spec("pycuda") is not None


def _time(n: int) -> np.ndarray:
    return np.arange(n) / SR


def tone(n: int, freq: float, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * _time(n))).astype(np.float32)


def chirp(n: int, f0: float = 100.0, f1: float = 7000.0, amplitude: float = 0.3) -> np.ndarray:
    t = _time(n)
    rate = (f1 - f0) / max(t[-1], 1e-9)
    return (amplitude * np.sin(2 * np.pi * (f0 * t + 0.5 * rate * t * t))).astype(np.float32)


def speech_like(n: int, seed: int) -> np.ndarray:
    """Voiced syllables: harmonics of a gliding pitch shaped by three formants, pauses of faint noise."""
    rng = np.random.default_rng(seed)
    t = _time(n)
    f0 = 110 + 40 * np.sin(2 * np.pi * 1.3 * t) + 20 * rng.random()
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formants = [(700, 130), (1220, 70), (2600, 160)]
    voiced = np.zeros(n)
    for h in range(1, 36):
        freq = h * f0
        gain = sum(np.exp(-0.5 * ((freq - fc) / bw) ** 2) for fc, bw in formants) + 0.02
        voiced += np.where(freq < SR / 2, gain / h, 0.0) * np.sin(h * phase)
    syllables = np.clip(np.sin(2 * np.pi * 3.1 * t + rng.random()), 0, None) ** 1.5
    signal = 0.2 * voiced * syllables + 1e-4 * rng.standard_normal(n)
    return signal.astype(np.float32)


def _test_clips() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        (0.1 * rng.standard_normal(9000)).astype(np.float32),  # white noise
        tone(12000, 440.0),  # a pure tone: quiet bands 70-80 dB under a loud peak
        tone(5000, 3000.0, 0.9) + np.float32(0.3),  # DC offset
        chirp(16000),
        speech_like(40000, seed=1),  # 2.5 s, many reduction slices
        (30.0 * speech_like(7000, seed=2)).astype(np.float32),  # loud (no clipping in float)
        (1e-4 * rng.standard_normal(3000)).astype(np.float32),  # very quiet
        (0.5 * rng.standard_normal(150)).astype(np.float32),  # shorter than the reflect padding
        np.array([0.25], dtype=np.float32),  # a single sample
        tone(160 * 64, 250.0),  # exactly 65 frames
    ]


def _pad(clips: list[np.ndarray], fill: float) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([c.size for c in clips], dtype=np.int64)
    waves = np.full((len(clips), int(lengths.max())), fill, dtype=np.float32)
    for row, clip in zip(waves, clips, strict=True):
        row[: clip.size] = clip
    return waves, lengths


def _assert_matches_reference(features, frame_lengths, clips, spec=FrontendSpec()) -> None:
    reference, ref_lengths = logmel_batch(clips, spec)
    np.testing.assert_array_equal(frame_lengths, ref_lengths)
    assert frame_lengths.dtype == np.int64
    assert features.shape == reference.shape and features.dtype == np.float32
    error = np.abs(features.astype(np.float64) - reference)
    worst = np.unravel_index(int(error.argmax()), error.shape)
    assert error.max() <= TOLERANCE_DB, f"{error.max():.2e} dB at {worst}: {features[worst]} vs {reference[worst]}"


@pytest.fixture(scope="module")
def emulation_library(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ not found: cannot compile the CUDA kernels for the CPU")
    from s2i_runtime.cuda.cpu_emulation import compile_library

    return compile_library(tmp_path_factory.mktemp("cuda_emulation"))


@pytest.fixture(scope="module")
def emulation(emulation_library):
    from s2i_runtime.cuda.cpu_emulation import CpuEmulation

    return CpuEmulation(emulation_library)


def test_emulated_kernels_match_numpy_frontend(emulation):
    clips = _test_clips()
    # NaN in the padding proves no kernel ever reads past an utterance's length.
    waves, lengths = _pad(clips, fill=np.nan)
    features, frame_lengths = emulation.logmel_padded(waves, lengths)
    _assert_matches_reference(features, frame_lengths, clips)
    for row, valid in zip(features, frame_lengths, strict=True):
        assert row[:, :valid].max() == 0.0  # dB relative to the utterance's own max
        assert np.all(row[:, valid:] == -80.0)  # padding is silence


def test_emulated_kernels_pad_short_batches_to_min_frames(emulation):
    clips = [tone(800, 1000.0), speech_like(3200, seed=3)]
    features, frame_lengths = emulation.logmel_padded(*_pad(clips, fill=0.0))
    assert features.shape == (2, 40, 64)
    _assert_matches_reference(features, frame_lengths, clips)


@pytest.mark.parametrize(
    "spec",
    [
        FrontendSpec(center=False, remove_dc=False, preemphasis=0.0),
        FrontendSpec(win_length=320, hop_length=100, n_mels=64, fmin=0.0, min_frames=8),
        FrontendSpec(n_fft=512, win_length=400, sample_rate=22050, fmax=11025.0, top_db=60.0),
    ],
    ids=["no-center-no-dc-no-preemphasis", "short-window-64-mels", "nfft512-22k-topdb60"],
)
def test_emulated_kernels_follow_other_specs(emulation_library, spec):
    from s2i_runtime.cuda.cpu_emulation import CpuEmulation

    emulation = CpuEmulation(emulation_library, spec)
    clips = [speech_like(6000, seed=4) + np.float32(0.05), tone(300, 700.0), chirp(4000)]
    features, frame_lengths = emulation.logmel_padded(*_pad(clips, fill=np.nan))
    _assert_matches_reference(features, frame_lengths, clips, spec)


def test_emulation_dispatches_exactly_the_known_kernels(emulation):
    assert emulation._lib.s2i_cpu_launch(b"s2i_no_such_kernel", 1, 1, None) == -1
    # Every kernel the plan launches exists in the emulation (a zero-thread grid runs nothing).
    for name in KERNEL_SIGNATURES:
        assert emulation._lib.s2i_cpu_launch(name.encode(), 0, 0, None) == 0, name


def test_lengths_are_validated():
    assert sample_lengths(np.array([3, 5], dtype=np.int32), 2, 5).dtype == np.int64
    for bad in ([0, 5], [3, 6], [3], [1.5, 2.0]):
        with pytest.raises(InputError):
            sample_lengths(np.array(bad), 2, 5)


def test_tables_come_from_the_numpy_frontend():
    spec = FrontendSpec()
    tables = FrontendTables.from_spec(spec)
    weights = mel_filterbank(spec)
    np.testing.assert_array_equal(tables.mel_weights, weights.astype(np.float32))
    for m in range(spec.n_mels):
        nonzero = np.flatnonzero(weights[m])
        assert (tables.band_start[m], tables.band_end[m]) == (nonzero[0], nonzero[-1] + 1)
    k = np.arange(spec.n_fft)
    expected = np.cos(2 * np.pi * 7 * k / spec.n_fft)
    np.testing.assert_allclose(tables.cos_table[(k * 7) % spec.n_fft], expected, atol=1e-12)


_PTX_TYPE_OF = {"P": ".u64", "i": ".u32", "f": ".f32", "d": ".f64"}


def test_shipped_ptx_declares_turing_and_the_cuda_12_0_isa():
    """sm_75 (T4 and later) and PTX ISA 8.0, the newest a CUDA 12.0 driver JIT-compiles (docs/gpu.md)."""
    assert build_ptx.ptx_header(ptx_bytes()) == ("8.0", "sm_75")
    assert (PTX_ISA, PTX_TARGET) == ("8.0", "sm_75")
    assert "-arch=compute_75" in build_ptx.NVCC_FLAGS


def test_readme_states_the_ptx_target_and_isa():
    readme = (build_ptx.CUDA_DIR.parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"`{PTX_TARGET}` declaring PTX ISA {PTX_ISA}" in readme and f"CUDA {OLDEST_DRIVER_CUDA}" in readme


def test_declare_isa_rewrites_only_the_version_directive():
    ptx = b"//\n// .version 9.0 in a comment\n//\n\n.version 9.0\n.target sm_75\n.address_size 64\n"
    lowered = build_ptx.declare_isa(ptx, "8.0")
    assert build_ptx.ptx_header(lowered) == ("8.0", "sm_75")
    assert lowered.replace(b".version 8.0\n", b".version 9.0\n") == ptx
    with pytest.raises(ValueError, match="not PTX"):
        build_ptx.declare_isa(b"// nothing here\n")


def test_ptxas_refuses_an_instruction_newer_than_the_declared_isa():
    """Why lowering .version is safe: ptxas checks every instruction against the declared ISA."""
    if shutil.which("ptxas") is None:
        pytest.skip("ptxas not found")
    body = (b".target sm_80\n.address_size 64\n.visible .entry k(.param .u64 p)\n{\n"
            b" .reg .b32 %r<3>;\n .reg .b64 %rd<2>;\n ld.param.u64 %rd1, [p];\n mov.u32 %r1, 3;\n"
            b" redux.sync.add.u32 %r2, %r1, 0xffffffff;\n st.global.u32 [%rd1], %r2;\n ret;\n}\n")
    build_ptx.assemble(b".version 7.0\n" + body, "sm_80")  # redux arrived in PTX ISA 7.0
    with pytest.raises(RuntimeError, match="requires PTX ISA"):
        build_ptx.assemble(b".version 6.5\n" + body, "sm_80")


def test_ptx_entry_points_match_the_launch_signatures():
    ptx = ptx_bytes().rstrip(b"\0").decode()
    entries = dict(re.findall(r"\.visible \.entry (\w+)\(([^)]*)\)", ptx))
    assert set(entries) == set(KERNEL_SIGNATURES)
    for name, signature in KERNEL_SIGNATURES.items():
        param_types = re.findall(r"\.param (\.\w+) ", entries[name])
        assert param_types == [_PTX_TYPE_OF[c] for c in signature], name


def test_source_header_records_the_nvcc_command():
    source = (build_ptx.CUDA_DIR / "logmel.cu").read_text()
    assert " ".join(build_ptx.nvcc_command(PTX_FILE)) in source


def test_shipped_ptx_equals_a_fresh_nvcc_build():
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found: cannot rebuild the PTX to compare")
    shipped = (build_ptx.CUDA_DIR / PTX_FILE).read_bytes()
    fresh = build_ptx.compile_ptx()
    if build_ptx.nvcc_release(fresh) != build_ptx.nvcc_release(shipped):
        pytest.skip(
            f"shipped PTX is from nvcc {build_ptx.nvcc_release(shipped)}, this nvcc is "
            f"{build_ptx.nvcc_release(fresh)}: their output differs by design"
        )
    assert build_ptx.without_header_comments(fresh) == build_ptx.without_header_comments(shipped), (
        "logmel.ptx is out of date: run python -m s2i_runtime.cuda.build_ptx"
    )


@pytest.mark.parametrize("arch", ["sm_75", "sm_80", "sm_90"])
def test_shipped_ptx_assembles_for_real_gpus(arch):
    """What the driver's JIT does at load time, done by ptxas: the PTX is valid, spill- and barrier-free."""
    if shutil.which("ptxas") is None:
        pytest.skip("ptxas not found: cannot assemble the PTX here")
    report = build_ptx.assemble((build_ptx.CUDA_DIR / PTX_FILE).read_bytes(), arch)
    assert report.count("used 0 barriers") == len(KERNEL_SIGNATURES)
    assert "bytes spill" not in report.replace("0 bytes spill", "")


def test_shipped_ptx_assembles_with_a_cuda_12_0_ptxas():
    """The assembler of the oldest driver release we claim (set S2I_PTXAS_CUDA12 to its ptxas, e.g. from the
    nvidia-cuda-nvcc-cu12==12.0.* wheel): it must take the shipped file as a CUDA 12.0 driver's JIT would."""
    ptxas = os.environ.get("S2I_PTXAS_CUDA12")
    if not ptxas:
        pytest.skip("S2I_PTXAS_CUDA12 is not set (path of a CUDA 12.0 ptxas)")
    version = subprocess.run([ptxas, "--version"], capture_output=True, text=True, check=True).stdout
    assert f"release {OLDEST_DRIVER_CUDA}," in version, version
    build_ptx.assemble((build_ptx.CUDA_DIR / PTX_FILE).read_bytes(), PTX_TARGET, ptxas)


@pytest.mark.skipif(HAS_PYCUDA, reason="pycuda is installed here; this checks the message without it")
def test_loader_without_pycuda_raises_backend_unavailable():
    from s2i_runtime.cuda.frontend_cuda import CudaLogMel

    with pytest.raises(BackendUnavailable, match="pycuda"):
        CudaLogMel()


def test_pad_batch_rejects_empty_input():
    from s2i_runtime.cuda.frontend_cuda import pad_batch

    with pytest.raises(InputError):
        pad_batch([])
    with pytest.raises(InputError):
        pad_batch([np.zeros(0, dtype=np.float32)])
    waves, lengths = pad_batch([np.ones(3), np.ones(5)])
    assert waves.shape == (2, 5) and waves.dtype == np.float32 and lengths.tolist() == [3, 5]


# -- the loader's plumbing, on a recording stand-in for pycuda (tests/fake_pycuda.py) -----------------
# The stand-in runs the g++-built kernels on host memory and enforces pycuda's context and freeing rules;
# these tests check our code against those rules, not real pycuda or a GPU (that is the gpu test below).


@pytest.fixture
def fake_cuda(emulation, monkeypatch):
    from fake_pycuda import FakeCuda

    from s2i_runtime.cuda import frontend_cuda

    fake = FakeCuda(emulation=emulation)
    monkeypatch.setattr(frontend_cuda, "_import_pycuda", lambda: fake)
    return fake


def test_loader_plumbing_on_a_recording_stand_in_for_pycuda(fake_cuda):
    from s2i_runtime.cuda.frontend_cuda import CudaLogMel

    frontend = CudaLogMel()
    clips = [speech_like(7000, seed=5), tone(2000, 880.0), chirp(300)]
    features, frame_lengths = frontend.logmel_batch(clips)
    _assert_matches_reference(features, frame_lengths, clips)
    # Device-pointer input, as the TensorRT path passes it.
    waves, lengths = _pad(clips, fill=np.nan)
    with frontend.active():
        device_waves = fake_cuda.to_device(waves)
    before = fake_cuda.live_bytes()
    with frontend.logmel_device(int(device_waves), lengths, n_max=waves.shape[1]) as result:
        np.testing.assert_array_equal(frontend.to_host(result), features)
        assert result.shape == features.shape
        assert fake_cuda._device_view(result.frame_lengths_ptr, 8 * len(clips)).view(np.int64).tolist() == \
            frame_lengths.tolist()
    assert fake_cuda.live_bytes() == before  # released: outputs and scratch
    with frontend.active():
        device_waves.free()
    frontend.close()
    assert fake_cuda.live_bytes("device") == fake_cuda.live_bytes("pinned") == 0
    assert fake_cuda.leaks == [] and fake_cuda._stack() == []  # every push popped


def test_stand_in_records_what_pycuda_would_leak(fake_cuda):
    """The stand-in itself: freeing outside the allocating context, in another thread, is a leak."""
    import threading

    context = fake_cuda.Device(0).retain_primary_context()
    context.push()
    buffer = fake_cuda.mem_alloc(1024)
    fake_cuda.Context.pop()
    worker = threading.Thread(target=buffer.free)
    worker.start()
    worker.join()
    assert len(fake_cuda.leaks) == 1 and fake_cuda.live_bytes() == 1024


def test_host_path_from_threads_allocates_nothing_and_leaks_nothing(fake_cuda):
    """Reserved buffers serve every call, whichever thread makes it; close() frees all of it."""
    from concurrent.futures import ThreadPoolExecutor

    from s2i_runtime.cuda.frontend_cuda import CudaLogMel

    frontend = CudaLogMel(reserve=(2, 100))
    allocations = fake_cuda.count("alloc")
    clips = [[tone(3000 + 500 * i, 300.0 + 40 * i)] + ([chirp(900 + 100 * i)] if i % 2 else []) for i in range(12)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(frontend.logmel_batch, clips))
    for batch, (features, frame_lengths) in zip(clips, results, strict=True):
        _assert_matches_reference(features, frame_lengths, batch)
    assert fake_cuda.count("alloc") == allocations and fake_cuda.leaks == []
    async_copies = [e for e in fake_cuda.events if e.pinned_host is not None]
    assert async_copies and all(e.pinned_host for e in async_copies)  # staged through page-locked memory
    frontend.close()
    assert fake_cuda.live_bytes("device") == fake_cuda.live_bytes("pinned") == 0 and fake_cuda.leaks == []


def test_host_path_grows_inside_its_context_then_reuses(fake_cuda):
    import threading

    from s2i_runtime.cuda.frontend_cuda import CudaLogMel

    frontend = CudaLogMel()
    frontend.logmel_batch([tone(2000, 500.0)])
    grown = []

    def bigger():
        frontend.logmel_batch([tone(9000, 500.0), tone(4000, 700.0)])  # grows: frees the old buffers here
        grown.append(fake_cuda.count("alloc"))
        frontend.logmel_batch([tone(5000, 600.0)])  # fits: allocates nothing

    worker = threading.Thread(target=bigger)
    worker.start()
    worker.join()
    assert fake_cuda.count("alloc") == grown[0] and fake_cuda.count("free") > 0 and fake_cuda.leaks == []
    frontend.close()
    assert fake_cuda.live_bytes("device") == 0 and fake_cuda.leaks == []


def test_device_result_released_from_another_thread_is_freed(fake_cuda):
    import threading

    from s2i_runtime.cuda.frontend_cuda import CudaLogMel

    frontend = CudaLogMel()
    before = fake_cuda.live_bytes()
    result = frontend.logmel_device(np.ones((1, 4000), dtype=np.float32), [4000])
    worker = threading.Thread(target=result.release)
    worker.start()
    worker.join()
    assert fake_cuda.live_bytes() == before and fake_cuda.leaks == []
    frontend.close()


def test_cuda_frontend_failing_to_load_the_ptx_frees_what_it_made(fake_cuda, monkeypatch):
    from s2i_runtime.cuda.frontend_cuda import CudaLogMel

    def refuse(data):
        raise fake_cuda.Error("cuModuleLoadData failed: a PTX JIT compilation failed")

    monkeypatch.setattr(fake_cuda, "module_from_buffer", refuse)
    with pytest.raises(BackendUnavailable, match=r"sm_75, PTX ISA 8\.0.*CUDA 12\.0"):
        CudaLogMel()
    assert fake_cuda.live_bytes() == 0 and fake_cuda._stack() == [] and fake_cuda.leaks == []


def test_samples_for_frames_inverts_num_frames():
    from s2i_runtime.cuda.plan import samples_for_frames

    for spec in (FrontendSpec(), FrontendSpec(center=False)):
        for frames in (1, 64, 1001, 3000):
            n = samples_for_frames(spec, frames)
            assert spec.num_frames(n) == frames and spec.num_frames(n + 1) == frames + 1


@pytest.mark.gpu
def test_gpu_kernels_match_numpy_frontend():
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed (the 'gpu' extra)")
    import pycuda.driver as cuda

    from s2i_runtime.cuda.frontend_cuda import CudaLogMel

    frontend = CudaLogMel()
    clips = _test_clips()
    features, frame_lengths = frontend.logmel_batch(clips)
    _assert_matches_reference(features, frame_lengths, clips)

    # Device in, device out, on a stream: the path the TensorRT backend takes.
    waves, lengths = _pad(clips, fill=np.nan)
    with frontend.active():
        stream = cuda.Stream()
        device_waves = cuda.to_device(waves)
    result = frontend.logmel_device(int(device_waves), lengths, n_max=waves.shape[1], stream=stream)
    on_device = frontend.to_host(result, stream)
    np.testing.assert_array_equal(on_device, features)
    device_lengths = np.empty(len(clips), dtype=np.int64)
    with frontend.active():
        cuda.memcpy_dtoh(device_lengths, result.frame_lengths)
    np.testing.assert_array_equal(device_lengths, frame_lengths)
    result.release()
    with frontend.active():
        device_waves.free()
        del stream
    frontend.close()


@pytest.mark.gpu
def test_gpu_frontend_from_threads_keeps_gpu_memory_flat():
    """1,000 host in / host out calls from 8 threads: free device memory (cuMemGetInfo) the same after."""
    pytest.importorskip("pycuda.driver", reason="pycuda is not installed (the 'gpu' extra)")
    from concurrent.futures import ThreadPoolExecutor

    import pycuda.driver as cuda

    from s2i_runtime.cuda.frontend_cuda import CudaLogMel

    spec = FrontendSpec()
    frontend = CudaLogMel(spec, reserve=(1, spec.max_frames))
    clips = [speech_like(int(SR * seconds), seed=i) for i, seconds in enumerate((1, 3, 10, 29.9))]  # <= 3000 frames
    with frontend.active():
        free_before, _ = cuda.mem_get_info()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for features, lengths in pool.map(lambda i: frontend.logmel_batch([clips[i % len(clips)]]), range(1000)):
            assert features.shape[1] == spec.n_mels and lengths[0] >= 101
    with frontend.active():
        free_after, _ = cuda.mem_get_info()
    frontend.close()
    assert free_before - free_after < 2 << 20, f"{(free_before - free_after) / 2**20:.1f} MiB less free memory"
