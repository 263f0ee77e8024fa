"""BiCrossAttention: shapes across widths, key masks that really mask, and no NaN without keys."""
from __future__ import annotations

import pytest
import torch

from encoders.fusion import BiCrossAttention, CrossAttentionConfig

B, NV, NK, CV, CG, D = 3, 5, 4, 12, 6, 16


def fusion(layers=2) -> BiCrossAttention:
    torch.manual_seed(0)
    cfg = CrossAttentionConfig(dim=D, heads=2, layers=layers, dropout=0.0, vision_dim=CV, graph_dim=CG)
    return BiCrossAttention(cfg).eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    vision, graph = torch.randn(B, NV, CV, generator=g), torch.randn(B, NK, CG, generator=g)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [False] * 4])   # study 2: empty subgraph
    return vision, graph, mask


def test_shapes_and_projections():
    out = fusion()(*inputs())
    assert out.v2kg.shape == (B, NV, D) and out.kg2v.shape == (B, NK, D)
    same = BiCrossAttention(CrossAttentionConfig(dim=D, heads=2))
    assert isinstance(same.vision_proj, torch.nn.Identity)
    with pytest.raises(ValueError, match="heads"):
        CrossAttentionConfig(dim=10, heads=3)


def test_masked_keys_do_not_change_the_output():
    model, (vision, graph, mask) = fusion(), inputs()
    before = model(vision, graph, mask)
    graph2 = graph.clone()
    graph2[1, 2:] += 100.0       # masked nodes of study 1
    graph2[2] += 100.0           # every node of the empty study
    after = model(vision, graph2, mask)
    torch.testing.assert_close(after.v2kg, before.v2kg)
    assert (after.kg2v[~mask] == 0).all()
    # a real node does change it
    graph2[0, 0] += 1.0
    assert not torch.allclose(model(vision, graph2, mask).v2kg[0], before.v2kg[0])


def test_vision_mask_masks_vision_keys():
    model, (vision, graph, mask) = fusion(), inputs()
    vmask = torch.ones(B, NV, dtype=torch.bool)
    vmask[:, -1] = False
    before = model(vision, graph, mask, vmask)
    vision2 = vision.clone()
    vision2[:, -1] += 100.0
    after = model(vision2, graph, mask, vmask)
    torch.testing.assert_close(after.kg2v, before.kg2v)
    assert (after.v2kg[:, -1] == 0).all()


def test_all_masked_row_is_finite_with_finite_gradients():
    model, (vision, graph, mask) = fusion(), inputs()
    model.train()
    vision.requires_grad_(True)
    out = model(vision, graph, mask)
    assert out.v2kg.isfinite().all() and out.kg2v.isfinite().all()
    (out.v2kg.sum() + out.kg2v.sum()).backward()
    assert vision.grad.isfinite().all()
    assert all(p.grad is None or p.grad.isfinite().all() for p in model.parameters())


def test_no_keys_in_the_batch():
    out = fusion()(torch.randn(2, NV, CV), torch.randn(2, 0, CG), torch.zeros(2, 0, dtype=torch.bool))
    assert out.v2kg.shape == (2, NV, D) and out.kg2v.shape == (2, 0, D) and out.v2kg.isfinite().all()
