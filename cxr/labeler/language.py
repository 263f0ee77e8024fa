"""Can the labeler read a report? Its words → ``Unread`` reason (empty / not English) or None.

English is judged by vocabulary, with no language model: the words of the 2,955 bundled IU X-ray
reports plus every word of the labeler's own phrase lists. A report most of whose words are not
in it ("Kein Pneumothorax. Kleiner Pleuraerguss links.": 1 of 5) is not English: its labels are
left blank rather than read from the one word it shares with English.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from enum import Enum
from functools import lru_cache
from importlib.resources import files

from cxr.labeler.phrases import TOKEN_RE, chexpert_phrases
from cxr.labeler.rules import TRIGGERS
from cxr.labeler.vocabulary import (
    EXTRA_MENTIONS,
    EXTRA_UNMENTIONS,
    QUALIFIED_CHEXPERT,
    QUALIFIED_EXTRA,
    QUALIFIERS,
)

# The share of a report's words that must be known English. Held-out IU reports (val + test
# against a train-only vocabulary) know at least 91 %; the German / French / Spanish reports of
# the tests know 20-44 %, the two-word "Kein Pneumothorax." 50 %.
MIN_KNOWN_SHARE = 0.6


class Unread(str, Enum):
    """Why a report's labels are all blank."""

    EMPTY = "empty"                # no words: "", white space, punctuation, numbers
    NOT_ENGLISH = "not English"    # fewer than MIN_KNOWN_SHARE of its words are English


def _words(texts: Iterable[str]) -> set[str]:
    """The distinct ``tokenize`` words of ``texts`` (one regex pass: this runs over 2,955 reports)."""
    return set(TOKEN_RE.findall("\n".join(texts).lower().replace("_", " ")))


def build_vocabulary(reports: Iterable[str]) -> frozenset[str]:
    """Every word of ``reports`` and of the labeler's phrases (lower case)."""
    phrases = [p for kind in ("mention", "unmention") for ps in chexpert_phrases(kind).values() for p in ps]
    for table in (EXTRA_MENTIONS, EXTRA_UNMENTIONS, QUALIFIED_CHEXPERT, QUALIFIED_EXTRA, TRIGGERS):
        phrases += [p for ps in table.values() for p in ps]
    phrases += [p for group in QUALIFIERS.values() for p in group]
    return frozenset(_words(reports) | _words(phrases))


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """``build_vocabulary`` of the 2,955 bundled IU X-ray reports (built once, ~0.05 s)."""
    data = json.loads((files("cxr") / "resources" / "iu_xray" / "annotation.json").read_text(encoding="utf-8"))
    return build_vocabulary(item["report"] for split in data.values() for item in split)


def unread_reason(words: Sequence[str], vocabulary: frozenset[str] | None = None) -> Unread | None:
    """None when the labeler can read a report of these normalised tokens (see ``tokenize``)."""
    letters = [w for w in words if w.isalpha()]
    if not letters:
        return Unread.EMPTY
    vocabulary = english_words() if vocabulary is None else vocabulary
    known = sum(w in vocabulary for w in letters)
    return Unread.NOT_ENGLISH if known < MIN_KNOWN_SHARE * len(letters) else None
