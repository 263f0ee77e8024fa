"""Corpus counts → one ``KnowledgeGraph``: studies, entity / triple / mention counts from any
extractor (rules or LLM), merged so the graph never depends on the input order.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from cxr.records import DataError, StudyRecord
from graphdb.hierarchy import observation_links
from graphdb.schema import (
    Certainty,
    Entity,
    ImageNode,
    KnowledgeGraph,
    Relation,
    StudyMention,
    StudyNode,
    Triple,
    normalize,
)
from graphdb.vocabulary import DictEntry

_RANK = {Certainty.ABSENT: 0, Certainty.UNCERTAIN: 1, Certainty.PRESENT: 2}   # CheXpert precedence


def study_node(record: StudyRecord, infer_iu_views: bool = True) -> StudyNode:
    """The record's study and its images; R2Gen's two IU X-ray images are frontal then lateral."""
    views: tuple[str, ...] = ("",) * len(record.image_paths)
    if infer_iu_views and record.dataset == "iu_xray" and len(record.image_paths) == 2:
        views = ("frontal", "lateral")
    images = tuple(ImageNode(str(p), v) for p, v in zip(record.image_paths, views, strict=True))
    return StudyNode(record.study_id, record.split, record.dataset, images)


def _winner(votes: Counter[DictEntry]) -> DictEntry:
    return min(votes, key=lambda e: (-votes[e], e.name, e.type.value))


class GraphAccumulator:
    """Corpus counts → a ``KnowledgeGraph`` whose every list is totally ordered.

    Entity count = mentions in the corpus, name = dictionary name, aliases = surface forms seen;
    triple count = sentences (rules) or study outputs (LLM) supporting it; per study and entity
    one MENTIONS edge, certainty by CheXpert precedence present > uncertain > absent, count =
    mentions. A key met with several names / types (LLM output) takes the most frequent one,
    ties broken by name then type, so the graph does not depend on the input order.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Counter[DictEntry]] = defaultdict(Counter)
        self._counts: Counter[str] = Counter()
        self._forms: dict[str, set[str]] = defaultdict(set)
        self._triples: Counter[tuple[str, Relation, str]] = Counter()
        self._studies: dict[str, StudyNode] = {}
        self._mentions: dict[tuple[str, str], tuple[Certainty, int]] = {}

    def add_study(self, node: StudyNode) -> None:
        if node.id in self._studies:
            raise DataError(f"duplicate study id {node.id!r}: study ids must be unique in a corpus")
        self._studies[node.id] = node

    def add_entity(self, entry: DictEntry, surface: str | None = None, mentions: int = 0) -> None:
        self._entries[entry.key][entry] += 1
        self._counts[entry.key] += mentions
        if surface:
            self._forms[entry.key].add(surface)     # normalised once per distinct form, in build()

    def add_mention(self, study: str, entry: DictEntry, surface: str, certainty: Certainty) -> None:
        self.add_entity(entry, surface, mentions=1)
        best, count = self._mentions.get((study, entry.key), (certainty, 0))
        if _RANK[certainty] > _RANK[best]:
            best = certainty
        self._mentions[(study, entry.key)] = (best, count + 1)

    def add_triple(self, head: DictEntry, relation: Relation, tail: DictEntry, count: int = 1) -> None:
        self.add_entity(head)
        self.add_entity(tail)
        self._triples[(head.key, relation, tail.key)] += count

    def build(self) -> KnowledgeGraph:
        forms = {k: tuple(sorted({f for f in map(normalize, raw) if f})) for k, raw in self._forms.items()}
        entities = [Entity(k, e.name, e.type, forms.get(k, ()), self._counts[k])
                    for k, e in sorted((k, _winner(votes)) for k, votes in self._entries.items())]
        kg = KnowledgeGraph(
            entities=entities,
            triples=[Triple(h, r, t, c) for (h, r, t), c in
                     sorted(self._triples.items(), key=lambda kv: (kv[0][0], kv[0][1].value, kv[0][2]))],
            links=observation_links(entities),
            studies=[self._studies[s] for s in sorted(self._studies)],
            mentions=[StudyMention(s, k, c, n) for (s, k), (c, n) in sorted(self._mentions.items())],
        )
        kg.validate()
        return kg
