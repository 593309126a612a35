"""`s2i-export`: ONNX bundles, FP16, the INT8 generator, TensorRT engines, Triton repositories."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from s2i_runtime.cliutil import EXIT_INTERNAL, run_app

from .verify import TOLERANCE

app = typer.Typer(
    help="Export trained s2i models to ONNX bundles, FP16, an INT8 generator, TensorRT engines and Triton "
    "repositories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_AUDIO_HELP = "Real utterances to check with (WAV files or folders; repeatable). Default: shipped examples."
_DATA_HELP = "A Spoken-Shapes dataset directory: a few of its utterances are checked too."


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr whose text follows the library's progress messages."""
    if quiet:
        yield lambda _msg: None
        return
    from rich.console import Console

    with Console(stderr=True).status("starting") as status:
        yield lambda msg: status.update(msg)


def _echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _checked_export(json_output: bool, export: Callable[[Callable[[str], None]], dict], failed: type) -> dict | None:
    """Run an export that adds files only when its check passes (`export(progress)` returns the s2i.json
    section). A failed check prints the check (with --json) and one error line, and exits 1. With --json the
    section is printed and None returned; else the section is returned for the caller's summary line."""
    try:
        with _progress(json_output) as progress:
            section = export(progress)
    except failed as exc:
        if json_output:
            _echo_json(exc.check.to_dict())
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INTERNAL) from None
    if json_output:
        _echo_json(section)
        return None
    return section


@app.command("onnx")
def onnx_command(
    run: Path = typer.Option(..., "--run", help="Training run directory (encoder/generator checkpoints)."),
    out: Path = typer.Option(..., "--out", help="Bundle directory to write (replaced atomically)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (pinned default 17; 13..20)."),
    include_checkpoint: bool = typer.Option(
        False, "--include-checkpoint", help="Also copy the safetensors weights into BUNDLE/checkpoint/."
    ),
    frontend_in_graph: bool = typer.Option(
        False, "--frontend-in-graph",
        help="Put the log-Mel front end inside the encoder graph: it then reads waveforms (B, samples).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Export the speech encoder and generator of RUN into a model bundle."""
    from s2i_runtime.bundle import load_bundle

    from .onnx_export import export_bundle

    with _progress(json_output) as progress:
        path = export_bundle(run, out, opset=opset, include_checkpoint=include_checkpoint,
                             frontend_in_graph=frontend_in_graph, progress=progress)
    bundle = load_bundle(path)
    if json_output:
        _echo_json({"bundle": str(path), "manifest": bundle.manifest})
        return
    sizes = {name: (path / name).stat().st_size for name in bundle.manifest["files"]}
    total = sum(sizes.values()) / 1e6
    typer.echo(f"bundle written to {path} ({total:.1f} MB: {', '.join(sorted(sizes))})")


@app.command("verify")
def verify_command(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    run: Path | None = typer.Option(None, "--run", help="Run directory with the PyTorch weights."),
    audio: list[Path] = typer.Option([], "--audio", help=_AUDIO_HELP),
    data: Path | None = typer.Option(None, "--data", help=_DATA_HELP),
    threads: int = typer.Option(0, "--threads", help="ONNX Runtime threads (0 = all cores)."),
    tolerance: float = typer.Option(TOLERANCE, "--tolerance", help="Max abs error allowed (fp32)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Compare ONNX Runtime with PyTorch (batch 1/3/8 x 64/500/3000 frames + real speech). Exit 1 on failure."""
    from .probes import real_audio_sources
    from .verify import verify_bundle

    sources = real_audio_sources(audio, data)
    with _progress(json_output) as progress:
        report = verify_bundle(bundle, run_dir=run, real_audio=sources, threads=threads, tolerance=tolerance,
                               progress=progress)
    if json_output:
        _echo_json(report.to_dict())
    else:
        _print_verify_table(report)
    if not report.passed:
        raise typer.Exit(EXIT_INTERNAL)


def _print_verify_table(report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ONNX Runtime vs PyTorch (tolerance {report.tolerance:g} max abs)")
    for column in ("component", "inputs", "batch", "frames", "max abs error", "result"):
        table.add_column(column)
    for case in report.cases:
        table.add_row(
            case.component, case.inputs, str(case.batch), "-" if case.frames is None else str(case.frames),
            f"{case.max_abs_error:.2e}", "ok" if case.passed else "FAIL",
        )
    console = Console()
    console.print(table)
    verdict = "passed" if report.passed else "FAILED"
    console.print(f"{verdict}: {len(report.cases)} cases, {report.real_utterances} real utterances, "
                  f"PyTorch weights from {report.torch_source}")


@app.command("fp16")
def fp16_command(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    audio: list[Path] = typer.Option([], "--audio", help=_AUDIO_HELP),
    data: Path | None = typer.Option(None, "--data", help=_DATA_HELP),
    json_output: bool = typer.Option(False, "--json", help="Print the fp16 section of s2i.json."),
) -> None:
    """Add FP16 ONNX files (float32 I/O) after checking them against fp32 on ONNX Runtime CPU."""
    from .fp16 import MAX_IMAGE_MAE, MIN_EMBEDDING_COSINE, Fp16CheckFailed, export_fp16
    from .probes import real_audio_sources

    sources = real_audio_sources(audio, data)
    section = _checked_export(json_output, lambda progress: export_fp16(bundle, real_audio=sources, progress=progress),
                              Fp16CheckFailed)
    if section is None:
        return
    check = section["check"]
    typer.echo(
        f"fp16 files added to {bundle}: embedding cosine min {check['embedding_cosine_min']:.6f} "
        f"(>= {MIN_EMBEDDING_COSINE}), image MAE max {check['image_mae_max']:.2e} (<= {MAX_IMAGE_MAE:g})"
    )


@app.command("int8")
def int8_command(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    run: Path | None = typer.Option(None, "--run", help="Training run with a trained judge: the judge check."),
    data: Path | None = typer.Option(
        None, "--data", help="Spoken-Shapes dataset: its test captions calibrate (and feed the judge check). "
        "Default: the run's dataset."),
    audio: list[Path] = typer.Option(
        [], "--audio", help="Real utterances to check with, and to calibrate on when there is no dataset (WAV files "
        "or folders; repeatable). Default: shipped examples."),
    json_output: bool = typer.Option(False, "--json", help="Print the int8 section of s2i.json."),
) -> None:
    """Add an INT8 generator (static QDQ) after checking it against fp32 on ONNX Runtime CPU."""
    from .int8 import MAX_IMAGE_MAE, Int8CheckFailed, export_int8
    from .probes import real_audio_sources

    sources = real_audio_sources(audio, data)
    section = _checked_export(
        json_output, lambda progress: export_int8(bundle, run_dir=run, data=data, real_audio=sources,
                                                  progress=progress),
        Int8CheckFailed)
    if section is None:
        return
    check = section["check"]
    judge = check["judge"]
    if judge is None:
        verdict = f"judge check skipped: {check['judge_skipped']}"
    else:
        verdict = "judge accuracy fp32 / int8: " + ", ".join(
            f"{name} {judge['fp32'][name]:.3f} / {judge['int8'][name]:.3f}" for name in judge["fp32"])
    typer.echo(f"generator.int8.onnx added to {bundle}: image MAE max {check['image_mae_max']:.2e} "
               f"(<= {MAX_IMAGE_MAE:g}); {verdict}")


@app.command("build-engine")
def build_engine_command(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    fp16: bool = typer.Option(False, "--fp16",
                              help="FP16 engines, strongly typed from the FP16 ONNX (`s2i-export fp16` first)."),
    max_batch: int = typer.Option(8, "--max-batch", help="Largest batch the engines accept."),
    max_seconds: float = typer.Option(30.0, "--max-seconds",
                                      help="Longest utterance (frames = seconds x 100 + 1, at most the model's)."),
    workspace_gb: float = typer.Option(4.0, "--workspace-gb", help="TensorRT workspace memory limit."),
    timing_cache: Path | None = typer.Option(None, "--timing-cache", help="Timing cache file (read and updated)."),
    tf32: bool = typer.Option(False, "--tf32", help="Let float32 layers use TF32 (TensorRT's default; off here)."),
    json_output: bool = typer.Option(False, "--json", help="Print the engines.json record."),
) -> None:
    """Build TensorRT engines for this GPU into BUNDLE/engines/<gpu>-trt<version>/."""
    from .tensorrt_build import EngineRequest, build_engines

    request = EngineRequest(fp16=fp16, max_batch=max_batch, max_seconds=max_seconds, workspace_gb=workspace_gb,
                            timing_cache=timing_cache, tf32=tf32)
    with _progress(json_output) as progress:
        record = build_engines(bundle, request, progress=progress)
    if json_output:
        _echo_json(record)
        return
    seconds = sum(record["build_seconds"].values())
    typer.echo(f"{record['precision']} engines for {record['gpu']} (TensorRT {record['trt_version']}) "
               f"in {bundle / record['dir']} ({seconds:.0f} s)")


@app.command("triton")
def triton_command(
    bundle: Path = typer.Argument(..., help="Bundle directory."),
    out: Path = typer.Option(..., "--out", help="Model repository directory to write."),
    backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime or tensorrt."),
    fp16: bool = typer.Option(False, "--fp16", help="Serve the FP16 ONNX files / FP16 engines."),
    max_batch: int = typer.Option(8, "--max-batch", help="max_batch_size (capped by the engines' profiles)."),
    device: str = typer.Option("gpu", "--device", help="gpu or cpu (instance_group kind; onnxruntime only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing repository."),
) -> None:
    """Write a Triton Inference Server model repository (encoder, generator and an ensemble)."""
    from .triton import write_triton_repository

    path = write_triton_repository(bundle, out, backend=backend, fp16=fp16, max_batch=max_batch, device=device,
                                   overwrite=overwrite)
    typer.echo(f"Triton repository written to {path} (see {path / 'README.md'})")


def main() -> None:
    run_app(app, "s2i-export")
