"""Command-line options shared by several commands, declared once.

``@store_options`` gives a command the knowledge-graph deployment flags (``--store``,
``--store-path``, ``--neo4j-uri``, ``--neo4j-user``, ``--neo4j-database``, ``--features-cache``,
``--features-model``; each also read from its environment variable) and hands the command one
``store: StoreConfig``. Train, test, pipeline, serve, run_batch and the ``kg`` commands use it,
so a new deployment setting is one field in ``StoreConfig`` and one line here.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from graphdb.store import ENV_VARS, StoreConfig, StoreKind

# StoreConfig field → (flag, type, help)
STORE_FLAGS: dict[str, tuple[str, Any, str]] = {
    "kind": ("--store", StoreKind, "Graph store: embedded (LadybugDB, no server) or neo4j."),
    "path": ("--store-path", Path, "Embedded store directory (loaded with the M3KG when empty)."),
    "uri": ("--neo4j-uri", str, "Neo4j Bolt URI (password: $NEO4J_PASSWORD)."),
    "user": ("--neo4j-user", str, "Neo4j user."),
    "database": ("--neo4j-database", str, "Neo4j database."),
    "features_cache": ("--features-cache", Path, "Where node text embeddings are cached."),
    "features_model": ("--features-model", Path,
                       "Local sentence-transformers folder for node text (none: the bundled all-MiniLM-L6-v2)."),
}


def _param(field: str) -> inspect.Parameter:
    flag, kind, help_text = STORE_FLAGS[field]
    default = getattr(StoreConfig(), field)
    shown = default.value if isinstance(default, StoreKind) else default
    option = typer.Option(flag, envvar=ENV_VARS[field], show_default=False,
                          help=f"{help_text} Default: {shown}." if shown is not None else help_text)
    return inspect.Parameter(f"store_{field}", inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, option])


def store_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Replace the command's ``store: StoreConfig`` parameter by the store flags."""
    signature = inspect.signature(command, eval_str=True)
    if "store" not in signature.parameters:
        raise TypeError(f"{command.__name__}: @store_options needs a `store` parameter")
    kept = [p for p in signature.parameters.values() if p.name != "store"]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {field: kwargs.pop(f"store_{field}", None) for field in STORE_FLAGS}
        try:
            kwargs["store"] = StoreConfig.from_env(**values)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        return command(*args, **kwargs)

    params = kept + [_param(f) for f in STORE_FLAGS]
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__   # typer must see the new signature, not the command's
    return wrapper


def fail(console: Console, exc: BaseException) -> typer.Exit:
    """Print ``exc`` as the one-line error every command gives for bad input; exit status 2."""
    console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)
