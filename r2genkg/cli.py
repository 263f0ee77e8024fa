"""The `r2genkg` console entry point (placeholder until the subcommands land)."""
import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the installed version."""
    from importlib.metadata import version as v

    print(v("r2genkg"))
