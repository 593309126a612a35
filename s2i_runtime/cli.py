"""`s2i-run`: speech in, images out, on the lean runtime.

Every option has a range (limits.py); what can be checked without the model is checked before it loads.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import typer

from . import __version__
from .cliutil import EXIT_USAGE, fail, run_app
from .errors import S2IError
from .limits import MAX_BATCH_SIZE, MAX_NUM_IMAGES, MAX_STEPS, MAX_THREADS
from .noise import MAX_SEED

app = typer.Typer(
    help="Turn spoken descriptions (WAV) into images with an exported s2i model bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# typer needs Optional[...] spelled out on Python 3.10 for options that default to None.
BundleOption = typer.Option(None, "--bundle", help="Model bundle directory (default: the shipped model).")
BackendOption = typer.Option("auto", "--backend", help="auto | onnxruntime | tensorrt")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda")
PrecisionOption = typer.Option(
    "auto", "--precision",
    help="auto | fp32 | fp16 | int8 (int8: the generator from `s2i-export int8`, on the CPU only).")
ThreadsOption = typer.Option(0, "--threads", min=0, max=MAX_THREADS,
                             help="ONNX Runtime intra-op threads (0 = all physical cores).")
JsonOption = typer.Option(False, "--json", help="Print one JSON object on stdout (also on failure).")
SeedOption = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Noise seed; the same seed gives the same pixels.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"s2i-run {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Turn spoken descriptions (WAV) into images with an exported s2i model bundle."""


@contextlib.contextmanager
def _json_errors(enabled: bool) -> Iterator[None]:
    """Under --json a failure is still one JSON object on stdout (the error line goes to stderr as always)."""
    try:
        yield
    except S2IError as exc:
        if enabled:
            typer.echo(json.dumps({"error": str(exc)}))
        raise


@app.command()
def infer(
    inputs: list[str] = typer.Argument(
        ..., help="Audio files (WAV; other formats with s2i\\[audio]); - reads one from stdin."),
    bundle: Optional[Path] = BundleOption,  # noqa: UP045
    out: Path = typer.Option(Path("s2i-out"), "--out", help="Output directory."),
    seed: int = SeedOption,
    num_images: int = typer.Option(1, "--num-images", "-k", min=1, max=MAX_NUM_IMAGES, help="Images per input."),
    backend: str = BackendOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    batch_size: int = typer.Option(8, "--batch-size", min=1, max=MAX_BATCH_SIZE, help="Inputs per model batch."),
    make_grid: bool = typer.Option(False, "--grid", help="Also write OUT/grid.png (one row per input)."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first unusable input."),
    threads: int = ThreadsOption,
    json_output: bool = JsonOption,
) -> None:
    """Write OUT/<input stem>_<k>.png for k = 0..K-1 for every input."""
    from .infer import infer_files, plan_outputs
    from .pipeline import Pipeline, StageTimer

    started = time.perf_counter()
    timer = StageTimer()
    with _json_errors(json_output):
        plan_outputs(inputs, out, num_images, make_grid)
        with timer.measure("load_model"):
            pipe = Pipeline.load(bundle, backend=backend, device=device, batch_size=batch_size, threads=threads,
                                 precision=precision)
    with pipe, _json_errors(json_output), \
            _progress(len(inputs), enabled=not json_output and len(inputs) > batch_size) as progress:
        result = infer_files(
            pipe, inputs, out, seed=seed, num_images=num_images, make_grid=make_grid, fail_fast=fail_fast,
            timer=timer, on_error=lambda message: typer.echo(f"error: {message}", err=True),
            on_progress=progress,
        )
        described = pipe.describe()
    if json_output:
        typer.echo(json.dumps({
            **described,
            "seed": seed,
            "num_images": num_images,
            "outputs": result.outputs,
            "grid": result.grid,
            "timings_s": timer.as_dict(),
            "wall_s": round(time.perf_counter() - started, 6),
        }, indent=2))
    else:
        written = sum(len(o.get("images", [])) for o in result.outputs)
        typer.echo(f"wrote {written} image(s) to {out}" + (f" and {result.grid}" if result.grid else ""))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
def interpolate(
    source_a: str = typer.Argument(..., metavar="A.wav"),
    source_b: str = typer.Argument(..., metavar="B.wav"),
    steps: int = typer.Option(9, "--steps", min=2, max=MAX_STEPS, help="Images from A to B, both ends included."),
    out: Path = typer.Option(Path("strip.png"), "--out", help="The strip, one PNG."),
    bundle: Optional[Path] = BundleOption,  # noqa: UP045
    seed: int = SeedOption,
    backend: str = BackendOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    threads: int = ThreadsOption,
    json_output: bool = JsonOption,
) -> None:
    """Images along the line between two utterances' speech embeddings (Li et al., Fig. 5)."""
    from .infer import check_strip_path, interpolate_files
    from .pipeline import Pipeline

    with _json_errors(json_output):
        check_strip_path(out)
        with Pipeline.load(bundle, backend=backend, device=device, threads=threads, precision=precision) as pipe:
            interpolate_files(pipe, source_a, source_b, out, steps=steps, seed=seed)
            described = pipe.describe()
    if json_output:
        typer.echo(json.dumps({**described, "steps": steps, "seed": seed, "out": str(out)}, indent=2))
    else:
        typer.echo(f"wrote {out} ({steps} steps)")


@app.command()
def info(
    bundle: Optional[Path] = BundleOption,  # noqa: UP045
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Show the bundle and the backends available here (and why not)."""
    from .info import gather, render_text

    details = gather(bundle)
    typer.echo(json.dumps(details, indent=2) if json_output else render_text(details))
    if not details["bundle_info"]["ok"]:
        raise fail(details["bundle_info"]["error"], EXIT_USAGE)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port (0 = any free port, printed when ready)."),
    bundle: Optional[Path] = BundleOption,  # noqa: UP045
    backend: str = BackendOption,
    device: str = DeviceOption,
    precision: str = PrecisionOption,
    threads: int = ThreadsOption,
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Most inputs per shared model batch."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0, help="How long a batch waits for company."),
    max_queue: int = typer.Option(256, "--max-queue", min=1, help="Requests admitted at once; more get 429."),
    max_upload_mb: float = typer.Option(10.0, "--max-upload-mb", help="Largest upload accepted (MiB)."),
    max_images: int = typer.Option(8, "--max-images", min=1, help="Most images per request."),
    timeout_s: float = typer.Option(30.0, "--timeout-s", help="Per-request time limit; then 504."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request on stderr."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON line when ready."),
) -> None:
    """HTTP service (POST /v1/images, /metrics) and a browser page at / (needs s2i[serve])."""
    from .cliutil import fail
    from .serve import ServeConfig, missing_extra

    if (why := missing_extra()) is not None:
        raise fail(why)
    config = ServeConfig(host=host, port=port, bundle=bundle, backend=backend, device=device, precision=precision,
                         threads=threads,
                         batch_size=batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
                         max_upload_bytes=int(max_upload_mb * 2**20), max_images=max_images,
                         timeout_s=timeout_s, access_log=access_log)
    from .serve.server import ready_line, run

    run(config, on_ready=lambda ready: typer.echo(json.dumps(ready) if json_output else ready_line(ready)))


class _progress:
    """A rich progress bar on stderr for long runs on a terminal; otherwise nothing (and no rich import)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        self._task = self._bar.add_task("generating", total=self.total)
        return self.update

    def update(self, done: int, total: int) -> None:
        self._bar.update(self._task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def main() -> None:
    run_app(app, "s2i-run")


if __name__ == "__main__":
    main()
