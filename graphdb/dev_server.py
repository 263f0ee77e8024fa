"""The project's own Neo4j server (scripts/neo4j.sh → graphdb/server): its settings, and proof that
the server at a URI is that one, so tests and benchmarks clear only a database that is theirs.

On every start the server writes its DBMS id (``CALL dbms.info()``: a random id made with the
store) to ``<home>/run/server-id``. ``connect_owned`` connects and compares the two. Any other
server, such as a user's own Neo4j at the default URI whose password happens to match, has
another id. Callers skip it, or fail where a server is required (``R2GENKG_REQUIRE_NEO4J=1``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cxr.home import CHECKOUT  # scripts/neo4j.sh's <repo>
from graphdb import cypher
from graphdb.neo4j_store import Neo4jGraphStore
from graphdb.store import GraphStoreError, StoreConfig

SERVER_ID_FILE = Path("run") / "server-id"        # under the server's home; graphdb/server writes it


class NotOurServer(GraphStoreError):
    """The server at the URI cannot be proven to be scripts/neo4j.sh's server of this checkout."""


def server_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where scripts/neo4j.sh keeps its data: ``$R2GENKG_NEO4J_HOME``, else ``<repo>/.neo4j``."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("R2GENKG_NEO4J_HOME") or CHECKOUT / ".neo4j")


@dataclass(frozen=True)
class DevServer:
    """scripts/neo4j.sh's server as the same environment describes it to the script and to us."""

    uri: str
    user: str
    password: str
    database: str
    home: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DevServer:
        """``NEO4J_URI`` (else the script's host and Bolt port), ``NEO4J_USER``, ``NEO4J_PASSWORD``
        (else the dev default), ``NEO4J_DATABASE`` and the script's home."""
        environ = os.environ if environ is None else environ
        host = environ.get("R2GENKG_NEO4J_HOST") or "127.0.0.1"
        port = environ.get("R2GENKG_NEO4J_BOLT_PORT") or "7687"
        return cls(uri=environ.get("NEO4J_URI") or f"bolt://{host}:{port}",
                   user=environ.get("NEO4J_USER") or StoreConfig.user,
                   password=environ.get(StoreConfig.password_env) or StoreConfig.dev_password,
                   database=environ.get("NEO4J_DATABASE") or StoreConfig.database,
                   home=server_home(environ))


def prove_ours(store: Neo4jGraphStore, home: Path) -> None:
    """Raise NotOurServer unless ``store``'s server has the DBMS id written in ``home``."""
    id_file = home / SERVER_ID_FILE
    try:
        expected = id_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        expected = ""
    if not expected:
        raise NotOurServer(f"no server id in {id_file}: cannot prove that the Neo4j at {store.uri} is the "
                           "server of scripts/neo4j.sh (start or restart it with scripts/neo4j.sh); "
                           "not touching it")
    (actual,), = store.run(cypher.DBMS_ID)
    if actual != expected:
        raise NotOurServer(f"the Neo4j at {store.uri} is not the server of scripts/neo4j.sh with home {home} "
                           f"(its DBMS id is not the one in {id_file}); not touching it")


def connect_owned(server: DevServer) -> Neo4jGraphStore:
    """A store on ``server``, proven to be scripts/neo4j.sh's: the only kind tests may clear."""
    store = Neo4jGraphStore.connect(server.uri, server.user, server.password, server.database)
    try:
        prove_ours(store, server.home)
    except BaseException:
        store.close()
        raise
    return store
