"""A training report as labelled sentences: their order, and reports with some findings left out.

Order: as written, or the sentences that state a finding first.

IU X-ray and MIMIC-CXR findings are a set of sentences whose order is a radiologist's habit, most
often heart, mediastinum, lungs, pleura, bones: the one abnormal sentence sits anywhere. A small
decoder that has begun a normal report follows the memorised template and drops the finding the
diagnosis prompt named. ``findings_first`` reorders a training target so that the sentences that
state a finding (positive or uncertain, by the labeler) come first, in the order the diagnosis
prompt lists the findings (``FINDINGS``), and the normal sentences follow in their written order:
the decoder learns to put each named finding into words right after the prompt names it.
Only training targets are reordered; references are scored as written (the order of sentences
changes no sentence, and BLEU's n-grams rarely cross a sentence end).

Finding dropout (``LabelledReports.sample``): the report with the sentences that state some of its
findings removed, and its labels recomputed from the sentences left. The decoder warm-up trains on
such variants so that each finding in the prompt is tied to its own sentences, not to the whole
report a combination of findings came with (a small decoder otherwise writes one memorised report
per combination).
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from enum import Enum

import numpy as np

from cxr.labeler import label_reports
from cxr.observations import FINDINGS, NEGATIVE, OBSERVATIONS, POSITIVE, UNCERTAIN, Observation

END = " ."
SEPARATOR = " . "   # how a cleaned report joins its sentences (cxr.clean.clean_report)


class SentenceOrder(str, Enum):
    REPORT = "report"                  # as written
    FINDINGS_FIRST = "findings_first"  # sentences stating a finding first, in FINDINGS order


def split_cleaned(report: str) -> list[str]:
    """A cleaned report ("a . b .") → its sentences ["a", "b"]; empty sentences are kept."""
    return report.removesuffix(END).split(SEPARATOR)


def findings_first(reports: Sequence[str]) -> list[str]:
    """Cleaned reports with the sentences that state a finding moved first (stable otherwise)."""
    return LabelledReports(reports).findings_first()


def aggregate_labels(labels: np.ndarray) -> np.ndarray:
    """Sentence labels (S, 14) → one report's (14,): positive if a sentence says so, else uncertain,
    else negative, else blank; No Finding positive when no finding but Support Devices is stated."""
    out = np.full(len(OBSERVATIONS), np.nan)
    for value in (NEGATIVE, UNCERTAIN, POSITIVE):          # later ones win
        out[(labels == value).any(0)] = value
    pathology = [OBSERVATIONS.index(o) for o in FINDINGS if o is not Observation.SUPPORT_DEVICES]
    no_finding = OBSERVATIONS.index(Observation.NO_FINDING)
    out[no_finding] = np.nan if np.isin(out[pathology], (POSITIVE, UNCERTAIN)).any() else POSITIVE
    return out


class LabelledReports:
    """Cleaned reports split into sentences, each sentence labelled once (for ``sample``)."""

    def __init__(self, reports: Sequence[str]) -> None:
        self.sentences = [split_cleaned(r) for r in reports]
        flat = [s for group in self.sentences for s in group]
        labels = label_reports(flat) if flat else np.empty((0, len(OBSERVATIONS)))
        bounds = np.cumsum([0, *map(len, self.sentences)])
        self.labels = [labels[a:b] for a, b in itertools.pairwise(bounds)]
        self._columns = np.array([OBSERVATIONS.index(o) for o in FINDINGS])

    def _stated(self, index: int) -> np.ndarray:
        """(S, 13) bool: which findings each sentence of report ``index`` states (positive or uncertain)."""
        return np.isin(self.labels[index][:, self._columns], (POSITIVE, UNCERTAIN))

    def findings_first(self) -> list[str]:
        out = []
        for index, sentences in enumerate(self.sentences):
            stated = self._stated(index)
            keys = np.where(stated.any(1), stated.argmax(1), len(FINDINGS))   # the first finding named
            order = sorted(range(len(sentences)), key=lambda i: keys[i])      # stable: ties keep their order
            out.append(SEPARATOR.join(sentences[i] for i in order) + END)
        return out

    def sample(self, index: int, drop: float, rng: np.random.Generator) -> tuple[str, np.ndarray]:
        """Report ``index`` with each finding it states left out with probability ``drop`` (its
        sentences removed), and the labels of what is left. Never empty: when every sentence would
        go, the report is returned whole."""
        sentences, labels, stated = self.sentences[index], self.labels[index], self._stated(index)
        findings = np.flatnonzero(stated.any(0))
        dropped = findings[rng.random(len(findings)) < drop]
        keep = ~stated[:, dropped].any(1) if len(dropped) else np.ones(len(sentences), dtype=bool)
        if len(dropped) == 0 or not keep.any():
            return SEPARATOR.join(sentences) + END, aggregate_labels(labels)
        return (SEPARATOR.join(s for s, k in zip(sentences, keep) if k) + END,
                aggregate_labels(labels[keep]))


def order_reports(reports: Sequence[str], order: SentenceOrder | str) -> list[str]:
    if SentenceOrder(order) is SentenceOrder.REPORT:
        return list(reports)
    return findings_first(reports)
