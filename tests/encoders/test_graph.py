"""GraphEncoder / MultiScaleFusion on hand-made graphs: the R-GCN formula computed by hand, empty
subgraphs, global-mode broadcast, scale isolation, and a frozen text-feature table."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from encoders.graph import (
    GraphConfig,
    GraphEncoder,
    MultiScaleConfig,
    MultiScaleFusion,
    stack_scales,
)
from graphdb.tensorize import (
    NUM_EDGE_TYPES,
    SubgraphArrays,
    collate,
    data_from_arrays,
    select_level,
)

D = 8
N_TABLE = 10


def graph(node_id, level, edges, count=None):
    """SubgraphData from global ids, levels and forward edges (head, tail, type), as tensorize makes it."""
    return from_arrays(_arrays(node_id, level, edges, count))


def _arrays(node_id, level, edges, count=None) -> SubgraphArrays:
    n, e = len(node_id), len(edges)
    count = np.asarray(count if count is not None else [1] * n, np.int32)
    head, tail, kind = (np.asarray([x[i] for x in edges], dt).reshape(e) for i, dt in
                        enumerate((np.int32, np.int32, np.int8)))
    return SubgraphArrays(np.asarray(node_id, np.int32), np.asarray(level, np.int8), count,
                          np.log1p(count.astype(np.float32)), head, tail, kind, np.ones(e, np.int32),
                          np.zeros(e, np.float32))


def four_nodes():
    """0 -r0-> 1, 2 -r0-> 1, 3 -r1-> 1, 1 -r2-> 0: node 1 has two r0 neighbours (mean = ½ each)."""
    return graph([3, 1, 4, 7], [0, 1, 1, 2], [(0, 1, 0), (2, 1, 0), (3, 1, 1), (1, 0, 2)], [5, 1, 2, 0])


def six_nodes():
    return _arrays([0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 2, 2],
                   [(0, 1, 0), (1, 2, 1), (2, 3, 0), (3, 4, 2), (4, 5, 3), (5, 0, 1), (0, 4, 0)])


def from_arrays(a: SubgraphArrays):
    return data_from_arrays(a.node_id, a.node_level, a.node_logcount, a.edge_head, a.edge_tail,
                            a.edge_type, a.edge_logcount)


def empty():
    return graph([], [], [])


def features(seed=0):
    return torch.randn(N_TABLE, D, generator=torch.Generator().manual_seed(seed))


def encoder(**kw) -> GraphEncoder:
    torch.manual_seed(0)
    cfg = GraphConfig(text_dim=D, hidden_dims=kw.pop("hidden_dims", ()), out_dim=D, dropout=0.0, **kw)
    return GraphEncoder(cfg, features()).eval()


def manual_rgcn(h, edge_index, edge_type, weights, root, bias):
    """h_i' = h_i W_0 + Σ_r Σ_{j∈N_r(i)} 1/|N_r(i)| h_j W_r + b, one node and relation at a time."""
    out = []
    for i in range(h.size(0)):
        acc = h[i] @ root + bias
        for r in range(weights.size(0)):
            js = [int(s) for s, t, k in zip(*edge_index, edge_type) if int(t) == i and int(k) == r]
            for j in js:
                acc = acc + h[j] @ weights[r] / len(js)
        out.append(acc)
    return torch.stack(out)


@pytest.mark.parametrize("num_bases", [None, 2])
def test_first_layer_is_the_rgcn_formula(num_bases):
    enc = encoder(num_bases=num_bases)
    conv = enc.convs[0]
    with torch.no_grad():
        conv.bias.normal_()     # zeros by default: make it count
    g = four_nodes()
    assert g.edge_index[:, 4:].tolist() == g.edge_index[:, :4].flip(0).tolist()
    assert (g.edge_type[4:] == g.edge_type[:4] + NUM_EDGE_TYPES).all()
    weights = conv.weight if num_bases is None else (conv.comp @ conv.weight.view(num_bases, -1)).view(-1, D, D)
    h0 = enc.embed(g.node_index, g.x_count, g.level)
    want = manual_rgcn(h0, g.edge_index, g.edge_type, weights, conv.root, conv.bias)
    torch.testing.assert_close(conv(h0, g.edge_index, g.edge_type), want)
    # the whole (one-layer) encoder: LayerNorm(h0 + GELU(conv)), identity skip
    out = enc(g)
    torch.testing.assert_close(out.nodes[0], F.layer_norm(h0 + F.gelu(want), (D,)), atol=1e-5, rtol=1e-5)


def test_input_uses_text_row_count_and_level():
    enc = encoder()
    g = four_nodes()
    h0 = enc.embed(g.node_index, g.x_count, g.level)
    want = (enc.input_proj(features()[[3, 1, 4, 7]]) + enc.count_proj(torch.log1p(torch.tensor([[5.], [1.], [2.], [0.]])))
            + enc.level_emb(torch.tensor([0, 1, 1, 2])))
    torch.testing.assert_close(h0, want)
    no_counts = encoder(use_counts=False)
    assert no_counts.count_proj is None
    torch.testing.assert_close(no_counts.embed(g.node_index, g.x_count, g.level),
                               no_counts.input_proj(features()[[3, 1, 4, 7]]))


def test_shapes_and_empty_subgraph():
    enc = encoder(hidden_dims=(4,))
    out = enc(collate([four_nodes(), empty(), from_arrays(six_nodes())]))
    assert out.nodes.shape == (3, 6, D) and out.mask.shape == out.level.shape == (3, 6)
    assert out.mask.sum(1).tolist() == [4, 0, 6]
    assert (out.nodes[1] == 0).all() and out.nodes.isfinite().all()
    assert out.level[0, :4].tolist() == [0, 1, 1, 2]
    only_empty = enc(collate([empty(), empty()]))
    assert only_empty.nodes.shape == (2, 0, D) and only_empty.mask.shape == (2, 0)


def test_batching_equals_one_graph_at_a_time():
    enc = encoder(hidden_dims=(4,))
    a, b = four_nodes(), from_arrays(six_nodes())
    both = enc(collate([a, b]))
    torch.testing.assert_close(both.nodes[0, :4], enc(a).nodes[0])
    torch.testing.assert_close(both.nodes[1], enc(b).nodes[0])


def test_global_graph_broadcast_equals_encoding_each_copy():
    g = from_arrays(six_nodes())
    enc = encoder(hidden_dims=(4,))
    once, copies = enc(g, batch_size=3), enc(collate([g, g, g]))
    assert once.nodes.shape == (3, 6, D)
    assert once.nodes.stride(0) == 0     # encoded once, expanded as a view
    torch.testing.assert_close(once.nodes, copies.nodes)
    assert (once.mask == copies.mask).all()
    fusion = scales(layers=1)
    one, many = fusion(g, batch_size=3), fusion(collate([g, g, g]))
    torch.testing.assert_close(one.scales, many.scales)
    torch.testing.assert_close(one.graph.nodes, many.graph.nodes)


def test_bad_level_and_feature_shape():
    with pytest.raises(ValueError, match="num_levels"):
        encoder(num_levels=2)(four_nodes())
    with pytest.raises(ValueError, match="features"):
        GraphEncoder(GraphConfig(text_dim=D + 1), features())
    with pytest.raises(ValueError, match="num_bases"):
        GraphConfig(num_bases=99)


def test_gradients_reach_rgcn_not_the_text_table():
    enc = encoder(hidden_dims=(4,))
    enc.train()
    before = enc.features.clone()
    enc(collate([four_nodes(), empty()])).nodes.pow(2).sum().backward()
    assert all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in enc.convs)
    assert not enc.features.requires_grad and enc.features.grad is None
    assert "features" not in dict(enc.named_parameters()) and "features" not in enc.state_dict()
    torch.optim.SGD(enc.parameters(), lr=1.0).step()
    assert torch.equal(enc.features, before)


# ---- multi-scale ----

def scales(layers=0, num_scales=3) -> MultiScaleFusion:
    torch.manual_seed(0)
    cfg = MultiScaleConfig(GraphConfig(text_dim=D, hidden_dims=(4,), out_dim=D, dropout=0.0),
                           num_scales=num_scales, layers=layers, heads=2, dropout=0.0)
    return MultiScaleFusion(cfg, features()).eval()


def test_stack_scales_matches_select_level():
    a = six_nodes()
    g = from_arrays(a)
    keep, edge_index, edge_type = stack_scales(g.level, g.edge_index, g.edge_type, 3)
    offset = 0
    for k in range(3):
        part = from_arrays(select_level(a, k))
        n = int(keep[k].sum())
        assert n == part.num_nodes
        sel = (edge_index[0] >= offset) & (edge_index[0] < offset + n)
        got = sorted(zip((edge_index[:, sel] - offset).T.tolist(), edge_type[sel].tolist()))
        assert got == sorted(zip(part.edge_index.T.tolist(), part.edge_type.tolist()))
        offset += n


def test_each_scale_is_its_own_induced_subgraph():
    """Scale k pooled = mean of the encoder on select_level(k) alone (two implementations agree)."""
    fusion, a = scales(layers=0), six_nodes()
    out = fusion(collate([from_arrays(a), empty()]))
    assert out.scales.shape == (2, 3, D) and out.graph.nodes.shape == (2, 6, D)
    assert out.scale_mask.tolist() == [[True] * 3, [False] * 3]
    for k in range(3):
        alone = fusion.encoder(from_arrays(select_level(a, k))).nodes[0].mean(0)
        torch.testing.assert_close(out.scales[0, k], fusion.norm(alone + fusion.scale_emb[k]))
    torch.testing.assert_close(out.graph.nodes[0], fusion.encoder(from_arrays(a)).nodes[0])
    assert out.scales.isfinite().all()


def test_outer_nodes_do_not_reach_inner_scales():
    fusion, g = scales(layers=0), collate([from_arrays(six_nodes())])
    before = fusion(g).scales
    with torch.no_grad():
        fusion.encoder.features[4] += 5.0    # global row 4 = local node 4, level 2
    after = fusion(g).scales
    torch.testing.assert_close(after[:, :2], before[:, :2])
    assert not torch.allclose(after[:, 2], before[:, 2])
    mixed = scales(layers=1)
    assert mixed(g).scales.shape == (1, 3, D)
