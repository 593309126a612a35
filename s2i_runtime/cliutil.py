"""What every s2i command line shares: one error line and the exit code contract (DESIGN §4).

exit 0 ok, 2 bad input or usage, 1 internal error. The packages that depend on the runtime use this too.
"""

from __future__ import annotations

import sys

import typer

from .errors import BackendUnavailable, BundleError, InputError, S2IError

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def run_app(app: typer.Typer, prog_name: str, argv: list[str] | None = None) -> None:
    """Run a typer app, turning the project's known errors into one line and exit 2."""
    try:
        app(args=argv, prog_name=prog_name, standalone_mode=True)
    except (InputError, BundleError, BackendUnavailable) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except S2IError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INTERNAL)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
