"""The entity dictionary: alias phrases → ``DictEntry`` (key, name, type), and the cue words
(copulas, prepositions, hedges, stop words) that are never entities.

token list → ``EntityDictionary.match`` → ``Span`` list (leftmost-longest, via the labeler's matcher).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cxr.labeler.phrases import Phrase, PhraseMatcher, tokenize
from graphdb.m3kg import M3KGFiles, load_m3kg, read_aliases
from graphdb.schema import EntityType, KnowledgeGraph, normalize

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
        # whole words: the dictionary lists the plurals it means, so CheXpert's plural / prefix
        # leniency would only add matches the rules never made
        self._matcher = PhraseMatcher(((Phrase(words, exact=True), entry) for words, entry in self._entries.items()),
                                      exact_words=True)

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
        return [Span(m.first, m.last, m.payload) for m in self._matcher.find_longest(words)]
