"""TensorRT engines for a bundle (`s2i-export build-engine`).

FP16 engines are built strongly typed from `encoder.fp16.onnx` / `generator.fp16.onnx` (from `s2i-export
fp16`) on TensorRT 10 and 11 alike (docs/gpu.md): TensorRT 11 removed BuilderFlag.FP16 and types every
network strongly; TensorRT 10 deprecated weak typing in 10.12 and takes `NetworkDefinitionCreationFlag.
STRONGLY_TYPED` (11 accepts and ignores it). Weak typing would let TensorRT 10 run in fp16 the nodes the fp16
ONNX keeps in float32 on purpose (a drawn background's read-out and its comparisons with z: an image drawn
near an interval's edge could flip), so it is not used. `plan_precision` is that choice as a pure function; the
builder only applies what it returns.

TF32: TensorRT enables BuilderFlag.TF32 by default, which lets float32 convolutions and matrix products
round their inputs to 10-bit mantissas; an "fp32" engine would then not be float32. It is cleared for
every build unless `--tf32` asks for it (for fp16 builds it governs the float32 islands of the fp16 ONNX),
and the record lists the flags the builder config really had, read back from it.

Timing cache: `set_timing_cache` returns False for a cache it cannot use (written on another GPU or
TensorRT release); the build then starts from an empty cache, which replaces the file afterwards.

Output: `engines/<gpu-slug>-trt<major.minor.patch>/{encoder,generator}.plan` and `engines.json` beside them;
the same record is appended (replacing one for the same directory) to the `engines` list of s2i.json.

Engine record (engines.json, and each entry of s2i.json "engines"); all paths relative to the bundle root:
    dir                 "engines/nvidia-h100-80gb-hbm3-trt10.13.0"
    plans               {"encoder": "<dir>/encoder.plan", "generator": "<dir>/generator.plan"}
    trt_version         "10.13.0.35" (tensorrt.__version__); trt_major 10
    gpu                 device name as CUDA reports it, e.g. "NVIDIA H100 80GB HBM3"
    compute_capability  "9.0" (engines only run on this compute capability and this TensorRT version)
    precision           "fp32" | "fp16"
    onnx_sources        {"encoder": "encoder.onnx" | "encoder.fp16.onnx", "generator": ...}
    builder_flags       names of tensorrt.BuilderFlag the builder config had set for the build, read back from
                        it ([] unless --tf32, which gives ["TF32"]); tf32 true | false
    network_flags       names of tensorrt.NetworkDefinitionCreationFlag set: ["STRONGLY_TYPED"] for fp16, else []
    io_dtype            "float32": every engine input/output keeps the ONNX float32 (lengths int64)
    profiles            {"encoder": {"mel": {"min": [1, 40, 64], "opt": [4, 40, 400], "max": [8, 40, 3000]},
                                     "lengths": {"min": [1], "opt": [4], "max": [8]}},
                         "generator": {"embedding": {...}, "z": {...}, "eps": {...}}}
                        one optimisation profile (index 0) per engine; min/opt/max per input
    max_batch, max_seconds, max_frames, workspace_gb   (max_frames: the frames of a clip of exactly
                        max_seconds, 1 + seconds x 100, capped at the model's max_frames)
    build_seconds       {"encoder": s, "generator": s}; built_at (UTC ISO 8601)
    timing_cache        path of the timing cache used, or null; timing_cache_status "reused", "new",
                        "replaced" (the file's cache did not fit this GPU / TensorRT) or "none"
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s2i_runtime.bundle import (
    ENCODER_FILE,
    ENCODER_FP16_FILE,
    ENCODER_INPUTS,
    GENERATOR_FILE,
    GENERATOR_FP16_FILE,
    GENERATOR_INPUTS,
    Bundle,
    ModelDims,
    load_bundle,
    write_manifest,
)
from s2i_runtime.errors import BackendUnavailable, BundleError, InputError, S2IError
from s2i_runtime.frontend import FrontendSpec
from s2i_runtime.fsutil import atomic_write_bytes, atomic_write_text

from .encoder_input import require_logmel_encoder

MIN_TRT_MAJOR = 10
ENGINES_DIR = "engines"
ENGINES_JSON = "engines.json"
COMPONENTS = ("encoder", "generator")
# A typical spoken caption is 2-5 s; TensorRT tunes its kernels for the opt shape.
TYPICAL_FRAMES = 400

INSTALL_HINT = (
    "install the gpu extra (pip install 's2i[gpu]') and TensorRT from NVIDIA's package index "
    "(pip install tensorrt with that index configured, as NVIDIA's install guide shows), "
    "on a machine with an NVIDIA GPU and driver"
)


@dataclasses.dataclass(frozen=True)
class PrecisionPlan:
    """Which ONNX files to parse and which flags to set, for one TensorRT major version."""

    precision: str  # "fp32" | "fp16"
    onnx_files: dict[str, str]  # component -> bundle file name
    builder_flags: tuple[str, ...]  # names of tensorrt.BuilderFlag members to set
    network_flags: tuple[str, ...] = ()  # names of tensorrt.NetworkDefinitionCreationFlag members
    cleared_flags: tuple[str, ...] = ("TF32",)  # BuilderFlag members to clear (TF32 is on by default)


def plan_precision(trt_major: int, fp16: bool, tf32: bool = False) -> PrecisionPlan:
    """The TensorRT 10 / 11 switch and the TF32 choice (see the module docstring)."""
    if trt_major < MIN_TRT_MAJOR:
        raise BackendUnavailable(
            f"TensorRT {trt_major} is too old: s2i needs TensorRT {MIN_TRT_MAJOR} or newer ({INSTALL_HINT})"
        )
    fp32_files = {"encoder": ENCODER_FILE, "generator": GENERATOR_FILE}
    flags, cleared = (("TF32",), ()) if tf32 else ((), ("TF32",))
    if not fp16:
        return PrecisionPlan("fp32", fp32_files, flags, (), cleared)
    # Strongly typed: the fp16 ONNX carries the precision, its float32 islands included.
    return PrecisionPlan("fp16", {"encoder": ENCODER_FP16_FILE, "generator": GENERATOR_FP16_FILE}, flags,
                         ("STRONGLY_TYPED",), cleared)


@dataclasses.dataclass(frozen=True)
class ShapeRange:
    """One input's optimisation-profile shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def batch_range(max_batch: int) -> tuple[int, int, int]:
    """(min, opt, max) batch: opt is the middle, where serving with a few requests in flight spends its time."""
    if max_batch < 1:
        raise InputError(f"--max-batch must be at least 1 (got {max_batch})")
    return 1, max(1, (max_batch + 1) // 2), max_batch


def max_frames_for(max_seconds: float, spec: FrontendSpec) -> int:
    """Frames of a clip of exactly `max_seconds`, as the front end counts them (a centred clip of N s has
    N x 100 + 1 frames at the 10 ms hop), capped at the model's max_frames, which no input may pass anyway."""
    if not max_seconds > 0:
        raise InputError(f"--max-seconds must be positive (got {max_seconds})")
    frames = min(spec.num_frames(int(round(max_seconds * spec.sample_rate))), spec.max_frames)
    if frames < spec.min_frames:
        raise InputError(
            f"--max-seconds {max_seconds} gives {frames} frames, fewer than the model's minimum {spec.min_frames}"
        )
    return frames


def encoder_profile(max_batch: int, max_seconds: float, spec: FrontendSpec) -> dict[str, ShapeRange]:
    b_min, b_opt, b_max = batch_range(max_batch)
    t_max = max_frames_for(max_seconds, spec)
    t_opt = min(max(TYPICAL_FRAMES, spec.min_frames), t_max)
    mel, lengths = ENCODER_INPUTS
    return {
        mel: ShapeRange(
            (b_min, spec.n_mels, spec.min_frames), (b_opt, spec.n_mels, t_opt), (b_max, spec.n_mels, t_max)
        ),
        lengths: ShapeRange((b_min,), (b_opt,), (b_max,)),
    }


def generator_profile(max_batch: int, dims: ModelDims) -> dict[str, ShapeRange]:
    b_min, b_opt, b_max = batch_range(max_batch)
    widths = dict(zip(GENERATOR_INPUTS, (dims.embedding_dim, dims.z_dim, dims.ca_dim), strict=True))
    return {name: ShapeRange((b_min, w), (b_opt, w), (b_max, w)) for name, w in widths.items()}


def slugify(name: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'nvidia-geforce-rtx-4090' (safe as a directory name)."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown-gpu"


def short_version(trt_version: str) -> str:
    """'10.13.0.35' -> '10.13.0' (engines are tied to the release; the build number does not matter)."""
    parts = trt_version.split(".")
    return ".".join(parts[:3])


def trt_major_of(trt_version: str) -> int:
    try:
        return int(trt_version.split(".")[0])
    except ValueError:
        raise BackendUnavailable(f"cannot read the TensorRT version {trt_version!r}") from None


def engine_dir(gpu_name: str, trt_version: str) -> str:
    """Bundle-relative directory of one (GPU, TensorRT version) engine pair."""
    return f"{ENGINES_DIR}/{slugify(gpu_name)}-trt{short_version(trt_version)}"


@dataclasses.dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.6"


def parse_nvidia_smi(text: str, index: int = 0) -> GpuInfo | None:
    """Parse `nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader` output."""
    rows = [line.strip() for line in text.splitlines() if line.strip()]
    if index >= len(rows):
        return None
    name, _, capability = rows[index].rpartition(",")
    name, capability = name.strip(), capability.strip()
    if not name or not re.fullmatch(r"\d+\.\d+", capability):
        return None
    return GpuInfo(name, capability)


def _gpu_from_torch() -> GpuInfo | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return GpuInfo(torch.cuda.get_device_name(0), f"{major}.{minor}")


def _gpu_from_nvidia_smi() -> GpuInfo | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    # CUDA (and so TensorRT) numbers devices after CUDA_VISIBLE_DEVICES; nvidia-smi does not.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return parse_nvidia_smi(out, int(visible) if visible.isdigit() else 0)


def detect_gpu() -> GpuInfo | None:
    """The CUDA device TensorRT builds for (device 0), or None when there is none."""
    return _gpu_from_torch() or _gpu_from_nvidia_smi()


def import_tensorrt() -> Any | None:
    try:
        import tensorrt
    except (ImportError, OSError):
        return None
    return tensorrt


def check_prerequisites(
    importer: Callable[[], Any | None] = import_tensorrt, gpu_probe: Callable[[], GpuInfo | None] = detect_gpu
) -> tuple[Any, GpuInfo]:
    """TensorRT module and GPU, or BackendUnavailable saying what is missing and how to install it."""
    trt = importer()
    gpu = gpu_probe()
    missing = []
    if trt is None:
        missing.append("TensorRT is not installed (the Python package 'tensorrt' cannot be imported)")
    if gpu is None:
        missing.append("no CUDA GPU is visible (no device from torch.cuda or nvidia-smi)")
    if missing:
        raise BackendUnavailable(f"cannot build TensorRT engines: {'; '.join(missing)}; {INSTALL_HINT}")
    return trt, gpu


@dataclasses.dataclass(frozen=True)
class EngineRequest:
    fp16: bool = False
    max_batch: int = 8
    max_seconds: float = 30.0
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    tf32: bool = False

    def validate(self) -> None:
        batch_range(self.max_batch)
        if not self.workspace_gb > 0:
            raise InputError(f"--workspace-gb must be positive (got {self.workspace_gb})")
        if self.timing_cache is not None and self.timing_cache.is_dir():
            raise InputError(f"--timing-cache {self.timing_cache} is a directory, expected a file")


def engine_profiles(bundle: Bundle, request: EngineRequest) -> dict[str, dict[str, ShapeRange]]:
    return {
        "encoder": encoder_profile(request.max_batch, request.max_seconds, bundle.frontend),
        "generator": generator_profile(request.max_batch, bundle.dims),
    }


def engine_record(
    *,
    bundle: Bundle,
    request: EngineRequest,
    plan: PrecisionPlan,
    profiles: dict[str, dict[str, ShapeRange]],
    trt_version: str,
    gpu: GpuInfo,
    build_seconds: dict[str, float],
    built_at: str,
    builder_flags: list[str] | None = None,
    timing_cache_status: str = "none",
) -> dict[str, Any]:
    """The engines.json record (fields in the module docstring). `builder_flags` are the flags read back
    from the builder config (default: the ones the plan sets)."""
    directory = engine_dir(gpu.name, trt_version)
    return {
        "dir": directory,
        "plans": {c: f"{directory}/{c}.plan" for c in COMPONENTS},
        "trt_version": trt_version,
        "trt_major": trt_major_of(trt_version),
        "gpu": gpu.name,
        "compute_capability": gpu.compute_capability,
        "precision": plan.precision,
        "onnx_sources": dict(plan.onnx_files),
        "builder_flags": sorted(plan.builder_flags if builder_flags is None else builder_flags),
        "tf32": "TF32" in (plan.builder_flags if builder_flags is None else builder_flags),
        "network_flags": list(plan.network_flags),
        "io_dtype": "float32",
        "profiles": {c: {name: r.to_dict() for name, r in p.items()} for c, p in profiles.items()},
        "max_batch": request.max_batch,
        "max_seconds": request.max_seconds,
        "max_frames": max_frames_for(request.max_seconds, bundle.frontend),
        "workspace_gb": request.workspace_gb,
        "build_seconds": {c: round(s, 3) for c, s in build_seconds.items()},
        "built_at": built_at,
        "timing_cache": str(request.timing_cache) if request.timing_cache is not None else None,
        "timing_cache_status": timing_cache_status,
    }


def merge_engine_entry(manifest: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """s2i.json with `record` in its engines list, replacing an older build in the same directory."""
    updated = dict(manifest)
    kept = [e for e in manifest.get("engines", []) if e.get("dir") != record["dir"]]
    updated["engines"] = [*kept, record]
    return updated


def require_onnx_files(bundle: Bundle, plan: PrecisionPlan) -> dict[str, Path]:
    paths = {c: bundle.file(name) for c, name in plan.onnx_files.items()}
    absent = [name for c, name in plan.onnx_files.items() if not paths[c].is_file()]
    if absent:
        hint = " (run `s2i-export fp16 BUNDLE` first: TensorRT builds FP16 from the FP16 ONNX)" if any(
            ".fp16." in a for a in absent
        ) else ""
        raise BundleError(f"{bundle.path}: missing {', '.join(absent)}{hint}")
    return paths


class _TrtBuilder:
    """The real TensorRT calls (TensorRT 10/11 Python API); only runs with TensorRT and a GPU."""

    def __init__(self, trt: Any, workspace_bytes: int, cache_bytes: bytes,
                 progress: Callable[[str], None] = lambda _msg: None) -> None:
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        try:
            self.builder = trt.Builder(self.logger)
        except (TypeError, RuntimeError) as exc:  # "CUDA initialization failure" -> nullptr factory
            raise BackendUnavailable(f"TensorRT cannot initialise CUDA ({exc}); {INSTALL_HINT}") from None
        self.workspace_bytes = workspace_bytes
        self.cache_bytes = cache_bytes
        self.cache_status = "reused" if cache_bytes else "new"
        self.progress = progress
        self.flags_used: list[str] = []

    def _attach_timing_cache(self, config: Any) -> Any | None:
        """The cache attached to `config` (keep it alive until the build ends), or None without one."""
        cache = config.create_timing_cache(self.cache_bytes)
        # ignore_mismatch=False: a cache from another device or version is refused, not combined.
        if cache is not None and config.set_timing_cache(cache, False):
            return cache
        if self.cache_bytes:
            self.progress("the timing cache does not fit this GPU / TensorRT release; building with a new one")
            self.cache_bytes, self.cache_status = b"", "replaced"
            cache = config.create_timing_cache(b"")
            if cache is not None and config.set_timing_cache(cache, False):
                return cache
        self.progress("TensorRT refused an empty timing cache; building without one")
        self.cache_status = "none"
        return None

    def build(self, onnx_path: Path, profile: dict[str, ShapeRange], plan: PrecisionPlan) -> bytes:
        trt = self.trt
        # Explicit batch is the only mode since TensorRT 10, so it needs no flag.
        creation = 0
        for name in plan.network_flags:
            creation |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        network = self.builder.create_network(creation)
        parser = trt.OnnxParser(network, self.logger)
        # parse_from_file resolves external weight files next to the ONNX file.
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise S2IError(f"TensorRT could not parse {onnx_path.name}: {errors}")
        config = self.builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        for flag in plan.cleared_flags:
            config.clear_flag(getattr(trt.BuilderFlag, flag))
        for flag in plan.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        self.flags_used = enabled_flags(trt, config)
        cache = self._attach_timing_cache(config)
        optimisation = self.builder.create_optimization_profile()
        for i in range(network.num_inputs):
            name = network.get_input(i).name
            if name not in profile:
                raise S2IError(f"{onnx_path.name}: input {name!r} has no optimisation profile")
            shapes = profile[name]
            optimisation.set_shape(name, shapes.min, shapes.opt, shapes.max)
        config.add_optimization_profile(optimisation)
        serialized = self.builder.build_serialized_network(network, config)
        if serialized is None:
            raise S2IError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
        if cache is not None:
            built = config.get_timing_cache()
            if built is not None:
                self.cache_bytes = bytes(built.serialize())
        return bytes(serialized)


def enabled_flags(trt: Any, config: Any) -> list[str]:
    """Names of the BuilderFlag members set on `config`: what the build really uses."""
    with warnings.catch_warnings():  # reading a deprecated member's state is not using it
        warnings.simplefilter("ignore", DeprecationWarning)
        return sorted(name for name, flag in trt.BuilderFlag.__members__.items() if config.get_flag(flag))


def build_engines(
    bundle_path: str | Path,
    request: EngineRequest,
    *,
    importer: Callable[[], Any | None] = import_tensorrt,
    gpu_probe: Callable[[], GpuInfo | None] = detect_gpu,
    progress: Callable[[str], None] = lambda _msg: None,
) -> dict[str, Any]:
    """Build the encoder and generator engines into the bundle; returns the engines.json record."""
    request.validate()
    bundle = load_bundle(bundle_path)
    require_logmel_encoder(bundle, "build-engine")
    profiles = engine_profiles(bundle, request)
    trt, gpu = check_prerequisites(importer, gpu_probe)
    trt_version = str(trt.__version__)
    plan = plan_precision(trt_major_of(trt_version), request.fp16, request.tf32)
    onnx_paths = require_onnx_files(bundle, plan)

    cache_bytes = b""
    if request.timing_cache is not None and request.timing_cache.is_file():
        cache_bytes = request.timing_cache.read_bytes()
    builder = _TrtBuilder(trt, int(request.workspace_gb * (1 << 30)), cache_bytes, progress)
    plans: dict[str, bytes] = {}
    seconds: dict[str, float] = {}
    for component in COMPONENTS:
        progress(f"building {component} ({plan.precision}, TensorRT {trt_version}, {gpu.name})")
        start = time.perf_counter()
        plans[component] = builder.build(onnx_paths[component], profiles[component], plan)
        seconds[component] = time.perf_counter() - start

    record = engine_record(
        bundle=bundle, request=request, plan=plan, profiles=profiles, trt_version=trt_version, gpu=gpu,
        build_seconds=seconds, built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        builder_flags=builder.flags_used,
        timing_cache_status=builder.cache_status if request.timing_cache is not None else "none",
    )
    write_engine_files(bundle, record, plans)
    if request.timing_cache is not None and builder.cache_bytes:
        atomic_write_bytes(request.timing_cache, builder.cache_bytes)
    return record


def write_engine_files(bundle: Bundle, record: dict[str, Any], plans: dict[str, bytes]) -> None:
    """Plans and engines.json into the engine directory, then s2i.json with the new hashes."""
    for component, relpath in record["plans"].items():
        atomic_write_bytes(bundle.path / relpath, plans[component])
    atomic_write_text(bundle.path / record["dir"] / ENGINES_JSON, json.dumps(record, indent=2) + "\n")
    write_manifest(bundle.path, merge_engine_entry(bundle.manifest, record))
