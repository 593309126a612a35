"""The backend interface, the I/O signature every graph or engine must have, and backend selection."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import numpy as np

from ..bundle import ENCODER_OUTPUTS, GENERATOR_INPUTS, GENERATOR_OUTPUTS, WAVEFORM_INPUT, Bundle
from ..errors import BackendUnavailable, BundleError, InputError
from ..frontend import FrontendSpec, logmel, logmel_each

BACKEND_NAMES = ("auto", "onnxruntime", "tensorrt")
DEVICE_NAMES = ("auto", "cpu", "cuda")

DYNAMIC = "dynamic"  # a dimension that must not be fixed in the graph (batch, time)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # "float32" or "int64"; float graphs may also declare float16 (then the backend casts)
    shape: tuple[Any, ...]  # per axis: DYNAMIC, an int it must equal when fixed, or None for anything


def expected_signature(bundle: Bundle) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
    """What s2i.json promises about each graph: {graph: (inputs, outputs)} in the contract's order."""
    d = bundle.dims
    n_mels = bundle.frontend.n_mels
    size = d.image_size
    signal, lengths = bundle.encoder_inputs
    # Log-Mel features (B, n_mels, T), or samples (B, N) when the front end is inside the graph.
    signal_shape = (DYNAMIC, DYNAMIC) if bundle.encoder_input == WAVEFORM_INPUT else (DYNAMIC, n_mels, DYNAMIC)
    (embedding_out,) = ENCODER_OUTPUTS
    emb_in, z, eps = GENERATOR_INPUTS
    (image,) = GENERATOR_OUTPUTS
    return {
        "encoder": (
            [TensorSpec(signal, "float32", signal_shape), TensorSpec(lengths, "int64", (DYNAMIC,))],
            [TensorSpec(embedding_out, "float32", (DYNAMIC, d.embedding_dim))],
        ),
        "generator": (
            [
                TensorSpec(emb_in, "float32", (DYNAMIC, d.embedding_dim)),
                TensorSpec(z, "float32", (DYNAMIC, d.z_dim)),
                TensorSpec(eps, "float32", (DYNAMIC, d.ca_dim)),
            ],
            [TensorSpec(image, "float32", (DYNAMIC, 3, size, size))],
        ),
    }


def _is_fixed(dim: Any) -> bool:
    return isinstance(dim, (int, np.integer)) and int(dim) >= 0


def check_tensors(where: str, role: str, actual: dict[str, tuple[str, tuple[Any, ...]]],
                  expected: list[TensorSpec]) -> None:
    """Compare a graph's tensors {name: (dtype, shape)} with the contract; BundleError on any mismatch.

    A shape entry in `actual` is an int when fixed, and a string, None or -1 when dynamic.
    """
    want = [spec.name for spec in expected]
    if sorted(actual) != sorted(want):
        raise BundleError(f"{where}: {role} are {sorted(actual)}, expected {want}")
    for spec in expected:
        dtype, shape = actual[spec.name]
        allowed = {spec.dtype, "float16"} if spec.dtype == "float32" else {spec.dtype}
        if dtype not in allowed:
            raise BundleError(f"{where}: {role[:-1]} '{spec.name}' has type {dtype}, expected {spec.dtype}")
        if len(shape) != len(spec.shape):
            raise BundleError(
                f"{where}: {role[:-1]} '{spec.name}' has rank {len(shape)}, expected {len(spec.shape)} "
                f"({_show(spec.shape)})"
            )
        for axis, (got, rule) in enumerate(zip(shape, spec.shape, strict=True)):
            if rule == DYNAMIC and _is_fixed(got):
                raise BundleError(
                    f"{where}: {role[:-1]} '{spec.name}' axis {axis} is fixed at {got}; it must be dynamic "
                    f"({_show(spec.shape)})"
                )
            if isinstance(rule, int) and _is_fixed(got) and int(got) != rule:
                raise BundleError(
                    f"{where}: {role[:-1]} '{spec.name}' axis {axis} is {got}, but s2i.json says {rule} "
                    f"({_show(spec.shape)})"
                )


def _show(shape: tuple[Any, ...]) -> str:
    return "(" + ", ".join("N" if s == DYNAMIC else str(s) for s in shape) + ")"


class Backend(abc.ABC):
    """Runs the encoder and the generator. Implementations must allow concurrent calls from threads."""

    name: str = "?"
    device: str = "?"
    #: why the backend is what it is (fallbacks taken); shown by `info` and `--json`
    notes: list[str]

    #: largest batch the backend accepts (an engine's profile), or None for no limit
    max_batch: int | None = None
    #: (min, max) frames an encoder batch may have (an engine's profile), or None for no limit
    frame_range: tuple[int, int] | None = None

    @abc.abstractmethod
    def encode(self, mel: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """mel (B, n_mels, T) float32, lengths (B,) int64 frames -> embedding (B, D) float32 on the host.

        For a bundle whose encoder holds the front end: waveform (B, N) float32, lengths (B,) int64 samples."""

    @abc.abstractmethod
    def generate(self, embedding: np.ndarray, z: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """(B, D), (B, z_dim), (B, ca_dim) float32 -> images (B, 3, H, W) float32 in [-1, 1]."""

    def encode_generate(self, mel: np.ndarray, lengths: np.ndarray, z: np.ndarray, eps: np.ndarray,
                        counts: np.ndarray, max_rows: int, timings: Any = None) -> np.ndarray:
        """Encode B utterances and draw counts[i] images of utterance i with the given noise rows.

        z/eps hold sum(counts) rows, utterance by utterance. The generator runs in chunks of at most
        `max_rows`. Backends that can keep the embedding on the device override this.
        """
        with _stage(timings, "encoder"):
            embedding = self.encode(mel, lengths)
        rows = np.repeat(embedding, counts, axis=0)
        with _stage(timings, "generator"):
            chunks = [
                self.generate(rows[s : s + max_rows], z[s : s + max_rows], eps[s : s + max_rows])
                for s in range(0, rows.shape[0], max_rows)
            ]
        return np.concatenate(chunks, axis=0)

    def logmel(self, audio: np.ndarray, spec: FrontendSpec) -> np.ndarray:
        """Log-Mel features (n_mels, frames) of one utterance; a GPU backend may use its own kernel."""
        return logmel(audio, spec)

    def logmel_each(self, audios: list[np.ndarray], spec: FrontendSpec) -> list[np.ndarray]:
        """Log-Mel features of each utterance, the same as logmel's, computed together on the CPU's cores."""
        return logmel_each(audios, spec)

    def check_frames(self, frames: int, label: str) -> None:
        if self.frame_range is not None and frames > self.frame_range[1]:
            raise InputError(
                f"{label}: {frames} frames is longer than this {self.name} engine accepts "
                f"({self.frame_range[1]} frames); rebuild the engine with a larger --max-seconds"
            )

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What is really running: backend, device, providers or engine; for `info` and `--json`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions, engines and device memory."""


class _NoStage:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _stage(timings: Any, name: str):
    return timings.measure(name) if timings is not None else _NoStage()


PRECISIONS = ("auto", "fp32", "fp16", "int8")
# The INT8 generator runs on ONNX Runtime's CPU provider only: that is what `s2i-export int8` checked it on, and
# no INT8 TensorRT engines are built.
INT8_CPU_ONLY = ("precision int8 runs on the CPU only (`s2i-export int8` checked the INT8 generator on ONNX "
                 "Runtime's CPU provider)")


def open_backend(bundle: Bundle, backend: str = "auto", device: str = "auto", *, threads: int = 0,
                 precision: str = "auto") -> Backend:
    """Open the requested backend. `auto`: TensorRT when an engine for this GPU exists and TensorRT and CUDA
    start, else ONNX Runtime on CUDA, else ONNX Runtime on the CPU.

    `precision` binds every backend: "fp32" / "fp16" engines or graphs only; "auto" lets TensorRT take its
    best engine (fp16 first) and ONNX Runtime the fp32 graphs. "int8" (the fp32 encoder and the INT8
    generator) is ONNX Runtime on the CPU only.
    """
    if backend not in BACKEND_NAMES:
        raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if device not in DEVICE_NAMES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_NAMES)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend == "tensorrt":
        if device == "cpu":
            raise InputError("the tensorrt backend runs on CUDA only; use --device cuda or auto")
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(bundle, precision=precision)
    notes = []
    if backend == "auto" and device != "cpu":
        if precision == "int8":
            notes.append("tensorrt not used: no INT8 engines (precision int8 runs on ONNX Runtime's CPU provider)")
        elif bundle.engines:
            opened, reason = _try_tensorrt(bundle, precision)
            if opened is not None:
                return opened
            notes.append(f"tensorrt not used: {reason}")
        else:
            notes.append("tensorrt not used: the bundle has no TensorRT engines")
    from .onnxruntime_backend import OnnxRuntimeBackend

    chosen = OnnxRuntimeBackend(bundle, device=device, threads=threads,
                                precision="fp32" if precision == "auto" else precision)
    chosen.notes[:0] = notes
    return chosen


def _try_tensorrt(bundle: Bundle, precision: str) -> tuple[Backend | None, str]:
    """(the TensorRT backend, "") or (None, why it cannot run here), for `auto` to fall back with."""
    from .tensorrt_backend import TensorRTBackend

    try:
        return TensorRTBackend(bundle, precision=precision), ""
    except BackendUnavailable as exc:  # no engine for this GPU, no tensorrt/pycuda, CUDA failing to start
        return None, str(exc)
    except (BundleError, InputError):
        raise  # a broken engine record is the bundle's fault: say so rather than hide it
    except Exception as exc:  # CUDA or TensorRT failing in a way they do not announce as unavailability
        return None, f"{type(exc).__name__}: {exc}"
