"""The log-Mel front end on an NVIDIA GPU: the shipped logmel.ptx, loaded and launched with pycuda.

    frontend = CudaLogMel()                        # needs pycuda and a driver, else BackendUnavailable
    features, lengths = frontend.logmel_batch([wave_a, wave_b])    # same contract as frontend.logmel_batch
    on_gpu = frontend.logmel_device(waves, sample_lengths, stream=stream)
    context.set_tensor_address("mel", on_gpu.features_ptr)          # TensorRT reads it where it is

The PTX is JIT-compiled by the driver (compute_80: Ampere and later); no nvcc is needed at run time,
which is why this does not use pycuda's SourceModule. Everything runs in the device's primary context,
the one TensorRT and PyTorch use, pushed around each call (never pycuda.autoinit, which would make a
second context whose buffers TensorRT cannot use).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, InputError
from ..frontend import FrontendSpec
from .plan import (
    KERNEL_SIGNATURES,
    SCRATCH_NAMES,
    BatchGeometry,
    FrontendTables,
    enqueue_logmel,
    ptx_bytes,
    sample_lengths,
)


def _import_pycuda() -> Any:
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as exc:  # not installed, or libcuda.so.1 missing (no NVIDIA driver)
        raise BackendUnavailable(
            f"the CUDA front end needs pycuda and an NVIDIA driver (install the 'gpu' extra): {exc}"
        ) from exc
    return cuda


def pad_batch(audios: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Utterances (1-D arrays) -> (waves (B, N_max) float32 zero-padded, lengths (B,) int64 samples)."""
    if not audios:
        raise InputError("the front end needs at least one utterance")
    flat = [np.asarray(a, dtype=np.float32).reshape(-1) for a in audios]
    if any(a.size == 0 for a in flat):
        raise InputError("cannot compute features of empty audio")
    lengths = np.array([a.size for a in flat], dtype=np.int64)
    waves = np.zeros((len(flat), int(lengths.max())), dtype=np.float32)
    for row, audio in zip(waves, flat, strict=True):
        row[: audio.size] = audio
    return waves, lengths


@dataclasses.dataclass
class DeviceFeatures:
    """Features of one batch, left on the GPU.

    `features` is (batch, n_mels, t_max) float32 and `frame_lengths` (batch,) int64, both pycuda
    DeviceAllocations laid out exactly as the encoder's `mel` and `lengths` inputs. They (and the scratch
    buffers the kernels used) are freed when this object is dropped, so keep it alive until the work
    queued on the stream that reads them has finished.
    """

    features: Any
    frame_lengths: Any
    shape: tuple[int, int, int]
    frame_lengths_host: np.ndarray
    _keep_alive: dict[str, Any] = dataclasses.field(repr=False)

    @property
    def features_ptr(self) -> int:
        return int(self.features)

    @property
    def frame_lengths_ptr(self) -> int:
        return int(self.frame_lengths)


class CudaLogMel:
    """Runs the CUDA log-Mel kernels on one GPU. Thread-safe; each call allocates its own buffers."""

    def __init__(self, spec: FrontendSpec = FrontendSpec(), device: int = 0) -> None:
        cuda = _import_pycuda()
        self._cuda = cuda
        self.spec = spec
        self._lock = threading.Lock()
        try:
            cuda.init()
            if device >= cuda.Device.count():
                raise BackendUnavailable(f"CUDA device {device} does not exist ({cuda.Device.count()} found)")
            self._device = cuda.Device(device)
            self._context = self._device.retain_primary_context()
        except cuda.Error as exc:
            raise BackendUnavailable(f"cannot initialise CUDA for the front end: {exc}") from exc
        with self.active():
            try:
                self._module = cuda.module_from_buffer(ptx_bytes())
            except cuda.Error as exc:
                raise BackendUnavailable(
                    f"the driver cannot load the front end's PTX (compute_80; needs an Ampere or newer GPU "
                    f"and a driver for CUDA 13): {exc}"
                ) from exc
            self._kernels = {
                name: self._module.get_function(name).prepare(signature)
                for name, signature in KERNEL_SIGNATURES.items()
            }
            self._tables = {
                name: cuda.to_device(np.ascontiguousarray(array))
                for name, array in FrontendTables.from_spec(spec).arrays().items()
            }

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make the device's primary context current on this thread for the duration."""
        self._context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def _launch(self, stream: Any) -> Any:
        def launch(name: str, blocks: int, threads: int, args: tuple) -> None:
            self._kernels[name].prepared_async_call((blocks, 1), (threads, 1, 1), stream, *args)

        return launch

    def logmel_device(
        self,
        waves: np.ndarray | int,
        lengths: np.ndarray | list[int],
        *,
        n_max: int | None = None,
        stream: Any = None,
    ) -> DeviceFeatures:
        """Queue the front end on `stream` (a pycuda Stream; None = the default stream).

        `waves` is a host (B, N) float32 array, uploaded first, or the device address (int) of a
        (B, n_max) float32 buffer already on the GPU. `lengths` (host, B integers) are the valid samples
        of each row; the host needs them anyway to size the output. Returns without waiting.
        """
        cuda = self._cuda
        if isinstance(waves, np.ndarray):
            if waves.ndim != 2:
                raise InputError(f"waves must be a (batch, samples) array, got shape {waves.shape}")
            host_waves = np.ascontiguousarray(waves, dtype=np.float32)
            batch, n_max = host_waves.shape
        else:
            if n_max is None:
                raise InputError("n_max (the row width in samples) is required with a device pointer")
            host_waves = None
            batch = len(np.asarray(lengths).reshape(-1))
        if batch < 1:
            raise InputError("the front end needs at least one utterance")
        lengths64 = sample_lengths(lengths, batch, n_max)
        geometry = BatchGeometry.of(lengths64, n_max, self.spec)
        sizes = geometry.buffer_bytes(self.spec)
        with self._lock, self.active():
            buffers: dict[str, Any] = {}
            wanted = ["lengths", "features", "frame_lengths", *SCRATCH_NAMES]
            if host_waves is not None:
                wanted.append("waves")
            for name in wanted:
                buffers[name] = cuda.mem_alloc(sizes[name])
            ptr = {name: int(alloc) for name, alloc in buffers.items()}
            ptr.update({name: int(alloc) for name, alloc in self._tables.items()})
            if host_waves is None:
                ptr["waves"] = int(waves)
            frame_lengths = geometry.frame_lengths.copy()
            copies = [(buffers["lengths"], lengths64), (buffers["frame_lengths"], frame_lengths)]
            if host_waves is not None:
                copies.append((buffers["waves"], host_waves))
            for dst, src in copies:
                if stream is None:
                    cuda.memcpy_htod(dst, src)
                else:
                    cuda.memcpy_htod_async(dst, src, stream)
            enqueue_logmel(self._launch(stream), self.spec, geometry, ptr)
        shape = (batch, self.spec.n_mels, geometry.t_max)
        keep = {name: alloc for name, alloc in buffers.items() if name not in ("features", "frame_lengths")}
        # Host sources of async copies must outlive the copies.
        keep["host"] = (lengths64, frame_lengths, host_waves)
        return DeviceFeatures(buffers["features"], buffers["frame_lengths"], shape, frame_lengths, keep)

    def to_host(self, result: DeviceFeatures, stream: Any = None) -> np.ndarray:
        """Copy features down (waiting for the stream's work to finish)."""
        features = np.empty(result.shape, dtype=np.float32)
        with self.active():
            if stream is not None:
                stream.synchronize()
            # A plain copy on the legacy default stream also waits for other (blocking) streams' work.
            self._cuda.memcpy_dtoh(features, result.features)
        return features

    def logmel_padded(self, waves: np.ndarray, lengths: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Host in, host out: (B, N) float32 waves + lengths -> (features (B, n_mels, T), frame lengths)."""
        with self.active():
            stream = self._cuda.Stream()
        result = self.logmel_device(waves, lengths, stream=stream)
        return self.to_host(result, stream), result.frame_lengths_host.copy()

    def logmel_batch(self, audios: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Same contract as `s2i_runtime.frontend.logmel_batch`, computed on the GPU."""
        waves, lengths = pad_batch(audios)
        return self.logmel_padded(waves, lengths)
