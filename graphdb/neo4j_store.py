"""The Neo4j backend: an injected official driver, parameterised Cypher, batched ``UNWIND $rows`` writes.

Writes run in managed write transactions (one per batch, retried by the driver on transient
errors); reads use ``driver.execute_query`` with an explicit database. Every driver call goes
through ``_translated``, which turns the driver's errors into one-line GraphStoreErrors. The store
speaks Bolt only: an ``http(s)://`` URI (the Browser's address) is refused before any network call.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Self
from urllib.parse import urlsplit

import neo4j
from neo4j.exceptions import (
    AuthError,
    ConfigurationError,
    DriverError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
)

from graphdb import cypher
from graphdb.store import GraphStore, GraphStoreError, StoreConfig

DATABASE_NOT_FOUND = "Neo.ClientError.Database.DatabaseNotFound"
# The driver reaches http(s):// through Neo4j's Query API: a preview that urllib3 retries 3 times
# with a warning each before failing, and that lacks what the store uses (driver notes).
HTTP_SCHEMES = ("http", "https")
BOLT_PORT, HTTP_PORTS = 7687, (7474, 7473)


class Neo4jGraphStore(GraphStore):
    """A Neo4j database behind a driver the caller hands over (``connect`` builds one). The store
    owns the driver from then on: ``close`` closes it. ``uri`` and ``user`` only name the server
    in error messages."""

    dialect = cypher.NEO4J

    def __init__(self, driver: neo4j.Driver, database: str = "neo4j", *,
                 uri: str | None = None, user: str | None = None) -> None:
        self._driver: neo4j.Driver | None = driver
        self.database, self.uri, self.user = database, uri, user
        self._schema_ready = False

    @classmethod
    def connect(cls, uri: str = "bolt://127.0.0.1:7687", user: str = "neo4j", password: str = "",
                database: str = "neo4j", connect_timeout_s: float = 5.0) -> Self:
        """A driver for ``uri``, checked now: the server answers, the password is right and the
        database exists (so a bad setting fails here, not at the first query)."""
        refuse_http(uri)
        with _translated("connect", uri, user, database):
            driver = neo4j.GraphDatabase.driver(uri, auth=(user, password), connection_timeout=connect_timeout_s,
                                                max_transaction_retry_time=15.0, notifications_min_severity="OFF")
        store = cls(driver, database, uri=uri, user=user)
        try:
            with store._translated("connect"), _driver_log_quiet():
                driver.verify_connectivity()
                driver.execute_query("RETURN 1", database_=database)
        except GraphStoreError:
            store.close()
            raise
        return store

    @classmethod
    def from_config(cls, config: StoreConfig, read_only: bool = False) -> Self:
        # read_only changes nothing here: a server's database exists (an empty one reads as empty)
        return cls.connect(config.uri, config.user, config.password, config.database)

    @property
    def driver(self) -> neo4j.Driver:
        if self._driver is None:
            raise GraphStoreError("this Neo4j store is closed; open a new one")
        return self._driver

    def _translated(self, doing: str) -> AbstractContextManager[None]:
        return _translated(doing, self.uri, self.user, self.database)

    def run(self, query: str, params: dict[str, Any] | None = None) -> list[tuple]:
        with self._translated("query"):
            records, _, _ = self.driver.execute_query(query, parameters_=params or {}, database_=self.database,
                                                      routing_="r")
        return [tuple(r.values()) for r in records]

    def write(self, query: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return

        def work(tx: neo4j.ManagedTransaction) -> None:
            tx.run(query, rows=rows).consume()

        with self._translated("write"), self.driver.session(database=self.database) as session:
            session.execute_write(work)

    def init_schema(self) -> None:
        if self._schema_ready:
            return
        with self._translated("schema setup"), self.driver.session(database=self.database) as session:
            for statement in self.dialect.schema:
                session.run(statement).consume()
        self._schema_ready = True

    def clear(self) -> None:
        """Delete every node and relationship (tests, and `kg load-m3kg --replace`)."""
        # an auto-commit session.run: CALL { … } IN TRANSACTIONS cannot run in a managed transaction
        with self._translated("clear"), self.driver.session(database=self.database) as session:
            session.run(self.dialect.delete_all).consume()

    def close(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None


def refuse_http(uri: str) -> None:
    """An http(s):// URI is Neo4j's HTTP address: say which Bolt URI to use instead."""
    parts = urlsplit(uri)
    if parts.scheme.lower() not in HTTP_SCHEMES:
        return
    try:
        port = parts.port
    except ValueError:
        port = None
    bolt_port = BOLT_PORT if port in (None, *HTTP_PORTS) else "<its Bolt port>"
    host = parts.hostname or "127.0.0.1"
    bolt = f"bolt://{f'[{host}]' if ':' in host else host}:{bolt_port}"
    raise GraphStoreError(f"{uri} is Neo4j's HTTP address (Browser); the graph store speaks Bolt: "
                          f"use {bolt} (--neo4j-uri or NEO4J_URI)")


@contextmanager
def _driver_log_quiet() -> Iterator[None]:
    """While connecting, the driver logs a failure before raising it (ERROR neo4j.pool: Unable to
    retrieve routing information); ``_translated`` turns the error into the one line that counts."""
    logger = logging.getLogger("neo4j")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _translated(doing: str, uri: str | None, user: str | None, database: str) -> Iterator[None]:
    """The one place driver errors become GraphStoreErrors: one line that says what to do."""
    try:
        yield
    except (Neo4jError, DriverError, OSError, ValueError) as err:
        raise explain(err, doing, uri, user, database) from None


def explain(err: Exception, doing: str, uri: str | None, user: str | None, database: str) -> GraphStoreError:
    """A driver error → a one-line GraphStoreError naming the cause and the fix."""
    at = f" at {uri}" if uri else ""
    if isinstance(err, AuthError):
        who = f"user {user!r}" if user else "the credentials"
        return GraphStoreError(f"Neo4j{at} rejected {who}: wrong password. "
                               "Set NEO4J_PASSWORD to the server's password (scripts/neo4j.sh uses it too).")
    if isinstance(err, ServiceUnavailable | SessionExpired | OSError):
        return GraphStoreError(f"cannot reach Neo4j{at}: is the server running? "
                               "Start it with `scripts/neo4j.sh start`, or use --store embedded.")
    if isinstance(err, Neo4jError) and err.code == DATABASE_NOT_FOUND:
        return GraphStoreError(f"Neo4j{at} has no database {database!r}; Community edition serves "
                               "only 'neo4j' (pass --neo4j-database neo4j).")
    if isinstance(err, ConfigurationError):
        return GraphStoreError(f"bad Neo4j URI {uri!r}: {_one_line(str(err))}")
    if isinstance(err, Neo4jError):
        return GraphStoreError(f"Neo4j {doing} failed ({err.code}): {_one_line(err.message or str(err))}")
    return GraphStoreError(f"Neo4j {doing} failed{at}: {_one_line(str(err))}")


def _one_line(text: str) -> str:
    """The first non-empty line (Cypher syntax errors append the query and a caret)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text.strip())
