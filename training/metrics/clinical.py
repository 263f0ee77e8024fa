"""Clinical efficacy (CE): CheXpert labels of generated vs reference reports → P / R / F1.

Inputs are (N, 14) label arrays in ``cxr.observations.OBSERVATIONS`` column order, as
``cxr.labeler.label_reports`` writes them (1.0 positive, 0.0 negative, -1.0 uncertain, NaN blank).
Convention (R2Gen / PromptMRG CE): only label 1 is positive; 0, -1 and blank all count as
negative, on both sides.  ``observations`` picks the columns scored: all 14 (default, "No
Finding" included) or ``FIVE_OBSERVATIONS`` (Atelectasis, Cardiomegaly, Consolidation, Edema,
Pleural Effusion).

* per class: tp / fp / fn / tn, support = tp + fn, P = tp/(tp+fp), R = tp/(tp+fn),
  F1 = 2·tp/(2·tp+fp+fn) (= 2PR/(P+R)).
* micro: the same formulas on tp, fp, fn summed over the scored classes.
* macro: unweighted mean over the scored classes of the per-class P, R and F1 (not the F1 of
  mean P and mean R), as ``sklearn.metrics.precision_recall_fscore_support(average="macro")``.
* 0/0 is 0 everywhere, as sklearn's ``zero_division=0``: a class never predicted has P = 0, a
  class with no support has R = 0 (F1 is then 0 too, since tp = 0).  Such classes still count
  in the macro mean, which pulls it down; ``CEResult.zero_division_classes`` lists them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cxr.observations import OBSERVATIONS, Observation, UncertainPolicy, positive_mask

_ALLOWED_LABELS = (1.0, 0.0, -1.0)


@dataclass(frozen=True)
class PRF:
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class ClassStats:
    observation: str
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float

    @property
    def support(self) -> int:
        """Reference positives: tp + fn."""
        return self.tp + self.fn

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "support": self.support}


@dataclass(frozen=True)
class CEResult:
    observations: tuple[str, ...]
    n_reports: int
    micro: PRF
    macro: PRF
    per_class: tuple[ClassStats, ...]

    @property
    def zero_division_classes(self) -> tuple[str, ...]:
        """Classes where P or R hit 0/0 (never predicted, or no support) and were set to 0."""
        return tuple(c.observation for c in self.per_class if c.tp + c.fp == 0 or c.tp + c.fn == 0)

    def to_dict(self) -> dict[str, object]:
        return {
            "observations": list(self.observations),
            "n_reports": self.n_reports,
            "micro": asdict(self.micro),
            "macro": asdict(self.macro),
            "per_class": [c.to_dict() for c in self.per_class],
            "zero_division_classes": list(self.zero_division_classes),
        }


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _prf(tp: int, fp: int, fn: int) -> PRF:
    return PRF(_ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn))


def _check_labels(name: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 2 or labels.shape[1] != len(OBSERVATIONS):
        raise ValueError(
            f"{name} labels must have shape (N, {len(OBSERVATIONS)}) in OBSERVATIONS order, "
            f"got {labels.shape}"
        )
    bad = ~(np.isnan(labels) | np.isin(labels, _ALLOWED_LABELS))
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"{name} labels[{row}, {col}] ({OBSERVATIONS[col].value}) = {float(labels[row, col])}; "
            f"allowed: 1, 0, -1 or NaN ({int(bad.sum())} bad values in all)"
        )
    return labels


def ce_metrics(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    observations: Sequence[Observation | str] = OBSERVATIONS,
) -> CEResult:
    """CE metrics of predicted vs reference labels, both (N, 14); scores ``observations``."""
    pred = _check_labels("predicted", pred_labels)
    ref = _check_labels("reference", ref_labels)
    if pred.shape != ref.shape:
        raise ValueError(
            f"predicted labels {pred.shape} and reference labels {ref.shape} differ in shape"
        )
    chosen = [
        Observation.from_name(o) if not isinstance(o, Observation) else o for o in observations
    ]
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"observations must be non-empty and distinct, got {[o.value for o in chosen]}"
        )
    columns = [OBSERVATIONS.index(o) for o in chosen]
    # CE convention: label 1 only is positive (uncertain, negative and blank are not): U-Zeros
    pos_pred = positive_mask(pred[:, columns], UncertainPolicy.ZEROS)   # (N, C)
    pos_ref = positive_mask(ref[:, columns], UncertainPolicy.ZEROS)
    tp = np.sum(pos_pred & pos_ref, axis=0)
    fp = np.sum(pos_pred & ~pos_ref, axis=0)
    fn = np.sum(~pos_pred & pos_ref, axis=0)
    tn = np.sum(~pos_pred & ~pos_ref, axis=0)
    per_class = []
    for k, obs in enumerate(chosen):
        prf = _prf(int(tp[k]), int(fp[k]), int(fn[k]))
        per_class.append(
            ClassStats(
                obs.value,
                int(tp[k]),
                int(fp[k]),
                int(fn[k]),
                int(tn[k]),
                prf.precision,
                prf.recall,
                prf.f1,
            )
        )
    micro = _prf(int(tp.sum()), int(fp.sum()), int(fn.sum()))
    macro = PRF(
        float(np.mean([c.precision for c in per_class])),
        float(np.mean([c.recall for c in per_class])),
        float(np.mean([c.f1 for c in per_class])),
    )
    return CEResult(
        tuple(o.value for o in chosen), int(pred.shape[0]), micro, macro, tuple(per_class)
    )


def ce_from_reports(
    preds: Sequence[str],
    refs: Sequence[str],
    observations: Sequence[Observation | str] = OBSERVATIONS,
) -> CEResult:
    """Label both report lists with our CheXpert-style labeler, then ``ce_metrics``.

    Texts are labelled as given; ``training.evaluate.score_reports`` decides whether that is the
    raw or the R2Gen-cleaned text.
    """
    from cxr.labeler import label_reports  # lazily: the labeler is optional for pure-array use

    if len(preds) != len(refs):
        raise ValueError(
            f"{len(preds)} predictions but {len(refs)} references: lists must be parallel"
        )
    if not preds:
        raise ValueError("nothing to score: no reports")
    return ce_metrics(label_reports(list(preds)), label_reports(list(refs)), observations)
