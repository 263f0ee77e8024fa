"""The `r2genkg` console entry point: one Typer app, one small module per command group."""
from __future__ import annotations

import importlib

import typer

from r2genkg.env import use_process_defaults
from r2genkg.options import one_line_errors

# Each module exposes register(app); the order here is the order of `r2genkg --help`.
COMMAND_MODULES = ("pipeline", "demo", "data", "label", "check", "phantoms", "evaluate", "kg", "train", "serve")

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="R2GenKG: knowledge-graph-grounded chest X-ray report generation.",
)


@app.command()
def version() -> None:
    """Print the installed r2genkg version."""
    from importlib.metadata import version as dist_version

    print(dist_version("r2genkg"))


for _name in COMMAND_MODULES:
    importlib.import_module(f"r2genkg.commands.{_name}").register(app)
one_line_errors(app)   # every command: bad input or an unusable store is one line and exit 2


def main() -> None:
    use_process_defaults()
    app()
