"""`s2i-export`: ONNX bundles, FP16, TensorRT engines, Triton repositories."""

from __future__ import annotations

import typer

from s2i_runtime.cliutil import run_app

app = typer.Typer(
    help="Export trained s2i models to ONNX bundles, FP16, TensorRT engines and Triton repositories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    run_app(app, "s2i-export")
