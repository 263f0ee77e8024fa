"""Decisions: the classifier's 14 probabilities → a state per observation, by per-observation thresholds.

    positive   p ≥ positive[o]
    uncertain  uncertain[o] ≤ p < positive[o]   (a band only where the fit found one)
    negative   otherwise

Thresholds are fit on the val split (``fit_thresholds``: F1-optimal against the reference labels),
saved in the checkpoint as ``thresholds.json`` and used for every decision the model makes: the
per-study KG seeds, the diagnosis prompt, ``positive`` in the API and run_batch's rows.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr.observations import NEGATIVE, OBSERVATIONS, POSITIVE, STATES, UNCERTAIN, State

log = logging.getLogger(__name__)

THRESHOLDS_FILE = "thresholds.json"
DEFAULT_THRESHOLD = 0.5
NEVER = 1.0 + 1e-6      # a threshold no probability reaches: the observation is never decided
MIN_POSITIVES = 3       # fewer positives than this in the fit split: too few to place a cut; 0.5 stays
MIN_F1 = 0.3            # a best val F1 below this: the classifier cannot find it; never decided positive
FAR_RATE = 0.01         # "far" from a threshold: a logit gap that only this share of val's reference statements exceed


@dataclass
class ThresholdRules:
    """How thresholds are fit (``fit_thresholds``); a training config field and `r2genkg calibrate`'s options."""

    min_positives: int = MIN_POSITIVES   # fewer positives in the fit split: keep the 0.5 cut
    min_f1: float = MIN_F1               # a best F1 below this: never decide the observation

    def __post_init__(self) -> None:
        if self.min_positives < 1:
            raise ValueError(f"ThresholdRules.min_positives must be ≥ 1, got {self.min_positives}")
        if not 0.0 <= self.min_f1 <= 1.0:
            raise ValueError(f"ThresholdRules.min_f1 must be in [0, 1], got {self.min_f1}")


@dataclass
class Thresholds:
    """Per-observation thresholds in OBSERVATIONS order, and where they came from."""

    positive: tuple[float, ...] = (DEFAULT_THRESHOLD,) * len(OBSERVATIONS)
    uncertain: tuple[float, ...] = (NEVER,) * len(OBSERVATIONS)   # ≥ positive: no uncertain band
    fit_on: str = "default"                 # "default" (0.5, nothing fit) or e.g. "val (296 studies)"
    f1: tuple[float | None, ...] = (None,) * len(OBSERVATIONS)    # val F1 of the positive decision
    margin: float | None = None   # logit gap from a threshold that counts as far (fit_disagreement_margin); None: not fit

    def __post_init__(self) -> None:
        self.positive, self.uncertain, self.f1 = tuple(self.positive), tuple(self.uncertain), tuple(self.f1)
        for name in ("positive", "uncertain", "f1"):
            if len(getattr(self, name)) != len(OBSERVATIONS):
                raise ValueError(f"Thresholds.{name} needs {len(OBSERVATIONS)} values, got {len(getattr(self, name))}")
        bad = [o.value for o, t in zip(OBSERVATIONS, self.positive) if not 0.0 <= t <= NEVER]
        if bad:
            raise ValueError(f"Thresholds.positive must be in [0, 1]; out of range for {bad}")

    def states(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Probabilities (…, 14) → state codes (…, 14) (``STATES`` index); compared in float64, the
        precision the thresholds were fit in."""
        probabilities = probabilities.double()
        pos = torch.tensor(self.positive, dtype=torch.float64, device=probabilities.device)
        unc = torch.tensor(self.uncertain, dtype=torch.float64, device=probabilities.device)
        codes = torch.full(probabilities.shape, STATES.index(State.NEGATIVE), dtype=torch.long,
                           device=probabilities.device)
        codes[(probabilities >= unc) & (probabilities < pos)] = STATES.index(State.UNCERTAIN)
        codes[probabilities >= pos] = STATES.index(State.POSITIVE)
        return codes

    def cuts(self) -> dict[str, float | None]:
        """Each observation's positive threshold by name; None for one never decided (cut above 1)."""
        return {o.value: (t if t <= 1.0 else None) for o, t in zip(OBSERVATIONS, self.positive)}

    def to_dict(self) -> dict[str, Any]:
        return {"fit_on": self.fit_on, "disagreement_margin": self.margin,
                "observations": {o.value: {"positive": p, "uncertain": u if u < p else None, "val_f1": f}
                                 for o, p, u, f in zip(OBSERVATIONS, self.positive, self.uncertain, self.f1)}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        try:
            rows = [data["observations"][o.value] for o in OBSERVATIONS]
            return cls(tuple(float(r["positive"]) for r in rows),
                       tuple(NEVER if r.get("uncertain") is None else float(r["uncertain"]) for r in rows),
                       str(data.get("fit_on", "unknown")), tuple(r.get("val_f1") for r in rows),
                       None if data.get("disagreement_margin") is None else float(data["disagreement_margin"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a thresholds file ({type(err).__name__}: {err})") from None

    def table(self) -> list[tuple[str, float, float | None, float | None]]:
        """(observation, positive threshold, uncertain threshold or None, val F1) rows for printing."""
        return [(o.value, p, u if u < p else None, f)
                for o, p, u, f in zip(OBSERVATIONS, self.positive, self.uncertain, self.f1)]


def best_f1_threshold(probabilities: np.ndarray, target: np.ndarray,
                      min_positives: int = MIN_POSITIVES) -> tuple[float, float | None]:
    """The threshold t maximising F1 of ``p ≥ t`` against the bool ``target``, and that F1.

    Candidates are the midpoints between sorted distinct probabilities, so a threshold never sits
    on a probability seen in the fit. Fewer than ``min_positives`` positives in ``target``:
    (DEFAULT_THRESHOLD, None); with one or two positives the F1-optimal cut is noise, often a cut
    so low that the observation would be asserted for most studies.
    """
    positives = int(target.sum())
    if positives < max(min_positives, 1):
        return DEFAULT_THRESHOLD, None
    order = np.argsort(-probabilities, kind="stable")
    p, y = probabilities[order], target[order].astype(np.int64)
    tp = np.cumsum(y)
    predicted = np.arange(1, len(p) + 1)
    last = np.r_[p[1:] != p[:-1], True]      # cut only after the last of a run of equal values
    f1 = np.where(last, 2 * tp / (predicted + positives), -1.0)
    k = int(np.argmax(f1))
    below = p[k + 1] if k + 1 < len(p) else 0.0
    return float((p[k] + below) / 2) if below < p[k] else float(p[k]), float(f1[k])


def fit_thresholds(probabilities: np.ndarray, labels: np.ndarray, split: str = "val",
                   rules: ThresholdRules | None = None) -> Thresholds:
    """F1-optimal thresholds per observation from ``probabilities`` (n, 14) and CheXpert ``labels`` (n, 14).

    positive: F1 of ``p ≥ t`` against label 1 (what the CE metrics count as positive).
    uncertain: F1 against label 1 or -1; it makes a band only where it falls below the positive one.
    An observation with fewer than ``min_positives`` positives in the split keeps the 0.5 cut
    (``f1`` None); likewise the uncertain band needs ``min_positives`` studies labelled 1 or -1.
    One whose best F1 is below ``min_f1`` (both from ``rules``) is never decided positive or uncertain: a weak classifier's
    F1-optimal cut is a very low one that asserts the finding for most studies (``f1`` keeps the value).
    """
    rules = rules or ThresholdRules()
    min_positives, min_f1 = rules.min_positives, rules.min_f1
    probabilities, labels = np.asarray(probabilities, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if probabilities.shape != labels.shape or probabilities.ndim != 2 or probabilities.shape[1] != len(OBSERVATIONS):
        raise ValueError(f"fit_thresholds needs (n, {len(OBSERVATIONS)}) probabilities and labels, "
                         f"got {probabilities.shape} and {labels.shape}")
    positive, uncertain, f1 = [], [], []
    for j in range(len(OBSERVATIONS)):
        t_pos, f = best_f1_threshold(probabilities[:, j], labels[:, j] == POSITIVE, min_positives)
        t_any, _ = best_f1_threshold(probabilities[:, j], (labels[:, j] == POSITIVE) | (labels[:, j] == UNCERTAIN),
                                     min_positives)
        if f is not None and f < min_f1:
            t_pos, t_any = NEVER, NEVER
        positive.append(t_pos)
        uncertain.append(t_any if t_any < t_pos else NEVER)
        f1.append(f)
    margin = fit_disagreement_margin(probabilities, labels, positive)
    return Thresholds(tuple(positive), tuple(uncertain), f"{split} ({len(labels)} studies)", tuple(f1), margin)


def fit_disagreement_margin(probabilities: np.ndarray, labels: np.ndarray, positive: Sequence[float],
                            rate: float = FAR_RATE) -> float | None:
    """The logit gap from the positive thresholds beyond which a statement "disagrees with the image".

    Over the split's reference statements about the 13 findings with a cut in (0, 1): a finding the
    reference affirms (label 1) is ``logit(t) - logit(p)`` from its cut, one it denies (label 0)
    ``logit(p) - logit(t)``. The margin is the (1 - rate) quantile of those gaps (at least 0), so
    only ``rate`` of the references' own statements would be flagged. None without any statement.
    """
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-6, 1 - 1e-6)
    cut = np.clip(np.asarray(positive, dtype=np.float64), 1e-6, 1 - 1e-6)
    decidable = (np.asarray(positive) > 0.0) & (np.asarray(positive) < 1.0)
    decidable[0] = False                       # No Finding: not a finding a sentence asserts
    gap = np.log(p / (1 - p)) - np.log(cut / (1 - cut))          # (n, 14)
    gaps = np.concatenate([-gap[(labels == POSITIVE) & decidable], gap[(labels == NEGATIVE) & decidable]])
    if gaps.size == 0:
        return None
    return float(max(np.quantile(gaps, 1.0 - rate), 0.0))


def write_thresholds(directory: Path, thresholds: Thresholds) -> None:
    (Path(directory) / THRESHOLDS_FILE).write_text(json.dumps(thresholds.to_dict(), indent=2) + "\n",
                                                   encoding="utf-8")


def read_thresholds(directory: Path) -> Thresholds:
    """The checkpoint's thresholds; one written before them decides at 0.5 (with a warning)."""
    path = Path(directory) / THRESHOLDS_FILE
    if not path.is_file():
        log.warning("%s has no %s (written before fitted thresholds): deciding at p ≥ %.1f for every "
                    "observation", directory, THRESHOLDS_FILE, DEFAULT_THRESHOLD)
        return Thresholds()
    try:
        return Thresholds.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: {err}") from None


def state_names(codes: Any) -> dict[str, str]:
    """One study's state codes (14,) → {observation: state word}."""
    return {o.value: STATES[int(c)].value for o, c in zip(OBSERVATIONS, codes)}

