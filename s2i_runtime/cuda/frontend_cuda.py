"""The log-Mel front end on an NVIDIA GPU: the shipped logmel.ptx, loaded and launched with pycuda.

    frontend = CudaLogMel()                        # needs pycuda and a driver, else BackendUnavailable
    features, lengths = frontend.logmel_batch([wave_a, wave_b])    # same contract as frontend.logmel_batch
    with frontend.logmel_device(waves, sample_lengths, stream=stream) as on_gpu:
        context.set_tensor_address("mel", on_gpu.features_ptr)      # TensorRT reads it where it is
        ...                                                         # (and synchronise before leaving)
    frontend.close()

The PTX (plan.PTX_TARGET, PTX ISA plan.PTX_ISA: Turing and later GPUs, CUDA 12.0 and later drivers) is
JIT-compiled by the driver; no nvcc is needed at run time, which is why this does not use pycuda's
SourceModule. Everything runs in the device's primary context, the one TensorRT and PyTorch use, pushed
around each call from whichever thread makes it (context.py).

Host in, host out (`logmel_batch`, `logmel_padded`) reuses one set of device buffers and page-locked
staging buffers, grown to the largest batch seen (or reserved up front) and freed only inside this
object's context, so calls from any thread neither allocate nor leak once the largest size has been seen.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, InputError
from ..frontend import FrontendSpec
from .context import PrimaryContext, free_pinned
from .plan import (
    KERNEL_SIGNATURES,
    OLDEST_DRIVER_CUDA,
    PTX_ISA,
    PTX_TARGET,
    SCRATCH_NAMES,
    BatchGeometry,
    FrontendTables,
    enqueue_logmel,
    ptx_bytes,
    sample_lengths,
    samples_for_frames,
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
    DeviceAllocations laid out exactly as the encoder's `mel` and `lengths` inputs. Call `release()` (or
    use the object as a context manager) once the work queued on the stream that reads them has finished:
    it frees them, and the scratch buffers the kernels used, inside the front end's context. Left to the
    garbage collector in another thread than the one that opened the front end, they would leak.
    """

    features: Any
    frame_lengths: Any
    shape: tuple[int, int, int]
    frame_lengths_host: np.ndarray
    _owner: CudaLogMel = dataclasses.field(repr=False)
    _keep_alive: dict[str, Any] = dataclasses.field(repr=False)

    @property
    def features_ptr(self) -> int:
        return int(self.features)

    @property
    def frame_lengths_ptr(self) -> int:
        return int(self.frame_lengths)

    def release(self) -> None:
        if self.features is None:
            return
        allocations = [self.features, self.frame_lengths, *self._keep_alive.pop("device", {}).values()]
        with self._owner.active():
            for allocation in allocations:
                allocation.free()
        self.features = self.frame_lengths = None

    def __enter__(self) -> DeviceFeatures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Workspace:
    """Buffers of the host in / host out path, reused by every call and grown when a batch needs more.

    Growing frees the old buffer; that is safe because each call waits for its stream before returning,
    and all of it happens with the owner's lock held and its context active.
    """

    def __init__(self, cuda: Any) -> None:
        self._cuda = cuda
        self._device: dict[str, tuple[Any, int]] = {}
        self._pinned: dict[str, np.ndarray] = {}

    def device(self, sizes: dict[str, int]) -> dict[str, int]:
        """Device addresses of buffers of at least `sizes` bytes, by name."""
        for name, nbytes in sizes.items():
            held = self._device.get(name)
            if held is None or held[1] < nbytes:
                if held is not None:
                    held[0].free()
                self._device[name] = (self._cuda.mem_alloc(max(nbytes, 1)), nbytes)
        return {name: int(self._device[name][0]) for name in sizes}

    def staging(self, name: str, count: int, dtype: Any) -> np.ndarray:
        """The first `count` elements of a page-locked host buffer."""
        held = self._pinned.get(name)
        if held is None or held.size < count:
            if held is not None:
                free_pinned(held)
            held = self._pinned[name] = self._cuda.pagelocked_empty(max(count, 1), dtype)
        return held[:count]

    def free(self) -> None:
        for allocation, _ in self._device.values():
            allocation.free()
        for array in self._pinned.values():
            free_pinned(array)
        self._device, self._pinned = {}, {}


class CudaLogMel:
    """Runs the CUDA log-Mel kernels on one GPU. Thread-safe; calls are serialised.

    `reserve=(batch, frames)` sizes the host in / host out buffers up front for batches of up to `batch`
    clips of up to `frames` frames, so even the first such call allocates nothing.
    """

    def __init__(self, spec: FrontendSpec = FrontendSpec(), device: int = 0, *,
                 reserve: tuple[int, int] | None = None) -> None:
        cuda = _import_pycuda()
        self._cuda = cuda
        self.spec = spec
        self._lock = threading.Lock()
        try:
            cuda.init()
            if device >= cuda.Device.count():
                raise BackendUnavailable(f"CUDA device {device} does not exist ({cuda.Device.count()} found)")
        except cuda.Error as exc:
            raise BackendUnavailable(f"cannot initialise CUDA for the front end: {exc}") from exc
        self._context = PrimaryContext(cuda, device)
        self._module = self._stream = None
        self._tables: dict[str, Any] = {}
        self._workspace = _Workspace(cuda)
        try:
            with self.active():
                self._load(cuda)
                if reserve is not None:
                    self._reserve(*reserve)
        except BaseException:
            self._free()
            raise

    def _load(self, cuda: Any) -> None:
        try:
            self._module = cuda.module_from_buffer(ptx_bytes())
        except cuda.Error as exc:
            raise BackendUnavailable(
                f"the driver cannot load the front end's PTX ({PTX_TARGET}, PTX ISA {PTX_ISA}: needs a Turing or "
                f"newer GPU and a driver for CUDA {OLDEST_DRIVER_CUDA} or later): {exc}"
            ) from exc
        self._kernels = {
            name: self._module.get_function(name).prepare(signature) for name, signature in KERNEL_SIGNATURES.items()
        }
        self._tables = {
            name: cuda.to_device(np.ascontiguousarray(array))
            for name, array in FrontendTables.from_spec(self.spec).arrays().items()
        }
        self._stream = cuda.Stream()

    def _reserve(self, batch: int, frames: int) -> None:
        samples = samples_for_frames(self.spec, frames)
        geometry = BatchGeometry.of(np.full(batch, samples, dtype=np.int64), samples, self.spec)
        self._workspace.device(geometry.buffer_bytes(self.spec))
        self._workspace.staging("waves", batch * samples, np.float32)
        self._workspace.staging("lengths", batch, np.int64)
        self._workspace.staging("frame_lengths", batch, np.int64)
        self._workspace.staging("features", batch * self.spec.n_mels * geometry.t_max, np.float32)

    def active(self):
        """Make the device's primary context current on this thread for the duration."""
        return self._context.active()

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
        of each row; the host needs them anyway to size the output. Returns without waiting; the result
        owns its buffers until `release()`.
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
        scratch = {name: alloc for name, alloc in buffers.items() if name not in ("features", "frame_lengths")}
        # Host sources of async copies must outlive the copies.
        keep = {"device": scratch, "host": (lengths64, frame_lengths, host_waves)}
        return DeviceFeatures(buffers["features"], buffers["frame_lengths"], shape, frame_lengths, self, keep)

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
        """Host in, host out: (B, N) float32 waves + lengths -> (features (B, n_mels, T), frame lengths).

        Runs on this object's own stream through its reused buffers (see the module docstring).
        """
        cuda = self._cuda
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        if waves.ndim != 2 or waves.shape[0] < 1:
            raise InputError(f"waves must be a (batch, samples) array with a row per utterance, got {waves.shape}")
        batch, n_max = waves.shape
        lengths64 = sample_lengths(lengths, batch, n_max)
        geometry = BatchGeometry.of(lengths64, n_max, self.spec)
        shape = (batch, self.spec.n_mels, geometry.t_max)
        with self._lock, self.active():
            stream = self._stream
            ptr = self._workspace.device(geometry.buffer_bytes(self.spec))
            ptr.update({name: int(alloc) for name, alloc in self._tables.items()})
            for name, array in (("waves", waves), ("lengths", lengths64), ("frame_lengths", geometry.frame_lengths)):
                staging = self._workspace.staging(name, array.size, array.dtype)
                staging[...] = array.reshape(-1)
                cuda.memcpy_htod_async(ptr[name], staging, stream)
            enqueue_logmel(self._launch(stream), self.spec, geometry, ptr)
            out = self._workspace.staging("features", int(np.prod(shape)), np.float32)
            cuda.memcpy_dtoh_async(out, ptr["features"], stream)
            stream.synchronize()
            features = out.reshape(shape).copy()  # the staging buffer is the next call's
        return features, geometry.frame_lengths.copy()

    def logmel_batch(self, audios: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Same contract as `s2i_runtime.frontend.logmel_batch`, computed on the GPU."""
        waves, lengths = pad_batch(audios)
        return self.logmel_padded(waves, lengths)

    def _free(self) -> None:
        with self.active():
            self._workspace.free()
            for allocation in self._tables.values():
                allocation.free()
            self._tables, self._kernels = {}, {}
            self._module = self._stream = None  # module unload and stream destruction happen here
        self._context.release()

    def close(self) -> None:
        """Free every buffer, the module and the stream; results of logmel_device must be released first."""
        with self._lock:
            if self._stream is None and self._module is None:
                return
            self._free()
