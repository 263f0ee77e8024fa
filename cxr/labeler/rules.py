"""Negation and uncertainty: trigger words and the clause-bounded scopes they cover.

Tokens of one sentence → ``Scope`` list (polarity, token range) → the label at any token:
negation beats uncertainty ("no consolidation to suggest pneumonia" is negative), an uncovered
token is positive. Pseudo-triggers ("no change in", "unchanged") take their words out of play.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from cxr.labeler.phrases import PhraseMatcher
from cxr.observations import NEGATIVE, POSITIVE, UNCERTAIN


class Polarity(str, Enum):
    NEGATION = "negation"
    UNCERTAINTY = "uncertainty"
    PSEUDO = "pseudo"            # looks like a trigger, negates nothing: "no change in"
    TERMINATOR = "terminator"    # ends every scope: "but", "however", "which"


class Direction(str, Enum):
    FORWARD = "forward"          # "no effusion"
    BACKWARD = "backward"        # "effusion is not seen"
    BOTH = "both"                # "atelectasis versus pneumonia"


N, U, PS, T = Polarity.NEGATION, Polarity.UNCERTAINTY, Polarity.PSEUDO, Polarity.TERMINATOR
F, B, BOTH = Direction.FORWARD, Direction.BACKWARD, Direction.BOTH

# A denied exclusion is a hedge, not a negation: "cannot (entirely) be excluded", "is not ruled
# out", "cannot exclude". The matcher keeps the longest trigger, so these beat "not" / "ruled out".
_DENIALS = ("not", "cannot", "can not", "could not", "can t")
_ADVERBS = ("entirely", "completely", "fully", "totally", "definitely", "definitively", "confidently",
            "reliably", "certainly")


def _denied_exclusions(verbs: tuple[str, ...], passive: bool) -> tuple[str, ...]:
    """Every "<denial> [adverb] [be] [adverb] <verb>" phrase, at most one adverb."""
    middles = [""] + [f"{a} " for a in _ADVERBS]
    if passive:
        middles += ["be "] + [f"be {a} " for a in _ADVERBS] + [f"{a} be " for a in _ADVERBS]
    return tuple(f"{neg} {mid}{verb}" for neg in _DENIALS for mid in middles for verb in verbs)


DENIED_EXCLUSION_BACKWARD = _denied_exclusions(("excluded", "ruled out"), passive=True)
DENIED_EXCLUSION_FORWARD = _denied_exclusions(("exclude_", "rule out"), passive=False)

TRIGGERS: dict[tuple[Polarity, Direction], tuple[str, ...]] = {
    (N, F): ("no_", "not_", "without", "negative for", "free of", "clear of", "absence of",
             "resolution of", "removal of", "neither", "nor_", "lack of", "never", "rather than",
             "no evidence", "no signs", "no xxxx of", "expanded and clear"),
    (N, B): ("not seen", "not identified", "not visualized", "not visible", "not present",
             "not appreciated", "not demonstrated", "not evident", "not noted", "not detected",
             "not apparent", "not shown", "absent", "cleared", "removed", "ruled out", "gone_"),
    (N, BOTH): ("no longer", "resolved", "unlikely"),
    (U, F): ("possible", "possibly", "probable", "probably", "likely", "may_", "might", "could",
             *DENIED_EXCLUSION_FORWARD, "questionable", "question", "suspicious", "suspicion", "suspect_",
             "concerning for", "concern for", "worrisome for", "suggest", "suggestion of",
             "borderline", "equivocal", "indeterminate", "differential", "rule out", "presum",
             "perhaps", "potential", "consider", "uncertain", "favor", "evaluation of",
             "evaluation for", "evaluate for", "to evaluate", "assess for"),
    (U, B): (*DENIED_EXCLUSION_BACKWARD, "may be present", "may be seen", "?"),
    (U, BOTH): ("versus", "vs_", "difficult to exclude", "suspected", "is possible", "are possible",
                "is suspected", "are suspected", "is questioned", "is likely", "are likely",
                "is probable", "is questionable", "not unlikely"),   # "not unlikely": a double negation
    (PS, F): ("no change", "no changes", "no significant change", "no interval change",
              "no significant interval change", "no appreciable change", "no substantial change",
              "no definite change", "no acute change", "no xxxx change", "no significant xxxx change",
              "no evidence of change", "no further change", "without change",
              "without interval change", "without significant change", "not changed",
              "not significantly changed", "no increase", "no significant increase",
              "no decrease", "no worsening", "not worsened", "not only", "not entirely",
              "not completely", "not fully", "near complete resolution", "nearly resolved",
              "partially resolved", "partial resolution", "incomplete resolution", "resolving",
              "gram negative"),
    (T, F): ("but", "however", "although", "though", "which", "whereas", "while", "except",
             "aside from", "apart from", "other than", "with the exception", "yet"),
}

HARD_BREAKS = frozenset({";", ":"})
VERBS = frozenset(["is", "are", "was", "were", "be", "been", "appears", "appear", "appeared", "seen", "noted", "identified", "present", "demonstrated", "visualized", "appreciated", "remains", "remain", "has", "have", "had", "shows", "show", "demonstrates", "measures", "persists", "persist"])
# a comma / "and" followed by one of these opens a new clause ("no effusion, the heart is ...")
CLAUSE_STARTERS = frozenset(["there", "the", "this", "it", "these", "which", "heart", "lungs", "possible", "possibly", "probable", "probably", "likely", "may", "mild", "moderate", "severe", "stable", "unchanged", "increased", "decreased", "normal", "a", "an"])
BACK_TRANSPARENT = frozenset({"which", "that"})   # "opacity which has resolved"
MAX_SCOPE = 20
# triggers that reach only a few words on one side: "atelectasis versus scarring" leaves the
# "opacity" earlier in the clause alone; "resolved interstitial edema" but "resolved, small ...";
# "small effusion, pneumonia is unlikely" leaves the effusion alone
REACH: dict[tuple[str, ...], tuple[int, int]] = {
    ("versus",): (3, MAX_SCOPE), ("vs",): (3, MAX_SCOPE), ("resolved",): (MAX_SCOPE, 3),
    ("unlikely",): (3, MAX_SCOPE), ("not", "unlikely"): (3, MAX_SCOPE),
}


@dataclass(frozen=True, slots=True)
class Scope:
    polarity: Polarity
    first: int        # token range covered, [first, last)
    last: int


@lru_cache(maxsize=1)
def trigger_matcher() -> PhraseMatcher[tuple[Polarity, Direction]]:
    return PhraseMatcher((p, key) for key, phrases in TRIGGERS.items() for p in phrases)


def _forward_end(words: Sequence[str], start: int, breaks: set[int]) -> int:
    seen_verb = False
    j, n = start, min(len(words), start + MAX_SCOPE)
    while j < n:
        w = words[j]
        if j in breaks or w in HARD_BREAKS:
            break
        nxt = words[j + 1] if j + 1 < len(words) else ""
        if w == "," and (seen_verb or nxt in CLAUSE_STARTERS):
            break
        if w == "and" and nxt in CLAUSE_STARTERS:
            break
        seen_verb = seen_verb or w in VERBS
        j += 1
    return j


def _segment_has_verb(words: Sequence[str], j: int, breaks: set[int]) -> bool:
    """Whether the words before position j, back to the previous comma or break, hold a verb."""
    k = j - 1
    while k >= 0 and words[k] not in HARD_BREAKS and words[k] != "," and k not in breaks:
        if words[k] in VERBS:
            return True
        k -= 1
    return False


def _backward_start(words: Sequence[str], end: int, breaks: set[int], reach: int) -> int:
    """Backward scopes cross list commas and "and" ("consolidation, atelectasis, and effusion have
    cleared") but stop where the part before is a clause of its own ("heart is enlarged, ...")."""
    j = end - 1
    while j >= 0 and end - j <= reach:
        w = words[j]
        if w in HARD_BREAKS or (j in breaks and w not in BACK_TRANSPARENT):
            break
        if w in (",", "and", "with") and _segment_has_verb(words, j, breaks):
            break
        j -= 1
    return j + 1


def find_scopes(words: Sequence[str]) -> list[Scope]:
    """Scopes of every trigger in one sentence's normalised words."""
    triggers = trigger_matcher().find_longest(words)
    breaks = {i for m in triggers if m.payload[0] is T for i in range(m.first, m.last)}
    scopes: list[Scope] = []
    for m in triggers:
        polarity, direction = m.payload
        if polarity in (PS, T):
            continue
        back, fwd = REACH.get(tuple(words[m.first:m.last]), (MAX_SCOPE, MAX_SCOPE))
        if direction in (F, BOTH):
            scopes.append(Scope(polarity, m.last, min(_forward_end(words, m.last, breaks), m.last + fwd)))
        if direction in (B, BOTH):
            scopes.append(Scope(polarity, _backward_start(words, m.first, breaks, back), m.first))
    return scopes


def label_at(scopes: Sequence[Scope], position: int) -> float:
    """POSITIVE / NEGATIVE / UNCERTAIN for the token at ``position``; negation wins."""
    label = POSITIVE
    for s in scopes:
        if s.first <= position < s.last:
            if s.polarity is N:
                return NEGATIVE
            label = UNCERTAIN
    return label
