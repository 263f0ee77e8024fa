"""Build a KnowledgeGraph from any report corpus, offline: ``StudyRecord``s → entities, triples,
observation links, studies and per-study mentions.

report → sentences → tokens → dictionary spans (longest match) + the labeler's scopes (certainty)
→ pattern relations (MODIFY / LOCATED_AT / SUGGESTIVE_OF) → corpus counts → a sorted graph.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol, runtime_checkable

from tqdm.auto import tqdm

from cxr.labeler.labeler import split_sentences
from cxr.labeler.phrases import tokenize
from cxr.labeler.rules import (
    CLAUSE_STARTERS,
    HARD_BREAKS,
    Polarity,
    find_scopes,
    label_at,
    trigger_matcher,
)
from cxr.records import DataError, StudyRecord
from graphdb.hierarchy import observation_links
from graphdb.m3kg import M3KGFiles, load_m3kg, read_aliases
from graphdb.schema import (
    Certainty,
    Entity,
    EntityType,
    ImageNode,
    KnowledgeGraph,
    Relation,
    StudyMention,
    StudyNode,
    Triple,
    normalize,
)

CONCEPT, ANATOMY, DISORDER = EntityType.CONCEPT, EntityType.ANATOMY, EntityType.DISORDER
MODIFY, LOCATED_AT, SUGGESTIVE_OF = Relation.MODIFY, Relation.LOCATED_AT, Relation.SUGGESTIVE_OF

# ---- the words the relation patterns read (never entities themselves) ----------------------

COPULAS = frozenset({"is", "are", "was", "were", "be", "been", "remains", "remain", "remained",
                     "appears", "appear", "appeared", "seems", "seem", "looks", "look", "becomes"})
# what may sit between a subject and its predicate: "lungs are again not clear", "appears to be"
COPULA_GAP = COPULAS | {"not", "again", "otherwise", "now", "still", "also", "to", "stably", "well",
                        "fully"}
# what may sit between a finding and its location preposition: "changes are present in the spine"
LOCATION_FILLER = COPULAS | {"seen", "noted", "present", "identified", "visualized", "again",
                             "also", "demonstrated", "located", "predominantly", "mostly"}
LOCATION_PREPS = ("in", "within", "at", "of", "involving", "along", "over", "overlying", "near",
                  "into", "throughout", "on", "under", "beneath", "below", "above", "behind",
                  "projecting over", "projected over", "adjacent to")
SUGGESTIVE_TRIGGERS = ("suggestive of", "suggesting", "suggests", "suggest", "consistent with",
                       "compatible with", "may represent", "might represent", "could represent",
                       "likely represents", "likely representing", "may reflect", "could reflect",
                       "likely reflecting", "likely", "most likely", "probably", "probable",
                       "possibly", "concerning for", "worrisome for", "suspicious for", "representing",
                       "represents", "reflecting", "reflects", "indicating", "indicative of")
DETERMINERS = frozenset({"the", "a", "an", "each", "this", "these", "that", "its", "their",
                         "his", "her", "some", "any"})
CHAIN_GAPS = frozenset({("and",), (",",), (",", "and")})       # "mild, diffuse" / "small and large"
ALTERNATIVE_GAPS = CHAIN_GAPS | {("or",), (",", "or"), ("versus",), ("vs",)}
# adjectives that predicate without a verb at the end of a clause: "Heart size normal. Lungs clear."
PREDICATIVE = frozenset({"normal", "clear", "unremarkable", "stable", "unchanged", "intact", "midline",
                         "enlarged", "expanded", "hyperexpanded", "hyperinflated", "satisfactory"})
CLAUSE_ENDS = frozenset({",", ";", ":", "and", "but", "with", "without"})
# concept modifiers that say *where* and so describe the next noun, not the phrase head:
# "left pleural effusion" → left MODIFY pleural, while "small pleural effusion" → small MODIFY effusion
LOCATIVE = frozenset({"left", "right", "bilateral", "bilaterally", "both", "upper", "lower", "middle",
                      "mid", "lateral", "medial", "anterior", "posterior", "superior", "inferior",
                      "basal", "apical", "central", "peripheral", "distal", "proximal", "ipsilateral",
                      "contralateral", "left-sided", "right-sided", "left sided", "right sided"})

# Aliases the dictionary never matches. The M3KG alias file is UMLS synonym material and lists
# function words, report verbs and hedges as "concept"s ("at", "not", "may", "seen", "within",
# "evidence", "involving" is even a "disorder"); they carry no finding, anatomy or qualifier, and
# some are the very cue words the certainty and relation patterns read. Every word of the pattern
# lists above is added to this set.
STOP_WORDS = frozenset((
    # function words
    "a", "an", "the", "of", "in", "on", "at", "to", "into", "onto", "by", "for", "from", "with",
    "without", "within", "over", "under", "through", "throughout", "since", "about", "above",
    "below", "beneath", "behind", "near", "along", "across", "around", "between", "beyond",
    "after", "before", "during", "via", "per", "versus", "vs", "and", "or", "nor", "but", "not",
    "no", "neither", "either", "yes", "as", "than", "then", "so", "if", "that", "this", "these",
    "those", "there", "here", "it", "its", "which", "who", "what", "when", "where", "while",
    "whereas", "also", "again", "still", "now", "already", "otherwise", "well", "very", "more",
    "most", "less", "least", "some", "any", "all", "each", "every", "other", "another", "such",
    "same",
    # auxiliaries and modals
    "is", "are", "was", "were", "be", "been", "being", "am", "has", "have", "had", "do", "does",
    "did", "may", "might", "can", "could", "would", "should", "will", "shall", "must",
    # report verbs
    "seen", "noted", "identified", "visualized", "visible", "demonstrated", "demonstrate",
    "demonstrates", "appreciated", "present", "shown", "shows", "show", "observed", "detected",
    "excluded", "obtained", "compared", "appearing", "measuring", "measures",
    # hedges, cues and fillers
    "evidence", "findings", "finding", "definite", "convincing", "possible", "possibly",
    "probable", "probably", "likely", "questionable", "suspected", "suspicious", "concerning",
    "worrisome", "indicating", "indicative", "negative", "adjacent", "involving", "impression",
    "patient", "cm", "mm", "including", "ago", "measure",
))
PUNCTUATION = frozenset({",", ";", ":", "?"})
CUE_ENDINGS = frozenset({"of", "for", "with"})


def _phrase_words(phrases: Iterable[str]) -> frozenset[str]:
    return frozenset(w for p in phrases for w in p.split())


STOP_ALIASES: frozenset[str] = (STOP_WORDS | COPULA_GAP | LOCATION_FILLER | DETERMINERS
                                | _phrase_words(LOCATION_PREPS) | _phrase_words(SUGGESTIVE_TRIGGERS))


# ---- the entity dictionary -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DictEntry:
    """What a dictionary phrase names: the entity key (CUI where M3KG has one), name and type."""

    key: str
    name: str
    type: EntityType


@dataclass(frozen=True, slots=True)
class Span:
    """A dictionary match over a sentence's tokens, [first, last)."""

    first: int
    last: int
    entry: DictEntry

    @property
    def type(self) -> EntityType:
        return self.entry.type


def alias_words(alias: str, stop: frozenset[str] = STOP_ALIASES) -> tuple[str, ...] | None:
    """An alias as the labeler's tokens, or None when it can never be a report entity: UMLS
    qualifier forms ("lung structure (body structure)", "lung, nos"), the de-identification token,
    and stop-word / single-letter-only aliases ("at", "a o")."""
    if "(" in alias or ")" in alias or normalize(alias) in stop:
        return None
    words = tuple(t.text for t in tokenize(alias))
    if not words or any(w in PUNCTUATION or "xxxx" in w for w in words):
        return None
    if words[0] in stop or words[-1] in stop or all(w in stop or len(w) == 1 for w in words):
        return None     # also fragments such as "abdomen and", "views for", "change in"
    return words


class EntityDictionary:
    """Alias phrases (token tuples) → ``DictEntry``, matched longest-first, left to right.

    Built from the M3KG alias file (alias → type) plus the surface forms of the M3KG triples: an
    alias that is a surface form of an M3KG entity maps to that entity (its CUI key, name, type);
    any other alias maps to key = name = ``normalize(alias)`` with its dictionary type. Matching
    is case-insensitive on the labeler's tokens (hyphens split, so "left-sided" = "left sided");
    plurals match only where the dictionary lists them (it mostly does); ``XXXX`` never matches.
    """

    def __init__(self, entries: Mapping[tuple[str, ...], DictEntry]):
        self._entries = dict(entries)
        by_first: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        for words in self._entries:
            by_first[words[0]].append(words)
        # longest candidates first: the first that fits is the longest match at that token
        self._by_first = {w: tuple(sorted(c, key=lambda c: (-len(c), c))) for w, c in by_first.items()}

    @classmethod
    def build(cls, aliases: Mapping[str, EntityType], m3kg: KnowledgeGraph | None = None,
              stop: frozenset[str] = STOP_ALIASES) -> EntityDictionary:
        """M3KG surface forms win over plain aliases that tokenise the same way."""
        forms: dict[str, DictEntry] = {}
        for e in sorted(m3kg.entities if m3kg else (), key=lambda e: (-e.count, e.key)):
            for form in e.aliases:
                forms.setdefault(normalize(form), DictEntry(e.key, e.name, e.type))
        entries: dict[tuple[str, ...], DictEntry] = {}
        for form in sorted(forms):
            if (words := alias_words(form, stop)) is not None:
                entries.setdefault(words, forms[form])
        for alias in sorted(aliases):
            key = normalize(alias)
            if key and (words := alias_words(key, stop)) is not None:
                entries.setdefault(words, forms.get(key) or DictEntry(key, key, aliases[alias]))
        return cls(entries)

    @classmethod
    def from_files(cls, files: M3KGFiles | None = None, aliases: Path | None = None,
                   use_m3kg_forms: bool = True) -> EntityDictionary:
        """``aliases`` defaults to the M3KG alias file; ``files`` to the bundled M3KG."""
        files = files or M3KGFiles.bundled()
        kg = load_m3kg(files) if use_m3kg_forms else None
        return cls.build(read_aliases(Path(aliases) if aliases else files.aliases), kg)

    @classmethod
    @cache
    def bundled(cls) -> EntityDictionary:
        """The default: bundled M3KG aliases + triple surface forms (built once per process)."""
        return cls.from_files()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, text: str) -> DictEntry | None:
        """The entry whose whole alias is ``text`` (any case / hyphenation), else None."""
        return self._entries.get(tuple(t.text for t in tokenize(text)))

    def match(self, words: Sequence[str]) -> list[Span]:
        """Greedy left-to-right longest matches over lower-cased tokens."""
        out: list[Span] = []
        i, n = 0, len(words)
        while i < n:
            for cand in self._by_first.get(words[i], ()):
                k = len(cand)
                if k == 1 or (i + k <= n and tuple(words[i:i + k]) == cand):
                    out.append(Span(i, i + k, self._entries[cand]))
                    i += k
                    break
            else:
                i += 1
        return out


# ---- relation patterns over one sentence -----------------------------------------------------

class _PhraseIndex:
    """Longest match of fixed multi-word cue phrases at a token position."""

    def __init__(self, phrases: Iterable[str]):
        by_first: dict[str, list[tuple[str, ...]]] = defaultdict(list)
        for p in phrases:
            words = tuple(p.split())
            by_first[words[0]].append(words)
        self._by_first = {w: sorted(c, key=len, reverse=True) for w, c in by_first.items()}

    def at(self, words: Sequence[str], i: int) -> int:
        """Length of the longest phrase starting at ``i`` (0 when none)."""
        if i >= len(words):
            return 0
        for cand in self._by_first.get(words[i], ()):
            if tuple(words[i:i + len(cand)]) == cand:
                return len(cand)
        return 0


_PREPS, _SUGGEST = _PhraseIndex(LOCATION_PREPS), _PhraseIndex(SUGGESTIVE_TRIGGERS)

RawRelation = tuple[int, Relation, int]     # (head span index, relation, tail span index)


def noun_phrases(words: Sequence[str], spans: Sequence[Span]) -> list[list[int]]:
    """Runs of adjacent spans (span indexes). A run of concept modifiers may continue over
    "and" / "," to another concept ("mild, diffuse opacity"), never into a new clause."""
    groups: list[list[int]] = []
    for i, s in enumerate(spans):
        if groups:
            cur = groups[-1]
            gap = tuple(words[spans[cur[-1]].last:s.first])
            if not gap or (gap in CHAIN_GAPS and s.type is CONCEPT and words[s.first] not in CLAUSE_STARTERS
                           and all(spans[j].type is CONCEPT for j in cur)):
                cur.append(i)
                continue
        groups.append([i])
    return groups


def _split_verbless(words: Sequence[str], spans: Sequence[Span],
                    phrases: list[list[int]]) -> tuple[list[list[int]], set[int]]:
    """"Heart size normal." reads as one run of spans; cut the clause-final predicative concepts
    off as a predicate of what precedes them. Returns the phrases and the predicate indexes."""
    out: list[list[int]] = []
    verbless: set[int] = set()
    for phrase in phrases:
        after = spans[phrase[-1]].last
        if len(phrase) > 1 and (after == len(words) or words[after] in CLAUSE_ENDS):
            for p in range(1, len(phrase)):
                rest = [spans[i] for i in phrase[p:]]
                subject_noun = any(spans[i].type is not CONCEPT for i in phrase[:p])
                if (subject_noun and words[rest[0].first] in PREDICATIVE and rest[0].type in (CONCEPT, DISORDER)
                        and all(s.type is CONCEPT for s in rest[1:])):
                    out.append(phrase[:p])
                    verbless.add(len(out))
                    phrase = phrase[p:]
                    break
        out.append(phrase)
    return out, verbless


def _is_locative(words: Sequence[str], s: Span) -> bool:
    return s.entry.name in LOCATIVE or " ".join(words[s.first:s.last]) in LOCATIVE


def _phrase_relations(words: Sequence[str], spans: Sequence[Span], phrase: list[int]) -> list[RawRelation]:
    """Inside one noun phrase; the head is its last span.
    concept → MODIFY the head ("small … effusion"), locative concept → MODIFY the next non-concept
    ("left pleural", "right lower lobe" → right/lower → lobe); anatomy → the next finding (else
    the next non-concept) is LOCATED_AT it ("pleural effusion" → effusion LOCATED_AT pleural,
    "left lower lobe airspace disease" → disease LOCATED_AT lobe / airspace, "lung base" → base
    LOCATED_AT lung);
    a noun finding before anatomy is LOCATED_AT it ("atelectasis left base"); anything else
    (participles: "enlarged heart", devices: "picc line") → MODIFY the next non-concept."""
    out: list[RawRelation] = []
    head = phrase[-1]
    for pos, i in enumerate(phrase[:-1]):
        s = spans[i]
        later = phrase[pos + 1:]
        nxt = next((j for j in later if spans[j].type is not CONCEPT), head)
        if s.type is CONCEPT:
            out.append((i, MODIFY, nxt if _is_locative(words, s) else head))
        elif s.type is ANATOMY:
            finding = next((j for j in later if spans[j].type not in (CONCEPT, ANATOMY)), nxt)
            out.append((finding, LOCATED_AT, i))
        elif spans[nxt].type is ANATOMY and not words[s.last - 1].endswith("ed"):
            out.append((i, LOCATED_AT, nxt))
        else:
            out.append((i, MODIFY, nxt))
    return out


def _copula_relations(words: Sequence[str], spans: Sequence[Span], phrases: list[list[int]],
                      verbless: set[int], out: list[RawRelation]) -> set[int]:
    """"lungs are clear" → clear MODIFY lungs; "heart is mildly enlarged" → enlarged MODIFY heart.
    The predicate is a phrase right after subject + copula, of concepts only or headed by a
    disorder, without anatomy / device / procedure. Coordinated subjects ("heart and lungs are
    normal") all get it. Returns the phrases that are pure-concept predicates (no inner relations)."""
    predicates: set[int] = set()
    for k in range(1, len(phrases)):
        phrase, prev = phrases[k], phrases[k - 1]
        gap = words[spans[prev[-1]].last:spans[phrase[0]].first]
        copula = bool(gap) and all(w in COPULA_GAP for w in gap) and any(w in COPULAS for w in gap)
        if not copula and k not in verbless:
            continue
        types = {spans[i].type for i in phrase}
        if types - {CONCEPT, DISORDER} or (DISORDER in types and spans[phrase[-1]].type is not DISORDER):
            continue
        subjects, j = [prev[-1]], k - 1
        while j > 0 and tuple(words[spans[phrases[j - 1][-1]].last:spans[phrases[j][0]].first]) in CHAIN_GAPS:
            j -= 1
            subjects.append(phrases[j][-1])
        if types == {CONCEPT}:
            predicates.add(k)
            out.extend((p, MODIFY, s) for p in phrase for s in subjects)
        else:
            out.extend((phrase[-1], MODIFY, s) for s in subjects)
    return predicates


def _location_relations(words: Sequence[str], spans: Sequence[Span], phrases: list[list[int]],
                        skip: set[int]) -> list[RawRelation]:
    """"opacity in the right lower lobe" → opacity LOCATED_AT lobe; also "at the left base",
    "changes are present in the spine", "blunting of the costophrenic angle", "involving", "along".
    The object is the phrase right after the preposition (and determiners); it must be headed by
    anatomy ("presence of an aortic aneurysm" is no location)."""
    out: list[RawRelation] = []
    starts = {spans[p[0]].first: k for k, p in enumerate(phrases)}
    n = len(words)
    for k, phrase in enumerate(phrases):
        if k in skip:
            continue
        j = start = spans[phrase[-1]].last
        while j < n and j - start < 3 and words[j] in LOCATION_FILLER:
            j += 1
        if not (size := _PREPS.at(words, j)):
            continue
        j += size
        while j < n and words[j] in DETERMINERS:
            j += 1
        obj = starts.get(j)
        if obj is None:
            continue
        if spans[phrases[obj][-1]].type is ANATOMY:
            out.append((phrase[-1], LOCATED_AT, phrases[obj][-1]))
    return out


def _suggestive_relations(words: Sequence[str], spans: Sequence[Span],
                          phrases: list[list[int]]) -> list[RawRelation]:
    """"bibasilar opacities, likely atelectasis" → opacities SUGGESTIVE_OF atelectasis: the nearest
    disorder before the cue (same clause, up to ; or :) → the disorder heading the phrase after it
    and any alternatives joined by or / and / , / versus ("likely atelectasis or scarring")."""
    out: list[RawRelation] = []
    starts = {spans[p[0]].first: k for k, p in enumerate(phrases)}
    i, n = 0, len(words)
    while i < n:
        size = _SUGGEST.at(words, i)
        if not size:
            i += 1
            continue
        cue, j = i, i + size
        while size := _SUGGEST.at(words, j):      # "most likely representing"
            j += size
        while j < n and words[j] in DETERMINERS:
            j += 1
        i = j
        finding = None
        for idx in range(len(spans) - 1, -1, -1):
            s = spans[idx]
            if s.last > cue:
                continue
            if any(w in HARD_BREAKS for w in words[s.last:cue]):
                break
            if s.type is DISORDER:
                finding = idx
                break
        k = starts.get(j)
        while finding is not None and k is not None and spans[phrases[k][-1]].type is DISORDER:
            out.append((finding, SUGGESTIVE_OF, phrases[k][-1]))
            if k + 1 >= len(phrases):
                break
            gap = tuple(words[spans[phrases[k][-1]].last:spans[phrases[k + 1][0]].first])
            k = k + 1 if gap in ALTERNATIVE_GAPS else None
    return out


def find_relations(words: Sequence[str], spans: Sequence[Span]) -> list[RawRelation]:
    """All pattern relations of one sentence, each (head, relation, tail) once, in pattern order;
    self-relations (both ends the same entity) are dropped."""
    phrases, verbless = _split_verbless(words, spans, noun_phrases(words, spans))
    found: list[RawRelation] = []
    predicates = _copula_relations(words, spans, phrases, verbless, found)
    for k, phrase in enumerate(phrases):
        if k not in predicates:
            found.extend(_phrase_relations(words, spans, phrase))
    found += _location_relations(words, spans, phrases, predicates)
    found += _suggestive_relations(words, spans, phrases)
    seen: set[tuple[str, Relation, str]] = set()
    out: list[RawRelation] = []
    for h, rel, t in found:
        key = (spans[h].entry.key, rel, spans[t].entry.key)
        if key[0] != key[2] and key not in seen:
            seen.add(key)
            out.append((h, rel, t))
    return out


# ---- reading a report ------------------------------------------------------------------------

def cue_tokens(words: Sequence[str]) -> set[int]:
    """Tokens of the labeler's negation / uncertainty triggers that end in a preposition ("free
    of", "clear of", "evaluation for"): there "free" / "clear" are the cue, not a qualifier."""
    out: set[int] = set()
    for m in trigger_matcher().find_longest(words):
        if m.payload[0] in (Polarity.NEGATION, Polarity.UNCERTAINTY) and words[m.last - 1] in CUE_ENDINGS:
            out.update(range(m.first, m.last))
    return out


_CERTAINTY = {1.0: Certainty.PRESENT, 0.0: Certainty.ABSENT, -1.0: Certainty.UNCERTAIN}
_RANK = {Certainty.ABSENT: 0, Certainty.UNCERTAIN: 1, Certainty.PRESENT: 2}   # CheXpert precedence


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


def study_node(record: StudyRecord, infer_iu_views: bool = True) -> StudyNode:
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
    ("opacities → atelectasis"). See ``find_relations`` for the patterns.
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
