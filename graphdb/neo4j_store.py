"""The Neo4j backend: the official driver, parameterised Cypher, batched ``UNWIND $rows`` writes.

Writes run in managed write transactions (one per batch, retried by the driver on transient
errors); reads use ``driver.execute_query`` with an explicit database. Connection problems turn
into one-line GraphStoreErrors that say what to do.
"""
from __future__ import annotations

from typing import Any

from graphdb import cypher
from graphdb.store import GraphStore, GraphStoreError


class Neo4jGraphStore(GraphStore):
    dialect = cypher.NEO4J

    def __init__(self, uri: str = "bolt://127.0.0.1:7687", user: str = "neo4j", password: str = "",
                 database: str = "neo4j", connect_timeout_s: float = 5.0):
        import neo4j  # lazy: importing graphdb must stay cheap

        self.uri, self.user, self.database = uri, user, database
        self._neo4j = neo4j
        try:
            self._driver = neo4j.GraphDatabase.driver(uri, auth=(user, password),
                                                      connection_timeout=connect_timeout_s,
                                                      max_transaction_retry_time=15.0,
                                                      notifications_min_severity="OFF")
            self._driver.verify_connectivity()
        except Exception as err:  # noqa: BLE001 - translated into an actionable message
            raise self._explain(err) from None
        self._check_database()
        self._schema_ready = False

    def _explain(self, err: Exception) -> GraphStoreError:
        exc = self._neo4j.exceptions
        if isinstance(err, exc.AuthError):
            return GraphStoreError(
                f"Neo4j at {self.uri} rejected user {self.user!r}: wrong password. "
                "Set NEO4J_PASSWORD to the server's password (scripts/neo4j.sh uses it too).")
        if isinstance(err, exc.ServiceUnavailable | OSError):
            return GraphStoreError(
                f"cannot reach Neo4j at {self.uri}: is the server running? "
                "Start it with `scripts/neo4j.sh start`, or use --store embedded.")
        if isinstance(err, exc.ClientError) and "DatabaseNotFound" in (err.code or ""):
            return GraphStoreError(
                f"Neo4j at {self.uri} has no database {self.database!r}; Community edition serves "
                "only 'neo4j' (pass --neo4j-database neo4j).")
        if isinstance(err, exc.ConfigurationError | ValueError):
            return GraphStoreError(f"bad Neo4j URI {self.uri!r}: {err}")
        return GraphStoreError(f"Neo4j error at {self.uri}: {err}")

    def _check_database(self) -> None:
        try:
            self._driver.execute_query("RETURN 1", database_=self.database)
        except Exception as err:  # noqa: BLE001
            self.close()
            raise self._explain(err) from None

    def run(self, query: str, params: dict[str, Any] | None = None) -> list[tuple]:
        try:
            records, _, _ = self._driver.execute_query(
                query, parameters_=params or {}, database_=self.database, routing_="r")
        except self._neo4j.exceptions.Neo4jError as err:
            raise GraphStoreError(f"Neo4j query failed ({err.code}): {err.message}") from None
        except self._neo4j.exceptions.DriverError as err:
            raise self._explain(err) from None
        return [tuple(r.values()) for r in records]

    def write(self, query: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return

        def work(tx: Any) -> None:
            tx.run(query, rows=rows).consume()

        try:
            with self._driver.session(database=self.database) as session:
                session.execute_write(work)
        except self._neo4j.exceptions.Neo4jError as err:
            raise GraphStoreError(f"Neo4j write failed ({err.code}): {err.message}") from None
        except self._neo4j.exceptions.DriverError as err:
            raise self._explain(err) from None

    def init_schema(self) -> None:
        if self._schema_ready:
            return
        try:
            with self._driver.session(database=self.database) as session:
                for statement in self.dialect.schema:
                    session.run(statement).consume()
        except self._neo4j.exceptions.Neo4jError as err:
            raise GraphStoreError(f"Neo4j schema setup failed ({err.code}): {err.message}") from None
        except self._neo4j.exceptions.DriverError as err:
            raise self._explain(err) from None
        self._schema_ready = True

    def clear(self) -> None:
        """Delete every node and relationship (tests, and `kg load-m3kg --replace`)."""
        with self._driver.session(database=self.database) as session:
            session.run(cypher.NEO4J_DELETE_ALL).consume()

    def close(self) -> None:
        driver = getattr(self, "_driver", None)
        if driver is not None:
            driver.close()
            self._driver = None
