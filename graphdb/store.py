"""The GraphStore interface (upsert, subgraph queries, stats), its settings and ``open_store``.

``GraphStore`` holds everything the backends share: batching, the upsert order, the subgraph
logic (graphdb.subgraphs) and stats. A backend (graphdb.embedded_store, graphdb.neo4j_store)
supplies ``run`` (a read query → tuples), ``write`` (one ``UNWIND $rows`` batch in one
transaction), its schema, its bulk paths and ``from_config``.
"""
from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Self

from tqdm.auto import tqdm

from cxr.home import in_home
from cxr.observations import OBSERVATIONS, Observation
from graphdb import cypher
from graphdb.cypher import Dialect
from graphdb.fingerprint import GraphContent
from graphdb.schema import (
    RELATIONS,
    KnowledgeGraph,
    Relation,
    StudySeeds,
    Subgraph,
    SubgraphSpec,
)
from graphdb.subgraphs import global_subgraph, seeds_from_mentions, study_subgraphs


class GraphStoreError(RuntimeError):
    """A store problem with a one-line message that says what to do."""


class StoreKind(str, Enum):
    EMBEDDED = "embedded"
    NEO4J = "neo4j"


# The one default of where the pipeline, training, checkpoints, serving and the `kg` commands find
# the graph and its node features: relative to the project home (cxr.home), not the current directory.
DEFAULT_STORE_PATH = Path("outputs/kg/embedded")
DEFAULT_FEATURES_CACHE = Path("outputs/kg/features")

ENV_VARS = {   # StoreConfig field → environment variable (the CLI flags override these)
    "kind": "R2GENKG_STORE", "path": "R2GENKG_STORE_PATH", "uri": "NEO4J_URI", "user": "NEO4J_USER",
    "database": "NEO4J_DATABASE", "features_cache": "R2GENKG_FEATURES_CACHE",
    "features_model": "R2GENKG_FEATURES_MODEL",
}


@dataclass(frozen=True)
class StoreConfig:
    """Where the knowledge graph lives and how its nodes are embedded: the deployment's settings.

    Filled from the command line or the environment (``from_env``), passed to whatever opens the
    graph, and never saved in a checkpoint (a checkpoint records a fingerprint of the graph it
    was trained on instead). The Neo4j password is read from the environment, never a flag.
    The default paths are under the project home; a path given as a flag or an environment
    variable is taken as given (relative to the current directory).
    """

    kind: StoreKind = StoreKind.EMBEDDED
    path: Path = field(default_factory=lambda: in_home(DEFAULT_STORE_PATH))   # embedded store: a directory
    uri: str = "bolt://127.0.0.1:7687"
    user: str = "neo4j"
    database: str = "neo4j"
    # node text embeddings, cached per graph + encoder
    features_cache: Path = field(default_factory=lambda: in_home(DEFAULT_FEATURES_CACHE))
    features_model: Path | None = None             # local sentence-transformers folder; None → bundled MiniLM
    password_env: str = "NEO4J_PASSWORD"
    dev_password: str = "r2genkg-dev"              # scripts/neo4j.sh's documented default

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", StoreKind(self.kind))
        except ValueError:
            raise ValueError(f"store must be one of {[k.value for k in StoreKind]}, got {self.kind!r}") from None
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "features_cache", Path(self.features_cache))
        if self.features_model is not None:
            object.__setattr__(self, "features_model", Path(self.features_model))

    @property
    def password(self) -> str:
        return os.environ.get(self.password_env) or self.dev_password

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> StoreConfig:
        """Defaults, then the environment (``ENV_VARS``), then ``overrides`` that are not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {f: environ[v] for f, v in ENV_VARS.items() if environ.get(v)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class StoreStats:
    nodes: dict[str, int]                       # label → count
    edges: dict[str, tuple[int, int]]           # edge type → (edges, summed count)
    entity_types: dict[str, int]

    def format(self) -> str:
        lines = ["nodes:  " + ", ".join(f"{k} {v:,}" for k, v in self.nodes.items()),
                 "edges:  " + ", ".join(f"{k} {n:,}" for k, (n, _) in self.edges.items()),
                 "counts: " + ", ".join(f"{k} {c:,}" for k, (_, c) in self.edges.items() if k in {r.label for r in RELATIONS}),
                 "types:  " + ", ".join(f"{k} {v:,}" for k, v in self.entity_types.items())]
        return "\n".join(lines)


@dataclass
class UpsertReport:
    written: dict[str, int] = field(default_factory=dict)   # what → rows sent

    def add(self, what: str, n: int) -> None:
        self.written[what] = self.written.get(what, 0) + n


def batches(rows: Sequence[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield list(rows[start:start + size])


class GraphStore(ABC):
    """Upsert a KnowledgeGraph; read stats, the node table and multi-granularity subgraphs."""

    dialect: Dialect

    # ---- backend primitives ----
    @abstractmethod
    def run(self, query: str, params: dict[str, Any] | None = None) -> list[tuple]:
        """A read query → rows as tuples."""

    @abstractmethod
    def write(self, query: str, rows: list[dict[str, Any]]) -> None:
        """One ``UNWIND $rows`` batch, in one transaction."""

    @abstractmethod
    def init_schema(self) -> None:
        """Constraints / indexes (Neo4j) or tables (Ladybug). Idempotent; runs before writes."""

    @abstractmethod
    def clear(self) -> None:
        """Delete every node and relationship (``self.dialect.delete_all``)."""

    @abstractmethod
    def close(self) -> None: ...

    @classmethod
    @abstractmethod
    def from_config(cls, config: StoreConfig, read_only: bool = False) -> Self:
        """Open the store ``config`` describes (what ``open_store`` calls). ``read_only``: the
        caller only reads, so a store that does not exist is an error, never created in passing."""

    def create(self, query: str, rows: list[dict[str, Any]]) -> None:
        """Bulk insert of relationships that do not exist yet (one batch)."""
        self.write(query, rows)

    def write_triples(self, relation: Relation, rows: list[dict[str, Any]], batch_size: int,
                      tick: Callable[[int], None]) -> None:
        """Insert the new relationships in bulk and update the counts that changed. Reading what
        exists first keeps reruns idempotent: a batch committed before a crash counts as
        existing next time. One writer at a time."""
        existing = {(h, t): c for h, t, c in self.run(cypher.EXISTING_TRIPLES[relation])}
        new = [r for r in rows if (r["head"], r["tail"]) not in existing]
        changed = [r for r in rows if existing.get((r["head"], r["tail"]), r["count"]) != r["count"]]
        for batch in batches(new, batch_size):
            self.create(self.dialect.create_triples[relation], batch)
            tick(len(batch))
        for batch in batches(changed, batch_size):
            self.write(cypher.UPDATE_TRIPLE_COUNTS[relation], batch)
        tick(len(rows) - len(new))

    def write_mentions(self, rows: list[dict[str, Any]], batch_size: int, tick: Callable[[int], None]) -> None:
        existing = {(s, e): (c, n) for s, e, c, n in self.run(cypher.EXISTING_MENTIONS)}
        new = [r for r in rows if (r["study"], r["entity"]) not in existing]
        changed = [r for r in rows if (r["study"], r["entity"]) in existing
                   and existing[(r["study"], r["entity"])] != (r["certainty"], r["count"])]
        for batch in batches(new, batch_size):
            self.create(self.dialect.create_mentions, batch)
            tick(len(batch))
        for batch in batches(changed, batch_size):
            self.write(cypher.UPDATE_MENTIONS, batch)
        tick(len(rows) - len(new))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- shared behaviour ----
    def upsert(self, kg: KnowledgeGraph, batch_size: int = 10_000, progress: bool = False) -> UpsertReport:
        """MERGE everything on its key: re-running the same graph changes nothing and never
        duplicates a node or an edge; a run killed halfway and rerun completes the graph.
        Counts are *set*, not added, so a load is idempotent."""
        return self._upsert(kg, batch_size, progress, studies_only=False)

    def attach_studies(self, kg: KnowledgeGraph, batch_size: int = 10_000, progress: bool = False) -> UpsertReport:
        """Add ``kg``'s studies, images and mentions to the graph already stored (e.g. the M3KG):
        entities it mentions that the store lacks are added; existing entities, triples and
        links are left as they are."""
        return self._upsert(kg, batch_size, progress, studies_only=True)

    def _upsert(self, kg: KnowledgeGraph, batch_size: int, progress: bool, studies_only: bool) -> UpsertReport:
        if not 1 <= batch_size <= 50_000:
            raise ValueError(f"batch_size must be in 1..50000, got {batch_size}")
        kg.validate()
        self.init_schema()
        report = UpsertReport()
        if studies_only:
            mentioned = {m.entity for m in kg.mentions}
            kg = KnowledgeGraph([e for e in kg.entities if e.key in mentioned], [], [], kg.studies, kg.mentions)
        total = (len(kg.entities) + len(OBSERVATIONS) + len(kg.triples) + len(kg.links)
                 + len(kg.studies) + sum(len(s.images) for s in kg.studies) + len(kg.mentions))
        with tqdm(total=total, desc=f"loading graph ({self.dialect.name})", unit="row", disable=not progress) as bar:
            def step(what: str, query: str, rows: list[dict[str, Any]]) -> None:
                for batch in batches(rows, batch_size):
                    self.write(query, batch)
                    bar.update(len(batch))
                report.add(what, len(rows))

            step("entities", cypher.ADD_MISSING_ENTITIES if studies_only else cypher.UPSERT_ENTITIES,
                 [{"key": e.key, "name": e.name, "type": e.type.value, "aliases": list(e.aliases), "count": e.count}
                  for e in kg.entities])
            step("observations", cypher.UPSERT_OBSERVATIONS,
                 [{"name": o.value, "rank": i} for i, o in enumerate(OBSERVATIONS)])
            for rel in RELATIONS:
                rows = [{"head": t.head, "tail": t.tail, "count": t.count} for t in kg.triples if t.relation is rel]
                self.write_triples(rel, rows, batch_size, bar.update)
                report.add(rel.value, len(rows))
            step("links", cypher.UPSERT_LINKS,
                 [{"entity": link.entity, "observation": link.observation.value} for link in kg.links])
            step("studies", cypher.UPSERT_STUDIES,
                 [{"id": s.id, "split": s.split, "dataset": s.dataset} for s in kg.studies])
            step("images", cypher.UPSERT_IMAGES,
                 [{"study": s.id, "path": i.path, "view": i.view} for s in kg.studies for i in s.images])
            mentions = [{"study": m.study, "entity": m.entity, "certainty": m.certainty.value, "count": m.count}
                        for m in kg.mentions]
            self.write_mentions(mentions, batch_size, bar.update)
            report.add("mentions", len(mentions))
        return report

    def stats(self) -> StoreStats:
        nodes = {label: int(self.run(q)[0][0]) for label, q in cypher.COUNT_NODES.items()}
        edges = {}
        for label, q in cypher.COUNT_RELATIONS.items():
            n, total = self.run(q)[0]
            edges[label] = (int(n or 0), int(total or 0))
        types = {str(t): int(n) for t, n in self.run(cypher.ENTITY_TYPES)}
        return StoreStats(nodes, edges, types)

    def content(self) -> GraphContent:
        """The stored entities, triples (with counts) and EXPRESSES links as a ``GraphContent``:
        equal to ``GraphContent.of_graph(kg)`` for a store that holds exactly ``kg``'s graph."""
        triples = [(str(h), rel.label, str(t), int(c)) for rel in RELATIONS
                   for h, t, c in self.run(cypher.EXISTING_TRIPLES[rel])]
        return GraphContent.of(((str(k), str(n)) for k, n in self.run(cypher.ALL_ENTITIES)), triples,
                               ((str(e), str(o)) for e, o in self.run(cypher.ALL_LINKS)))

    def node_table(self) -> tuple[list[str], list[str]]:
        """(ids, names) of every node: the 14 observations in column order, then entities by key."""
        obs = [name for name, _ in self.run(cypher.ALL_OBSERVATIONS)]
        ents = self.run(cypher.ALL_ENTITIES)
        return ([f"Observation:{o}" for o in obs] + [f"Entity:{k}" for k, _ in ents],
                list(obs) + [str(n) for _, n in ents])

    def study_subgraphs(self, seeds: Sequence[StudySeeds], spec: SubgraphSpec | None = None,
                        batch_size: int = 512, dedupe: bool = True, progress: bool = False) -> list[Subgraph]:
        """Per-study 3-level subgraphs, one batched round trip per level per ``batch_size`` studies."""
        with tqdm(desc=f"subgraphs ({self.dialect.name})", unit="seed set", disable=not progress) as bar:
            return study_subgraphs(self.run, self.dialect, seeds, spec or SubgraphSpec(),
                                   batch_size=batch_size, dedupe=dedupe, progress=bar.update)

    def global_subgraph(self, spec: SubgraphSpec | None = None) -> Subgraph:
        return global_subgraph(self.run, self.dialect, spec or SubgraphSpec())

    def study_seeds(self, study_ids: Sequence[str],
                    observations: dict[str, Sequence[Observation]] | None = None,
                    batch_size: int = 2_000) -> list[StudySeeds]:
        """Seeds from the stored reports: the entities each study mentions as present/uncertain,
        plus ``observations`` (e.g. the labeler's positive labels) where given."""
        rows: list[tuple] = []
        for start in range(0, len(study_ids), batch_size):
            rows += self.run(cypher.STUDY_MENTIONS, {"ids": list(study_ids[start:start + batch_size])})
        return seeds_from_mentions(rows, study_ids, observations)


# Backends as "module:Class", imported on first use: each backend module imports this one (and
# ladybug or neo4j), so a static import here would be a cycle. A new backend is one module + one line.
BACKENDS: dict[StoreKind, str] = {
    StoreKind.EMBEDDED: "graphdb.embedded_store:EmbeddedGraphStore",
    StoreKind.NEO4J: "graphdb.neo4j_store:Neo4jGraphStore",
}


def open_store(config: StoreConfig, read_only: bool = False) -> GraphStore:
    """The store ``config.kind`` names, opened with ``config``'s settings. The caller closes it.
    ``read_only`` (stats, subgraphs, features): a store that does not exist yet is a GraphStoreError
    that says how to build it, and nothing is created."""
    module, _, name = BACKENDS[config.kind].partition(":")
    backend: type[GraphStore] = getattr(importlib.import_module(module), name)
    return backend.from_config(config, read_only=read_only)
