"""open_store: the backend registry names every StoreKind, and each backend opens from a StoreConfig;
a reader never creates a store; the default store is under the project home, not the current directory."""
from __future__ import annotations

import importlib
import re
from pathlib import Path
from unittest.mock import MagicMock

import neo4j
import pytest

from graphdb.embedded_store import EmbeddedGraphStore
from graphdb.neo4j_store import Neo4jGraphStore
from graphdb.store import (
    BACKENDS,
    DEFAULT_FEATURES_CACHE,
    DEFAULT_STORE_PATH,
    GraphStore,
    GraphStoreError,
    StoreConfig,
    StoreKind,
    open_store,
)


def test_every_kind_has_a_backend():
    assert set(BACKENDS) == set(StoreKind)
    for target in BACKENDS.values():
        module, _, name = target.partition(":")
        assert issubclass(getattr(importlib.import_module(module), name), GraphStore)


def test_embedded_opens_at_the_configured_path(tmp_path: Path):
    with open_store(StoreConfig(kind=StoreKind.EMBEDDED, path=tmp_path / "kg")) as store:
        assert isinstance(store, EmbeddedGraphStore) and store.path == tmp_path / "kg"
    assert (tmp_path / "kg" / EmbeddedGraphStore.FILE).exists()


def test_neo4j_connects_with_the_configured_settings(monkeypatch):
    driver = MagicMock(spec=neo4j.Driver)
    make = MagicMock(return_value=driver)
    monkeypatch.setattr(neo4j.GraphDatabase, "driver", make)
    monkeypatch.setenv("NEO4J_PASSWORD", "s3cret")
    config = StoreConfig(kind="neo4j", uri="bolt://kg.example:7687", user="reader", database="kg")
    with open_store(config) as store:
        assert isinstance(store, Neo4jGraphStore) and store.database == "kg"
    assert make.call_args.args == ("bolt://kg.example:7687",) and make.call_args.kwargs["auth"] == ("reader", "s3cret")
    driver.close.assert_called_once()


def test_a_reader_never_creates_a_store(tmp_path: Path):
    missing = tmp_path / "nothing" / "here"
    with pytest.raises(GraphStoreError, match=rf"no embedded graph at {re.escape(str(missing))}: build it with "
                                              r"`r2genkg kg load-m3kg`"):
        open_store(StoreConfig(path=missing), read_only=True)
    assert not (tmp_path / "nothing").exists()


def test_the_default_store_is_under_the_project_home_wherever_one_stands(monkeypatch, tmp_path: Path):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("R2GENKG_HOME", str(home))
    for name in ("R2GENKG_STORE_PATH", "R2GENKG_FEATURES_CACHE"):
        monkeypatch.delenv(name, raising=False)
    config = StoreConfig.from_env()
    assert (config.path, config.features_cache) == (home / DEFAULT_STORE_PATH, home / DEFAULT_FEATURES_CACHE)
    # what a user types is taken as given, as in any shell command
    assert StoreConfig.from_env({"R2GENKG_STORE_PATH": "kg"}).path == Path("kg")
    assert StoreConfig.from_env(path="kg").path == Path("kg")
