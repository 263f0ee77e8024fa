"""Disease-aware vision tokens: what the bank indexes and what queries it.

Mining: visual tokens (B, N, C) + disease-query attention (B, 14, N) + labels (B, 14) →
the ≤ per_image most-attended tokens of each positive observation of each study, capped at
≤ per_disease per observation (highest attention kept) → ``TokenIndex``.
Retrieval: disease tokens (B, 14, D) → ``RetrievedTokens(tokens (B, 14, k, D), mask, ids)``.

Assumption: queries must live in the bank's space (the visual-token space, D == C). The
Q-Former's disease tokens do not; the caller projects them (a Linear, C_q → C) before
``retrieve_for_batch``, which checks the dim and says so when it does not match.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cxr.observations import OBSERVATIONS, POSITIVE, UNCERTAIN
from retrieval.index import IndexConfig, TokenIndex, TokenMeta

N_OBS = len(OBSERVATIONS)


@dataclass(frozen=True)
class BankConfig:
    """Paper: Grad-CAM patches, ≤ 6 per image and ≤ 500 per disease (6,943 in all)."""

    per_image: int = 6              # tokens per (study, positive observation)
    per_disease: int = 500          # tokens per observation in the whole bank
    min_attention: float | None = None  # drop tokens attended less than this
    include_uncertain: bool = False     # label == -1 counts as positive only if True

    def __post_init__(self) -> None:
        for name in ("per_image", "per_disease"):
            if getattr(self, name) < 1:
                raise ValueError(f"BankConfig.{name} must be >= 1, got {getattr(self, name)}")


def mine_disease_tokens(
    visual_tokens: torch.Tensor,       # (B, N, C)
    attention: torch.Tensor,           # (B, 14, N) disease-query attention over the tokens
    labels: torch.Tensor,              # (B, 14) float: 1 pos, 0 neg, -1 uncertain, NaN blank
    study_ids: Sequence[str],          # (B,)
    config: BankConfig = BankConfig(),
    view_ids: torch.Tensor | None = None,   # (B, N) int: which image each token came from
    patch_ids: torch.Tensor | None = None,  # (B, N) int: its position within that image
) -> tuple[np.ndarray, TokenMeta]:
    """Top ``per_image`` tokens by attention per (study, positive observation).

    One row is one study. When a study's views are concatenated into N tokens the top-k is
    taken over the whole study (simple; a dominant view may supply all of them); view_ids /
    patch_ids only record where each token came from (default: view 0, patch = position).
    Ties go to the lower token position. Returns vectors (n, C) float32 (not normalised;
    the index normalises) and n metadata rows.
    """
    b, n, _ = visual_tokens.shape
    if attention.shape != (b, N_OBS, n):
        raise ValueError(f"attention must be (B, {N_OBS}, N) = {(b, N_OBS, n)}, "
                         f"got {tuple(attention.shape)}")
    if labels.shape != (b, N_OBS):
        raise ValueError(f"labels must be (B, {N_OBS}) = {(b, N_OBS)}, got {tuple(labels.shape)}")
    if len(study_ids) != b:
        raise ValueError(f"{len(study_ids)} study ids for a batch of {b}")
    x = visual_tokens.detach().float().cpu()
    att = attention.detach().float().cpu()
    lab = labels.detach().float().cpu()
    views = torch.zeros(b, n, dtype=torch.long) if view_ids is None else view_ids.cpu().long()
    patches = (torch.arange(n).expand(b, n) if patch_ids is None else patch_ids.cpu().long())

    positive = lab == POSITIVE  # NaN compares False: blanks are never mined
    if config.include_uncertain:
        positive |= lab == UNCERTAIN
    k = min(config.per_image, n)
    # stable sort on -attention: ties keep the lower token position first
    order = torch.sort(-att, dim=-1, stable=True).indices[..., :k]  # (B, 14, k)
    top_att = torch.gather(att, -1, order)                           # (B, 14, k)
    keep = positive[..., None].expand(b, N_OBS, k).clone()
    if config.min_attention is not None:
        keep &= top_att >= config.min_attention
    bi, oi, ki = keep.nonzero(as_tuple=True)  # row-major: study, observation, rank
    tok = order[bi, oi, ki]
    vectors = x[bi, tok].numpy().astype(np.float32)
    meta = TokenMeta(
        study_ids=np.asarray([str(study_ids[i]) for i in bi.tolist()], dtype=str),
        observation=oi.numpy(),
        view=views[bi, tok].numpy(),
        patch=patches[bi, tok].numpy(),
        score=top_att[bi, oi, ki].numpy(),
    )
    return vectors, meta


@dataclass
class DiseaseTokenBank:
    """Streams mined tokens over batches and keeps the ``per_disease`` most-attended per
    observation: a min-heap per observation, so memory is ≤ 14 × per_disease vectors.
    Ties in attention keep the earlier-seen token, so a fixed batch order gives a fixed bank.
    """

    config: BankConfig
    index_config: IndexConfig
    _heaps: list[list[tuple]] = field(init=False, repr=False)
    _seq: itertools.count = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._heaps = [[] for _ in range(N_OBS)]
        self._seq = itertools.count()

    def add_batch(self, visual_tokens: torch.Tensor, attention: torch.Tensor,
                  labels: torch.Tensor, study_ids: Sequence[str],
                  view_ids: torch.Tensor | None = None,
                  patch_ids: torch.Tensor | None = None) -> int:
        """Mine one batch (shapes as ``mine_disease_tokens``); returns tokens mined."""
        vectors, meta = mine_disease_tokens(visual_tokens, attention, labels, study_ids,
                                            self.config, view_ids, patch_ids)
        if vectors.shape[1] != self.index_config.dim:
            raise ValueError(f"visual tokens have C={vectors.shape[1]}, "
                             f"index_config.dim={self.index_config.dim}")
        for i in range(len(meta)):
            row = (meta.study_ids[i], int(meta.view[i]), int(meta.patch[i]))
            # heap key: (attention, -seq) → the root is the weakest, latest-seen token
            item = (float(meta.score[i]), -next(self._seq), vectors[i], row)
            heap = self._heaps[int(meta.observation[i])]
            if len(heap) < self.config.per_disease:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)
        return len(meta)

    def counts(self) -> np.ndarray:
        return np.array([len(h) for h in self._heaps], dtype=np.int64)

    def build(self) -> TokenIndex:
        """The index, ids ordered by observation, then attention (high first), then arrival."""
        index = TokenIndex(self.index_config)
        vecs, parts = [], []
        for o, heap in enumerate(self._heaps):
            items = sorted(heap, key=lambda it: (-it[0], -it[1]))
            if not items:
                continue
            vecs.append(np.stack([it[2] for it in items]))
            parts.append(TokenMeta(
                study_ids=np.asarray([it[3][0] for it in items], dtype=str),
                observation=np.full(len(items), o), view=[it[3][1] for it in items],
                patch=[it[3][2] for it in items], score=[it[0] for it in items]))
        if vecs:
            index.add(np.concatenate(vecs), TokenMeta.concat(parts))
        return index


@dataclass
class RetrievedTokens:
    tokens: torch.Tensor  # (B, 14, k, D) stored vectors as mined; zeros where mask is False
    mask: torch.Tensor    # (B, 14, k) bool, True = a real token (use as key padding mask)
    ids: torch.Tensor     # (B, 14, k) int64 bank ids, -1 where missing
    scores: torch.Tensor  # (B, 14, k) float cosine, -inf where missing

    def __iter__(self):  # `tokens, mask, ids = retrieve_for_batch(...)` also works
        return iter((self.tokens, self.mask, self.ids))


def retrieve_for_batch(index: TokenIndex, disease_tokens: torch.Tensor,
                       study_ids: Sequence[str], k: int, training: bool) -> RetrievedTokens:
    """Each disease token searches its own observation's tokens (top-k cosine).

    disease_tokens (B, 14, D) must already be projected into the bank's space (D == dim).
    training=True excludes every token of the row's own study (no label leakage).
    Tokens come back detached, on disease_tokens' device and dtype.
    """
    if disease_tokens.ndim != 3 or disease_tokens.shape[1] != N_OBS:
        raise ValueError(f"disease_tokens must be (B, {N_OBS}, D), "
                         f"got {tuple(disease_tokens.shape)}")
    b, _, d = disease_tokens.shape
    if d != index.dim:
        raise ValueError(
            f"disease tokens have D={d} but the bank stores visual tokens of dim {index.dim}; "
            "project the Q-Former disease tokens into the visual-token space (a Linear "
            f"{d} → {index.dim}) before retrieval")
    if len(study_ids) != b:
        raise ValueError(f"{len(study_ids)} study ids for a batch of {b}")
    q = disease_tokens.detach().float().cpu().reshape(b * N_OBS, d).numpy()
    obs = np.tile(np.arange(N_OBS), b)                                   # (B*14,)
    exclude = [str(s) for s in study_ids for _ in range(N_OBS)] if training else None
    res = index.search(q, k, exclude_studies=exclude, observations=obs)
    ids = torch.from_numpy(res.ids).reshape(b, N_OBS, k)
    mask = ids >= 0
    if len(index):
        gathered = torch.from_numpy(index.vectors[np.maximum(res.ids, 0)])  # (B*14, k, D)
    else:
        gathered = torch.zeros(b * N_OBS, k, d)
    tokens = gathered.reshape(b, N_OBS, k, d) * mask[..., None]
    dev, dt = disease_tokens.device, disease_tokens.dtype
    return RetrievedTokens(
        tokens=tokens.to(device=dev, dtype=dt), mask=mask.to(dev), ids=ids.to(dev),
        scores=torch.from_numpy(res.scores).reshape(b, N_OBS, k).to(dev))
