"""Find observation mentions in one sentence and give each its label.

Sentence words + scopes → ``RawMention`` list (observation, token span, 1 / 0 / -1).
Direct mentions ("effusion") take the label of their scope; qualified subjects ("heart size")
need a qualifier in their clause ("is normal", "mildly enlarged") and take its label.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cache, lru_cache

from cxr.labeler.phrases import Match, PhraseMatcher, chexpert_phrases
from cxr.labeler.rules import HARD_BREAKS, VERBS, Scope, label_at
from cxr.labeler.vocabulary import (
    EXTRA_MENTIONS,
    EXTRA_UNMENTIONS,
    QUALIFIED_CHEXPERT,
    QUALIFIED_EXTRA,
    QUALIFIER_GROUP,
    QUALIFIERS,
)
from cxr.observations import NEGATIVE, POSITIVE, UNCERTAIN, Observation


class MentionKind(str, Enum):
    DIRECT = "direct"            # "pleural effusion", "cardiomegaly"
    QUALIFIED = "qualified"      # "heart size" + "is normal"
    UNMENTION = "unmention"      # "pericardial effusion": not a pleural effusion


@dataclass(frozen=True, slots=True)
class RawMention:
    observation: Observation
    first: int    # token span of the matched phrase, [first, last)
    last: int
    label: float


# the qualifier of a subject is searched in its clause, never across these
_STOP_FORWARD = HARD_BREAKS | {"?", "but", "however", "although", "though", "which", "whereas",
                               "while", "except"}
_STOP_BACKWARD = HARD_BREAKS | VERBS | {",", "?", "over", "overlying", "behind", "in", "at",
                                        "projecting", "near", "above", "below", "beneath", "along",
                                        "to", "from", "with", "without", "by", "through", "or"}
_FORWARD_WINDOW, _BACKWARD_WINDOW = 12, 5


@lru_cache(maxsize=1)
def mention_matcher() -> PhraseMatcher[tuple[Observation, MentionKind]]:
    """CheXpert lists + our extensions, every phrase tagged with its observation and kind."""
    mention, unmention = chexpert_phrases("mention"), chexpert_phrases("unmention")
    entries: list[tuple[str, tuple[Observation, MentionKind]]] = []
    for obs in Observation:
        qualified = set(QUALIFIED_CHEXPERT.get(obs, ()))
        missing = qualified - set(mention[obs])
        if missing:   # the bundled lists changed under us: fail loudly, not silently
            raise ValueError(f"QUALIFIED_CHEXPERT[{obs.value}] names phrases not in its list: {missing}")
        for p in mention[obs] + EXTRA_MENTIONS.get(obs, ()):
            entries.append((p, (obs, MentionKind.QUALIFIED if p in qualified else MentionKind.DIRECT)))
        entries += [(p, (obs, MentionKind.QUALIFIED)) for p in QUALIFIED_EXTRA.get(obs, ())]
        entries += [(p, (obs, MentionKind.UNMENTION))
                    for p in unmention[obs] + EXTRA_UNMENTIONS.get(obs, ())]
    return PhraseMatcher(entries)


@cache
def qualifier_matcher(group: str) -> PhraseMatcher[tuple[float, bool]]:
    return PhraseMatcher(QUALIFIERS[group].items())


def _select(matches: list[Match[tuple[Observation, MentionKind]]]) -> list[Match]:
    """Drop mentions that overlap an unmention of their observation; keep the longest of
    overlapping mentions of one observation."""
    unmentions = [m for m in matches if m.payload[1] is MentionKind.UNMENTION]
    kept: list[Match] = []
    for m in sorted((m for m in matches if m.payload[1] is not MentionKind.UNMENTION),
                    key=lambda m: (m.first - m.last, m.first)):
        obs = m.payload[0]
        clash = [u for u in unmentions if u.payload[0] is obs and u.first < m.last and m.first < u.last]
        if clash or any(k.payload[0] is obs and k.first < m.last and m.first < k.last for k in kept):
            continue
        kept.append(m)
    return sorted(kept, key=lambda m: m.first)


def _predicate(words: Sequence[str], last: int, quals: dict[int, Match],
               comma_ends: bool = False) -> Match | None:
    """The qualifier in the predicate after words[:last], up to the end of the clause; one met
    before the verb counts only when the predicate has none ("heart size and pulmonary vascular
    engorgement appear within limits of normal")."""
    seen_verb, before_verb = False, None
    for j in range(last, min(len(words), last + _FORWARD_WINDOW)):
        w = words[j]
        if w in _STOP_FORWARD or (w == "," and comma_ends):
            break
        if w in (",", "and", "with") and seen_verb and j + 1 not in quals:   # "stable and normal"
            break
        if j in quals:
            if seen_verb:
                return quals[j]
            before_verb = before_verb or quals[j]
        seen_verb = seen_verb or w in VERBS
    return before_verb


def _qualifier(words: Sequence[str], first: int, last: int, quals: dict[int, Match]) -> Match | None:
    """The qualifier of subject words[first:last]: its pre-modifier, else its predicate, else a
    pre-modifier shared over "and" ("normal heart size and mediastinal contours")."""
    for cross_and in (False, None, True):
        if cross_and is None:
            found = _predicate(words, last, quals)
            if found is not None:
                return found
            continue
        for j in range(first - 1, max(-1, first - 1 - _BACKWARD_WINDOW), -1):
            w = words[j]
            if w in _STOP_BACKWARD or (w == "and" and not cross_and):
                break
            if j in quals and quals[j].last <= first:
                return quals[j]
    return None


def _qualified_label(base: float, negated_only: bool, scoped: float) -> float | None:
    if base == POSITIVE:
        return None if negated_only and scoped != NEGATIVE else scoped
    if scoped == NEGATIVE:   # "not normal"/"not borderline" is rare and unclear: say nothing
        return None
    return UNCERTAIN if UNCERTAIN in (base, scoped) and base != NEGATIVE else base


def find_mentions(words: Sequence[str], scopes: Sequence[Scope]) -> list[RawMention]:
    """Every labelled mention in one sentence, in text order."""
    out: list[RawMention] = []
    quals: dict[str, dict[int, Match]] = {}
    for m in _select(mention_matcher().find_all(words)):
        obs, kind = m.payload
        group = QUALIFIER_GROUP.get(obs, "") if kind is MentionKind.QUALIFIED else "predicate"
        if group not in quals:
            quals[group] = {q.first: q for q in qualifier_matcher(group).find_longest(words)}
        if kind is MentionKind.DIRECT:
            label = label_at(scopes, m.first)
            if label == POSITIVE:   # "... vascular engorgement appear within limits of normal"
                normal = _predicate(words, m.last, quals[group], comma_ends=True)
                label = label if normal is None else NEGATIVE
            out.append(RawMention(obs, m.first, m.last, label))
            continue
        q = _qualifier(words, m.first, m.last, quals[group])
        if q is not None:
            base, negated_only = q.payload
            label = _qualified_label(base, negated_only, label_at(scopes, q.first))
            if label is not None:
                out.append(RawMention(obs, m.first, m.last, label))
    return _alternatives_uncertain(words, out)


def _alternatives_uncertain(words: Sequence[str], mentions: list[RawMention]) -> list[RawMention]:
    """"atelectasis or pneumonia", "scarring or atelectasis": positive alternatives are uncertain."""
    out = list(mentions)
    for i in range(len(out) - 1):
        a, b = mentions[i], mentions[i + 1]
        gap = words[a.last:b.first]
        if a.label == POSITIVE == b.label and "or" in gap and len(gap) <= 3 and "," not in gap:
            out[i] = RawMention(a.observation, a.first, a.last, UNCERTAIN)
            out[i + 1] = RawMention(b.observation, b.first, b.last, UNCERTAIN)
    return out
