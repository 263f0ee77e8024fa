"""Atomic writes, the one home for them: a file or a directory appears whole or not at all.

``atomic_file(path)`` yields a handle on a hidden sibling and renames it over ``path`` once the
block ends without error; ``atomic_directory(path)`` does the same for a folder (the old folder
is swapped out, then deleted). A crash leaves at most a hidden ``.tmp`` sibling, never a torn
``path``; the next write removes it.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb", encoding: str | None = None,
                durable: bool = True) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary sibling, then ``os.replace``; ``durable`` fsyncs first
    (skip it for files that are cheap to make again, such as rendered phantoms)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        with open(tmp, mode, encoding=encoding) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_file(path, "w", encoding="utf-8") as handle:
        handle.write(text)


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces ``path`` (which may exist)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _sibling(path, "tmp"), _sibling(path, "old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
