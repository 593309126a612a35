"""`s2i-train`: data, speech encoder, generator, evaluation."""

from __future__ import annotations

import typer

from s2i_runtime.cliutil import run_app
from s2i_train.data.commands import register_data_commands
from s2i_train.train.commands import register_train_commands

app = typer.Typer(
    help="Build datasets and train s2i speech encoders and generators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Build or check datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
register_data_commands(data_app)
register_train_commands(app)


def main() -> None:
    run_app(app, "s2i-train")


if __name__ == "__main__":
    main()
