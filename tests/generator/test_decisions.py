"""generator.decisions: F1-optimal thresholds at midpoints (never on a seen probability), the
uncertain band only where it lies below the positive threshold, state codes from probabilities,
thresholds.json round trip, and old / damaged checkpoints (default 0.5 with a warning / the file named)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from cxr.observations import OBSERVATIONS, STATES, State
from generator.decisions import (
    DEFAULT_THRESHOLD,
    MIN_POSITIVES,
    NEVER,
    THRESHOLDS_FILE,
    ThresholdRules,
    Thresholds,
    best_f1_threshold,
    fit_thresholds,
    read_thresholds,
    state_names,
    write_thresholds,
)

NEG, UNC, POS = (STATES.index(s) for s in (State.NEGATIVE, State.UNCERTAIN, State.POSITIVE))
NAN = np.nan


def _f1(probabilities: np.ndarray, target: np.ndarray, t: float) -> float:
    predicted = probabilities >= t
    tp = int((predicted & target).sum())
    return 2 * tp / (int(predicted.sum()) + int(target.sum()))


# ---- best_f1_threshold --------------------------------------------------------------------------
def test_state_codes_are_negative_uncertain_positive():
    assert (NEG, UNC, POS) == (0, 1, 2)


def test_best_threshold_is_the_midpoint_below_the_best_cut():
    p = np.array([0.9, 0.8, 0.7, 0.3, 0.2])
    y = np.array([1, 1, 0, 1, 0], dtype=bool)
    # cuts after 1..5 studies: F1 0.5, 0.8, 0.667, 0.857, 0.75 → after the 4th (0.3), before 0.2
    t, f1 = best_f1_threshold(p, y, 1)
    assert t == pytest.approx(0.25) and f1 == pytest.approx(6 / 7)
    assert _f1(p, y, t) == pytest.approx(f1)
    assert t not in p


def test_best_threshold_is_optimal_on_random_data():
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.random(40)
        y = rng.random(40) < 0.3
        if not y.any():
            continue
        t, f1 = best_f1_threshold(p, y, 1)
        assert _f1(p, y, t) == pytest.approx(f1)
        # no threshold does better (every candidate cut checked directly)
        assert f1 >= max(_f1(p, y, c) for c in p) - 1e-12
        assert t not in p


def test_input_order_does_not_matter():
    p = np.array([0.2, 0.9, 0.3, 0.7, 0.8])
    y = np.array([0, 1, 1, 0, 1], dtype=bool)
    order = np.array([3, 0, 4, 1, 2])
    assert best_f1_threshold(p, y, 1) == best_f1_threshold(p[order], y[order], 1)


def test_ties_are_never_split():
    # the two 0.8s (one positive, one negative) are kept together: the threshold is not 0.8 - ε
    p = np.array([0.9, 0.8, 0.8, 0.2])
    y = np.array([1, 1, 0, 0], dtype=bool)
    t, f1 = best_f1_threshold(p, y, 1)
    assert t == pytest.approx(0.5) and f1 == pytest.approx(0.8)
    # a tie at the top: either both are in, or neither
    p = np.array([0.7, 0.7, 0.1])
    y = np.array([1, 0, 0], dtype=bool)
    t, f1 = best_f1_threshold(p, y, 1)
    assert (p >= t).tolist() == [True, True, False] and f1 == pytest.approx(2 / 3)


def test_the_lowest_cut_sits_below_every_probability():
    p = np.array([0.6, 0.4])
    y = np.array([1, 1], dtype=bool)
    t, f1 = best_f1_threshold(p, y, 1)
    assert 0.0 < t < 0.4 and f1 == 1.0


def test_no_positive_keeps_the_default_cut():
    p = np.array([0.99, 0.5, 0.1])
    for min_positives in (MIN_POSITIVES, 1, 0):
        t, f1 = best_f1_threshold(p, np.zeros(3, dtype=bool), min_positives)
        assert t == DEFAULT_THRESHOLD and f1 is None


def test_too_few_positives_keep_the_default_cut():
    assert MIN_POSITIVES == 3
    rng = np.random.default_rng(1)
    p = rng.random(30)
    y = np.zeros(30, dtype=bool)
    y[np.argsort(-p)[:2]] = True                     # 2 positives, perfectly ranked: still too few
    assert best_f1_threshold(p, y) == (DEFAULT_THRESHOLD, None)
    t, f1 = best_f1_threshold(p, y, min_positives=2)
    assert f1 == 1.0 and (p >= t).sum() == 2
    y[np.argsort(-p)[2]] = True                      # the 3rd: fit by default
    t, f1 = best_f1_threshold(p, y)
    assert f1 == 1.0 and (p >= t).sum() == 3


# ---- fit_thresholds -----------------------------------------------------------------------------
def _table(column: int, probabilities: list[float], labels: list[float], n_obs: int = 14):
    """(n, 14) probabilities / labels where only ``column`` is interesting (the rest: no positives)."""
    n = len(probabilities)
    probs = np.full((n, n_obs), 0.1)
    lab = np.full((n, n_obs), NAN)
    probs[:, column] = probabilities
    lab[:, column] = labels
    return probs, lab


def test_positive_threshold_is_fit_against_label_one_only():
    c = [o.value for o in OBSERVATIONS].index("Edema")
    # uncertain (-1) above the positives: it must not pull the positive threshold
    probs, labels = _table(c, [0.95, 0.9, 0.6, 0.5, 0.2, 0.1], [-1, -1, 1, 1, 0, NAN])
    th = fit_thresholds(probs, labels, "val", ThresholdRules(min_positives=1))
    assert th.positive[c] == pytest.approx(0.35)          # between 0.5 (last positive) and 0.2
    assert th.f1[c] == pytest.approx(2 * 2 / (4 + 2))
    # label 1 or -1: all four top studies → cut at (0.5 + 0.2) / 2 = 0.35 too: no band below it
    assert th.uncertain[c] == NEVER
    # every other column has no positive: the default cut, no F1
    others = [j for j in range(14) if j != c]
    assert all(th.positive[j] == DEFAULT_THRESHOLD and th.f1[j] is None and th.uncertain[j] == NEVER for j in others)
    assert th.fit_on == "val (6 studies)"


def test_uncertain_band_only_where_it_is_lower():
    c = 2  # Cardiomegaly
    # positives on top, uncertain ones below them: band [0.35, 0.75)
    probs, labels = _table(c, [0.9, 0.8, 0.7, 0.4, 0.3, 0.1], [1, 1, 0, -1, 0, 0])
    th = fit_thresholds(probs, labels, rules=ThresholdRules(min_positives=1))
    assert th.positive[c] == pytest.approx(0.75)
    assert th.uncertain[c] == pytest.approx(0.35)
    codes = th.states(torch.tensor(probs, dtype=torch.float64))[:, c].tolist()
    assert codes == [POS, POS, UNC, UNC, NEG, NEG]
    # an uncertain study above the positive one: label 1-or--1 cuts at the same place (0.5), no band
    probs, labels = _table(c, [0.9, 0.8, 0.2, 0.1], [-1, 1, 0, 0])
    th = fit_thresholds(probs, labels, rules=ThresholdRules(min_positives=1))
    assert th.positive[c] == pytest.approx(0.5) and th.uncertain[c] == NEVER
    assert th.table()[c][2] is None


def test_uncertain_without_positives_makes_no_band_above_the_default_cut():
    c = 9
    probs, labels = _table(c, [0.8, 0.3, 0.2], [-1, 0, 0])
    th = fit_thresholds(probs, labels, rules=ThresholdRules(min_positives=1))
    # no positive: the 0.5 cut stays; the label-1-or--1 cut (0.55) lies above it, so no band
    assert th.positive[c] == DEFAULT_THRESHOLD and th.f1[c] is None
    assert th.uncertain[c] == NEVER


def test_fit_thresholds_needs_min_positives_per_observation():
    c = 4
    # 2 positives and 3 uncertain at the top: too few positives to fit (default 3): the 0.5 cut;
    # label 1 or -1 counts 5: an uncertain band [0.475, 0.5) below it
    probs, labels = _table(c, [0.9, 0.85, 0.8, 0.49, 0.48, 0.3, 0.2, 0.1], [1, -1, 1, -1, -1, 0, 0, 0])
    th = fit_thresholds(probs, labels)
    assert th.positive[c] == DEFAULT_THRESHOLD and th.f1[c] is None
    assert th.uncertain[c] == pytest.approx(0.39)
    assert th.states(torch.tensor(probs))[:, c].tolist() == [POS] * 3 + [UNC] * 2 + [NEG] * 3
    loose = fit_thresholds(probs, labels, rules=ThresholdRules(min_positives=2))
    assert loose.positive[c] != DEFAULT_THRESHOLD and loose.f1[c] is not None


@pytest.mark.parametrize("probs_shape, labels_shape", [
    ((4, 14), (4, 13)),
    ((4, 13), (4, 13)),
    ((14,), (14,)),
    ((4, 14), (5, 14)),
])
def test_fit_thresholds_refuses_bad_shapes(probs_shape, labels_shape):
    with pytest.raises(ValueError, match=r"fit_thresholds needs \(n, 14\)"):
        fit_thresholds(np.zeros(probs_shape), np.zeros(labels_shape))


# ---- Thresholds ---------------------------------------------------------------------------------
def test_default_thresholds_decide_at_one_half_with_no_uncertain_band():
    th = Thresholds()
    assert th.positive == (DEFAULT_THRESHOLD,) * 14 and th.fit_on == "default"
    p = torch.tensor([[0.49] * 7 + [0.5] * 7, [1.0] * 14])
    codes = th.states(p)
    assert codes.dtype == torch.long and codes.shape == (2, 14)
    assert codes[0].tolist() == [NEG] * 7 + [POS] * 7 and codes[1].eq(POS).all()


def test_states_per_observation_thresholds_and_bands():
    positive = tuple(0.1 + 0.05 * j for j in range(14))
    uncertain = (NEVER,) * 7 + tuple(t - 0.05 for t in positive[7:])
    th = Thresholds(positive, uncertain)
    p = torch.tensor(positive, dtype=torch.float64)           # every entry exactly at its threshold (float64: the
                                                              # precision thresholds are compared in)
    below = p - 0.01                                          # in the band where there is one
    assert th.states(p).tolist() == [POS] * 14
    assert th.states(below).tolist() == [NEG] * 7 + [UNC] * 7
    assert th.states(p - 0.2).tolist() == [NEG] * 14
    # any leading shape (…, 14)
    batch = torch.stack([p, below]).unsqueeze(0)
    assert th.states(batch).shape == (1, 2, 14)
    assert th.states(batch)[0, 1].tolist() == [NEG] * 7 + [UNC] * 7


def test_never_is_never_reached():
    th = Thresholds(positive=(NEVER,) * 14)
    assert th.states(torch.ones(3, 14)).eq(NEG).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"positive": (0.5,) * 13}, r"Thresholds.positive needs 14 values, got 13"),
    ({"uncertain": (0.5,) * 15}, r"Thresholds.uncertain needs 14 values, got 15"),
    ({"f1": (None,)}, r"Thresholds.f1 needs 14 values, got 1"),
    ({"positive": (-0.1,) + (0.5,) * 13}, r"out of range for \['No Finding'\]"),
    ({"positive": (0.5,) * 13 + (1.5,)}, r"out of range for \['Support Devices'\]"),
])
def test_bad_thresholds_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Thresholds(**kwargs)


def test_lists_become_tuples():
    th = Thresholds([0.3] * 14, [NEVER] * 14, "x", [0.5] * 14)
    assert isinstance(th.positive, tuple) and isinstance(th.uncertain, tuple) and isinstance(th.f1, tuple)


def _fitted() -> Thresholds:
    rng = np.random.default_rng(0)
    probs = rng.random((30, 14))
    labels = rng.choice([1.0, 0.0, -1.0, NAN], size=(30, 14), p=[0.2, 0.4, 0.2, 0.2])
    labels[:, 11] = 0.0           # one observation never positive or uncertain: NEVER, no F1
    return fit_thresholds(probs, labels, "val")


def test_to_dict_from_dict_round_trip():
    th = _fitted()
    data = th.to_dict()
    assert data["fit_on"] == "val (30 studies)"
    assert list(data["observations"]) == [o.value for o in OBSERVATIONS]
    row = data["observations"]["Pleural Other"]
    assert row == {"positive": DEFAULT_THRESHOLD, "uncertain": None, "val_f1": None}
    # no band is written as null; a band as its value
    for o, p, u in zip(OBSERVATIONS, th.positive, th.uncertain):
        assert data["observations"][o.value]["uncertain"] == (u if u < p else None)
    back = Thresholds.from_dict(json.loads(json.dumps(data)))
    assert back == th
    assert Thresholds.from_dict(Thresholds().to_dict()) == Thresholds()


@pytest.mark.parametrize("data", [
    {},
    {"observations": {}},
    {"observations": {o.value: {"uncertain": None} for o in OBSERVATIONS}},
    {"observations": {o.value: {"positive": "high"} for o in OBSERVATIONS}},
    {"observations": {o.value: {"positive": 2.0} for o in OBSERVATIONS}},
    {"observations": [1, 2, 3]},
    [],
])
def test_from_dict_refuses_what_is_not_a_thresholds_file(data):
    with pytest.raises(ValueError, match="not a thresholds file"):
        Thresholds.from_dict(data)


# ---- thresholds.json ----------------------------------------------------------------------------
def test_write_then_read(tmp_path):
    th = _fitted()
    write_thresholds(tmp_path, th)
    assert (tmp_path / THRESHOLDS_FILE).is_file()
    assert json.loads((tmp_path / THRESHOLDS_FILE).read_text())["fit_on"] == "val (30 studies)"
    assert read_thresholds(tmp_path) == th


def test_a_checkpoint_without_thresholds_decides_at_one_half_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="generator.decisions"):
        th = read_thresholds(tmp_path)
    assert th == Thresholds() and th.positive == (0.5,) * 14
    assert THRESHOLDS_FILE in caplog.text and str(tmp_path) in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("text", [
    "{not json",
    '{"fit_on": "val"}',
    json.dumps({"observations": {o.value: {"positive": -1} for o in OBSERVATIONS}}),
    "null",
])
def test_a_damaged_file_is_named(tmp_path, text):
    (tmp_path / THRESHOLDS_FILE).write_text(text)
    with pytest.raises(ValueError, match=rf"{THRESHOLDS_FILE}"):
        read_thresholds(tmp_path)
    try:
        read_thresholds(tmp_path)
    except ValueError as err:
        assert str(err).startswith(str(tmp_path / THRESHOLDS_FILE))


# ---- state_names --------------------------------------------------------------------------------
def test_state_names():
    codes = torch.tensor([POS, UNC] + [NEG] * 12)
    names = state_names(codes)
    assert list(names) == [o.value for o in OBSERVATIONS]
    assert names["No Finding"] == "positive" and names["Enlarged Cardiomediastinum"] == "uncertain"
    assert set(list(names.values())[2:]) == {"negative"}
    assert state_names(codes.numpy()) == names
    assert state_names(codes.tolist()) == names


def test_a_cut_below_every_probability_may_be_zero():
    """The best cut includes a probability of exactly 0.0 (a float32 sigmoid underflows): t = 0, all positive."""
    p = np.full((10, 14), 0.3, np.float32)
    p[:, 0] = 0.0
    labels = np.zeros((10, 14))
    labels[:, 0] = 1
    th = fit_thresholds(p, labels)
    assert th.positive[0] == 0.0 and th.states(torch.from_numpy(p))[:, 0].eq(POS).all()


def test_fitted_midpoint_between_adjacent_float32_values_separates_them():
    a = np.float32(0.7)
    b = np.nextafter(a, np.float32(0))
    p = np.full((10, 14), 0.1, np.float32)
    p[:5, 0], p[5:, 0] = a, b
    labels = np.zeros((10, 14))
    labels[:5, 0] = 1
    th = fit_thresholds(p, labels)
    assert th.f1[0] == 1.0
    assert th.states(torch.from_numpy(p))[:, 0].tolist() == [POS] * 5 + [NEG] * 5


def test_an_observation_the_classifier_cannot_find_is_never_decided():
    rng = np.random.default_rng(3)
    c = 12                                      # Fracture
    probs = np.full((300, 14), 0.1)
    probs[:, c] = rng.random(300)              # unrelated to the labels
    labels = np.full((300, 14), NAN)
    labels[:4, c] = 1.0                          # 4 positives, ranked anywhere
    th = fit_thresholds(probs, labels)
    assert th.f1[c] is not None and th.f1[c] < 0.3
    assert th.positive[c] == NEVER and th.uncertain[c] == NEVER
    assert fit_thresholds(probs, labels, rules=ThresholdRules(min_f1=0.0)).positive[c] < 1.0
