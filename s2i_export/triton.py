"""A Triton Inference Server model repository from a bundle (`s2i-export triton`).

Layout written (model names are stable; clients address them):
    REPO/s2i_encoder/config.pbtxt + 1/model.onnx  (or 1/model.plan, or 1/model_sm<cc>.plan per GPU)
    REPO/s2i_generator/config.pbtxt + 1/...
    REPO/s2i/config.pbtxt + 1/                    the ensemble: features + noise -> image (and embedding)
    REPO/README.md, REPO/s2i.json                  how to call it; the bundle manifest (front end, dims)
Triton only looks at the directories; the two files at the root are for people and clients.

An ensemble cannot draw random numbers, so z and eps are ensemble inputs: clients draw them (as the runtime
does, `s2i_runtime.noise.draw_noise`) and the same noise gives the same image as `s2i-run`.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from s2i_runtime.bundle import (
    ENCODER_FILE,
    ENCODER_FP16_FILE,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    GENERATOR_FILE,
    GENERATOR_FP16_FILE,
    GENERATOR_INPUTS,
    GENERATOR_OUTPUTS,
    MANIFEST,
    Bundle,
    load_bundle,
)
from s2i_runtime.errors import BundleError, InputError
from s2i_runtime.fsutil import atomic_write_text

from .dirs import staged_dir
from .encoder_input import require_logmel_encoder

ENCODER_MODEL = "s2i_encoder"
GENERATOR_MODEL = "s2i_generator"
ENSEMBLE_MODEL = "s2i"
BACKENDS = ("onnxruntime", "tensorrt")
MAX_QUEUE_DELAY_US = 1000  # 1 ms of waiting buys batches; tiny next to an image's generation time


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton DataType name, e.g. TYPE_FP32
    dims: tuple[int, ...]  # without the batch dimension
    reshape: tuple[int, ...] | None = None  # the model's own shape, when it differs from dims

    def to_pbtxt(self, indent: str) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        lines = [f'{indent}{{', f'{indent}  name: "{self.name}"', f"{indent}  data_type: {self.data_type}",
                 f"{indent}  dims: [ {dims} ]"]
        if self.reshape is not None:
            shape = "".join(f" {d}," for d in self.reshape).rstrip(",")
            lines.append(f"{indent}  reshape: {{ shape: [{shape} ] }}")
        lines.append(f"{indent}}}")
        return "\n".join(lines)


def _tensor_block(field: str, tensors: list[TensorSpec]) -> str:
    return f"{field} [\n" + ",\n".join(t.to_pbtxt("  ") for t in tensors) + "\n]"


def encoder_tensors(bundle: Bundle) -> tuple[list[TensorSpec], list[TensorSpec]]:
    mel, lengths = ENCODER_INPUTS
    (embedding,) = ENCODER_OUTPUTS
    inputs = [
        TensorSpec(mel, "TYPE_FP32", (bundle.frontend.n_mels, -1)),
        # The model's lengths is (B,): Triton needs a non-empty dims, so [1] reshaped to a scalar per item.
        TensorSpec(lengths, "TYPE_INT64", (1,), reshape=()),
    ]
    return inputs, [TensorSpec(embedding, "TYPE_FP32", (bundle.dims.embedding_dim,))]


def generator_tensors(bundle: Bundle) -> tuple[list[TensorSpec], list[TensorSpec]]:
    dims = bundle.dims
    widths = (dims.embedding_dim, dims.z_dim, dims.ca_dim)
    inputs = [TensorSpec(n, "TYPE_FP32", (w,)) for n, w in zip(GENERATOR_INPUTS, widths, strict=True)]
    (image,) = GENERATOR_OUTPUTS
    return inputs, [TensorSpec(image, "TYPE_FP32", (3, dims.image_size, dims.image_size))]


def preferred_batch_sizes(max_batch: int) -> list[int]:
    return sorted({max(1, max_batch // 2), max_batch})


def member_config(
    name: str,
    backend: str,
    max_batch: int,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    *,
    device: str = "gpu",
    cc_model_filenames: dict[str, str] | None = None,
) -> str:
    """config.pbtxt of one model (encoder or generator) served by ONNX Runtime or TensorRT."""
    platform = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}[backend]
    sizes = ", ".join(str(s) for s in preferred_batch_sizes(max_batch))
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    parts = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch}",
        _tensor_block("input", inputs),
        _tensor_block("output", outputs),
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {sizes} ]\n"
        f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}\n"
        "}",
        f"instance_group [\n  {{\n    kind: {kind}\n    count: 1\n  }}\n]",
    ]
    if cc_model_filenames:
        entries = "\n".join(
            f'cc_model_filenames {{\n  key: "{cc}"\n  value: "{fname}"\n}}'
            for cc, fname in sorted(cc_model_filenames.items())
        )
        parts.append(entries)
    return "\n".join(parts) + "\n"


def ensemble_config(bundle: Bundle, max_batch: int) -> str:
    enc_in, enc_out = encoder_tensors(bundle)
    gen_in, gen_out = generator_tensors(bundle)
    # The ensemble presents the member shapes as clients send them (dims, not the members' reshape).
    ens_inputs = [dataclasses.replace(t, reshape=None) for t in enc_in] + gen_in[1:]
    ens_outputs = gen_out + enc_out

    def mapping(kind: str, names: tuple[str, ...]) -> str:
        return "\n".join(f'      {kind} {{ key: "{n}" value: "{n}" }}' for n in names)

    steps = [
        (ENCODER_MODEL, ENCODER_INPUTS, ENCODER_OUTPUTS),
        (GENERATOR_MODEL, GENERATOR_INPUTS, GENERATOR_OUTPUTS),
    ]
    step_text = ",\n".join(
        "    {\n"
        f'      model_name: "{model}"\n'
        "      model_version: -1\n"
        f"{mapping('input_map', ins)}\n"
        f"{mapping('output_map', outs)}\n"
        "    }"
        for model, ins, outs in steps
    )
    return (
        f'name: "{ENSEMBLE_MODEL}"\n'
        'platform: "ensemble"\n'
        f"max_batch_size: {max_batch}\n"
        f"{_tensor_block('input', ens_inputs)}\n"
        f"{_tensor_block('output', ens_outputs)}\n"
        "ensemble_scheduling {\n  step [\n" + step_text + "\n  ]\n}\n"
    )


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """What goes into `<model>/1/`: {file name in the repo: source path in the bundle}."""

    files: dict[str, Path]
    cc_model_filenames: dict[str, str] | None = None


def onnx_model_files(bundle: Bundle, fp16: bool) -> dict[str, ModelFiles]:
    names = {"encoder": ENCODER_FP16_FILE, "generator": GENERATOR_FP16_FILE} if fp16 else {
        "encoder": ENCODER_FILE, "generator": GENERATOR_FILE}
    out = {}
    for component, name in names.items():
        source = bundle.file(name)
        if not source.is_file():
            raise BundleError(f"{bundle.path}: missing {name}" + (" (run `s2i-export fp16` first)" if fp16 else ""))
        out[component] = ModelFiles({"model.onnx": source})
    return out


def choose_engines(engines: list[dict[str, Any]], fp16: bool) -> list[dict[str, Any]]:
    """One engine set per compute capability, of the asked precision; the newest build wins."""
    precision = "fp16" if fp16 else "fp32"
    chosen: dict[str, dict[str, Any]] = {}
    for entry in sorted(engines, key=lambda e: str(e.get("built_at", ""))):
        if entry.get("precision") == precision:
            chosen[str(entry["compute_capability"])] = entry
    return [chosen[cc] for cc in sorted(chosen)]


def plan_filename(compute_capability: str) -> str:
    return f"model_sm{compute_capability.replace('.', '')}.plan"


def tensorrt_model_files(bundle: Bundle, fp16: bool) -> tuple[dict[str, ModelFiles], int, list[dict[str, Any]]]:
    entries = choose_engines(bundle.engines, fp16)
    if not entries:
        precision = "fp16" if fp16 else "fp32"
        flag = " --fp16" if fp16 else ""
        raise BundleError(
            f"{bundle.path}: no {precision} TensorRT engines in the bundle "
            f"(run `s2i-export build-engine BUNDLE{flag}` on the serving GPU first)"
        )
    out = {}
    for component in ("encoder", "generator"):
        if len(entries) == 1:
            out[component] = ModelFiles({"model.plan": bundle.path / entries[0]["plans"][component]})
        else:
            files = {plan_filename(e["compute_capability"]): bundle.path / e["plans"][component] for e in entries}
            ccs = {str(e["compute_capability"]): plan_filename(e["compute_capability"]) for e in entries}
            out[component] = ModelFiles(files, ccs)
    # The engines' optimisation profiles cap the batch size Triton may send.
    max_batch = min(int(e["max_batch"]) for e in entries)
    return out, max_batch, entries


def readme_text(bundle: Bundle, backend: str, max_batch: int, engines: list[dict[str, Any]]) -> str:
    dims, spec = bundle.dims, bundle.frontend
    mel, lengths = ENCODER_INPUTS
    engine_note = ""
    if engines:
        rows = "\n".join(
            f"- compute capability {e['compute_capability']} ({e['gpu']}): TensorRT {e['trt_version']}, "
            f"{e['precision']}, up to {e['max_frames']} frames" for e in engines
        )
        engine_note = (
            "\n## TensorRT engines\nA plan runs only on its compute capability and with the TensorRT version it was "
            "built with: use a Triton release that ships that TensorRT version.\n" + rows + "\n"
        )
    return f"""# s2i on Triton Inference Server

Generated by `s2i-export triton` ({backend} backend) from a bundle; `s2i.json` here is that bundle's manifest.

    tritonserver --model-repository=$PWD

## Models
- `{ENCODER_MODEL}`: `{mel}` FP32 [B, {spec.n_mels}, T] log-mel features, `{lengths}` INT64 [B, 1] valid frames
  -> `embedding` FP32 [B, {dims.embedding_dim}]
- `{GENERATOR_MODEL}`: `embedding` [B, {dims.embedding_dim}], `z` [B, {dims.z_dim}], `eps` [B, {dims.ca_dim}] FP32
  -> `image` FP32 [B, 3, {dims.image_size}, {dims.image_size}] in [-1, 1] (pixel = (x + 1) * 127.5)
- `{ENSEMBLE_MODEL}` (ensemble): `{mel}`, `{lengths}`, `z`, `eps` -> `image` and `embedding`

max_batch_size {max_batch}; dynamic batching on both members.

## Noise is an input
An ensemble cannot draw random numbers, so `z` and `eps` are inputs: draw them in the client,
standard normal float32. `s2i_runtime.noise.draw_noise(seed, index, k, {dims.z_dim}, {dims.ca_dim})` draws
exactly what `s2i-run` uses, so the same seed gives the same image as the local runtime.

## Features are computed by the client
Send log-mel features, not audio: `s2i_runtime.frontend.logmel_batch(waves, spec)` with the `frontend`
spec in `s2i.json` (16 kHz mono, {spec.n_mels} mel bands, 10 ms hop; at least {spec.min_frames} frames,
padding value {spec.pad_value:g} dB). Triton's dynamic batcher only merges requests of the same shape: pad T
up to a few fixed buckets (e.g. multiples of 100 frames) with {spec.pad_value:g} and give the true frame count
in `{lengths}` so that requests of different lengths can share a batch without changing the result.
{engine_note}"""


def write_triton_repository(
    bundle_path: str | Path | None,
    out_dir: str | Path,
    *,
    backend: str = "onnxruntime",
    fp16: bool = False,
    max_batch: int = 8,
    device: str = "gpu",
    overwrite: bool = False,
) -> Path:
    """Write the repository to `out_dir` (built beside it, then renamed into place); returns its path."""
    if backend not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if device not in ("gpu", "cpu"):
        raise InputError(f"--device must be gpu or cpu (got {device!r})")
    if backend == "tensorrt" and device != "gpu":
        raise InputError("the tensorrt backend runs on the GPU only (use --backend onnxruntime for --device cpu)")
    if max_batch < 1:
        raise InputError(f"--max-batch must be at least 1 (got {max_batch})")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir} exists and is not empty (pass --overwrite to replace it)")

    bundle = load_bundle(bundle_path)
    require_logmel_encoder(bundle, "triton")
    engines: list[dict[str, Any]] = []
    if backend == "onnxruntime":
        files = onnx_model_files(bundle, fp16)
    else:
        files, engine_batch, engines = tensorrt_model_files(bundle, fp16)
        max_batch = min(max_batch, engine_batch)

    enc_in, enc_out = encoder_tensors(bundle)
    gen_in, gen_out = generator_tensors(bundle)
    configs = {
        ENCODER_MODEL: member_config(ENCODER_MODEL, backend, max_batch, enc_in, enc_out, device=device,
                                     cc_model_filenames=files["encoder"].cc_model_filenames),
        GENERATOR_MODEL: member_config(GENERATOR_MODEL, backend, max_batch, gen_in, gen_out, device=device,
                                       cc_model_filenames=files["generator"].cc_model_filenames),
        ENSEMBLE_MODEL: ensemble_config(bundle, max_batch),
    }
    model_files = {ENCODER_MODEL: files["encoder"], GENERATOR_MODEL: files["generator"], ENSEMBLE_MODEL: None}

    with staged_dir(out_dir) as staging:
        for model, config in configs.items():
            version_dir = staging / model / "1"
            version_dir.mkdir(parents=True)
            atomic_write_text(staging / model / "config.pbtxt", config)
            entry = model_files[model]
            for target, source in (entry.files.items() if entry else ()):
                shutil.copyfile(source, version_dir / target)
        shutil.copyfile(bundle.file(MANIFEST), staging / MANIFEST)
        atomic_write_text(staging / "README.md", readme_text(bundle, backend, max_batch, engines))
    return out_dir

