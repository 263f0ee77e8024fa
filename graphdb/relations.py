"""Relation patterns over one sentence: tokens + dictionary spans → (head span, relation, tail span).

MODIFY / LOCATED_AT / SUGGESTIVE_OF, read from noun phrases, copulas, location prepositions and
hedging cues; directions follow M3KG's kg_relations.csv.
"""
from __future__ import annotations

from collections.abc import Sequence

from cxr.labeler.phrases import PhraseMatcher
from cxr.labeler.rules import CLAUSE_STARTERS, HARD_BREAKS
from graphdb.schema import EntityType, Relation
from graphdb.vocabulary import (
    COPULA_GAP,
    COPULAS,
    DETERMINERS,
    LOCATION_FILLER,
    LOCATION_PREPS,
    SUGGESTIVE_TRIGGERS,
    Span,
)

CONCEPT, ANATOMY, DISORDER = EntityType.CONCEPT, EntityType.ANATOMY, EntityType.DISORDER
MODIFY, LOCATED_AT, SUGGESTIVE_OF = Relation.MODIFY, Relation.LOCATED_AT, Relation.SUGGESTIVE_OF

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

# the cue phrases, matched as whole words by the labeler's matcher
_PREPS = PhraseMatcher(((p, p) for p in LOCATION_PREPS), exact_words=True)
_SUGGEST = PhraseMatcher(((p, p) for p in SUGGESTIVE_TRIGGERS), exact_words=True)

RawRelation = tuple[int, Relation, int]     # (head span index, relation, tail span index)


def _cue_at(cues: PhraseMatcher[str], words: Sequence[str], i: int) -> int:
    """Length of the longest cue phrase starting at token ``i`` (0 when none)."""
    m = cues.longest_at(words, i)
    return 0 if m is None else m.last - m.first


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
        if not (size := _cue_at(_PREPS, words, j)):
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
        size = _cue_at(_SUGGEST, words, i)
        if not size:
            i += 1
            continue
        cue, j = i, i + size
        while size := _cue_at(_SUGGEST, words, j):      # "most likely representing"
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
