"""AUROC per observation from the classifier's probabilities (B, 14) against CheXpert labels.

Rank form (Mann–Whitney U, ties averaged): AUROC = (Σ ranks of positives − P(P+1)/2) / (P·N).
Positive = label 1 (uncertain counts as positive under U-Ones when ``uncertain_positive``);
everything else negative. An observation with no positive or no negative has no AUROC (None).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxr.observations import OBSERVATIONS, Observation, UncertainPolicy, positive_mask


def auroc(scores: np.ndarray, targets: np.ndarray) -> float | None:
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=bool)
    if scores.shape != targets.shape or scores.ndim != 1:
        raise ValueError(f"auroc: scores {scores.shape} and targets {targets.shape} must be equal 1-D shapes")
    pos, neg = int(targets.sum()), int((~targets).sum())
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0                      # 1-based average rank per distinct value
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[targets].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def auroc_per_observation(probabilities: np.ndarray, labels: np.ndarray, uncertain_positive: bool = True,
                          observations: Sequence[Observation] = OBSERVATIONS) -> dict[str, float | None]:
    """probabilities (n, 14), labels (n, 14) in {1, 0, -1, NaN} → {observation: AUROC or None}."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels, dtype=np.float64)
    if probabilities.shape != labels.shape or probabilities.shape[1:] != (len(observations),):
        raise ValueError(f"probabilities {probabilities.shape} and labels {labels.shape} must both be (n, "
                         f"{len(observations)})")
    targets = positive_mask(labels, UncertainPolicy.ONES if uncertain_positive else UncertainPolicy.ZEROS)
    return {o.value: auroc(probabilities[:, i], targets[:, i]) for i, o in enumerate(observations)}
