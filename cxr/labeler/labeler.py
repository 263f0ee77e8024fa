"""The CheXpert-style report labeler: report text → 14 labels (1 / 0 / -1 / blank) + mentions.

report → sentences → tokens → scopes + mentions (per sentence) → aggregate per observation
(positive > uncertain > negative) → No Finding. ``label_reports`` gives an (N, 14) float64 array.
An empty or non-English report is all blank (``ReportLabels.unread`` says why).
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from cxr.labeler.language import Unread, unread_reason
from cxr.labeler.mentions import find_mentions
from cxr.labeler.phrases import tokenize
from cxr.labeler.rules import find_scopes
from cxr.observations import NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN, Observation

log = logging.getLogger(__name__)

# step 1: a sentence ends at . ! ? followed by white space or the end, at a "." glued to the next
# capitalised word ("bilaterally.There"), or at a blank line. "3.5 cm" is not split.
SENTENCE_END_RE = re.compile(r"[.!?]+(?=\s|$)|\.(?=[A-Z])|\n\s*\n")

_RANK = {NEGATIVE: 0, UNCERTAIN: 1, POSITIVE: 2}   # aggregation: positive > uncertain > negative
_NOT_FINDINGS = (Observation.NO_FINDING, Observation.SUPPORT_DEVICES)


@dataclass(frozen=True, slots=True)
class Sentence:
    text: str     # original text
    start: int    # char offset in the report
    end: int


def split_sentences(report: str) -> list[Sentence]:
    """Sentences of ``report`` with their original text and char offsets (end punctuation kept)."""
    out: list[Sentence] = []
    start = 0
    for m in SENTENCE_END_RE.finditer(report):
        _append(out, report, start, m.end())
        start = m.end()
    _append(out, report, start, len(report))
    return out


def _append(out: list[Sentence], report: str, start: int, end: int) -> None:
    chunk = report[start:end]
    stripped = chunk.strip()
    if stripped:
        s = start + chunk.index(stripped)
        out.append(Sentence(stripped, s, s + len(stripped)))


@dataclass(frozen=True)
class Mention:
    """One labelled phrase. ``observation`` is NO_FINDING only in ``ReportLabels.other_findings``."""

    observation: Observation
    label: float      # 1.0 / 0.0 / -1.0
    phrase: str       # the matched text, as written in the report
    sentence: str     # the sentence it was found in, as written in the report
    start: int        # char offsets of ``phrase`` in the report
    end: int


@dataclass
class ReportLabels:
    """Labels of one report. ``values`` has all 14 observations; blank is None.

    ``other_findings`` are mentions of CheXpert's "no_finding" vocabulary (emphysema, scoliosis,
    granuloma, …): not one of the 14, but a positive / uncertain one rules out No Finding.
    ``unread`` is set when the report could not be read (empty, not English): all 14 are blank.
    """

    values: dict[Observation, float | None]
    mentions: list[Mention] = field(default_factory=list)
    other_findings: list[Mention] = field(default_factory=list)
    unread: Unread | None = None

    def as_array(self) -> np.ndarray:
        """(14,) float64 in column order, NaN for blank."""
        return np.array([math.nan if self.values[o] is None else self.values[o] for o in OBSERVATIONS],
                        dtype=np.float64)


class ReportLabeler:
    """Labels reports with the 14 CheXpert observations.

    Aggregation follows the CheXpert labeler: an observation is positive if any mention is
    positive, else uncertain if any is uncertain, else negative if mentioned, else blank.
    No Finding is 1.0 when no observation other than Support Devices, and no "other finding"
    (CheXpert's no_finding list: emphysema, scoliosis, granuloma, …), is positive or uncertain;
    otherwise blank (never 0.0). As in CheXpert, an English report that mentions nothing gets No
    Finding 1.0; a report with no words, or one that is not English (see ``language.py``), gets
    all blanks: it says nothing we can read. Unlike CheXpert we do not turn "CHF" / "heart failure"
    into uncertain Cardiomegaly.
    """

    def label(self, report: str, check_language: bool = True) -> ReportLabels:
        """``check_language=False`` reads a term, not a report (an entity name such as
        "defibrillator" or "et tube"): one rare word is no sign of another language."""
        values: dict[Observation, float | None] = dict.fromkeys(OBSERVATIONS)
        mentions: list[Mention] = []
        others: list[Mention] = []
        all_words: list[str] = []
        for sent in split_sentences(report or ""):
            tokens = tokenize(sent.text, sent.start)
            words = [t.text for t in tokens]
            all_words += words
            for raw in find_mentions(words, find_scopes(words)):
                start, end = tokens[raw.first].start, tokens[raw.last - 1].end
                mention = Mention(raw.observation, raw.label, report[start:end], sent.text, start, end)
                if raw.observation is Observation.NO_FINDING:
                    others.append(mention)
                    continue
                mentions.append(mention)
                cur = values[raw.observation]
                if cur is None or _RANK[raw.label] > _RANK[cur]:
                    values[raw.observation] = raw.label
        unread = unread_reason(all_words)
        if unread is Unread.NOT_ENGLISH and not check_language:
            unread = None
        if unread is not None:
            return ReportLabels(dict.fromkeys(OBSERVATIONS), unread=unread)
        finding = any(values[o] in (POSITIVE, UNCERTAIN) for o in OBSERVATIONS if o not in _NOT_FINDINGS)
        finding = finding or any(m.label in (POSITIVE, UNCERTAIN) for m in others)
        values[Observation.NO_FINDING] = None if finding else POSITIVE
        return ReportLabels(values, mentions, others)

    def label_many(self, reports: Sequence[str], progress: bool = False) -> list[ReportLabels]:
        return [self.label(r) for r in tqdm(reports, desc="labeling", unit="report", disable=not progress)]


def label_reports(reports: Sequence[str]) -> np.ndarray:
    """(N, 14) float64 labels in column order, NaN for blank. Non-English reports (all blank) are
    counted in one warning."""
    labeler = ReportLabeler()
    out = np.full((len(reports), len(OBSERVATIONS)), np.nan, dtype=np.float64)
    foreign = 0
    for i, report in enumerate(reports):
        result = labeler.label(report)
        out[i] = result.as_array()
        foreign += result.unread is Unread.NOT_ENGLISH
    if foreign:
        log.warning("%d of %d reports are not English text: their labels are left blank", foreign, len(reports))
    return out
