"""Phrase vocabulary and the one fast token-level phrase matcher (the labeler's and graphdb's).

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

    Phrases are CheXpert-syntax strings or ``Phrase``s. By default words match as CheXpert does
    (a lone non-exact word is a prefix, whole words accept a plural); ``exact_words=True`` asks
    each word to equal its token (graphdb's entity dictionary and cue phrases).
    Phrases are bucketed by the first 3 letters of their first word, and the phrases whose first
    word fits a given token are cached per distinct token (report vocabularies are small), so a
    token costs one dict lookup plus a check of the later words of its few multi-word phrases.
    """

    KEY = 3
    CACHE_LIMIT = 200_000   # distinct tokens remembered before the cache is reset

    def __init__(self, entries: Iterable[tuple[str | Phrase, P]], *, exact_words: bool = False):
        self.exact_words = exact_words
        self._buckets: dict[str, list[tuple[Phrase, P]]] = defaultdict(list)
        for raw, payload in entries:
            phrase = raw if isinstance(raw, Phrase) else Phrase.parse(raw)
            self._buckets[phrase.words[0][: self.KEY]].append((phrase, payload))
        # longest first, in words and then in letters, so callers that keep the first hit keep
        # the most specific phrase: "not excluded" over the prefix "not exclude"
        for bucket in self._buckets.values():
            bucket.sort(key=lambda e: (-len(e[0].words), -sum(map(len, e[0].words))))
        self._first: dict[str, tuple[tuple[Phrase, P], ...]] = {}

    def _word(self, token: str, word: str, prefix: bool) -> bool:
        return token == word if self.exact_words else _word_matches(token, word, prefix)

    def _starting_with(self, word: str) -> tuple[tuple[Phrase, P], ...]:
        """Phrases whose first word fits ``word``, longest first."""
        hits = self._first.get(word)
        if hits is None:
            hits = tuple(
                (phrase, payload) for phrase, payload in self._buckets.get(word[: self.KEY], ())
                if self._word(word, phrase.words[0], prefix=len(phrase.words) == 1 and not phrase.exact)
            )
            if len(self._first) >= self.CACHE_LIMIT:
                self._first.clear()
            self._first[word] = hits
        return hits

    def _fits(self, phrase: Phrase, words: Sequence[str], i: int) -> bool:
        """Do the later words of ``phrase`` (its first already fits) match from token ``i``?"""
        k = len(phrase.words)
        if k == 1:
            return True
        if i + k > len(words):
            return False
        if self.exact_words:
            return tuple(words[i:i + k]) == phrase.words
        return all(_word_matches(words[i + j], phrase.words[j], j == k - 1 and not phrase.exact) for j in range(1, k))

    def find_all(self, words: Sequence[str]) -> list[Match[P]]:
        """Every (possibly overlapping) match, in order of start token."""
        return [Match(payload, i, i + len(phrase.words))
                for i, word in enumerate(words)
                for phrase, payload in self._starting_with(word) if self._fits(phrase, words, i)]

    def longest_at(self, words: Sequence[str], i: int) -> Match[P] | None:
        """The longest match starting at token ``i`` (the first listed among equally long ones)."""
        if i < len(words):
            for phrase, payload in self._starting_with(words[i]):
                if self._fits(phrase, words, i):
                    return Match(payload, i, i + len(phrase.words))
        return None

    def find_longest(self, words: Sequence[str]) -> list[Match[P]]:
        """Leftmost-longest, non-overlapping matches, left to right (trigger words, dictionary terms)."""
        out: list[Match[P]] = []
        i, n = 0, len(words)
        while i < n:   # longest_at inlined: this loop is the hot path of rule extraction
            for phrase, payload in self._starting_with(words[i]):
                if self._fits(phrase, words, i):
                    out.append(Match(payload, i, i + len(phrase.words)))
                    i += len(phrase.words)
                    break
            else:
                i += 1
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
