"""Phrase vocabulary and a fast token-level phrase matcher for the report labeler.

Loads the CheXpert mention / unmention lists from ``cxr/resources/chexpert_phrases``, adds our own
extensions (see ``vocabulary.py``) and matches them on normalised tokens:
text → ``Token`` list (lower case, hyphens split, punctuation kept as ``, ; : ?``) → ``Match`` list.
"""
from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Generic, TypeVar

from cxr.observations import Observation

P = TypeVar("P")

# step 1: words are runs of letters / digits (so "air-space" → "air", "space" and "x-ray" → "x",
# "ray"); the punctuation that shapes negation scopes is kept as its own token.
TOKEN_RE = re.compile(r"[^\W_]+|[,;:?]")


@dataclass(frozen=True, slots=True)
class Token:
    text: str    # lower-cased
    start: int   # char offset in the source text
    end: int


def tokenize(text: str, offset: int = 0) -> list[Token]:
    """Normalised tokens of ``text`` with char offsets shifted by ``offset``."""
    return [Token(m.group().lower(), m.start() + offset, m.end() + offset) for m in TOKEN_RE.finditer(text)]


@dataclass(frozen=True, slots=True)
class Phrase:
    """One phrase as token words. ``exact`` pins the last word; otherwise it is a prefix
    (CheXpert matches substrings: "atelecta" must find "atelectasis", "effusion" "effusions")."""

    words: tuple[str, ...]
    exact: bool

    @classmethod
    def parse(cls, raw: str) -> Phrase:
        """CheXpert syntax: ``_`` marks a word edge; a trailing ``_`` means the whole last word."""
        exact = raw.rstrip().endswith("_")
        words = tuple(t.text for t in tokenize(raw.replace("_", " ")))
        if not words:
            raise ValueError(f"empty phrase {raw!r}")
        return cls(words, exact)


@dataclass(frozen=True, slots=True)
class Match(Generic[P]):
    payload: P
    first: int   # token index, inclusive
    last: int    # token index, exclusive


def _word_matches(token: str, word: str, prefix: bool) -> bool:
    if prefix:
        return token.startswith(word)
    # whole words still accept the plural ("markings", "densities" is listed by CheXpert)
    return token == word or token == word + "s" or token == word + "es"


class PhraseMatcher(Generic[P]):
    """Finds every phrase occurrence that starts at a word start.

    Phrases are bucketed by the first 3 letters of their first word, and the phrases whose first
    word fits a given token are cached per distinct token (report vocabularies are small), so a
    token costs one dict lookup plus a check of the later words of its few multi-word phrases.
    """

    KEY = 3
    CACHE_LIMIT = 200_000   # distinct tokens remembered before the cache is reset

    def __init__(self, entries: Iterable[tuple[str, P]]):
        self._buckets: dict[str, list[tuple[Phrase, P]]] = defaultdict(list)
        for raw, payload in entries:
            phrase = Phrase.parse(raw)
            self._buckets[phrase.words[0][: self.KEY]].append((phrase, payload))
        for bucket in self._buckets.values():   # longest first: callers keep the first hit
            bucket.sort(key=lambda e: -len(e[0].words))
        self._first: dict[str, tuple[tuple[Phrase, P], ...]] = {}

    def _starting_with(self, word: str) -> tuple[tuple[Phrase, P], ...]:
        hits = self._first.get(word)
        if hits is None:
            hits = tuple(
                (phrase, payload) for phrase, payload in self._buckets.get(word[: self.KEY], ())
                if _word_matches(word, phrase.words[0], prefix=len(phrase.words) == 1 and not phrase.exact)
            )
            if len(self._first) >= self.CACHE_LIMIT:
                self._first.clear()
            self._first[word] = hits
        return hits

    def find_all(self, words: Sequence[str]) -> list[Match[P]]:
        """Every (possibly overlapping) match, in order of start token."""
        out: list[Match[P]] = []
        n = len(words)
        for i, word in enumerate(words):
            for phrase, payload in self._starting_with(word):
                k = len(phrase.words)
                if k == 1:
                    out.append(Match(payload, i, i + 1))
                    continue
                if i + k > n:
                    continue
                for j in range(1, k):
                    if not _word_matches(words[i + j], phrase.words[j], j == k - 1 and not phrase.exact):
                        break
                else:
                    out.append(Match(payload, i, i + k))
        return out

    def find_longest(self, words: Sequence[str]) -> list[Match[P]]:
        """Leftmost-longest, non-overlapping matches (used for trigger words)."""
        out: list[Match[P]] = []
        best: dict[int, Match[P]] = {}
        for m in self.find_all(words):
            cur = best.get(m.first)
            if cur is None or m.last > cur.last:
                best[m.first] = m
        end = 0
        for first in sorted(best):
            if first >= end:
                out.append(best[first])
                end = best[first].last
        return out


def _read_list(kind: str, slug: str) -> list[str]:
    path = files("cxr") / "resources" / "chexpert_phrases" / kind / f"{slug}.txt"
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@cache
def chexpert_phrases(kind: str) -> dict[Observation, tuple[str, ...]]:
    """The bundled CheXpert ``mention`` or ``unmention`` list of each observation (raw syntax)."""
    if kind not in ("mention", "unmention"):
        raise ValueError(f"kind must be 'mention' or 'unmention', not {kind!r}")
    return {obs: tuple(_read_list(kind, obs.slug)) for obs in Observation}
