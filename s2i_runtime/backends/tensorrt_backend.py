"""TensorRT backend: prebuilt plans from the bundle's `engines` list, pycuda buffers, `execute_async_v3`.

Written against the TensorRT 10/11 Python API and pycuda (docs/gpu.md). Everything that needs the GPU is
imported lazily; without tensorrt, pycuda or a CUDA device the constructor raises one clear
BackendUnavailable. The pure parts (engine choice, profile checks, generator row layout) are plain
functions, tested on the CPU; the GPU plumbing is tested against recording stand-ins of pycuda and
TensorRT (tests/fake_pycuda.py, tests/fake_tensorrt.py) and for real by the `gpu` tests.

Memory: every device buffer, every page-locked host staging buffer and the stream are allocated once when
the backend opens, sized by the engine profile's maxima, and freed in close(); a call allocates nothing.
Calls come from thread pools and the dynamic batcher's worker, and pycuda frees memory only where its
context is current (s2i_runtime/cuda/context.py), so nothing here is ever left to the garbage collector.
The primary context is pushed around every call and calls are serialised by a lock: TensorRT execution
contexts, the staging buffers and the stream are single-user.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import numpy as np

from ..bundle import ENCODER_INPUTS, ENCODER_OUTPUTS, GENERATOR_INPUTS, GENERATOR_OUTPUTS, LOGMEL_INPUT, Bundle
from ..errors import BackendUnavailable, BundleError, InputError
from .base import Backend, _stage, check_tensors, expected_signature

INSTALL_HINT = (
    "install the gpu extra (pip install 's2i[gpu]') and TensorRT from NVIDIA's index "
    "(pip install tensorrt with NVIDIA's package index configured, as NVIDIA's install guide shows)"
)
COMPONENTS = ("encoder", "generator")


@dataclasses.dataclass(frozen=True)
class GpuDevice:
    name: str
    compute_capability: str  # "9.0"


def short_version(version: str) -> str:
    """'10.13.0.35' -> '10.13.0': plans are tied to the release, not the build number."""
    return ".".join(str(version).split(".")[:3])


def select_engine(engines: list[dict[str, Any]], gpu: GpuDevice, trt_version: str,
                  precision: str = "auto") -> tuple[dict[str, Any] | None, list[str]]:
    """The engine record to use on this GPU and TensorRT, or None, with the reason each one was skipped.

    A plan runs only on the compute capability and TensorRT release it was built with. Among matches,
    `precision` "auto" prefers fp16 over fp32, then the newest build.
    """
    reasons, matches = [], []
    for entry in engines:
        label = entry.get("dir", "?")
        if str(entry.get("compute_capability")) != gpu.compute_capability:
            reasons.append(
                f"{label}: built for compute capability {entry.get('compute_capability')}, "
                f"this GPU ({gpu.name}) is {gpu.compute_capability}"
            )
        elif short_version(entry.get("trt_version", "")) != short_version(trt_version):
            reasons.append(f"{label}: built with TensorRT {entry.get('trt_version')}, installed is {trt_version}")
        elif precision != "auto" and entry.get("precision") != precision:
            reasons.append(f"{label}: precision {entry.get('precision')}, {precision} requested")
        else:
            matches.append(entry)
    if not matches:
        return None, reasons
    rank = {"fp16": 1, "fp32": 0}
    best = max(matches, key=lambda e: (rank.get(e.get("precision"), -1), str(e.get("built_at", ""))))
    return best, reasons


@dataclasses.dataclass(frozen=True)
class EngineLimits:
    max_batch: int
    min_frames: int
    max_frames: int


def engine_limits(entry: dict[str, Any], bundle: Bundle) -> EngineLimits:
    """Check the record's optimisation profiles against s2i.json; the batch and frame ranges they allow."""
    where = f"{bundle.path}: engine {entry.get('dir', '?')}"
    try:
        profiles = entry["profiles"]
        mel = profiles["encoder"][ENCODER_INPUTS[0]]
        lengths = profiles["encoder"][ENCODER_INPUTS[1]]
        gen = profiles["generator"]
        shapes = {k: [list(map(int, mel[k])), list(map(int, lengths[k]))] for k in ("min", "opt", "max")}
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: malformed optimisation profiles ({exc})") from None
    n_mels = bundle.frontend.n_mels
    for key, (mel_shape, len_shape) in shapes.items():
        if len(mel_shape) != 3 or mel_shape[1] != n_mels or len(len_shape) != 1 or len_shape[0] != mel_shape[0]:
            raise BundleError(f"{where}: encoder profile {key} shape {mel_shape} does not fit (B, {n_mels}, T)")
    dims = bundle.dims
    widths = dict(zip(GENERATOR_INPUTS, (dims.embedding_dim, dims.z_dim, dims.ca_dim), strict=True))
    gen_max = set()
    for name, width in widths.items():
        try:
            ranges = {k: list(map(int, gen[name][k])) for k in ("min", "max")}
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: malformed generator profile ({exc})") from None
        if ranges["min"][1:] != [width] or ranges["max"][1:] != [width]:
            raise BundleError(f"{where}: generator profile of '{name}' is {ranges}, s2i.json says width {width}")
        if ranges["min"][0] > 1:
            raise BundleError(f"{where}: generator profile of '{name}' does not allow batch 1")
        gen_max.add(ranges["max"][0])
    if shapes["min"][0][0] > 1:
        raise BundleError(f"{where}: encoder profile does not allow batch 1")
    max_batch = min(shapes["max"][0][0], *gen_max)
    return EngineLimits(max_batch=max_batch, min_frames=shapes["min"][0][2], max_frames=shapes["max"][0][2])


# TensorRT requires every tensor address to be 256-byte aligned (IExecutionContext::setTensorAddress).
ALIGNMENT = 256


def row_runs(counts: np.ndarray, start: int, stop: int) -> list[tuple[int, int, int]]:
    """Rows start..stop of np.repeat(arange(len(counts)), counts) as (source row, destination row, rows) runs
    of consecutive source rows: the device-to-device copies that lay out one generator chunk."""
    sources = np.repeat(np.arange(len(counts)), np.asarray(counts, dtype=np.int64))[start:stop]
    runs: list[list[int]] = []
    for dst, src in enumerate(sources.tolist()):
        if runs and runs[-1][0] + runs[-1][2] == src:
            runs[-1][2] += 1
        else:
            runs.append([src, dst, 1])
    return [(src, dst, n) for src, dst, n in runs]


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailable(f"tensorrt is not importable ({exc}); {INSTALL_HINT}") from None
    return tensorrt


def import_pycuda():
    try:
        import pycuda.driver as cuda
    except (ImportError, OSError) as exc:  # OSError: libcuda.so.1 (the driver) is missing
        raise BackendUnavailable(f"pycuda is not importable ({exc}); {INSTALL_HINT}") from None
    return cuda


def detect_gpu(cuda, index: int = 0) -> GpuDevice:
    try:
        cuda.init()
        if cuda.Device.count() <= index:
            raise BackendUnavailable("no CUDA device found")
        device = cuda.Device(index)
        major, minor = device.compute_capability()
        return GpuDevice(name=str(device.name()), compute_capability=f"{major}.{minor}")
    except cuda.Error as exc:
        raise BackendUnavailable(f"CUDA is not usable here ({exc})") from None


class _Plan:
    """One deserialised engine with its execution context, and a device buffer plus a page-locked host
    staging buffer for every I/O tensor, sized for the profile maxima. Built and freed inside the context."""

    def __init__(self, trt, cuda, runtime, path, role: str, bundle: Bundle, stream) -> None:
        self.role = role
        self.buffers: dict[str, Any] = {}
        self.host: dict[str, np.ndarray] = {}
        self.context = self.engine = None
        try:
            self._open(trt, cuda, runtime, path, bundle, stream)
        except BaseException:
            self.free()  # here, in the context, rather than whenever the traceback is collected
            raise

    def _open(self, trt, cuda, runtime, path, bundle: Bundle, stream) -> None:
        role = self.role
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"{path}: cannot read the engine ({exc})") from None
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise BackendUnavailable(
                f"{path}: TensorRT cannot deserialise this plan (built for another GPU or TensorRT version?)"
            )
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailable(f"{path}: cannot create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        actual_in = {n: (self.dtypes[n].name, tuple(engine.get_tensor_shape(n))) for n in self.inputs}
        actual_out = {n: (self.dtypes[n].name, tuple(engine.get_tensor_shape(n))) for n in self.outputs}
        expected_in, expected_out = expected_signature(bundle)[role]
        check_tensors(str(path), "inputs", actual_in, expected_in)
        check_tensors(str(path), "outputs", actual_out, expected_out)
        for name in self.inputs + self.outputs:
            if self.dtypes[name] == np.float16:
                raise BundleError(f"{path}: tensor '{name}' is float16; the runtime expects float32 engine I/O")
        # Profile 0 is the one export builds; its maxima size the buffers once, for every later call.
        self.context.set_optimization_profile_async(0, stream.handle)
        self.max_shapes = {n: tuple(engine.get_tensor_profile_shape(n, 0)[2]) for n in self.inputs}
        for name in self.inputs:
            if not self.context.set_input_shape(name, self.max_shapes[name]):
                raise BackendUnavailable(f"{path}: TensorRT refused the profile maximum of '{name}'")
        out_max = {n: tuple(self.context.get_tensor_shape(n)) for n in self.outputs}
        for name, shape in {**self.max_shapes, **out_max}.items():
            count = max(int(np.prod(shape)), 1)
            self.buffers[name] = cuda.mem_alloc(count * self.dtypes[name].itemsize)
            self.host[name] = cuda.pagelocked_empty(count, self.dtypes[name])
            self.bind(name, int(self.buffers[name]))

    def bind(self, name: str, address: int) -> None:
        if address % ALIGNMENT:
            raise BackendUnavailable(
                f"{self.role}: address {address:#x} of '{name}' is not {ALIGNMENT}-byte aligned, as TensorRT requires"
            )
        if not self.context.set_tensor_address(name, address):
            raise BackendUnavailable(f"{self.role}: TensorRT refused the device address of '{name}'")

    def set_shapes(self, shapes: dict[str, tuple[int, ...]]) -> None:
        for name, shape in shapes.items():
            limit = self.max_shapes[name]
            if any(s > m for s, m in zip(shape, limit, strict=True)):
                raise InputError(f"{self.role} input '{name}' of shape {shape} exceeds the engine profile {limit}")
            if not self.context.set_input_shape(name, tuple(int(s) for s in shape)):
                raise InputError(f"{self.role}: TensorRT refused input '{name}' of shape {shape}")

    def upload(self, cuda, name: str, array: np.ndarray, stream) -> None:
        """Queue host `array` -> the tensor's device buffer, through its page-locked staging buffer."""
        staging = self.host[name][: array.size]
        staging[...] = array.reshape(-1)
        cuda.memcpy_htod_async(self.buffers[name], staging, stream)

    def download(self, cuda, name: str, shape: tuple[int, ...], stream) -> np.ndarray:
        """Queue the tensor's device buffer -> its staging buffer; the view is valid after the stream syncs."""
        staging = self.host[name][: int(np.prod(shape))]
        cuda.memcpy_dtoh_async(staging, self.buffers[name], stream)
        return staging.reshape(shape)

    def execute(self, stream) -> None:
        if not self.context.execute_async_v3(stream.handle):
            raise BackendUnavailable(f"TensorRT {self.role} execution failed (see the TensorRT log)")

    def free(self) -> None:
        """Release buffers and TensorRT objects; call inside the context they were made in."""
        from ..cuda.context import free_pinned

        for buffer in self.buffers.values():
            buffer.free()
        for array in self.host.values():
            free_pinned(array)
        self.buffers, self.host = {}, {}
        self.context = self.engine = None


class TensorRTBackend(Backend):
    name = "tensorrt"
    device = "cuda"

    def __init__(self, bundle: Bundle, precision: str = "auto", device_index: int = 0) -> None:
        self.notes = []
        self.bundle = bundle
        self._plans = None
        if precision == "int8":
            raise InputError(
                "precision int8: no INT8 TensorRT engines are built (the INT8 generator runs on ONNX Runtime's CPU "
                "provider); use --backend onnxruntime --device cpu, or precision fp16/fp32 here"
            )
        if bundle.encoder_input != LOGMEL_INPUT:
            # Its engine profiles and buffers are shaped for log-Mel input; samples would need their own.
            raise BackendUnavailable(
                f"{bundle.path}: its encoder holds the front end (reads waveforms); the TensorRT backend runs "
                "log-Mel bundles only (export without --frontend-in-graph, or use onnxruntime)"
            )
        if not bundle.engines:
            raise BackendUnavailable(
                f"{bundle.path}: the bundle has no TensorRT engines; build one with "
                f"`s2i-export build-engine {bundle.path}`"
            )
        trt = import_tensorrt()
        cuda = import_pycuda()
        gpu = detect_gpu(cuda, device_index)
        entry, reasons = select_engine(bundle.engines, gpu, trt.__version__, precision)
        if entry is None:
            raise BackendUnavailable(
                f"no engine in {bundle.path} fits {gpu.name} (compute capability {gpu.compute_capability}) with "
                f"TensorRT {trt.__version__}: {'; '.join(reasons)}; rebuild with `s2i-export build-engine`"
            )
        limits = engine_limits(entry, bundle)
        self.entry, self.gpu, self.trt_version = entry, gpu, trt.__version__
        self.max_batch = limits.max_batch
        self.frame_range = (limits.min_frames, limits.max_frames)
        self._cuda = cuda
        self._lock = threading.Lock()
        from ..cuda.context import PrimaryContext

        self._context = PrimaryContext(cuda, device_index)
        plans: dict[str, _Plan] = {}
        try:
            with self._context.active():
                self._logger = trt.Logger(trt.Logger.WARNING)
                try:
                    self._runtime = trt.Runtime(self._logger)
                except (TypeError, RuntimeError) as exc:  # CUDA init failure -> "factory function returned nullptr"
                    raise BackendUnavailable(f"TensorRT cannot initialise CUDA ({exc})") from None
                self._stream = cuda.Stream()
                for role in COMPONENTS:
                    plans[role] = _Plan(trt, cuda, self._runtime, bundle.file(entry["plans"][role]), role, bundle,
                                        self._stream)
        except BaseException:
            with self._context.active():
                for plan in plans.values():
                    plan.free()
                self._stream = self._runtime = None
            self._context.release()
            raise
        self._plans = plans
        self._frontend = None
        self._init_cuda_frontend(device_index)

    def _init_cuda_frontend(self, device_index: int) -> None:
        """Use the CUDA log-Mel kernels when they load here; the numpy front end stays the fallback."""
        try:
            from ..cuda.frontend_cuda import CudaLogMel

            # Sized once for the longest clip the model takes: one utterance at a time comes here.
            self._frontend = CudaLogMel(self.bundle.frontend, device_index,
                                        reserve=(1, self.bundle.frontend.max_frames))
        except Exception as exc:  # ImportError, BackendUnavailable, a driver refusing the PTX
            self.notes.append(f"CUDA front end not used ({type(exc).__name__}: {exc}); numpy front end")

    def logmel(self, audio: np.ndarray, spec) -> np.ndarray:
        if self._frontend is None or spec != self.bundle.frontend:
            return super().logmel(audio, spec)
        # CudaLogMel pushes the primary context and serialises its own calls; its buffers are reused.
        features, lengths = self._frontend.logmel_batch([audio])
        return np.ascontiguousarray(features[0][:, : int(lengths[0])], dtype=np.float32)

    def logmel_each(self, audios: list[np.ndarray], spec) -> list[np.ndarray]:
        if self._frontend is None or spec != self.bundle.frontend:
            return super().logmel_each(audios, spec)
        # The kernel's buffers are sized for one clip of the longest length: clips go through one by one.
        return [self.logmel(audio, spec) for audio in audios]

    # -- running -------------------------------------------------------------------------------------

    def _run(self, mel, lengths, rows_source, counts, z, eps, max_rows, want_embedding, timings=None):
        cuda, stream = self._cuda, self._stream
        enc = self._plans["encoder"]
        mel_name, len_name = ENCODER_INPUTS
        (emb_out,) = ENCODER_OUTPUTS
        with self._lock, self._context.active():
            if mel is not None:
                with _stage(timings, "encoder"):
                    enc.set_shapes({mel_name: mel.shape, len_name: lengths.shape})
                    enc.upload(cuda, mel_name, np.asarray(mel, dtype=np.float32), stream)
                    enc.upload(cuda, len_name, np.asarray(lengths, dtype=np.int64), stream)
                    enc.execute(stream)
                    if want_embedding:
                        embedding = enc.download(cuda, emb_out, (mel.shape[0], self.bundle.dims.embedding_dim),
                                                 stream)
                    stream.synchronize()
                if want_embedding:
                    return embedding.copy()  # the staging buffer is reused by the next call
            if z is None:
                return None
            with _stage(timings, "generator"):
                return self._generate_rows(rows_source, counts, z, eps, max_rows)

    def _generate_rows(self, rows_source, counts, z, eps, max_rows) -> np.ndarray:
        """Generator on all rows, in chunks of at most max_rows; called with the lock held and the context active.

        Rows are the caller's embeddings (`rows_source`) or the encoder's output rows repeated by `counts`.
        """
        cuda, stream, gen = self._cuda, self._stream, self._plans["generator"]
        emb_in, z_name, eps_name = GENERATOR_INPUTS
        (image_name,) = GENERATOR_OUTPUTS
        dims = self.bundle.dims
        total = z.shape[0]
        out = np.empty((total, 3, dims.image_size, dims.image_size), dtype=np.float32)
        chunk = min(max_rows, self.max_batch)
        for start in range(0, total, chunk):
            stop = min(total, start + chunk)
            rows = stop - start
            gen.set_shapes({emb_in: (rows, dims.embedding_dim), z_name: (rows, z.shape[1]),
                            eps_name: (rows, eps.shape[1])})
            if rows_source is not None:
                gen.upload(cuda, emb_in, np.asarray(rows_source[start:stop], dtype=np.float32), stream)
                gen.bind(emb_in, int(gen.buffers[emb_in]))
            else:
                gen.bind(emb_in, self._lay_out_rows(counts, start, stop))
            gen.upload(cuda, z_name, np.asarray(z[start:stop], dtype=np.float32), stream)
            gen.upload(cuda, eps_name, np.asarray(eps[start:stop], dtype=np.float32), stream)
            gen.execute(stream)
            images = gen.download(cuda, image_name, (rows, 3, dims.image_size, dims.image_size), stream)
            stream.synchronize()
            out[start:stop] = images
        return out

    def _lay_out_rows(self, counts, start: int, stop: int) -> int:
        """Device address of generator rows start..stop (encoder rows repeated by counts), 256-byte aligned.

        The encoder's output serves as it is when the chunk is one run of its rows starting at an aligned
        address; otherwise the rows are copied device-to-device into the generator's own input buffer (an
        offset into the encoder output is only 256-aligned when row * embedding bytes happens to be).
        """
        enc, gen = self._plans["encoder"], self._plans["generator"]
        row_bytes = self.bundle.dims.embedding_dim * 4
        source = int(enc.buffers[ENCODER_OUTPUTS[0]])
        runs = row_runs(counts, start, stop)
        if len(runs) == 1 and (source + runs[0][0] * row_bytes) % ALIGNMENT == 0:
            return source + runs[0][0] * row_bytes
        target = int(gen.buffers[GENERATOR_INPUTS[0]])
        for src, dst, n in runs:
            self._cuda.memcpy_dtod_async(target + dst * row_bytes, source + src * row_bytes, n * row_bytes,
                                         self._stream)
        return target

    def encode(self, mel: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        self._check_batch(mel.shape[0])
        return self._run(mel, lengths, None, None, None, None, self.max_batch, want_embedding=True)

    def generate(self, embedding: np.ndarray, z: np.ndarray, eps: np.ndarray) -> np.ndarray:
        self._check_batch(embedding.shape[0])
        return self._run(None, None, embedding, None, z, eps, self.max_batch, want_embedding=False)

    def encode_generate(self, mel, lengths, z, eps, counts, max_rows, timings=None) -> np.ndarray:
        self._check_batch(mel.shape[0])
        return self._run(mel, lengths, None, np.asarray(counts), z, eps, max_rows, want_embedding=False,
                         timings=timings)

    def _check_batch(self, batch: int) -> None:
        if batch > self.max_batch:
            raise InputError(f"batch of {batch} exceeds the engine's maximum batch {self.max_batch}")

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": self.device,
            "gpu": self.gpu.name,
            "compute_capability": self.gpu.compute_capability,
            "tensorrt": self.trt_version,
            "engine": self.entry.get("dir"),
            "precision": self.entry.get("precision"),
            "tf32": self.entry.get("tf32"),
            "max_batch": self.max_batch,
            "frame_range": list(self.frame_range),
            "cuda_frontend": self._frontend is not None,
            "notes": list(self.notes),
        }

    def close(self) -> None:
        if getattr(self, "_plans", None) is None:
            return
        with self._lock:
            if self._plans is None:
                return
            with self._context.active():
                for plan in self._plans.values():
                    plan.free()
                self._plans = None
                self._stream = self._runtime = None  # the stream is destroyed here, in its context
            self._context.release()
        if self._frontend is not None:
            self._frontend.close()
            self._frontend = None
