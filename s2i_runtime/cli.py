"""`s2i-run`: speech in, images out, on the lean runtime."""

from __future__ import annotations

import typer

from .cliutil import run_app

app = typer.Typer(
    help="Turn spoken descriptions (WAV) into images with an exported s2i model bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def info(json_output: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Show the bundle and the backends available here (and why not)."""
    raise typer.Exit(1)  # filled in by the runtime work (issue 6)


def main() -> None:
    run_app(app, "s2i-run")
