"""The shipped CUDA kernels compiled with g++ and run on the CPU (tests and debugging only).

`CpuEmulation.build(directory)` compiles `cpu_emulation.cpp` (which includes the exact `logmel.cu`)
into a shared library; `logmel_padded(waves, lengths)` then runs the same launch sequence as the GPU
loader, with numpy arrays standing in for device buffers. Slow — it is a correctness check, not a backend.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable
from ..frontend import FrontendSpec
from .plan import (
    KERNEL_SIGNATURES,
    BatchGeometry,
    FrontendTables,
    enqueue_logmel,
    sample_lengths,
)

LIBRARY_NAME = "libs2i_logmel_cpu.so"
# No -ffast-math, and no contraction of a*b+c into FMAs: the kernels' explicit fmaf calls are the only
# fused operations, as on the GPU (the PTX is built with -fmad=false).
GXX_FLAGS = ("-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared")

_CTYPES_OF = {"P": ctypes.c_void_p, "i": ctypes.c_int32, "f": ctypes.c_float, "d": ctypes.c_double}


def compile_library(directory: str | Path, compiler: str = "g++") -> Path:
    """Compile the emulation library into `directory`; BackendUnavailable without a C++ compiler."""
    if shutil.which(compiler) is None:
        raise BackendUnavailable(f"{compiler} not found: cannot compile the CPU emulation of the CUDA kernels")
    source_dir = Path(str(resources.files(__package__)))
    output = Path(directory) / LIBRARY_NAME
    command = [compiler, *GXX_FLAGS, f"-I{source_dir}", str(source_dir / "cpu_emulation.cpp"), "-o", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"compiling the CPU emulation failed:\n{' '.join(command)}\n{result.stderr}")
    return output


class CpuEmulation:
    """Launches logmel.cu's kernels on the CPU; buffers are numpy arrays, addresses their data pointers."""

    def __init__(self, library: str | Path, spec: FrontendSpec = FrontendSpec()) -> None:
        self._lib = ctypes.CDLL(str(library))
        self._lib.s2i_cpu_launch.argtypes = [ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        self._lib.s2i_cpu_launch.restype = ctypes.c_int
        self.spec = spec
        self._tables = FrontendTables.from_spec(spec).arrays()

    @classmethod
    def build(cls, directory: str | Path, spec: FrontendSpec = FrontendSpec()) -> CpuEmulation:
        return cls(compile_library(directory), spec)

    def launch(self, name: str, blocks: int, threads: int, args: tuple) -> None:
        signature = KERNEL_SIGNATURES[name]
        values = [_CTYPES_OF[kind](value) for kind, value in zip(signature, args, strict=True)]
        params = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        if self._lib.s2i_cpu_launch(name.encode(), blocks, threads, params) != 0:
            raise RuntimeError(f"the CPU emulation has no kernel named {name}")

    def logmel_padded(self, waves: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features (B, n_mels, T) float32 and frame lengths (B,) int64 of a padded batch (B, N) float32."""
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        batch, n_max = waves.shape
        lengths = sample_lengths(lengths, batch, n_max)
        geometry = BatchGeometry.of(lengths, n_max, self.spec)
        buffers = {name: np.zeros(size, dtype=np.uint8) for name, size in geometry.buffer_bytes(self.spec).items()}
        buffers["waves"] = waves
        buffers["lengths"] = lengths
        buffers["frame_lengths"] = geometry.frame_lengths.copy()
        buffers.update(self._tables)
        enqueue_logmel(self.launch, self.spec, geometry, {k: v.ctypes.data for k, v in buffers.items()})
        features = buffers["features"].view(np.float32).reshape(batch, self.spec.n_mels, geometry.t_max)
        return features, buffers["frame_lengths"]
