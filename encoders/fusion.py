"""Bidirectional cross-attention between vision tokens (B, Nv, Cv) and graph node tokens (B, Nk, Cg).

V2KG: vision queries over graph keys → (B, Nv, D); KG2V: graph queries over vision keys → (B, Nk, D).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class FusionOutput:
    v2kg: Tensor   # (B, Nv, D) vision tokens enriched with knowledge
    kg2v: Tensor   # (B, Nk, D) graph tokens grounded in the image; zero at padded graph nodes


@dataclass
class CrossAttentionConfig:
    dim: int = 384                 # common width; both sides are projected to it
    heads: int = 8
    layers: int = 1                # blocks per direction
    dropout: float = 0.1
    ffn_ratio: int = 4
    vision_dim: int | None = None  # width of the vision tokens; None → dim
    graph_dim: int | None = None   # width of the graph tokens; None → dim

    def __post_init__(self) -> None:
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"CrossAttentionConfig: heads={self.heads} must divide dim={self.dim}")
        if self.layers < 1 or self.ffn_ratio < 1:
            raise ValueError(f"CrossAttentionConfig: layers={self.layers} and ffn_ratio={self.ffn_ratio} must be ≥ 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"CrossAttentionConfig.dropout must be in [0, 1), got {self.dropout}")


class CrossBlock(nn.Module):
    """Pre-norm ``q ← q + Attn(LN(q), LN(kv)); q ← q + FFN(LN(q))``.

    A query row whose keys are all masked (an empty subgraph), or a batch with no key at all
    (Nk = 0), gets a zero attention update: it passes through changed only by the FFN, with no
    NaN from a softmax over nothing.
    """

    def __init__(self, config: CrossAttentionConfig) -> None:
        super().__init__()
        d = config.dim
        self.norm_q, self.norm_kv, self.norm_ffn = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, config.heads, dropout=config.dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, config.ffn_ratio * d), nn.GELU(), nn.Dropout(config.dropout),
                                 nn.Linear(config.ffn_ratio * d, d), nn.Dropout(config.dropout))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, q: Tensor, kv: Tensor, kv_mask: Tensor) -> Tensor:
        """q (B, Nq, D), kv (B, Nk, D), kv_mask (B, Nk) bool True = real key → (B, Nq, D)."""
        if kv.size(1) == 0:                                              # no key in the whole batch
            return q + self.ffn(self.norm_ffn(q))
        has_keys = kv_mask.any(-1)                                       # (B,)
        # rows with no key attend to everything (finite), then their update is zeroed
        ignore = ~kv_mask & has_keys.unsqueeze(-1)                       # (B, Nk) True = ignore
        kv = self.norm_kv(kv)
        update, _ = self.attn(self.norm_q(q), kv, kv, key_padding_mask=ignore, need_weights=False)
        q = q + self.dropout(update) * has_keys.view(-1, 1, 1).to(q.dtype)
        return q + self.ffn(self.norm_ffn(q))


class BiCrossAttention(nn.Module):
    """Two independent stacks of CrossBlocks: V2KG and KG2V, both reading the projected inputs.

    Vision (Cv) and graph (Cg) widths may differ: each side is first mapped to ``dim`` by a Linear
    (Identity where the width already is ``dim``). Keys/queries carry masks True = real token.
    """

    def __init__(self, config: CrossAttentionConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.vision_proj = _proj(config.vision_dim, d)
        self.graph_proj = _proj(config.graph_dim, d)
        self.v2kg = nn.ModuleList(CrossBlock(config) for _ in range(config.layers))
        self.kg2v = nn.ModuleList(CrossBlock(config) for _ in range(config.layers))
        self.norm_v, self.norm_k = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, vision: Tensor, graph: Tensor, graph_mask: Tensor,
                vision_mask: Tensor | None = None, graph_queries: Tensor | None = None,
                graph_query_mask: Tensor | None = None) -> FusionOutput:
        """vision (B, Nv, Cv), graph (B, Nk, Cg), graph_mask (B, Nk) bool, vision_mask (B, Nv) bool.

        ``graph_queries`` (B, Nq, Cg) + mask: KG2V queries other than the graph keys (e.g. the S
        multi-scale tokens, so the prompt gets S tokens instead of one per node); default: graph.
        """
        if vision_mask is None:
            vision_mask = torch.ones(vision.shape[:2], dtype=torch.bool, device=vision.device)
        if graph_queries is None:
            graph_queries, graph_query_mask = graph, graph_mask
        elif graph_query_mask is None:
            graph_query_mask = torch.ones(graph_queries.shape[:2], dtype=torch.bool, device=graph.device)
        v, k = self.vision_proj(vision), self.graph_proj(graph)       # (B, Nv, D), (B, Nk, D)
        v2kg, kg2v = v, self.graph_proj(graph_queries)                # kg2v: (B, Nq, D)
        for block in self.v2kg:
            v2kg = block(v2kg, k, graph_mask)
        for block in self.kg2v:
            kg2v = block(kg2v, v, vision_mask)
        # padded query rows carry no meaning: zero them so nothing downstream can read them
        v2kg = self.norm_v(v2kg) * vision_mask.unsqueeze(-1).to(v2kg.dtype)
        kg2v = self.norm_k(kg2v) * graph_query_mask.unsqueeze(-1).to(kg2v.dtype)
        return FusionOutput(v2kg, kg2v)


class BankAttention(nn.Module):
    """Each disease token attends only to its own observation's k retrieved bank tokens.

    tokens (B, Q, D) + bank (B, Q, k, C) + bank_mask (B, Q, k) → (B, Q, D). Rows are folded to
    (B·Q, 1, D) queries over (B·Q, k, D) keys; a row with no retrieved token (empty bank, first
    epoch) gets a zero attention update (CrossBlock's rule).
    """

    def __init__(self, dim: int, bank_dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.kv_proj = _proj(bank_dim, dim)
        self.block = CrossBlock(CrossAttentionConfig(dim=dim, heads=heads, dropout=dropout))

    def forward(self, tokens: Tensor, bank: Tensor, bank_mask: Tensor) -> Tensor:
        B, Q, k, _ = bank.shape
        D = tokens.size(-1)
        kv = self.kv_proj(bank).reshape(B * Q, k, D)
        out = self.block(tokens.reshape(B * Q, 1, D), kv, bank_mask.reshape(B * Q, k))
        return out.reshape(B, Q, D)


def _proj(width: int | None, dim: int) -> nn.Module:
    return nn.Identity() if width is None or width == dim else nn.Linear(width, dim)
