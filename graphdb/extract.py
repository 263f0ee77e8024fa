"""Rule extraction: ``StudyRecord``s → ``KnowledgeGraph``, offline, behind the ``Extractor`` interface.

report → sentences → tokens → dictionary spans (vocabulary.py) + the labeler's scopes (certainty)
→ pattern relations (relations.py) → corpus counts (accumulate.py) → a sorted graph.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tqdm.auto import tqdm

from cxr.labeler.labeler import split_sentences
from cxr.labeler.phrases import tokenize
from cxr.labeler.rules import Polarity, find_scopes, label_at, trigger_matcher
from cxr.records import StudyRecord
from graphdb.accumulate import GraphAccumulator, study_node
from graphdb.relations import find_relations
from graphdb.schema import Certainty, KnowledgeGraph, Relation
from graphdb.vocabulary import DictEntry, EntityDictionary

CUE_ENDINGS = frozenset({"of", "for", "with"})


def cue_tokens(words: Sequence[str]) -> set[int]:
    """Tokens of the labeler's negation / uncertainty triggers that end in a preposition ("free
    of", "clear of", "evaluation for"): there "free" / "clear" are the cue, not a qualifier."""
    out: set[int] = set()
    for m in trigger_matcher().find_longest(words):
        if m.payload[0] in (Polarity.NEGATION, Polarity.UNCERTAINTY) and words[m.last - 1] in CUE_ENDINGS:
            out.update(range(m.first, m.last))
    return out


_CERTAINTY = {1.0: Certainty.PRESENT, 0.0: Certainty.ABSENT, -1.0: Certainty.UNCERTAIN}


@dataclass(frozen=True, slots=True)
class EntityMention:
    entry: DictEntry
    text: str                # as written in the report
    certainty: Certainty
    start: int               # char offsets in the report
    end: int


@dataclass(frozen=True, slots=True)
class RelationMention:
    head: EntityMention
    relation: Relation
    tail: EntityMention


@dataclass(frozen=True)
class ReportReading:
    """What the rules read in one report; relations are unique per sentence."""

    mentions: tuple[EntityMention, ...]
    relations: tuple[RelationMention, ...]


@dataclass(frozen=True)
class RuleConfig:
    # Relations come from negated mentions too: M3KG's relations are terminology ("an effusion
    # is located at the pleura"), not patient facts, and "no pleural effusion" states that
    # structure as well as "small pleural effusion"; a study's certainty lives on MENTIONS.
    relations_from_absent: bool = True
    # R2Gen's IU X-ray studies list two images, by R2Gen's convention frontal then lateral; the
    # records carry no view, so other datasets get view "".
    infer_iu_views: bool = True


@runtime_checkable
class Extractor(Protocol):
    """Reports → KnowledgeGraph. ``RuleExtractor`` (here) and ``LLMExtractor`` (llm_extract.py)."""

    def extract(self, records: Iterable[StudyRecord], progress: bool = False) -> KnowledgeGraph: ...


class RuleExtractor:
    """Dictionary entities + the labeler's negation / uncertainty scopes + pattern relations.

    Reads the raw report (not R2Gen-cleaned: cleaning strips the commas and semicolons that
    bound negation scopes and coordinated lists). Direction conventions follow M3KG's
    kg_relations.csv: MODIFY modifier → head noun ("small → effusion", "left → pleural"),
    LOCATED_AT finding → location ("effusion → pleural"), SUGGESTIVE_OF finding → diagnosis
    ("opacities → atelectasis"). The patterns: ``relations.find_relations``.
    """

    def __init__(self, dictionary: EntityDictionary | None = None, config: RuleConfig | None = None):
        self.dictionary = dictionary or EntityDictionary.bundled()
        self.config = config or RuleConfig()

    def read(self, report: str) -> ReportReading:
        mentions: list[EntityMention] = []
        relations: list[RelationMention] = []
        for sent in split_sentences(report or ""):
            tokens = tokenize(sent.text, sent.start)
            words = [t.text for t in tokens]
            spans = self.dictionary.match(words)
            if spans and not CUE_ENDINGS.isdisjoint(words) and (cues := cue_tokens(words)):
                spans = [s for s in spans if s.first not in cues]
            if not spans:
                continue
            scopes = find_scopes(words)
            found = []
            for s in spans:
                start, end = tokens[s.first].start, tokens[s.last - 1].end
                found.append(EntityMention(s.entry, report[start:end], _CERTAINTY[label_at(scopes, s.first)],
                                           start, end))
            mentions += found
            for h, rel, t in find_relations(words, spans):
                head, tail = found[h], found[t]
                if self.config.relations_from_absent or Certainty.ABSENT not in (head.certainty, tail.certainty):
                    relations.append(RelationMention(head, rel, tail))
        return ReportReading(tuple(mentions), tuple(relations))

    def extract(self, records: Iterable[StudyRecord], progress: bool = False) -> KnowledgeGraph:
        acc = GraphAccumulator()
        for record in tqdm(records, desc="extracting", unit="report", disable=not progress):
            acc.add_study(study_node(record, self.config.infer_iu_views))
            reading = self.read(record.report)
            for m in reading.mentions:
                acc.add_mention(record.study_id, m.entry, m.text, m.certainty)
            for r in reading.relations:
                acc.add_triple(r.head.entry, r.relation, r.tail.entry)
        return acc.build()
