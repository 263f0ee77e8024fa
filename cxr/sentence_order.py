"""The order of a training report's sentences: as written, or the sentences that state a finding first.

IU X-ray and MIMIC-CXR findings are a set of sentences whose order is a radiologist's habit, most
often heart, mediastinum, lungs, pleura, bones: the one abnormal sentence sits anywhere. A small
decoder that has begun a normal report follows the memorised template and drops the finding the
diagnosis prompt named. ``findings_first`` reorders a training target so that the sentences that
state a finding (positive or uncertain, by the labeler) come first, in the order the diagnosis
prompt lists the findings (``FINDINGS``), and the normal sentences follow in their written order:
the decoder learns to put each named finding into words right after the prompt names it.
Only training targets are reordered; references are scored as written (the order of sentences
changes no sentence, and BLEU's n-grams rarely cross a sentence end).
"""
from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

import numpy as np

from cxr.labeler import label_reports
from cxr.observations import FINDINGS, OBSERVATIONS, POSITIVE, UNCERTAIN

END = " ."
SEPARATOR = " . "   # how a cleaned report joins its sentences (cxr.clean.clean_report)


class SentenceOrder(str, Enum):
    REPORT = "report"                  # as written
    FINDINGS_FIRST = "findings_first"  # sentences stating a finding first, in FINDINGS order


def split_cleaned(report: str) -> list[str]:
    """A cleaned report ("a . b .") → its sentences ["a", "b"]; empty sentences are kept."""
    text = report[:-len(END)] if report.endswith(END) else report
    return text.split(SEPARATOR)


def findings_first(reports: Sequence[str]) -> list[str]:
    """Cleaned reports with the sentences that state a finding moved first (stable otherwise)."""
    sentences = [split_cleaned(r) for r in reports]
    flat = [s for group in sentences for s in group]
    labels = label_reports(flat) if flat else np.empty((0, len(OBSERVATIONS)))
    columns = [OBSERVATIONS.index(o) for o in FINDINGS]
    stated = np.isin(labels[:, columns], (POSITIVE, UNCERTAIN))          # (S, 13)
    keys = np.where(stated.any(1), stated.argmax(1), len(FINDINGS))     # the first finding named
    out, at = [], 0
    for report, group in zip(reports, sentences):
        order = sorted(range(len(group)), key=lambda i: keys[at + i])   # stable: ties keep their order
        at += len(group)
        out.append(report if order == sorted(order) else SEPARATOR.join(group[i] for i in order) + END)
    return out


def order_reports(reports: Sequence[str], order: SentenceOrder | str) -> list[str]:
    if SentenceOrder(order) is SentenceOrder.REPORT:
        return list(reports)
    return findings_first(reports)
