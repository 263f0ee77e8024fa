"""A knowledge-graph consistency check of one report: text (+ the classifier's 14 probabilities) → warnings.

Kinds (``WarningKind``), each a ``ReportWarning`` with the sentence it is about and a one-line detail:

- ``contradiction``: an observation affirmed in one sentence and denied in another, on sides that
  do not rule each other out ("no pleural effusion" … "small right pleural effusion"); a denial
  that is qualified ("no *large* effusion", "no *focal* consolidation") denies only that kind;
- ``laterality``: a finding placed on the left in one sentence and on the right in another, with
  no sentence calling it bilateral;
- ``unsupported_relation``: a disorder placed at an anatomy (``located_at``) or said to suggest a
  disorder (``suggestive_of``) where M3KG has no such triple, or has it only the other way round;
- ``disagrees_with_image`` (with probabilities and a fitted margin): an observation asserted
  while the classifier rates it far below its threshold, or denied while rated far above it.
  "Far" is a logit margin fit on val (``decisions.fit_disagreement_margin``);
- ``repetition``: a sentence written again.

The reading comes from the project's own labeler (observations, certainty, char offsets) and rule
extractor (entities and relations), so a warning names the words that raised it.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from cxr.labeler import Mention, ReportLabeler, ReportLabels, split_sentences
from cxr.observations import FINDINGS, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN, Observation
from generator.decisions import Thresholds
from graphdb.extract import ReportReading as GraphReading
from graphdb.extract import RuleExtractor
from graphdb.m3kg import M3KGFiles, bundled_m3kg, load_m3kg
from graphdb.schema import EntityType, KnowledgeGraph, Relation


class WarningKind(str, Enum):
    CONTRADICTION = "contradiction"
    LATERALITY = "laterality"
    UNSUPPORTED_RELATION = "unsupported_relation"
    DISAGREES_WITH_IMAGE = "disagrees_with_image"
    REPETITION = "repetition"


@dataclass(frozen=True)
class ReportWarning:
    kind: WarningKind
    sentence: str     # the sentence the warning is about, as written
    detail: str       # one line

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "sentence": self.sentence, "detail": self.detail}


# --- sides -----------------------------------------------------------------------------------
LEFT, RIGHT = "left", "right"
_SIDE_WORDS = {"left": {LEFT}, "right": {RIGHT}, "bilateral": {LEFT, RIGHT}, "bilaterally": {LEFT, RIGHT},
               "bibasilar": {LEFT, RIGHT}, "bibasal": {LEFT, RIGHT}, "biapical": {LEFT, RIGHT},
               "both": {LEFT, RIGHT}}
_WORD_RE = re.compile(r"[a-z]+")
_CLAUSE_END_RE = re.compile(r"[,;:]")


def clause_of(text: str, start: int, end: int) -> str:
    """The part of ``text`` around [start, end) between clause marks (, ; :)."""
    before = [m.end() for m in _CLAUSE_END_RE.finditer(text, 0, start)]
    after = _CLAUSE_END_RE.search(text, end)
    return text[before[-1] if before else 0: after.start() if after else len(text)]


def _lead(text: str, start: int, words: int = 3) -> frozenset[str]:
    """The last ``words`` words before ``start`` in its clause: where "large" in "no large pleural
    effusion or pneumothorax" qualifies the effusion and not the pneumothorax."""
    before = [m.end() for m in _CLAUSE_END_RE.finditer(text, 0, start)]
    return frozenset(_WORD_RE.findall(text[before[-1] if before else 0: start].lower())[-words:])


def sides_of(clause: str) -> frozenset[str]:
    """{left}, {right}, {left, right} (bilateral, or both named) or {} (no side) of a clause."""
    out: set[str] = set()
    for word in _WORD_RE.findall(clause.lower()):
        out |= _SIDE_WORDS.get(word, set())
    return frozenset(out)


# A denial qualified by one of these words denies a kind or a degree, not the finding: "no large
# effusion", "no focal consolidation" (the word just before the finding), "no other acute
# abnormality", "otherwise, the lungs are clear" (anywhere in the sentence).
_QUALIFIERS = frozenset({
    "large", "larger", "significant", "definite", "definitive", "focal", "acute", "overt", "frank",
    "gross", "confluent", "lobar", "discrete", "sizable", "substantial", "moderate", "increasing",
    "increased", "worsening", "developing", "residual", "dense", "consolidative", "airspace",
    "displaced", "visible", "typical", "suspicious", "evident",
})
_CLAUSE_QUALIFIERS = frozenset({"new", "other", "additional", "further", "otherwise", "remainder", "elsewhere",
                                "remaining", "rest"})


@dataclass(frozen=True)
class _Statement:
    observation: Observation
    label: float
    sentence: int               # index among the report's sentences
    sides: frozenset[str]
    words: frozenset[str]       # of its clause
    qualifiers: frozenset[str]  # the kind or degree a denial is limited to; empty: all of it
    phrase: str

    def denies(self, affirmed: _Statement) -> bool:
        """This denial rules out ``affirmed``: on a side it claims (or either has no side) and, if
        qualified, for the kind it names ("no focal consolidation" vs "focal consolidation")."""
        sides = not self.sides or not affirmed.sides or bool(self.sides & affirmed.sides)
        return sides and self.qualifiers <= affirmed.words


# --- what M3KG knows -------------------------------------------------------------------------
MIN_SUPPORT = 1000
"""An absent triple means something only between well-known ends: a head M3KG relates this way
at least this often (summed counts), and a tail it relates to this way at least this often.
M3KG is mined from 223k reports by a language model; between rarer ends (a location such as
"lobar" or "marrow", 116 and 5 mentions) absence is mostly what it did not happen to write."""


@dataclass(frozen=True)
class KnownRelations:
    """M3KG's triples, entity types and per-relation support, for ``unsupported_relation``."""

    triples: frozenset[tuple[str, Relation, str]]
    types: dict[str, EntityType]
    names: dict[str, str]
    as_head: dict[tuple[str, Relation], int]     # (entity, relation) → summed counts with it as head
    as_tail: dict[tuple[str, Relation], int]

    @classmethod
    def of_graph(cls, kg: KnowledgeGraph) -> KnownRelations:
        head: dict[tuple[str, Relation], int] = {}
        tail: dict[tuple[str, Relation], int] = {}
        for t in kg.triples:
            head[(t.head, t.relation)] = head.get((t.head, t.relation), 0) + t.count
            tail[(t.tail, t.relation)] = tail.get((t.tail, t.relation), 0) + t.count
        return cls(frozenset((t.head, t.relation, t.tail) for t in kg.triples),
                   {e.key: e.type for e in kg.entities}, {e.key: e.name for e in kg.entities}, head, tail)

    def well_known(self, head: str, relation: Relation, tail: str) -> bool:
        """Both ends related this way often enough for a missing triple to be news (``MIN_SUPPORT``)."""
        allowed = _CHECKED.get(relation)
        return (allowed is not None and self.types.get(head) in allowed[0] and self.types.get(tail) in allowed[1]
                and self.as_head.get((head, relation), 0) >= MIN_SUPPORT
                and self.as_tail.get((tail, relation), 0) >= MIN_SUPPORT)

    @classmethod
    def load(cls, files: M3KGFiles | None = None) -> KnownRelations:
        return _bundled() if files is None else cls.of_graph(load_m3kg(files))


@functools.cache
def _bundled() -> KnownRelations:
    return KnownRelations.of_graph(bundled_m3kg())


@functools.cache
def readers() -> tuple[ReportLabeler, RuleExtractor]:
    """The labeler and the rule extractor, built once per process: the check and the evidence
    (generator.explain) read reports with them."""
    return ReportLabeler(), RuleExtractor()


@dataclass(frozen=True)
class ReportReading:
    """One report read once: the labeler's mentions and the rule extractor's entities and relations."""

    labels: ReportLabels
    graph: GraphReading


def read_report(report: str, labeler: ReportLabeler | None = None,
                extractor: RuleExtractor | None = None) -> ReportReading:
    default_labeler, default_extractor = readers()
    return ReportReading((labeler or default_labeler).label(report, check_language=False),
                         (extractor or default_extractor).read(report))


def checker_for(thresholds: Thresholds | None) -> ReportChecker:
    """A checker on the bundled M3KG judging probabilities by ``thresholds``; its parts are built
    once per process (about 1.3 s), so one per batch of reports costs nothing."""
    labeler, extractor = readers()
    return ReportChecker(_bundled(), thresholds, labeler, extractor)


# relation → (head types, tail types) a check is meaningful for: a disorder at an anatomy, a
# disorder suggesting a disorder. Modifiers ("small", "left") and concepts ("size", "silhouette")
# are written in too many ways for an absent triple to mean anything.
_CHECKED: dict[Relation, tuple[frozenset[EntityType], frozenset[EntityType]]] = {
    Relation.LOCATED_AT: (frozenset({EntityType.DISORDER}), frozenset({EntityType.ANATOMY})),
    Relation.SUGGESTIVE_OF: (frozenset({EntityType.DISORDER}), frozenset({EntityType.DISORDER})),
}


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _stem(phrase: str) -> str:
    """A phrase's words, lower case, a plural's s dropped: "Opacities" ~ "opacity"."""
    return " ".join(re.sub(r"(ies|es|s)$", lambda m: "y" if m.group(1) == "ies" else "", w)
                    for w in _WORD_RE.findall(phrase.lower()))


def _name(o: Observation) -> str:
    return o.value.lower()


class ReportChecker:
    """``check(report, probabilities=None, reading=None)`` → warnings in report order (rules in the
    module docstring); ``reading``: the report already read (``read_report``), else it is read here."""

    def __init__(self, relations: KnownRelations | None = None, thresholds: Thresholds | None = None,
                 labeler: ReportLabeler | None = None, extractor: RuleExtractor | None = None) -> None:
        self.relations = relations or KnownRelations.load()
        self.thresholds = thresholds
        self.labeler = labeler or ReportLabeler()
        self.extractor = extractor or RuleExtractor()

    def check(self, report: str, probabilities: Sequence[float] | None = None,
              reading: ReportReading | None = None) -> list[ReportWarning]:
        sentences = split_sentences(report or "")
        if not sentences:
            return []
        reading = reading or read_report(report, self.labeler, self.extractor)
        labels = reading.labels
        statements = [self._statement(m, sentences) for m in labels.mentions]
        found: list[tuple[int, ReportWarning]] = []
        found += self._repetitions(sentences)
        found += self._contradictions(statements, sentences)
        found += self._laterality(statements, sentences)
        found += self._relations(reading.graph, sentences)
        if probabilities is not None:
            found += self._disagreements(statements, sentences, labels.values, probabilities)
        found.sort(key=lambda item: item[0])
        return [w for _, w in found]

    # --- readings --------------------------------------------------------------------------
    @staticmethod
    def _statement(m: Mention, sentences: Sequence[Any]) -> _Statement:
        index = next(i for i, s in enumerate(sentences) if s.start <= m.start < s.end + 1)
        s = sentences[index]
        clause = clause_of(s.text, m.start - s.start, m.end - s.start)
        words = frozenset(_WORD_RE.findall(clause.lower()))
        qualifiers = frozenset()
        if m.label == NEGATIVE:
            sentence_words = frozenset(_WORD_RE.findall(s.text.lower()))
            qualifiers = (sentence_words & _CLAUSE_QUALIFIERS) | (_lead(s.text, m.start - s.start) & _QUALIFIERS)
        return _Statement(m.observation, m.label, index, sides_of(clause), words, qualifiers, m.phrase)

    # --- the kinds -------------------------------------------------------------------------
    @staticmethod
    def _repetitions(sentences: Sequence[Any]) -> list[tuple[int, ReportWarning]]:
        seen: dict[str, int] = {}
        out = []
        for i, s in enumerate(sentences):
            key = " ".join(_WORD_RE.findall(s.text.lower()))
            if not key:
                continue
            if key in seen:
                out.append((i, ReportWarning(WarningKind.REPETITION, s.text,
                                             f"repeats sentence {seen[key] + 1} word for word")))
            else:
                seen[key] = i
        return out

    @staticmethod
    def _contradictions(statements: Sequence[_Statement], sentences: Sequence[Any]) -> list[tuple[int, ReportWarning]]:
        out = []
        for o in FINDINGS:
            affirmed = [s for s in statements if s.observation is o and s.label == POSITIVE]
            denied = [s for s in statements if s.observation is o and s.label == NEGATIVE]
            pair = next(((a, d) for a in affirmed for d in denied if a.sentence != d.sentence and d.denies(a)), None)
            if pair is None:
                continue
            a, d = pair
            later, earlier = (a, d) if a.sentence > d.sentence else (d, a)
            verb = "affirms" if later is a else "denies"
            other = "denied" if later is a else "affirmed"
            out.append((later.sentence, ReportWarning(
                WarningKind.CONTRADICTION, sentences[later.sentence].text,
                f"{verb} {_name(o)} (\"{later.phrase}\"), which sentence {earlier.sentence + 1} {other} "
                f"(\"{earlier.phrase}\")")))
        return out

    @staticmethod
    def _laterality(statements: Sequence[_Statement], sentences: Sequence[Any]) -> list[tuple[int, ReportWarning]]:
        out = []
        for o in FINDINGS:
            placed = [s for s in statements if s.observation is o and s.label in (POSITIVE, UNCERTAIN)]
            if any(len(s.sides) == 2 for s in placed):
                continue                        # called bilateral somewhere: both sides are meant
            left = [s for s in placed if s.sides == {LEFT}]
            right = [s for s in placed if s.sides == {RIGHT}]
            # the same words on both sides ("pleural effusion"): two different phrases ("airspace
            # disease" left, "nodular opacity" right) are two lesions of one CheXpert class
            pair = next(((a, b) for a in left for b in right
                         if a.sentence != b.sentence and _stem(a.phrase) == _stem(b.phrase)), None)
            if pair is None:
                continue
            first, later = sorted(pair, key=lambda s: s.sentence)
            out.append((later.sentence, ReportWarning(
                WarningKind.LATERALITY, sentences[later.sentence].text,
                f"places {_name(o)} on the {next(iter(later.sides))}, sentence {first.sentence + 1} on the "
                f"{next(iter(first.sides))}; if both, say bilateral")))
        return out

    def _relations(self, graph: GraphReading, sentences: Sequence[Any]) -> list[tuple[int, ReportWarning]]:
        out, seen = [], set()
        known = self.relations.triples
        for r in graph.relations:
            head, tail = r.head.entry.key, r.tail.entry.key
            if not self.relations.well_known(head, r.relation, tail):
                continue
            if (head, r.relation, tail) in known or (head, r.relation, tail) in seen:
                continue
            seen.add((head, r.relation, tail))
            index = next(i for i, s in enumerate(sentences) if s.start <= r.head.start < s.end + 1)
            triple = f"{r.head.entry.name} —{r.relation.value}→ {r.tail.entry.name}"
            why = ("M3KG has it only the other way round" if (tail, r.relation, head) in known
                   else "M3KG has no such relation")
            out.append((index, ReportWarning(WarningKind.UNSUPPORTED_RELATION, sentences[index].text,
                                             f"{triple}: {why}")))
        return out

    def _disagreements(self, statements: Sequence[_Statement], sentences: Sequence[Any],
                       values: dict[Observation, float | None],
                       probabilities: Sequence[float]) -> list[tuple[int, ReportWarning]]:
        t = self.thresholds
        if t is None or t.margin is None:
            return []
        if len(probabilities) != len(OBSERVATIONS):
            raise ValueError(f"the check needs {len(OBSERVATIONS)} probabilities, got {len(probabilities)}")
        out = []
        for o in FINDINGS:
            j = OBSERVATIONS.index(o)
            cut = t.positive[j]
            if not 0.0 < cut < 1.0:
                continue                        # never decided (or always): no cut to be far from
            p, value = float(probabilities[j]), values[o]
            gap = _logit(p) - _logit(cut)
            if value == POSITIVE and gap < -t.margin:
                verb, where = "asserts", next(s for s in statements if s.observation is o and s.label == POSITIVE)
            elif value == NEGATIVE and gap > t.margin:
                # only a denial of all of it: "no focal consolidation" or "the left lung is clear"
                # leave room for what the classifier sees
                verb, where = "denies", next((s for s in statements if s.observation is o and s.label == NEGATIVE
                                              and not s.qualifiers and not s.sides), None)
                if where is None:
                    continue
            else:
                continue
            out.append((where.sentence, ReportWarning(
                WarningKind.DISAGREES_WITH_IMAGE, sentences[where.sentence].text,
                f"{verb} {_name(o)}, which the classifier rates {p:.3f} against its threshold {cut:.3f}")))
        return out
