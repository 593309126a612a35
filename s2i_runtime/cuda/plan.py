"""What the log-Mel kernels need, independent of who runs them (pycuda on a GPU, or the g++ emulation).

One definition of: the kernels' argument types, the host-computed constant tables, the buffer sizes of
a batch, and the order of launches. `frontend_cuda` (GPU) and `cpu_emulation` (tests) both call
`enqueue_logmel`, so the CPU test exercises the same grid sizes and arguments the GPU gets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from importlib import resources

import numpy as np

from ..errors import InputError
from ..frontend import FrontendSpec, mel_filterbank, padded_window

PTX_FILE = "logmel.ptx"
SOURCE_FILE = "logmel.cu"
# What the shipped PTX declares (docs/gpu.md): Turing (T4) and later GPUs; the PTX ISA of CUDA 12.0,
# the oldest a driver must understand to JIT it (a driver refuses PTX newer than its own CUDA release).
PTX_TARGET = "sm_75"
PTX_ISA = "8.0"
OLDEST_DRIVER_CUDA = "12.0"

# Argument types of each kernel in logmel.cu, as pycuda's `Function.prepare` format characters:
# P = device pointer, i = int32, f = float32, d = float64. The CPU emulation reads the same strings.
KERNEL_SIGNATURES: dict[str, str] = {
    "s2i_partial_sums": "PPiiiP",
    "s2i_utterance_mean": "PPiiiP",
    "s2i_signal": "PPPPiiiiiiidP",
    "s2i_power": "PPPPPiiiiiiP",
    "s2i_mel_db": "PPPPPiiiifP",
    "s2i_partial_max": "PPiiiiP",
    "s2i_utterance_max": "PiiP",
    "s2i_normalize": "PPPiiif",
}

THREADS_PER_BLOCK = 256
# Strided partial sums/maxima per utterance: enough threads to read memory coalesced and in parallel,
# few enough that the one-thread-per-utterance second pass stays short.
REDUCTION_SLICES = 256

TABLE_NAMES = ("window", "cos_table", "sin_table", "mel_weights", "band_start", "band_end")
OUTPUT_NAMES = ("features", "frame_lengths")
INPUT_NAMES = ("waves", "lengths")
SCRATCH_NAMES = ("partial_sums", "mean", "signal", "power", "partial_max", "utterance_max")

Launch = Callable[[str, int, int, tuple], None]
"""launch(kernel name, blocks, threads per block, arguments) — device pointers are ints."""


def ptx_bytes() -> bytes:
    """The shipped PTX, NUL-terminated as cuModuleLoadData expects of PTX text."""
    data = resources.files(__package__).joinpath(PTX_FILE).read_bytes()
    return data if data.endswith(b"\0") else data + b"\0"


@dataclasses.dataclass(frozen=True)
class FrontendTables:
    """Constant tables the kernels read, computed once on the host from frontend.py's definitions."""

    window: np.ndarray  # (n_fft,) float64, the zero-padded symmetric Hamming window
    cos_table: np.ndarray  # (n_fft,) float64, cos(2 pi j / n_fft): the DFT sums in double
    sin_table: np.ndarray  # (n_fft,) float64, sin(2 pi j / n_fft)
    mel_weights: np.ndarray  # (n_mels, n_freqs) float32
    band_start: np.ndarray  # (n_mels,) int32, first non-zero weight of each band
    band_end: np.ndarray  # (n_mels,) int32, one past the last non-zero weight

    @classmethod
    def from_spec(cls, spec: FrontendSpec) -> FrontendTables:
        angle = 2.0 * np.pi * np.arange(spec.n_fft) / spec.n_fft
        weights = mel_filterbank(spec)
        nonzero = weights != 0.0
        any_nonzero = nonzero.any(axis=1)
        start = np.where(any_nonzero, nonzero.argmax(axis=1), 0)
        end = np.where(any_nonzero, spec.n_freqs - nonzero[:, ::-1].argmax(axis=1), 0)
        return cls(
            window=np.ascontiguousarray(padded_window(spec), dtype=np.float64),
            cos_table=np.cos(angle),
            sin_table=np.sin(angle),
            mel_weights=np.ascontiguousarray(weights, dtype=np.float32),
            band_start=start.astype(np.int32),
            band_end=end.astype(np.int32),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in TABLE_NAMES}


def sample_lengths(lengths: np.ndarray | list[int], batch: int, n_max: int) -> np.ndarray:
    """Validated per-utterance lengths in samples, as the int64 array the kernels read."""
    lengths = np.asarray(lengths)
    if lengths.shape != (batch,) or not np.issubdtype(lengths.dtype, np.integer):
        raise InputError(f"lengths must be {batch} integers (one per utterance), got shape {lengths.shape}")
    if batch and (lengths.min() < 1 or lengths.max() > n_max):
        raise InputError(f"every length must be between 1 and the padded width {n_max} samples")
    return np.ascontiguousarray(lengths, dtype=np.int64)


def samples_for_frames(spec: FrontendSpec, frames: int) -> int:
    """The longest clip, in samples, that has at most `frames` frames (the inverse of spec.num_frames)."""
    if spec.center:
        return frames * spec.hop_length - 1
    return (frames - 1) * spec.hop_length + spec.n_fft + spec.hop_length - 1


@dataclasses.dataclass(frozen=True)
class BatchGeometry:
    """Shapes of one padded batch: waves (batch, n_max) -> features (batch, n_mels, t_max)."""

    batch: int
    n_max: int
    t_max: int
    frame_lengths: np.ndarray  # (batch,) int64, frames per utterance

    @classmethod
    def of(cls, lengths: np.ndarray, n_max: int, spec: FrontendSpec) -> BatchGeometry:
        frames = np.array([spec.num_frames(int(n)) for n in lengths], dtype=np.int64)
        t_max = max(spec.min_frames, int(frames.max()))
        return cls(batch=len(lengths), n_max=n_max, t_max=t_max, frame_lengths=frames)

    def signal_width(self, spec: FrontendSpec) -> int:
        """Samples per row of the padded, pre-emphasised signal: enough for t_max frames."""
        return (self.t_max - 1) * spec.hop_length + spec.n_fft

    def buffer_bytes(self, spec: FrontendSpec) -> dict[str, int]:
        """Bytes of every per-batch buffer: inputs, outputs and scratch."""
        b, t = self.batch, self.t_max
        return {
            "waves": b * self.n_max * 4,
            "lengths": b * 8,
            "features": b * spec.n_mels * t * 4,
            "frame_lengths": b * 8,
            "partial_sums": b * REDUCTION_SLICES * 8,
            "mean": b * 8,
            "signal": b * self.signal_width(spec) * 8,
            "power": b * spec.n_freqs * t * 4,  # (batch, n_freqs, t_max): frame-minor, see logmel.cu
            "partial_max": b * REDUCTION_SLICES * 4,
            "utterance_max": b * 4,
        }


def _blocks(threads: int) -> int:
    return max(1, -(-threads // THREADS_PER_BLOCK))


def enqueue_logmel(launch: Launch, spec: FrontendSpec, geometry: BatchGeometry, ptr: Mapping[str, int]) -> None:
    """Issue the kernel sequence for one batch.

    `ptr` maps every name in TABLE_NAMES, INPUT_NAMES, OUTPUT_NAMES and SCRATCH_NAMES to a device address;
    `lengths` and `frame_lengths` must already hold the int64 sample and frame counts (the host knows
    them: it needs t_max to size the buffers).
    """
    b, n_max, t_max = geometry.batch, geometry.n_max, geometry.t_max
    n_fft, n_freqs, n_mels = spec.n_fft, spec.n_freqs, spec.n_mels
    pad = spec.edge_pad
    width = geometry.signal_width(spec)
    slices = REDUCTION_SLICES
    steps: list[tuple[str, int, tuple]] = [
        ("s2i_partial_sums", b * slices, (ptr["waves"], ptr["lengths"], b, n_max, slices, ptr["partial_sums"])),
        (
            "s2i_utterance_mean",
            b,
            (ptr["partial_sums"], ptr["lengths"], b, slices, int(spec.remove_dc), ptr["mean"]),
        ),
        (
            "s2i_signal",
            b * width,
            (
                ptr["waves"], ptr["lengths"], ptr["mean"], ptr["frame_lengths"],
                b, n_max, width, n_fft, spec.hop_length, pad, int(spec.center), float(spec.preemphasis),
                ptr["signal"],
            ),
        ),
        (
            "s2i_power",
            b * t_max * n_freqs,
            (
                ptr["signal"], ptr["frame_lengths"], ptr["window"], ptr["cos_table"], ptr["sin_table"],
                b, t_max, width, n_fft, n_freqs, spec.hop_length, ptr["power"],
            ),
        ),
        (
            "s2i_mel_db",
            b * n_mels * t_max,
            (
                ptr["power"], ptr["frame_lengths"], ptr["mel_weights"], ptr["band_start"], ptr["band_end"],
                b, t_max, n_freqs, n_mels, float(spec.amin), ptr["features"],
            ),
        ),
        (
            "s2i_partial_max",
            b * slices,
            (ptr["features"], ptr["frame_lengths"], b, n_mels, t_max, slices, ptr["partial_max"]),
        ),
        ("s2i_utterance_max", b, (ptr["partial_max"], b, slices, ptr["utterance_max"])),
        (
            "s2i_normalize",
            b * n_mels * t_max,
            (ptr["features"], ptr["frame_lengths"], ptr["utterance_max"], b, n_mels, t_max, float(spec.top_db)),
        ),
    ]
    for name, threads, args in steps:
        if len(args) != len(KERNEL_SIGNATURES[name]):
            raise AssertionError(f"{name}: {len(args)} arguments for signature {KERNEL_SIGNATURES[name]}")
        launch(name, _blocks(threads), THREADS_PER_BLOCK, args)
