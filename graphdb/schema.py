"""The one graph vocabulary: entity types, the 3 M3KG relations, node/edge labels, and the
records every loader produces and every store consumes (Entity, Triple, study nodes, Subgraph).

Graph shape (both stores):
    (:Entity {key, name, aliases, type, count})
    (:Entity)-[:MODIFY|LOCATED_AT|SUGGESTIVE_OF {count}]->(:Entity)
    (:Entity)-[:EXPRESSES]->(:Observation {name})          # the coarse, disease level
    (:Study {id, split, dataset})-[:HAS_IMAGE]->(:Image {path, view})
    (:Study)-[:MENTIONS {certainty, count}]->(:Entity)
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from cxr.observations import OBSERVATIONS, Observation


class EntityType(str, Enum):
    ANATOMY = "anatomy"
    DISORDER = "disorder"
    CONCEPT = "concept"
    DEVICES = "devices"
    PROCEDURES = "procedures"

    @classmethod
    def parse(cls, value: str) -> EntityType:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"unknown entity type {value!r}; expected one of {[t.value for t in cls]}") from None


class Relation(str, Enum):
    """The 3 M3KG relations. ``value`` is M3KG's spelling, ``label`` the graph edge type."""

    MODIFY = "modify"
    LOCATED_AT = "located_at"
    SUGGESTIVE_OF = "suggestive_of"

    @property
    def label(self) -> str:
        return self.value.upper()

    @classmethod
    def parse(cls, value: str) -> Relation:
        key = value.strip().lower()
        for rel in cls:
            if key in (rel.value, rel.value.replace("_", " ")):
                return rel
        raise ValueError(f"unknown relation type {value!r}; expected one of {[r.value for r in cls]}")


RELATIONS: tuple[Relation, ...] = tuple(Relation)

RELATION_MEANINGS: dict[Relation, str] = {
    Relation.MODIFY: 'modifier -> the word it describes ("small" -> "effusion", "left" -> "pleural")',
    Relation.LOCATED_AT: 'finding -> where it is ("effusion" -> "pleural", "opacity" -> "lobe")',
    Relation.SUGGESTIVE_OF: 'finding -> the diagnosis it suggests ("opacity" -> "atelectasis")',
}
"""What each relation means, with examples: the LLM extractor's prompt is built from it."""


class Certainty(str, Enum):
    """How a study mentions an entity, from the labeler's scope rules."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"

    @classmethod
    def from_label(cls, label: float) -> Certainty:
        """CheXpert label value (1.0 / 0.0 / -1.0) → certainty."""
        return {1.0: cls.PRESENT, 0.0: cls.ABSENT, -1.0: cls.UNCERTAIN}[float(label)]


# Node labels and the non-M3KG edge types. The relation edge types are Relation.label.
ENTITY = "Entity"
OBSERVATION = "Observation"
STUDY = "Study"
IMAGE = "Image"
MENTIONS = "MENTIONS"
EXPRESSES = "EXPRESSES"
HAS_IMAGE = "HAS_IMAGE"
EDGE_TYPES: tuple[str, ...] = (*(r.label for r in RELATIONS), EXPRESSES)
"""Edge types a Subgraph can hold, in relation-id order (tensorize adds the inverses)."""


_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = re.compile(r"^[\s.,;:!?()\[\]{}\"']+|[\s.,;:!?()\[\]{}\"']+$")


def normalize(text: str) -> str:
    """The key form of a surface string: NFKC, lower case, single spaces, no edge punctuation.

    Inner punctuation is kept (``"left-sided"``, ``"t12"``), so keys stay readable.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    return _EDGE_PUNCT.sub("", _SPACE.sub(" ", text)).strip()


@dataclass(frozen=True)
class Entity:
    """One KG node. ``key`` is the UMLS CUI where known, else the normalised string."""

    key: str
    name: str
    type: EntityType
    aliases: tuple[str, ...] = ()
    count: int = 0          # mentions supporting it (M3KG: summed triple counts)

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError(f"entity {self.name!r} has an empty key")


@dataclass(frozen=True)
class Triple:
    head: str               # Entity.key
    relation: Relation
    tail: str               # Entity.key
    count: int = 1


@dataclass(frozen=True)
class ObservationLink:
    """(:Entity)-[:EXPRESSES]->(:Observation): e.g. effusion → Pleural Effusion."""

    entity: str             # Entity.key
    observation: Observation


@dataclass(frozen=True)
class ImageNode:
    path: str
    view: str = ""


@dataclass(frozen=True)
class StudyNode:
    id: str
    split: str = ""
    dataset: str = ""
    images: tuple[ImageNode, ...] = ()


@dataclass(frozen=True)
class StudyMention:
    """(:Study)-[:MENTIONS {certainty, count}]->(:Entity)."""

    study: str
    entity: str
    certainty: Certainty
    count: int = 1


@dataclass
class KnowledgeGraph:
    """What a loader or extractor produces and ``GraphStore.upsert`` consumes."""

    entities: list[Entity] = field(default_factory=list)
    triples: list[Triple] = field(default_factory=list)
    links: list[ObservationLink] = field(default_factory=list)
    studies: list[StudyNode] = field(default_factory=list)
    mentions: list[StudyMention] = field(default_factory=list)

    def validate(self) -> None:
        """Every edge endpoint must be a known entity / study; keys must be unique."""
        keys = [e.key for e in self.entities]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
            raise ValueError(f"duplicate entity keys: {dup}")
        known = set(keys)
        for t in self.triples:
            for end in (t.head, t.tail):
                if end not in known:
                    raise ValueError(f"triple {t.head!r} -{t.relation.value}-> {t.tail!r}: unknown entity {end!r}")
        for link in self.links:
            if link.entity not in known:
                raise ValueError(f"observation link to {link.observation.value!r}: unknown entity {link.entity!r}")
        study_ids = {s.id for s in self.studies}
        for m in self.mentions:
            if m.study not in study_ids:
                raise ValueError(f"mention of {m.entity!r}: unknown study {m.study!r}")
            if m.entity not in known:
                raise ValueError(f"study {m.study!r} mentions unknown entity {m.entity!r}")

    def stats(self) -> GraphStats:
        return GraphStats.of(self.entities, self.triples, self.links, len(self.studies), len(self.mentions))


@dataclass(frozen=True)
class GraphStats:
    entities: int
    entity_types: dict[str, int]
    triples: int
    relations: dict[str, int]        # relation value → number of distinct triples
    relation_mentions: dict[str, int]  # relation value → summed counts
    observations_linked: int           # entities with at least one EXPRESSES edge
    studies: int = 0
    mentions: int = 0

    @classmethod
    def of(cls, entities: Sequence[Entity], triples: Sequence[Triple], links: Iterable[ObservationLink],
           studies: int = 0, mentions: int = 0) -> GraphStats:
        types = {t.value: 0 for t in EntityType}
        for e in entities:
            types[e.type.value] += 1
        rels = {r.value: 0 for r in RELATIONS}
        rel_counts = {r.value: 0 for r in RELATIONS}
        for t in triples:
            rels[t.relation.value] += 1
            rel_counts[t.relation.value] += t.count
        return cls(len(entities), types, len(triples), rels, rel_counts,
                   len({link.entity for link in links}), studies, mentions)


# ---- subgraphs: what the Cypher queries return and tensorize consumes ----------------------

@dataclass(frozen=True)
class SubgraphNode:
    """A node of a subgraph. ``label`` is ENTITY or OBSERVATION; ``level`` its granularity:
    per-study 0 = observation level (seeds + their observations), 1 = 1-hop, 2 = 2-hop;
    global mode: the index of the smallest scale that holds it."""

    label: str
    key: str                # Entity.key, or the Observation's name
    name: str
    type: str               # entity type, or "observation"
    count: int
    level: int

    @property
    def id(self) -> str:
        """Unique across labels: ``Entity:C0013687``, ``Observation:Pleural Effusion``."""
        return f"{self.label}:{self.key}"


@dataclass(frozen=True)
class SubgraphEdge:
    head: str               # SubgraphNode.id
    type: str               # one of EDGE_TYPES
    tail: str               # SubgraphNode.id
    count: int


@dataclass(frozen=True)
class Subgraph:
    """Nested multi-granularity subgraph. Nodes are ordered by (level, rank); edges by
    (type id, head, tail). ``at_level(k)`` is the scale-k subgraph: nodes of level ≤ k and the
    edges among them."""

    study: str | None
    seeds: tuple[str, ...]
    nodes: tuple[SubgraphNode, ...]
    edges: tuple[SubgraphEdge, ...]

    @property
    def levels(self) -> int:
        return 1 + max((n.level for n in self.nodes), default=-1)

    def at_level(self, level: int) -> Subgraph:
        nodes = tuple(n for n in self.nodes if n.level <= level)
        ids = {n.id for n in nodes}
        edges = tuple(e for e in self.edges if e.head in ids and e.tail in ids)
        return Subgraph(self.study, self.seeds, nodes, edges)


@dataclass(frozen=True)
class StudySeeds:
    """What a per-study subgraph grows from: predicted or labelled observations, and/or entity
    keys (e.g. the entities the study's report mentions as present)."""

    study: str
    observations: tuple[Observation, ...] = ()
    entities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "observations", tuple(sorted(set(self.observations), key=OBSERVATIONS.index)))
        object.__setattr__(self, "entities", tuple(sorted(set(self.entities))))

    @property
    def signature(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Studies with the same signature have the same subgraph."""
        return tuple(o.value for o in self.observations), self.entities


@dataclass(frozen=True)
class SubgraphSpec:
    """Node budgets. ``level_budgets[k]`` caps the nodes *added* at per-study level k;
    ``global_scales`` are the paper's fixed subgraph sizes (top nodes by mention count)."""

    level_budgets: tuple[int, ...] = (16, 48, 96)
    global_scales: tuple[int, ...] = (101, 206, 319, 400, 558)

    def __post_init__(self) -> None:
        if len(self.level_budgets) != 3 or any(b < 1 for b in self.level_budgets):
            raise ValueError(f"level_budgets must be 3 positive ints (observation, 1-hop, 2-hop), got {self.level_budgets}")
        if not self.global_scales or any(b < 1 for b in self.global_scales) or list(self.global_scales) != sorted(self.global_scales):
            raise ValueError(f"global_scales must be increasing positive ints, got {self.global_scales}")
