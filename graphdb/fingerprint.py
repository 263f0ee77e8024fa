"""What a trained model depends on in the knowledge graph, in a few comparable fields.

A checkpoint records the ``GraphFingerprint`` of the graph it was trained on: the relation types
(their order gives the R-GCN's relation ids), the node table (row i of the node features is
node i) and the text encoder that embedded the node names. Loading it against a graph whose
fingerprint differs fails loudly instead of silently remapping relations or nodes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from graphdb.schema import EDGE_TYPES
from graphdb.tensorize import NodeTable


@dataclass(frozen=True)
class GraphFingerprint:
    edge_types: tuple[str, ...]   # graphdb.schema.EDGE_TYPES, in relation-id order
    node_table: str               # NodeTable.fingerprint: the node ids and names, in row order
    nodes: int
    features: str                 # the text encoder's id (its files' hash and pooling)
    feature_dim: int

    @classmethod
    def of(cls, table: NodeTable, encoder_id: str, feature_dim: int) -> GraphFingerprint:
        return cls(tuple(EDGE_TYPES), table.fingerprint, len(table), encoder_id, int(feature_dim))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "edge_types": list(self.edge_types)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphFingerprint:
        try:
            return cls(tuple(data["edge_types"]), str(data["node_table"]), int(data["nodes"]),
                       str(data["features"]), int(data["feature_dim"]))
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
        return out
