"""Knowledge-graph encoder: frozen node text features → R-GCN → node tokens; multi-scale fusion.

``GraphEncoder``: SubgraphData / Batch (N nodes, 2E edges) → ``GraphOutput`` (B, M, D) padded.
``MultiScaleFusion``: the same encoder on each nested scale (level ≤ k) → scale tokens (B, S, D).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
import torch
from torch import Tensor, nn

from graphdb.pyg import Batch, Data, RGCNConv, to_dense_batch, torch_geometric
from graphdb.tensorize import NUM_RELATIONS


@dataclass
class GraphOutput:
    nodes: Tensor   # (B, M, D) node tokens, zero where padded
    mask: Tensor    # (B, M) bool, True for a real node; a row is all False for an empty subgraph
    level: Tensor   # (B, M) long, the node's level (0 where padded)

    def expand(self, batch_size: int) -> GraphOutput:
        """A one-graph output broadcast to ``batch_size`` studies (global mode): views, no copy."""
        if self.nodes.size(0) != 1:
            raise ValueError(f"expand: needs a one-graph output, got batch {self.nodes.size(0)}")
        return GraphOutput(self.nodes.expand(batch_size, -1, -1), self.mask.expand(batch_size, -1),
                           self.level.expand(batch_size, -1))


@dataclass
class GraphConfig:
    text_dim: int = 384                  # node text features (MiniLM 384; the paper's BERT 768)
    input_dim: int | None = None         # width after the input projection; None → text_dim
    hidden_dims: tuple[int, ...] = (384,)  # R-GCN widths between input and output: 768→(384,)→768
    out_dim: int = 384
    num_relations: int = NUM_RELATIONS   # forward relations and their inverses, as tensorize makes them
    num_bases: int | None = None         # basis decomposition W_r = Σ_b a_rb V_b; None: one W_r each
    num_levels: int = 5                  # level embeddings (3 per-study levels, 5 global scales)
    use_counts: bool = True              # add log1p(count) and level embeddings to the input
    dropout: float = 0.1

    def __post_init__(self) -> None:
        self.hidden_dims = tuple(self.hidden_dims)
        for name in ("text_dim", "out_dim", "num_relations", "num_levels"):
            if getattr(self, name) < 1:
                raise ValueError(f"GraphConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.input_dim is not None and self.input_dim < 1:
            raise ValueError(f"GraphConfig.input_dim must be ≥ 1 or None, got {self.input_dim}")
        if any(d < 1 for d in self.hidden_dims):
            raise ValueError(f"GraphConfig.hidden_dims must be positive, got {self.hidden_dims}")
        if self.num_bases is not None and not 1 <= self.num_bases <= self.num_relations:
            raise ValueError(f"GraphConfig.num_bases must be in [1, num_relations] or None, got {self.num_bases}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GraphConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Node widths from the input projection to the output: one R-GCN layer per step."""
        return (self.input_dim or self.text_dim, *self.hidden_dims, self.out_dim)


class GraphEncoder(nn.Module):
    r"""Relational GCN over a batch of subgraphs whose nodes start as frozen text embeddings.

    Each layer is PyG's ``RGCNConv`` (Schlichtkrull et al., 2018) with mean aggregation per relation

    .. math::
        \mathbf{h}^{\prime}_i = \mathbf{W}_0 \mathbf{h}_i + \sum_{r \in \mathcal{R}}
        \sum_{j \in \mathcal{N}_r(i)} \frac{1}{|\mathcal{N}_r(i)|} \mathbf{W}_r \mathbf{h}_j + \mathbf{b},

    then ``h ← LayerNorm(skip(h) + dropout(GELU(h')))`` (skip: identity, or a linear map where the
    width changes). ``edge_type`` already holds each inverse direction as its own relation, so
    messages flow both ways with separate weights. ``num_bases`` shares weights across relations
    (W_r = Σ_b a_rb V_b): fewer parameters for rare relations (the KG has only a few SUGGESTIVE_OF
    edges), at some expressiveness. Edge counts are not used: RGCNConv takes no edge weights.

    The input is ``LayerNorm(Linear(features[node_index]))`` + a log1p(count) projection + a level
    embedding. ``features`` (N_table, text_dim) is a non-persistent buffer: never trained, not in the
    state dict (it is ``node_features(table, encoder, cache)``, cached on disk), so rebuild the
    encoder with the same table's features before ``load_state_dict``.
    """

    def __init__(self, config: GraphConfig, features: np.ndarray | Tensor) -> None:
        super().__init__()
        features = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features)
        if features.ndim != 2 or features.size(1) != config.text_dim:
            raise ValueError(f"features: expected (N_nodes, {config.text_dim}), got {tuple(features.shape)}")
        self.config = config
        self.register_buffer("features", features.detach().float().clone(), persistent=False)
        widths = config.widths
        self.input_proj = nn.Sequential(nn.Linear(config.text_dim, widths[0]), nn.LayerNorm(widths[0]))
        self.count_proj = nn.Linear(1, widths[0]) if config.use_counts else None
        self.level_emb = nn.Embedding(config.num_levels, widths[0]) if config.use_counts else None
        self.convs = nn.ModuleList(RGCNConv(a, b, config.num_relations, num_bases=config.num_bases)
                                   for a, b in pairwise(widths))
        self.skips = nn.ModuleList(nn.Identity() if a == b else nn.Linear(a, b, bias=False)
                                   for a, b in pairwise(widths))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in widths[1:])
        self.act = nn.GELU()
        self.dropout = nn.Dropout(config.dropout)

    def embed(self, node_index: Tensor, x_count: Tensor, level: Tensor) -> Tensor:
        """Layer-0 node states (N, input_dim) from the frozen table and the count features."""
        h = self.input_proj(self.features[node_index])                      # (N, C0)
        if self.count_proj is not None and self.level_emb is not None:
            if level.numel() and int(level.max()) >= self.config.num_levels:
                raise ValueError(f"node level {int(level.max())} ≥ GraphConfig.num_levels={self.config.num_levels}")
            h = h + self.count_proj(x_count.unsqueeze(-1).to(h.dtype)) + self.level_emb(level)
        return h

    def propagate(self, h: Tensor, edge_index: Tensor, edge_type: Tensor) -> Tensor:
        """The R-GCN stack on flat node states: (N, C0) → (N, out_dim)."""
        with per_relation_mean():
            for conv, skip, norm in zip(self.convs, self.skips, self.norms):
                h = norm(skip(h) + self.dropout(self.act(conv(h, edge_index, edge_type))))
        return h

    def forward(self, graph: Data, batch_size: int | None = None) -> GraphOutput:
        """A Batch of B subgraphs (or one SubgraphData, B = 1) → padded node tokens (B, M, out_dim).

        ``batch_size`` with a single graph broadcasts it (the paper's global mode: encode once).
        """
        h = self.embed(graph.node_index, graph.x_count, graph.level)
        h = self.propagate(h, graph.edge_index, graph.edge_type)            # (N, D)
        out = dense(h, graph.level, *_batch_vector(graph))
        return out.expand(batch_size) if batch_size is not None and not isinstance(graph, Batch) else out


def dense(h: Tensor, level: Tensor, batch: Tensor, num_graphs: int) -> GraphOutput:
    """Flat (N, D) node states + their graph ids → padded GraphOutput (num_graphs, M, D)."""
    nodes, mask = to_dense_batch(h, batch, batch_size=num_graphs)         # (B, M, D), (B, M)
    level_dense, _ = to_dense_batch(level, batch, batch_size=num_graphs)  # (B, M)
    return GraphOutput(nodes, mask, level_dense)


def _batch_vector(graph: Data) -> tuple[Tensor, int]:
    if isinstance(graph, Batch):
        return graph.batch, graph.num_graphs
    return graph.level.new_zeros(graph.num_nodes), 1


@contextmanager
def per_relation_mean() -> Iterator[None]:
    """Keep RGCNConv on its per-relation loop. With pyg-lib installed it may pick segment_matmul,
    which (PyG 2.8, see its ``TODO`` in RGCNConv.message) means over *all* incoming edges, not over
    each relation's: 1/|N(i)| instead of the R-GCN 1/|N_r(i)|."""
    if not torch_geometric.typing.WITH_SEGMM:
        yield
        return
    before = torch_geometric.backend.use_segment_matmul
    torch_geometric.backend.use_segment_matmul = False
    try:
        yield
    finally:
        torch_geometric.backend.use_segment_matmul = before


@dataclass
class MultiScaleConfig:
    graph: GraphConfig = field(default_factory=GraphConfig)
    num_scales: int = 3        # scale k = nodes of level ≤ k (3 per-study levels; 5 global scales)
    layers: int = 1            # TransformerEncoder layers over the S scale tokens
    heads: int = 4
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if not 1 <= self.num_scales <= self.graph.num_levels:
            raise ValueError(f"MultiScaleConfig.num_scales must be in [1, graph.num_levels="
                             f"{self.graph.num_levels}], got {self.num_scales}")
        if self.layers < 0 or self.heads < 1 or self.graph.out_dim % self.heads:
            raise ValueError(f"MultiScaleConfig: layers={self.layers} must be ≥ 0 and heads={self.heads} "
                             f"must divide graph.out_dim={self.graph.out_dim}")


@dataclass
class MultiScaleOutput:
    scales: Tensor       # (B, S, D) fused scale tokens
    scale_mask: Tensor   # (B, S) bool, the scale has ≥ 1 node (an empty scale's pooled token is 0)
    graph: GraphOutput   # node tokens of the largest scale (B, M, D) for cross-attention


class MultiScaleFusion(nn.Module):
    """Encode every scale separately, mean-pool each, mix the S tokens with a small Transformer.

    Scale k is the induced subgraph on nodes of level ≤ k, encoded on its own, so a scale-k token
    depends only on scale-k nodes (pooling one full-graph pass per scale would be S× cheaper to
    pool but lets outer nodes leak into inner scales through message passing). The S copies are
    stacked into one disjoint graph and run in a single R-GCN pass; cost = Σ_k |E_k| edges: on real
    per-study M3KG subgraphs 1.2× the edges (1.4× the nodes) of one full pass, on the 5 nested
    global scales 2.8×, never more than S×. Nodes of level ≥ num_scales are in no scale.
    """

    def __init__(self, config: MultiScaleConfig, features: np.ndarray | Tensor) -> None:
        super().__init__()
        self.config = config
        self.encoder = GraphEncoder(config.graph, features)
        d = config.graph.out_dim
        self.scale_emb = nn.Parameter(torch.zeros(config.num_scales, d))
        nn.init.normal_(self.scale_emb, std=0.02)
        layer = nn.TransformerEncoderLayer(d, config.heads, 4 * d, config.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.mixer = (nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
                      if config.layers else nn.Identity())
        self.norm = nn.LayerNorm(d)

    def forward(self, graph: Data, batch_size: int | None = None) -> MultiScaleOutput:
        """Batch of B subgraphs, or one SubgraphData (+ ``batch_size`` to broadcast it: global mode)."""
        S = self.config.num_scales
        batch, B = _batch_vector(graph)
        # step 1: stack the S induced subgraphs (graph id k·B + b, so ids stay sorted) and encode
        h = self.encoder.embed(graph.node_index, graph.x_count, graph.level)     # (N, C0)
        keep, edge_index, edge_type = stack_scales(graph.level, graph.edge_index, graph.edge_type, S)
        scale_of = torch.arange(S, device=h.device).repeat_interleave(keep.sum(1))  # (ΣN_k,)
        nodes = keep.nonzero()[:, 1]                                              # (ΣN_k,) row in h
        h = self.encoder.propagate(h[nodes], edge_index, edge_type)              # (ΣN_k, D)
        out = dense(h, graph.level[nodes], scale_of * B + batch[nodes], S * B)    # (S·B, M, D)
        # step 2: masked mean per (study, scale) → (B, S, D)
        mask = out.mask.view(S, B, -1)
        pooled = out.nodes.view(S, B, -1, h.size(-1)).sum(2) / mask.sum(2, keepdim=True).clamp(min=1)
        pooled, scale_mask = pooled.transpose(0, 1), mask.any(2).transpose(0, 1)  # (B, S, D), (B, S)
        # step 3: mix the scale tokens; the largest scale's nodes go to cross-attention
        scales = self.norm(self.mixer(pooled + self.scale_emb))
        largest = GraphOutput(out.nodes.view(S, B, *out.nodes.shape[1:])[-1], mask[-1],
                              out.level.view(S, B, -1)[-1])
        if batch_size is not None and not isinstance(graph, Batch):
            return MultiScaleOutput(scales.expand(batch_size, -1, -1), scale_mask.expand(batch_size, -1),
                                    largest.expand(batch_size))
        return MultiScaleOutput(scales, scale_mask, largest)


def stack_scales(level: Tensor, edge_index: Tensor, edge_type: Tensor,
                 num_scales: int) -> tuple[Tensor, Tensor, Tensor]:
    """The S induced subgraphs (nodes of level ≤ k) as one disjoint graph, scale-major.

    Returns keep (S, N) bool, edge_index (2, ΣE_k) into the stacked nodes, edge_type (ΣE_k,).
    """
    S, N = num_scales, level.numel()
    keep = level.unsqueeze(0) <= torch.arange(S, device=level.device).unsqueeze(1)   # (S, N)
    new = keep.long().view(-1).cumsum(0).view(S, N) - 1         # stacked row of node n in scale k
    src, dst = edge_index
    edge_keep = keep[:, src] & keep[:, dst]                      # (S, 2E)
    k, e = edge_keep.nonzero(as_tuple=True)
    return keep, torch.stack([new[k, src[e]], new[k, dst[e]]]), edge_type[e]
