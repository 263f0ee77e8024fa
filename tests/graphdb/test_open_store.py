"""open_store: the backend registry names every StoreKind, and each backend opens from a StoreConfig."""
from __future__ import annotations

import importlib
from pathlib import Path
from unittest.mock import MagicMock

import neo4j

from graphdb.embedded_store import EmbeddedGraphStore
from graphdb.neo4j_store import Neo4jGraphStore
from graphdb.store import BACKENDS, GraphStore, StoreConfig, StoreKind, open_store


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
