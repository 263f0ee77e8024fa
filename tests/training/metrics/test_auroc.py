import numpy as np
import pytest

from training.metrics.auroc import auroc, auroc_per_observation


def test_perfect_inverted_and_chance():
    y = np.array([0, 0, 1, 1], dtype=bool)
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), y) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), y) == 0.0
    assert auroc(np.array([0.5, 0.5, 0.5, 0.5]), y) == 0.5


def test_ties_and_pairwise_definition():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 200).astype(float)   # many ties
    y = rng.random(200) < 0.3
    pos, neg = s[y], s[~y]
    pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert auroc(s, y) == pytest.approx(pairwise)


def test_single_class_is_none_and_per_observation():
    assert auroc(np.array([0.1, 0.2]), np.array([True, True])) is None
    probs = np.tile(np.linspace(0, 1, 6)[:, None], (1, 14))
    labels = np.full((6, 14), np.nan)
    labels[3:, 0] = 1.0          # No Finding: top half positive → 1.0
    labels[:, 1] = 0.0           # Enlarged CM: no positive → None
    labels[5, 2] = -1.0          # Cardiomegaly: uncertain counts as positive (U-Ones)
    out = auroc_per_observation(probs, labels)
    assert out["No Finding"] == 1.0 and out["Enlarged Cardiomediastinum"] is None
    assert out["Cardiomegaly"] == 1.0
    assert auroc_per_observation(probs, labels, uncertain_positive=False)["Cardiomegaly"] is None
    with pytest.raises(ValueError, match="must both be"):
        auroc_per_observation(probs[:, :3], labels)
