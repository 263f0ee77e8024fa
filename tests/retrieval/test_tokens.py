"""Mining caps and label policy, the streaming bank's per-disease cap, and retrieve_for_batch
shapes, masks and same-study exclusion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.index import IndexConfig, TokenIndex
from retrieval.tokens import BankConfig, DiseaseTokenBank, mine_disease_tokens, retrieve_for_batch

NAN = float("nan")


def _batch(b: int, n: int = 20, c: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, c, generator=g)
    att = torch.rand(b, 14, n, generator=g)
    return x, att


def test_only_positive_labels_are_mined_top_per_image_by_attention():
    x, att = _batch(1)
    labels = torch.full((1, 14), NAN)
    labels[0, 2], labels[0, 3], labels[0, 4] = 1.0, 0.0, -1.0  # pos, neg, uncertain
    vectors, meta = mine_disease_tokens(x, att, labels, ["s0"], BankConfig(per_image=3))
    assert meta.observation.tolist() == [2, 2, 2]
    top = torch.argsort(att[0, 2], descending=True)[:3]
    assert meta.patch.tolist() == top.tolist()
    np.testing.assert_allclose(meta.score, att[0, 2, top].numpy())
    np.testing.assert_allclose(vectors, x[0, top].numpy())
    _, meta_u = mine_disease_tokens(x, att, labels, ["s0"],
                                    BankConfig(per_image=3, include_uncertain=True))
    assert sorted(set(meta_u.observation.tolist())) == [2, 4]


def test_min_attention_ties_and_view_mapping():
    x = torch.randn(1, 6, 4)
    att = torch.zeros(1, 14, 6)
    att[0, 0] = torch.tensor([0.5, 0.9, 0.5, 0.1, 0.5, 0.0])
    labels = torch.zeros(1, 14)
    labels[0, 0] = 1.0
    views = torch.tensor([[0, 0, 0, 1, 1, 1]])
    patches = torch.tensor([[0, 1, 2, 0, 1, 2]])
    _, meta = mine_disease_tokens(x, att, labels, ["s"], BankConfig(per_image=3, min_attention=0.2),
                                  view_ids=views, patch_ids=patches)
    assert list(zip(meta.view.tolist(), meta.patch.tolist(), strict=True)) == [(0, 1), (0, 0),
                                                                               (0, 2)]


def test_bank_caps_per_disease_keeping_highest_attention():
    bank = DiseaseTokenBank(BankConfig(per_image=4, per_disease=10), IndexConfig(dim=8))
    all_scores = []
    for seed in range(5):
        x, att = _batch(4, seed=seed)
        labels = torch.zeros(4, 14)
        labels[:, 5] = 1.0
        labels[0, 6] = 1.0 if seed == 0 else NAN  # 4 tokens, under the cap
        bank.add_batch(x, att, labels, [f"b{seed}s{i}" for i in range(4)])
        top4 = torch.sort(att[:, 5], dim=-1, descending=True).values[:, :4]
        all_scores += top4.flatten().tolist()
    assert bank.counts()[5] == 10 and bank.counts()[6] == 4 and bank.counts().sum() == 14
    index = bank.build()
    kept = index.meta.score[index.meta.observation == 5]
    np.testing.assert_allclose(np.sort(kept)[::-1], np.sort(all_scores)[::-1][:10], rtol=1e-6)
    per_pair = {}
    for s, o in zip(index.meta.study_ids, index.meta.observation, strict=True):
        per_pair[(s, o)] = per_pair.get((s, o), 0) + 1
    assert max(per_pair.values()) <= 4


def test_bank_is_deterministic():
    def build():
        bank = DiseaseTokenBank(BankConfig(per_disease=7), IndexConfig(dim=8))
        for seed in range(3):
            x, att = _batch(3, seed=seed)
            bank.add_batch(x, att, torch.ones(3, 14), [f"{seed}-{i}" for i in range(3)])
        return bank.build()
    a, b = build(), build()
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.meta.study_ids, b.meta.study_ids)


def _small_bank() -> TokenIndex:
    bank = DiseaseTokenBank(BankConfig(per_image=2), IndexConfig(dim=8))
    x, att = _batch(3)
    labels = torch.zeros(3, 14)
    labels[:, 0] = 1.0   # 3 studies × 2 = 6 tokens
    labels[0, 1] = 1.0   # 2 tokens, all of study s0
    bank.add_batch(x, att, labels, ["s0", "s1", "s2"])  # observations 2..13: zero tokens
    return bank.build()


def test_retrieve_for_batch_shapes_and_masks_with_short_and_empty_observations():
    index = _small_bank()
    q = torch.randn(2, 14, 8, dtype=torch.float64)
    out = retrieve_for_batch(index, q, ["s0", "new"], k=4, training=False)
    assert out.tokens.shape == (2, 14, 4, 8) and out.tokens.dtype == torch.float64
    assert out.mask.shape == out.ids.shape == (2, 14, 4)
    assert out.mask[:, 0].all()                                 # 6 ≥ 4 tokens
    assert out.mask[:, 1].sum(-1).tolist() == [2, 2]            # only 2 exist
    assert not out.mask[:, 2:].any()                            # zero tokens
    assert (out.tokens[~out.mask] == 0).all()
    assert (out.ids[~out.mask] == -1).all()
    got = out.tokens[out.mask].float().numpy()
    np.testing.assert_allclose(got, index.vectors[out.ids[out.mask].numpy()], rtol=1e-6)
    tokens, mask, ids = out  # tuple-style unpacking
    assert tokens is out.tokens and mask is out.mask and ids is out.ids


def test_retrieve_for_batch_training_excludes_own_study():
    index = _small_bank()
    own = torch.from_numpy(index.vectors[:1]).expand(1, 14, 8).contiguous()
    s = str(index.meta.study_ids[0])
    out = retrieve_for_batch(index, own, [s], k=4, training=True)
    for o in range(14):
        ids = out.ids[0, o][out.mask[0, o]].numpy()
        assert s not in set(index.meta.study_ids[ids])
    assert out.mask[0, 0].sum() == 4                      # 6 tokens, 2 excluded, 4 left
    if s == "s0":
        assert out.mask[0, 1].sum() == 0                  # all of obs 1 belonged to s0
    inference = retrieve_for_batch(index, own, [s], k=4, training=False)
    assert inference.ids[0, 0, 0].item() == 0             # it finds itself at inference


def test_retrieve_for_batch_dim_check_and_empty_bank():
    index = _small_bank()
    with pytest.raises(ValueError, match="project the Q-Former disease tokens"):
        retrieve_for_batch(index, torch.randn(1, 14, 5), ["x"], k=2, training=False)
    empty = DiseaseTokenBank(BankConfig(), IndexConfig(dim=8)).build()
    out = retrieve_for_batch(empty, torch.randn(2, 14, 8), ["a", "b"], k=3, training=True)
    assert out.tokens.shape == (2, 14, 3, 8) and not out.mask.any()
