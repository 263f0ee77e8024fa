"""Command-line behaviour shared by every command, declared once.

``@store_options`` gives a command the knowledge-graph deployment flags (``--store``,
``--store-path``, ``--neo4j-uri``, ``--neo4j-user``, ``--neo4j-database``, ``--features-cache``,
``--features-model``; each also read from its environment variable) and hands the command one
``store: StoreConfig``. Train, test, pipeline, serve, run_batch and the ``kg`` commands use it,
so a new deployment setting is one field in ``StoreConfig`` and one line here.

``one_line_errors(app)`` wraps every command of a Typer app (``r2genkg``'s and run_batch's): an
error in ``ONE_LINE_ERRORS`` (bad input, a missing file, a graph store or LLM backend that
cannot be used) is printed as one ``error: …`` line on stderr with exit status 2; any other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from graphdb.store import ENV_VARS, StoreConfig, StoreKind

# "module:Class". Classes of heavy modules are looked up only if their module is loaded already:
# an exception of a module that was never imported cannot have been raised, and the CLI stays
# quick to start.
ONE_LINE_ERRORS = (
    "builtins:ValueError",              # DataError, ConfigError, CheckpointError, … are ValueErrors
    "builtins:FileNotFoundError",
    "graphdb.store:GraphStoreError",    # Neo4j unreachable, wrong password, no embedded store, …
    "generator.backends:BackendError",
    "training.metrics.meteor:MeteorError",
    "training.loop:TrainingDiverged",
)

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
        kwargs["store"] = StoreConfig.from_env(**values)   # a bad value: ValueError, one line
        return command(*args, **kwargs)

    params = kept + [_param(f) for f in STORE_FLAGS]
    wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__   # typer must see the new signature, not the command's
    return wrapper


def is_one_line(exc: BaseException) -> bool:
    """Whether ``exc`` is an error whose message is the whole answer (``ONE_LINE_ERRORS``)."""
    for spec in ONE_LINE_ERRORS:
        module, _, name = spec.partition(":")
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return True
    return False


def fail(exc: BaseException) -> typer.Exit:
    """Print ``exc`` as the one-line error every command gives for bad input, on stderr; exit status 2."""
    Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _in_one_line(command: Callable[..., Any]) -> Callable[..., Any]:
    if getattr(command, "_one_line_errors", False):
        return command

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            if is_one_line(exc):
                raise fail(exc) from exc
            raise

    wrapper._one_line_errors = True  # type: ignore[attr-defined]
    return wrapper


def one_line_errors(app: typer.Typer) -> typer.Typer:
    """Give every command of ``app`` and of its sub-apps the one-line error path (see above)."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = _in_one_line(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            one_line_errors(group.typer_instance)
    return app
