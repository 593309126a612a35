"""A run directory -> a model bundle (`s2i-export onnx`, and `make default-model`).

Exporter: torch.onnx's TorchScript exporter (`dynamo=False`). The dynamo exporter fails on a
bidirectional GRU with a dynamic time axis (measured with torch 2.13); the TorchScript one handles it and
takes `dynamic_axes`. (onnxscript >= 0.7.1 is still required for anyone switching to dynamo: 0.5.7-0.7.0
exported GRUs with linear_before_reset=0, i.e. wrong numbers.)

Opset: pinned to 17. TorchScript export goes up to 20, TensorRT 10 and 11 parse it (11 takes up to 25),
ONNX Runtime >= 1.14 and Triton's onnxruntime backend run it; nothing in these models needs a newer op.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s2i_runtime.bundle import (
    ENCODER_FILE,
    ENCODER_INPUTS,
    ENCODER_OUTPUTS,
    GENERATOR_FILE,
    GENERATOR_INPUTS,
    GENERATOR_OUTPUTS,
    LOGMEL_INPUT,
    WAVEFORM_ENCODER_INPUTS,
    WAVEFORM_INPUT,
    encoder_input_names,
    write_manifest,
)
from s2i_runtime.errors import InputError
from s2i_runtime.frontend import FrontendSpec

from .dirs import staged_dir
from .manifest import build_manifest

OPSET = 17
CHECKPOINT_DIR = "checkpoint"
# Example input sizes used only for tracing; every axis named in dynamic_axes stays symbolic.
_TRACE_BATCH = 2
_TRACE_FRAMES = 256


def _dynamic_axes() -> tuple[dict[str, dict[int, str]], dict[str, dict[int, str]]]:
    mel, lengths = ENCODER_INPUTS
    (embedding,) = ENCODER_OUTPUTS
    encoder = {mel: {0: "batch", 2: "frames"}, lengths: {0: "batch"}, embedding: {0: "batch"}}
    generator = {name: {0: "batch"} for name in (*GENERATOR_INPUTS, *GENERATOR_OUTPUTS)}
    return encoder, generator


def _export(module: Any, args: tuple, path: Path, inputs, outputs, axes: dict, opset: int) -> None:
    import torch

    # The TorchScript exporter's deprecation and RNN-shape warnings say nothing the user can act on.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path), dynamo=False, opset_version=opset, input_names=list(inputs),
            output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True,
        )


def export_encoder(encoder: Any, path: Path, spec: FrontendSpec, opset: int = OPSET) -> None:
    import torch

    frames = max(_TRACE_FRAMES, spec.min_frames)
    mel = torch.full((_TRACE_BATCH, spec.n_mels, frames), spec.pad_value)
    mel[:, :, : frames - 40] = torch.randn(_TRACE_BATCH, spec.n_mels, frames - 40) * 10.0 - 40.0
    lengths = torch.tensor([frames, frames - 40], dtype=torch.int64)
    axes, _ = _dynamic_axes()
    _export(encoder.eval(), (mel, lengths), path, ENCODER_INPUTS, ENCODER_OUTPUTS, axes, opset)


def _trace_waveforms(spec: FrontendSpec) -> tuple[Any, Any]:
    """A padded batch of two clips, the second shorter by a part of a hop too, for tracing."""
    import torch

    samples = (max(_TRACE_FRAMES, spec.min_frames) - 1) * spec.hop_length
    waveform = torch.randn(_TRACE_BATCH, samples, generator=torch.Generator().manual_seed(0)) * 0.1
    return waveform, torch.tensor([samples, samples - 40 * spec.hop_length - 7], dtype=torch.int64)


def export_waveform_encoder(encoder: Any, path: Path, spec: FrontendSpec, opset: int = OPSET) -> None:
    """The front end and the encoder as one graph: waveform (B, N), num_samples (B,) -> embedding (B, D)."""
    from .frontend_graph import WaveformEncoder

    waveform, num_samples = _trace_waveforms(spec)
    signal, lengths = WAVEFORM_ENCODER_INPUTS
    (embedding,) = ENCODER_OUTPUTS
    axes = {signal: {0: "batch", 1: "samples"}, lengths: {0: "batch"}, embedding: {0: "batch"}}
    module = WaveformEncoder(encoder.eval(), spec).eval()
    _export(module, (waveform, num_samples), path, WAVEFORM_ENCODER_INPUTS, ENCODER_OUTPUTS, axes, opset)


# The front end alone as a graph: what the tests and benchmarks hold against s2i_runtime.frontend.
FRONTEND_OUTPUTS = ("features", "frame_lengths")


def export_frontend(path: Path, spec: FrontendSpec, opset: int = OPSET) -> None:
    """waveform (B, N), num_samples (B,) -> features (B, n_mels, T), frame_lengths (B,): no bundle uses it."""
    from .frontend_graph import LogMelGraph

    waveform, num_samples = _trace_waveforms(spec)
    signal, lengths = WAVEFORM_ENCODER_INPUTS
    features, frame_lengths = FRONTEND_OUTPUTS
    axes = {signal: {0: "batch", 1: "samples"}, lengths: {0: "batch"}, features: {0: "batch", 2: "frames"},
            frame_lengths: {0: "batch"}}
    _export(LogMelGraph(spec).eval(), (waveform, num_samples), path, WAVEFORM_ENCODER_INPUTS, FRONTEND_OUTPUTS,
            axes, opset)


def export_generator(generator: Any, path: Path, opset: int = OPSET) -> None:
    import torch

    from s2i_train.models.generator import ExportableGenerator

    cfg = generator.config
    args = (
        torch.randn(_TRACE_BATCH, cfg.embedding_dim),
        torch.randn(_TRACE_BATCH, cfg.z_dim),
        torch.randn(_TRACE_BATCH, cfg.ca_dim),
    )
    _, axes = _dynamic_axes()
    _export(ExportableGenerator(generator).eval(), args, path, GENERATOR_INPUTS, GENERATOR_OUTPUTS, axes, opset)


def check_graph(path: Path, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    """The ONNX checker, and the I/O names the runtime, TensorRT profiles and Triton configs rely on."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    got_in = tuple(i.name for i in model.graph.input)
    got_out = tuple(o.name for o in model.graph.output)
    if got_in != inputs or got_out != outputs:
        raise RuntimeError(f"{path.name}: graph I/O is {got_in} -> {got_out}, expected {inputs} -> {outputs}")


def frontend_of(encoder_meta: dict[str, Any]) -> FrontendSpec:
    """The front end the encoder was trained on (its checkpoint summary says so), else the paper's."""
    found = encoder_meta.get("summary", {}).get("frontend")
    return FrontendSpec.from_dict(found) if isinstance(found, dict) else FrontendSpec()


def _versions() -> dict[str, str]:
    import onnx
    import torch

    versions = {"torch": torch.__version__, "onnx": onnx.__version__}
    with contextlib.suppress(ImportError):
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return versions


def export_bundle(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    opset: int = OPSET,
    dataset_meta: dict[str, Any] | None = None,
    include_checkpoint: bool = False,
    frontend_in_graph: bool = False,
    progress: Callable[[str], None] = lambda _m: None,
) -> Path:
    """Export the run's speech encoder and (EMA) generator into a bundle at `out_dir`; returns its path.

    The bundle is built in a temporary directory beside `out_dir` and renamed into place, replacing an
    existing bundle only once the new one is complete. `include_checkpoint` also copies the safetensors
    weights into `checkpoint/` (lets `verify` run without the run directory; doubles the size).
    `frontend_in_graph` exports the log-Mel front end inside the encoder graph (`frontend_graph.py`): the
    encoder then reads waveforms, and s2i.json says so (`model.encoder_input` "waveform").
    """
    from s2i_train.checkpoint import ENCODER, GENERATOR, has_module, load_generator, load_speech_encoder, read_meta

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory does not exist")
    for name in (ENCODER, GENERATOR):
        if not has_module(run_dir, name):
            raise InputError(f"{run_dir}: no trained {name} ({name}.safetensors + {name}.json)")
    if not 13 <= opset <= 20:
        raise InputError(f"--opset {opset} is outside 13..20 (the TorchScript exporter's range; default {OPSET})")
    if out_dir.exists() and not (out_dir / "s2i.json").is_file() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir} exists and is not a bundle; refusing to replace it")

    encoder_meta, generator_meta = read_meta(run_dir, ENCODER), read_meta(run_dir, GENERATOR)
    spec = frontend_of(encoder_meta)
    progress("loading checkpoints")
    encoder, generator = load_speech_encoder(run_dir), load_generator(run_dir)

    encoder_input = WAVEFORM_INPUT if frontend_in_graph else LOGMEL_INPUT
    with staged_dir(out_dir) as staging:
        if frontend_in_graph:
            progress("exporting the front end and the speech encoder as one graph")
            export_waveform_encoder(encoder, staging / ENCODER_FILE, spec, opset)
        else:
            progress("exporting the speech encoder")
            export_encoder(encoder, staging / ENCODER_FILE, spec, opset)
        check_graph(staging / ENCODER_FILE, encoder_input_names(encoder_input), ENCODER_OUTPUTS)
        progress("exporting the generator")
        export_generator(generator, staging / GENERATOR_FILE, opset)
        check_graph(staging / GENERATOR_FILE, GENERATOR_INPUTS, GENERATOR_OUTPUTS)
        if include_checkpoint:
            (staging / CHECKPOINT_DIR).mkdir()
            for name in (ENCODER, GENERATOR):
                for suffix in (".safetensors", ".json"):
                    shutil.copyfile(run_dir / f"{name}{suffix}", staging / CHECKPOINT_DIR / f"{name}{suffix}")
        manifest = build_manifest(
            spec=spec,
            encoder_input=encoder_input,
            encoder_meta=encoder_meta,
            generator_meta=generator_meta,
            image_sizes=tuple(generator.config.image_sizes),
            run_dir=run_dir,
            dataset_meta=dataset_meta,
            export_info={
                "opset": opset,
                "exporter": "torch.onnx TorchScript exporter (dynamo=False)",
                **_versions(),
                "source_run": str(run_dir.resolve()),
                # verify compares against PyTorch only with these exact weights
                "checkpoint_sha256": {"encoder": encoder_meta.get("sha256"), "generator": generator_meta.get("sha256")},
            },
        )
        write_manifest(staging, manifest)
    return out_dir

