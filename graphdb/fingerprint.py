"""What a trained model depends on in the knowledge graph, in a few comparable fields.

A checkpoint records the ``GraphFingerprint`` of the graph it was trained on: the relation types
(their order gives the R-GCN's relation ids), the node table (row i of the node features is
node i), the text encoder that embedded the node names, and the graph's content (``GraphContent``:
its entities, triples with their counts and entity → observation links). Loading it against a
graph whose fingerprint differs fails loudly instead of silently remapping relations or nodes, or
growing its subgraphs over other edges than it was trained on.

``GraphContent`` is computed the same way from a ``KnowledgeGraph`` in memory and from a store,
so an opened store can be compared with the graph it should hold (graphdb.provider: an
out-of-date load of the bundled M3KG is found on open).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from graphdb.schema import EDGE_TYPES, EXPRESSES, KnowledgeGraph

if TYPE_CHECKING:   # tensorize imports torch; a store only needs GraphContent
    from graphdb.tensorize import NodeTable


def _digest(rows: Iterable[tuple[Any, ...]]) -> str:
    """sha256 of the rows, sorted, one tab-separated line each: the same set gives the same digest
    whatever order a store returns it in."""
    lines = sorted("\t".join(str(v) for v in row) for row in rows)
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class GraphContent:
    """What the subgraphs are grown from: the entities (key, name), the triples (head, relation,
    tail, count) and the EXPRESSES links (entity, observation), each as a count and a digest."""

    entities: int
    entities_digest: str
    triples: int
    triples_digest: str
    links: int
    links_digest: str

    @classmethod
    def of(cls, entities: Iterable[tuple[str, str]], triples: Iterable[tuple[str, str, str, int]],
           links: Iterable[tuple[str, str]]) -> GraphContent:
        e, t, k = list(entities), list(triples), list(links)
        return cls(len(e), _digest(e), len(t), _digest(t), len(k), _digest(k))

    @classmethod
    def of_graph(cls, kg: KnowledgeGraph) -> GraphContent:
        return cls.of(((e.key, e.name) for e in kg.entities),
                      ((t.head, t.relation.label, t.tail, t.count) for t in kg.triples),
                      ((link.entity, link.observation.value) for link in kg.links))

    @property
    def digest(self) -> str:
        """One digest of all three parts (what a checkpoint records)."""
        return hashlib.sha256(f"{self.entities_digest}{self.triples_digest}{self.links_digest}".encode()).hexdigest()

    def differences(self, other: GraphContent) -> list[str]:
        """One phrase per part that differs, ``self`` being what was expected."""
        parts = [("entities", self.entities, self.entities_digest, other.entities, other.entities_digest),
                 ("triples", self.triples, self.triples_digest, other.triples, other.triples_digest),
                 (f"{EXPRESSES} links", self.links, self.links_digest, other.links, other.links_digest)]
        return [f"{name} {n:,} vs {m:,}" + ("" if n != m else " (the same number, different ones)")
                for name, n, d, m, e in parts if d != e]


@dataclass(frozen=True)
class GraphFingerprint:
    edge_types: tuple[str, ...]   # graphdb.schema.EDGE_TYPES, in relation-id order
    node_table: str               # NodeTable.fingerprint: the node ids and names, in row order
    nodes: int
    features: str                 # the text encoder's id (its files' hash and pooling)
    feature_dim: int
    content: str | None = None    # GraphContent.digest; None in checkpoints written before it (not checked)

    @classmethod
    def of(cls, table: NodeTable, encoder_id: str, feature_dim: int,
           content: GraphContent | None = None) -> GraphFingerprint:
        return cls(tuple(EDGE_TYPES), table.fingerprint, len(table), encoder_id, int(feature_dim),
                   content.digest if content is not None else None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "edge_types": list(self.edge_types)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphFingerprint:
        try:
            content = data.get("content")
            return cls(tuple(data["edge_types"]), str(data["node_table"]), int(data["nodes"]),
                       str(data["features"]), int(data["feature_dim"]), None if content is None else str(content))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a graph fingerprint ({exc!r}): {data!r}") from None

    def differences(self, other: GraphFingerprint) -> list[str]:
        """One phrase per field that differs, ``self`` being what was expected."""
        out = []
        if self.edge_types != other.edge_types:
            out.append(f"relation types {list(self.edge_types)} vs {list(other.edge_types)}")
        if self.node_table != other.node_table or self.nodes != other.nodes:
            out.append(f"node table {self.node_table} ({self.nodes:,} nodes) vs {other.node_table} "
                       f"({other.nodes:,} nodes)")
        if self.features != other.features or self.feature_dim != other.feature_dim:
            out.append(f"node text encoder {self.features} ({self.feature_dim}-d) vs {other.features} "
                       f"({other.feature_dim}-d)")
        if self.content is not None and other.content is not None and self.content != other.content:
            out.append(f"graph content (triples, their counts, {EXPRESSES} links) {self.content[:12]} vs "
                       f"{other.content[:12]}")
        return out
