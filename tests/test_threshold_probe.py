"""scripts/threshold_probe.py: the threshold rules it compares, on probabilities made to order."""
from __future__ import annotations

import numpy as np
import pytest

from cxr.observations import (
    FIVE_OBSERVATIONS,
    NEGATIVE,
    OBSERVATIONS,
    POSITIVE,
    UNCERTAIN,
    Observation,
)
from tests.script_module import load_script

threshold_probe = load_script("threshold_probe")

CARDIO = OBSERVATIONS.index(Observation.CARDIOMEGALY)


def _split(n: int = 100, positives: int = 10) -> tuple[np.ndarray, np.ndarray]:
    p = np.full((n, len(OBSERVATIONS)), 0.01)
    truth = np.zeros_like(p, dtype=bool)
    p[:, CARDIO] = np.linspace(0.0, 0.99, n)       # the top ``positives`` studies are the positives
    truth[n - positives:, CARDIO] = True
    return p, truth


def test_each_rule_separates_a_cleanly_ranked_observation() -> None:
    p, truth = _split()
    shipped = np.full(len(OBSERVATIONS), 0.5)
    for rule in ("bootstrap", "rate", "oracle"):
        cuts = threshold_probe.rule_cuts(p, truth, shipped, rule, resamples=20)
        decided = p[:, CARDIO] >= cuts[CARDIO]
        assert (decided == truth[:, CARDIO]).all(), rule
        others = [j for j in range(len(OBSERVATIONS)) if j != CARDIO]
        assert (cuts[others] == shipped[others]).all()   # no positives: the shipped cut stays


def test_rate_decides_as_many_as_there_are_positives() -> None:
    p, truth = _split()
    truth[-10:, CARDIO] = False
    truth[[5, 50, 60, 70, 80, 85, 90], CARDIO] = True   # badly ranked: rate still decides 7
    cuts = threshold_probe.rule_cuts(p, truth, np.full(len(OBSERVATIONS), 0.5), "rate", resamples=1)
    assert int((p[:, CARDIO] >= cuts[CARDIO]).sum()) == 7


def test_decisions_are_scored_like_the_records_decisions_ce5() -> None:
    # two studies, the CE-5 columns: decided (p ≥ 0.5) T F / T T against label 1 T F / F T
    five = [OBSERVATIONS.index(o) for o in FIVE_OBSERVATIONS][:2]
    p, labels = np.zeros((2, len(OBSERVATIONS))), np.full((2, len(OBSERVATIONS)), np.nan)
    p[np.ix_([0, 1], five)] = [[0.9, 0.1], [0.9, 0.9]]
    labels[np.ix_([0, 1], five)] = [[POSITIVE, NEGATIVE], [UNCERTAIN, POSITIVE]]
    cuts = np.full(len(OBSERVATIONS), 0.5)
    assert threshold_probe._ce5_micro_f1(p, cuts, labels) == pytest.approx(2 * 2 / (3 + 2))
