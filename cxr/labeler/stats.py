"""Label rates over a set of reports: (N, 14) label array → per-observation share of 1 / 0 / -1 / blank.

Used by the benchmark and by ``r2genkg label-stats`` to see what the labeler does to a corpus.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr.observations import OBSERVATIONS, Observation


@dataclass(frozen=True)
class LabelRates:
    observation: Observation
    positive: float   # shares of the N reports; the four sum to 1
    negative: float
    uncertain: float
    blank: float


def label_rates(labels: np.ndarray) -> list[LabelRates]:
    """Per-observation rates of an (N, 14) array (NaN = blank), in column order."""
    if labels.ndim != 2 or labels.shape[1] != len(OBSERVATIONS):
        raise ValueError(f"expected an (N, {len(OBSERVATIONS)}) label array, got shape {labels.shape}")
    n = max(len(labels), 1)
    return [
        LabelRates(obs, float(np.sum(col == 1.0)) / n, float(np.sum(col == 0.0)) / n,
                   float(np.sum(col == -1.0)) / n, float(np.sum(np.isnan(col))) / n)
        for obs, col in zip(OBSERVATIONS, labels.T)
    ]


def format_rates(rates: list[LabelRates]) -> str:
    """A fixed-width table, one row per observation."""
    lines = [f"{'observation':28s} {'pos':>6s} {'neg':>6s} {'unc':>6s} {'blank':>6s}"]
    lines += [f"{r.observation.value:28s} {r.positive:6.1%} {r.negative:6.1%} {r.uncertain:6.1%} {r.blank:6.1%}"
              for r in rates]
    return "\n".join(lines)
