"""Test-session setup: offline hub switches and a guard that refuses non-loopback connections."""
from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

for _key, _value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
    os.environ.setdefault(_key, _value)

_real_connect = socket.socket.connect


def _is_local(address: object) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths
        return True
    host = str(address[0])
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_local(address):
        raise RuntimeError(f"tests must not use the network: connect to {address!r} refused")
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _no_default_store(tmp_path_factory: pytest.TempPathFactory):
    """Code that falls back to ``StoreConfig.from_env()`` gets a graph of the test session, never
    the user's outputs/kg (the same goes for subprocesses, which inherit the environment)."""
    root = tmp_path_factory.mktemp("default_store")
    saved = {k: os.environ.get(k) for k in ("R2GENKG_STORE", "R2GENKG_STORE_PATH", "R2GENKG_FEATURES_CACHE")}
    os.environ.update(R2GENKG_STORE="embedded", R2GENKG_STORE_PATH=str(root / "embedded"),
                      R2GENKG_FEATURES_CACHE=str(root / "features"))
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def iu_annotation() -> Path:
    """The bundled real IU X-ray annotation.json (2,955 reports, no images)."""
    return REPO / "cxr" / "resources" / "iu_xray" / "annotation.json"


@pytest.fixture(scope="session")
def neo4j_settings():
    """The Neo4j server of scripts/neo4j.sh (graphdb.dev_server.DevServer: uri, user, password,
    database, home; from the environment), proven to be that server: tests clear it.

    Skips when the server cannot be reached, refuses the login or cannot be proven ours (its
    DBMS id is not the one in <home>/run/server-id: a user's own Neo4j at the same URI is never
    touched); with R2GENKG_REQUIRE_NEO4J=1 (CI) that is a failure instead.
    """
    from graphdb.dev_server import DevServer, connect_owned
    from graphdb.store import GraphStoreError

    server = DevServer.from_env()
    try:
        connect_owned(server).close()
    except GraphStoreError as e:
        reason = f"Neo4j tests need the server of scripts/neo4j.sh: {e}"
        if os.environ.get("R2GENKG_REQUIRE_NEO4J") == "1":
            pytest.fail(f"R2GENKG_REQUIRE_NEO4J=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return server


@pytest.fixture(scope="session")
def m3kg_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded store holding the bundled M3KG, loaded once per session (open it read-write,
    one GraphStore at a time)."""
    from graphdb.embedded_store import EmbeddedGraphStore
    from graphdb.m3kg import load_m3kg

    path = tmp_path_factory.mktemp("kg") / "embedded"
    with EmbeddedGraphStore(path) as store:
        store.upsert(load_m3kg())
    return path


@pytest.fixture(scope="session")
def m3kg_config(tmp_path_factory: pytest.TempPathFactory, m3kg_store: Path):
    """A StoreConfig for the session's M3KG store, node features cached once per session."""
    from graphdb.store import StoreConfig

    return StoreConfig(path=m3kg_store, features_cache=tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, m3kg_config) -> Path:
    """A debug-config checkpoint trained for 2 epochs on 16 phantom studies (with its val + test
    phantoms on disk): what the engine, run_batch and API tests serve. About 20 s, once a session."""
    from tests.generator.conftest import debug_experiment
    from training.loop import train

    root = tmp_path_factory.mktemp("tiny_ckpt")
    cfg = debug_experiment(root, "train.epochs=2", "data.limit={train: 16, val: 4, test: 8}",
                           "train.batch_size=8", "train.log_every=1")
    result = train(cfg, m3kg_config, resume=False, progress=False)
    assert result.best is not None, "the tiny training run wrote no best checkpoint"
    return result.best
