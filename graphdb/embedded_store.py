"""The embedded backend: LadybugDB (the maintained Kùzu fork), no server, one file on disk.

``EmbeddedGraphStore(path)`` opens or creates ``<path>/graph.lbdb``; one process may hold it
open for writing, any number read-only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from graphdb import cypher
from graphdb.store import GraphStore, GraphStoreError, StoreConfig


class EmbeddedGraphStore(GraphStore):
    """LadybugDB in ``<path>/graph.lbdb``. One process may hold it open for writing."""

    dialect = cypher.LADYBUG
    FILE = "graph.lbdb"

    def __init__(self, path: Path | str, read_only: bool = False, buffer_pool_mb: int = 1024):
        import ladybug  # lazy: importing graphdb must stay cheap

        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise GraphStoreError(f"embedded store path {self.path} is a file; pass a directory")
        if read_only and not (self.path / self.FILE).exists():
            raise GraphStoreError(f"no embedded graph at {self.path}: build it with `r2genkg kg load-m3kg` "
                                  "(or `r2genkg pipeline`), or point --store-path / R2GENKG_STORE_PATH at one")
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = ladybug.Database(str(self.path / self.FILE), read_only=read_only,
                                        buffer_pool_size=buffer_pool_mb * 1024 * 1024)
            self._conn = ladybug.Connection(self._db)
        except RuntimeError as err:
            raise GraphStoreError(f"cannot open the embedded graph at {self.path}: {err} "
                                  "(is another process using it?)") from None
        self._schema_ready = False
        self.read_only = read_only

    @classmethod
    def from_config(cls, config: StoreConfig, read_only: bool = False) -> Self:
        return cls(config.path, read_only=read_only)

    def run(self, query: str, params: dict[str, Any] | None = None) -> list[tuple]:
        try:
            result = self._conn.execute(query, params or {})
        except RuntimeError as err:
            if "does not exist" in str(err) and not self._schema_ready and not self.read_only:
                self.init_schema()
                result = self._conn.execute(query, params or {})
            elif "does not exist" in str(err) and not self._schema_ready:
                raise GraphStoreError(f"the embedded graph at {self.path} has no tables yet: load it with "
                                      "`r2genkg kg load-m3kg`") from None
            else:
                raise GraphStoreError(f"embedded query failed: {err}") from None
        return [tuple(row) for row in result.get_all()]

    def write(self, query: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._conn.execute(query, {"rows": rows})

    def create(self, query: str, rows: list[dict[str, Any]]) -> None:
        # LadybugDB 0.22 segfaults on the third COPY-from-subquery in one connection, so each
        # COPY gets a short-lived connection of its own (measured: no cost).
        import ladybug

        conn = ladybug.Connection(self._db)
        try:
            conn.execute(query, {"rows": rows})
        finally:
            conn.close()

    def init_schema(self) -> None:
        if not self._schema_ready:
            for statement in self.dialect.schema:
                self._conn.execute(statement)
            self._schema_ready = True

    def clear(self) -> None:
        self.init_schema()   # the delete needs the tables to exist
        self._conn.execute(self.dialect.delete_all)

    def close(self) -> None:
        if getattr(self, "_conn", None) is not None:
            self._conn.close()
            self._db.close()
            self._conn = None
