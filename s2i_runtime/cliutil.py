"""What every s2i command line shares: one error line and the exit code contract (docs/design.md).

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
    """Run a typer app, turning the project's known errors and click's usage errors into one line each."""
    # Newer typer vendors click; its exception classes live beside BadParameter either way.
    click_errors = sys.modules[typer.BadParameter.__module__]
    no_args = getattr(click_errors, "NoArgsIsHelpError", ())
    aborted = getattr(click_errors, "Abort", typer.Abort)
    try:
        code = app(args=argv, prog_name=prog_name, standalone_mode=False)
    except no_args as exc:
        help_text = exc.ctx.get_help()  # typer's rich help prints itself and returns nothing
        if help_text:
            typer.echo(help_text)
        sys.exit(EXIT_USAGE)
    except click_errors.ClickException as exc:  # bad options and arguments: one line, not a usage box
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except aborted:
        typer.echo("aborted", err=True)
        sys.exit(EXIT_INTERNAL)
    except (InputError, BundleError, BackendUnavailable) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except S2IError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INTERNAL)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:  # a typer.Exit(code) comes back as its code
        sys.exit(code)
