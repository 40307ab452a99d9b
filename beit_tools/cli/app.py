"""`beit-tools`: the Typer application. Commands import torch/transformers only when they run."""

from __future__ import annotations

import typer

from beit_tools import __version__
from beit_tools.cli import convert as convert_command
from beit_tools.cli import inspect as inspect_command
from beit_tools.cli import push as push_command
from beit_tools.cli import variants as variants_command
from beit_tools.cli import verify as verify_command

app = typer.Typer(
    name="beit-tools",
    help="Convert original unilm BEiT checkpoints into faithful Hugging Face transformers models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command("inspect", no_args_is_help=True)(inspect_command.inspect)
app.command("convert", no_args_is_help=True)(convert_command.convert)
app.command("verify", no_args_is_help=True)(verify_command.verify)
app.command("push", no_args_is_help=True)(push_command.push)
app.command("variants")(variants_command.variants)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"beit-tools {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Convert original unilm BEiT checkpoints into faithful Hugging Face transformers models."""


def main() -> None:
    app()
