"""The project home: where the project's own relative paths start, whatever the current directory.

The default store and feature cache (graphdb.store.StoreConfig) and the relative paths inside a
config, hence inside a checkpoint (``data.image_root``, ``data.annotation``,
``train.output_dir``), are relative to the project home. Paths typed on the command line or set
in an environment variable stay relative to the current directory, as in any shell command.

The project home is ``$R2GENKG_HOME`` when set (the Docker image sets ``/app``), else the source
checkout this code runs from (the folder with pyproject.toml), else the current directory (an
installed wheel without ``R2GENKG_HOME``).
"""
from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "R2GENKG_HOME"
CHECKOUT = Path(__file__).resolve().parents[1]   # the clone, when this is a source checkout


def project_home() -> Path:
    """``$R2GENKG_HOME``, else this source checkout, else the current directory (absolute)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    if (CHECKOUT / "pyproject.toml").is_file():
        return CHECKOUT
    return Path.cwd()


def in_home(path: str | Path) -> Path:
    """``path`` itself when absolute, else the same path under the project home."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_home() / path
