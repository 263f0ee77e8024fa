"""CE metrics: a hand-computed 5-report example, an independent sklearn-style check, the labeler."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.observations import FIVE_OBSERVATIONS, OBSERVATIONS, Observation
from training.metrics.clinical import ce_from_reports, ce_metrics

NAN = np.nan
CARD, EDEMA, EFF = Observation.CARDIOMEGALY, Observation.EDEMA, Observation.PLEURAL_EFFUSION


def labels(columns: dict[Observation, list[float]], n: int) -> np.ndarray:
    """(n, 14) all blank except the given columns."""
    out = np.full((n, len(OBSERVATIONS)), NAN)
    for obs, values in columns.items():
        out[:, OBSERVATIONS.index(obs)] = values
    return out


# 5 reports. Only 1 is positive: -1 (uncertain), 0 and blank are all negative.
PRED = labels({CARD: [1, 1, 0, -1, NAN], EDEMA: [1, NAN, NAN, NAN, 1]}, 5)
REF = labels(
    {CARD: [1, 0, 1, 1, NAN], EDEMA: [-1, NAN, NAN, NAN, 1], EFF: [1, NAN, NAN, NAN, NAN]}, 5
)


def test_hand_computed_per_class():
    result = ce_metrics(PRED, REF)
    by_name = {c.observation: c for c in result.per_class}
    card = by_name["Cardiomegaly"]  # tp: r0; fp: r1; fn: r2 (0 vs 1), r3 (-1 vs 1); tn: r4
    assert (card.tp, card.fp, card.fn, card.tn, card.support) == (1, 1, 2, 1, 3)
    assert (card.precision, card.recall, card.f1) == pytest.approx((1 / 2, 1 / 3, 0.4))
    edema = by_name["Edema"]  # r0: predicted 1 vs reference -1 is a false positive
    assert (edema.tp, edema.fp, edema.fn, edema.tn) == (1, 1, 0, 3)
    assert (edema.precision, edema.recall, edema.f1) == pytest.approx((0.5, 1.0, 2 / 3))
    eff = by_name["Pleural Effusion"]  # never predicted: P is 0/0 → 0
    assert (eff.tp, eff.fp, eff.fn, eff.tn, eff.precision, eff.recall, eff.f1) == (
        0,
        0,
        1,
        4,
        0.0,
        0.0,
        0.0,
    )
    assert by_name["Fracture"].tn == 5 and by_name["Fracture"].f1 == 0.0
    assert [c.observation for c in result.per_class] == [o.value for o in OBSERVATIONS]


def test_hand_computed_micro_macro_14_and_5():
    r14 = ce_metrics(PRED, REF)
    # micro: tp 2, fp 2, fn 3 over all classes
    assert (r14.micro.precision, r14.micro.recall, r14.micro.f1) == pytest.approx((0.5, 0.4, 4 / 9))
    # macro: mean over 14 classes, 12 of which contribute 0
    assert r14.macro.precision == pytest.approx((0.5 + 0.5) / 14)
    assert r14.macro.recall == pytest.approx((1 / 3 + 1) / 14)
    assert r14.macro.f1 == pytest.approx((0.4 + 2 / 3) / 14)
    assert set(r14.zero_division_classes) == {o.value for o in OBSERVATIONS} - {
        "Cardiomegaly",
        "Edema",
    }
    r5 = ce_metrics(PRED, REF, FIVE_OBSERVATIONS)
    assert r5.observations == (
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Pleural Effusion",
    )
    assert r5.micro == r14.micro
    assert r5.macro.f1 == pytest.approx((0.4 + 2 / 3) / 5)
    assert r5.n_reports == 5


def _binary_prf(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, float]:
    """sklearn's binary precision / recall / F1 with zero_division=0, written from scratch."""
    tp = float(np.dot(y_true, y_pred))
    predicted, actual = float(y_pred.sum()), float(y_true.sum())
    p = tp / predicted if predicted else 0.0
    r = tp / actual if actual else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn_definitions(seed):
    rng = np.random.default_rng(seed)
    values = np.array([1.0, 0.0, -1.0, NAN])
    pred = rng.choice(values, size=(200, 14), p=[0.2, 0.3, 0.1, 0.4])
    ref = rng.choice(values, size=(200, 14), p=[0.25, 0.3, 0.1, 0.35])
    pred[:, 7] = NAN  # a class never predicted …
    ref[:, 11] = 0.0  # … and one with no support
    y_pred, y_true = (pred == 1).astype(int), (ref == 1).astype(int)
    result = ce_metrics(pred, ref)
    micro = _binary_prf(y_true.ravel(), y_pred.ravel())  # micro = binary on the flattened matrix
    assert (result.micro.precision, result.micro.recall, result.micro.f1) == pytest.approx(micro)
    per_class = np.array([_binary_prf(y_true[:, k], y_pred[:, k]) for k in range(14)])
    ours = np.array([(c.precision, c.recall, c.f1) for c in result.per_class])
    np.testing.assert_allclose(ours, per_class, rtol=1e-12, atol=0)
    macro = per_class.mean(axis=0)
    assert (result.macro.precision, result.macro.recall, result.macro.f1) == pytest.approx(
        tuple(macro)
    )
    assert result.per_class[7].precision == 0.0 and result.per_class[11].recall == 0.0
    assert all(c.tp + c.fp + c.fn + c.tn == 200 for c in result.per_class)


def test_bad_label_arrays_are_refused():
    with pytest.raises(ValueError, match=r"shape \(N, 14\)"):
        ce_metrics(np.zeros((3, 5)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="differ in shape"):
        ce_metrics(np.zeros((3, 14)), np.zeros((4, 14)))
    bad = np.zeros((3, 14))
    bad[2, 5] = 2.0
    with pytest.raises(ValueError, match=r"predicted labels\[2, 5\] \(Edema\) = 2.0"):
        ce_metrics(bad, np.zeros((3, 14)))
    with pytest.raises(ValueError, match="unknown CheXpert observation"):
        ce_metrics(np.zeros((3, 14)), np.zeros((3, 14)), ["Pleural Effusion", "Nodule"])


def test_to_dict_has_per_class_table():
    d = ce_metrics(PRED, REF, FIVE_OBSERVATIONS).to_dict()
    card = d["per_class"][1]
    assert card == {
        "observation": "Cardiomegaly",
        "tp": 1,
        "fp": 1,
        "fn": 2,
        "tn": 1,
        "precision": 0.5,
        "recall": pytest.approx(1 / 3),
        "f1": pytest.approx(0.4),
        "support": 3,
    }
    assert d["micro"] == {
        "precision": 0.5,
        "recall": pytest.approx(0.4),
        "f1": pytest.approx(4 / 9),
    }


def test_from_reports_uses_the_labeler():
    preds = ["Large right pleural effusion.", "The heart is enlarged.", "No acute disease."]
    refs = ["Small pleural effusion.", "Heart size is normal.", "Cardiomegaly."]
    result = ce_from_reports(preds, refs)
    by_name = {c.observation: c for c in result.per_class}
    assert by_name["Pleural Effusion"].tp == 1
    assert (by_name["Cardiomegaly"].fp, by_name["Cardiomegaly"].fn) == (1, 1)
    assert (by_name["No Finding"].fp, by_name["No Finding"].fn) == (1, 1)
    assert result.micro.f1 == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="parallel"):
        ce_from_reports(preds, refs[:2])
