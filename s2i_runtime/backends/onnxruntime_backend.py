"""ONNX Runtime backend: CPU or CUDA execution provider, checked after the session exists.

onnxruntime-gpu silently falls back to the CPU when CUDA or cuDNN cannot load; `device="cuda"` turns
that into an error, `device="auto"` accepts it and says so in `describe()`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..bundle import (
    ENCODER_FILE,
    ENCODER_FP16_FILE,
    ENCODER_OUTPUTS,
    GENERATOR_FILE,
    GENERATOR_FP16_FILE,
    GENERATOR_INPUTS,
    GENERATOR_INT8_FILE,
    GENERATOR_OUTPUTS,
    Bundle,
)
from ..errors import BackendUnavailable, BundleError, InputError
from ..graph_cache import cached_session
from .base import INT8_CPU_ONLY, Backend, check_tensors, expected_signature

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            f"onnxruntime is not installed ({exc}); install 's2i[cpu]' or 's2i[gpu]'"
        ) from None
    return onnxruntime


def available_providers() -> list[str]:
    return list(import_onnxruntime().get_available_providers())


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, bundle: Bundle, device: str = "auto", threads: int = 0, precision: str = "fp32") -> None:
        ort = import_onnxruntime()
        self.notes = []
        self.bundle = bundle
        self.precision = precision
        available = list(ort.get_available_providers())
        if precision == "int8" and device == "cuda":
            raise InputError(f"{INT8_CPU_ONLY}; use --device cpu or auto")
        if device == "cuda" and CUDA not in available:
            raise BackendUnavailable(
                f"device cuda requested, but onnxruntime {ort.__version__} here has no CUDA provider "
                f"(available: {', '.join(available)}); install 's2i[gpu]' (onnxruntime-gpu) or use --device cpu"
            )
        want_cuda = device in ("cuda", "auto") and CUDA in available and precision != "int8"
        providers = [CUDA, CPU] if want_cuda else [CPU]

        def make_options():
            options = ort.SessionOptions()
            options.intra_op_num_threads = max(0, int(threads))
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3  # errors only: a CUDA fallback is reported by us, once
            # Idle intra-op threads sleep instead of spinning: the encoder's and the generator's pools and the
            # front end's threads take turns on the same cores, and a pool spinning after its session finished
            # slows whichever runs next (docs/performance.md, "What changed (2026-12-06)").
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return options

        encoder_file, generator_file = ENCODER_FILE, GENERATOR_FILE
        if precision == "fp16":
            encoder_file, generator_file = ENCODER_FP16_FILE, GENERATOR_FP16_FILE
            for name in (encoder_file, generator_file):
                if not bundle.file(name).is_file():
                    raise BundleError(f"{bundle.path}: no {name}; make it with `s2i-export fp16 {bundle.path}`")
        elif precision == "int8":
            generator_file = GENERATOR_INT8_FILE
            # Only a hashed one: a stray file that s2i.json does not vouch for is not loaded.
            if generator_file not in bundle.manifest.get("files", {}) or not bundle.file(generator_file).is_file():
                raise BundleError(
                    f"{bundle.path}: no {generator_file}; make it with `s2i-export int8 {bundle.path}`"
                )
        self.graph_cache: dict[str, str] = {}
        self.encoder = self._session(ort, bundle, encoder_file, make_options, providers)
        self.generator = self._session(ort, bundle, generator_file, make_options, providers)

        active = self.encoder.get_providers()
        self.device = "cuda" if active and active[0] == CUDA else "cpu"
        if want_cuda and self.device != "cuda":
            reason = (
                "the CUDA provider is installed but failed to initialise, so onnxruntime fell back to the CPU "
                "(onnxruntime-gpu needs a matching CUDA and cuDNN)"
            )
            if device == "cuda":
                raise BackendUnavailable(f"device cuda requested: {reason}")
            self.notes.append(reason)
        elif device == "auto" and precision == "int8":
            self.notes.append(f"{INT8_CPU_ONLY}: running on the CPU")
        elif device == "auto" and not want_cuda:
            self.notes.append("no CUDA provider in this onnxruntime build: running on the CPU")
        self.providers = active

        signature = expected_signature(bundle)
        self._input_types = {}
        for role, session, path in (
            ("encoder", self.encoder, bundle.file(encoder_file)),
            ("generator", self.generator, bundle.file(generator_file)),
        ):
            inputs = {a.name: (_ORT_TYPES.get(a.type, a.type), tuple(a.shape)) for a in session.get_inputs()}
            outputs = {a.name: (_ORT_TYPES.get(a.type, a.type), tuple(a.shape)) for a in session.get_outputs()}
            check_tensors(str(path), "inputs", inputs, signature[role][0])
            check_tensors(str(path), "outputs", outputs, signature[role][1])
            self._input_types[role] = {name: np.dtype(t) for name, (t, _) in inputs.items()}

    def _session(self, ort, bundle: Bundle, name: str, make_options, providers):
        path = bundle.file(name)
        digest = bundle.manifest.get("files", {}).get(name)
        try:
            if providers == [CPU] and digest:
                # Only the CPU provider's optimised graph is cached: CUDA's depends on the GPU as well.
                session, self.graph_cache[name] = cached_session(ort, path, digest, make_options, providers)
                return session
            return ort.InferenceSession(os.fspath(path), sess_options=make_options(), providers=providers)
        except Exception as exc:  # onnxruntime raises its own types (Fail, InvalidGraph, ...)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{path}: onnxruntime cannot load this graph ({first})") from None

    def _feed(self, role: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        types = self._input_types[role]
        return {name: np.ascontiguousarray(a, dtype=types[name]) for name, a in arrays.items()}

    def encode(self, mel: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        signal_name, lengths_name = self.bundle.encoder_inputs
        feed = self._feed("encoder", {signal_name: mel, lengths_name: lengths})
        (embedding,) = self.encoder.run(list(ENCODER_OUTPUTS), feed)
        return np.asarray(embedding, dtype=np.float32)

    def generate(self, embedding: np.ndarray, z: np.ndarray, eps: np.ndarray) -> np.ndarray:
        emb_name, z_name, eps_name = GENERATOR_INPUTS
        feed = self._feed("generator", {emb_name: embedding, z_name: z, eps_name: eps})
        (images,) = self.generator.run(list(GENERATOR_OUTPUTS), feed)
        return np.asarray(images, dtype=np.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": self.device,
            "providers": list(self.providers),
            "precision": self.precision,
            "graph_cache": dict(self.graph_cache),
            "notes": list(self.notes),
        }

    def close(self) -> None:
        self.encoder = self.generator = None
