"""Disease Q-Former: 14 learned queries (one per CheXpert observation, OBSERVATIONS order)
cross-attend to visual tokens (B, N, C) → disease tokens (B, 14, D), logits (B, 14) and the
query→token attention map (B, 14, N) used to mine disease-aware vision tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from cxr.observations import (
    NEGATIVE,
    OBSERVATIONS,
    POSITIVE,
    UNCERTAIN,
    UncertainPolicy,
    positive_mask,
)


class Imbalance(str, Enum):
    """How the classifier's loss treats rare observations (base rates 0.3–16% on IU X-ray)."""

    NONE = "none"                  # plain BCE
    POS_WEIGHT = "pos_weight"      # BCE with positives weighted (1 - π) / π
    LOGIT_ADJUST = "logit_adjust"  # BCE on logit + log(π / (1 - π)) (Menon et al., 2021): rare
                                   # observations need a larger raw logit to be called positive


MIN_PRIOR = 0.01   # π is clamped to [MIN_PRIOR, 1 - MIN_PRIOR]: weights ≤ 99, offsets ≤ 4.6


class BlankPolicy(str, Enum):
    NEGATIVE = "negative"  # not mentioned (NaN) = absent, as the labeler's consumers usually read it
    IGNORE = "ignore"      # not mentioned entries do not enter the loss


def disease_targets(labels: torch.Tensor, uncertain: UncertainPolicy = UncertainPolicy.ONES,
                    blank: BlankPolicy = BlankPolicy.NEGATIVE) -> tuple[torch.Tensor, torch.Tensor]:
    """CheXpert labels (…, 14) in {1, 0, -1, NaN} → (targets in {0, ½, 1}, weights in {0, 1}).

    The target is ½ only for an uncertain label under ``UncertainPolicy.SOFT``.
    """
    uncertain, blank = UncertainPolicy(uncertain), BlankPolicy(blank)
    labels = labels.float()
    is_blank = labels.isnan()
    is_pos, is_neg, is_unc = labels == POSITIVE, labels == NEGATIVE, labels == UNCERTAIN
    bad = ~(is_blank | is_pos | is_neg | is_unc)
    if bad.any():
        raise ValueError(f"labels must be 1, 0, -1 or NaN; got {labels[bad].unique().tolist()}")
    targets = positive_mask(labels, uncertain).float()
    if uncertain == UncertainPolicy.SOFT:
        targets = targets.masked_fill(is_unc, 0.5)
    weights = torch.ones_like(labels)
    if uncertain == UncertainPolicy.IGNORE:
        weights = weights.masked_fill(is_unc, 0.0)
    if blank == BlankPolicy.IGNORE:
        weights = weights.masked_fill(is_blank, 0.0)
    return targets, weights


def disease_loss(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None,
                 uncertain: UncertainPolicy = UncertainPolicy.ONES,
                 blank: BlankPolicy = BlankPolicy.NEGATIVE, imbalance: Imbalance = Imbalance.NONE,
                 prior: torch.Tensor | None = None) -> torch.Tensor:
    """Mean BCE over the entries that count.

    logits (B, 14); labels (B, 14) CheXpert values 1 / 0 / -1 / NaN (see the policies);
    mask (B,) or (B, 14) bool, False drops a study or an entry (e.g. studies without labels).
    ``prior`` (14,): each observation's positive rate in the training data, needed by ``imbalance``.
    With no entry left the loss is 0 (still attached to the graph).
    """
    targets, weights = disease_targets(labels.to(logits.device), uncertain, blank)
    if mask is not None:
        mask = mask.to(logits.device).bool()
        weights = weights * (mask[:, None] if mask.ndim == 1 else mask).to(weights.dtype)
    pos_weight = None
    if Imbalance(imbalance) is not Imbalance.NONE:
        if prior is None or prior.isnan().any():
            raise ValueError(f"imbalance={Imbalance(imbalance).value} needs the training positive rates "
                             "(DiseaseQFormer.set_prior)")
        pi = prior.to(logits.device, logits.dtype).clamp(MIN_PRIOR, 1 - MIN_PRIOR)
        if Imbalance(imbalance) is Imbalance.POS_WEIGHT:
            pos_weight = (1 - pi) / pi
        else:
            logits = logits + torch.log(pi / (1 - pi))
    per_entry = F.binary_cross_entropy_with_logits(logits, targets, reduction="none",
                                                   pos_weight=pos_weight)  # (B, 14)
    return (per_entry * weights).sum() / weights.sum().clamp_min(1.0)


@dataclass
class QFormerConfig:
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_frequency: int = 2  # a cross-attention block every k layers, from layer 0
    encoder_hidden_size: int = 1024     # = SwinEncoder.out_dim (1024 for Swin-B)
    num_queries: int = len(OBSERVATIONS)
    dropout: float = 0.1
    attention_dropout: float = 0.1
    uncertain_policy: UncertainPolicy = UncertainPolicy.ONES
    blank_policy: BlankPolicy = BlankPolicy.NEGATIVE
    imbalance: Imbalance = Imbalance.NONE
    # A position-aware read-out added to each query's logit: one linear map of a view's whole token
    # grid to the 14 logits, averaged over the study's valid views. The queries' attention pools
    # tokens without knowing where they lie; this head knows that fluid sits at the bases.
    spatial_head: bool = False
    encoder_tokens: int = 0             # tokens per view (= SwinEncoder.tokens_per_view), derived

    def __post_init__(self) -> None:
        self.uncertain_policy = UncertainPolicy(self.uncertain_policy)
        self.blank_policy = BlankPolicy(self.blank_policy)
        self.imbalance = Imbalance(self.imbalance)
        if self.hidden_size % self.num_heads:
            raise ValueError(f"QFormerConfig.hidden_size={self.hidden_size} is not a multiple of "
                             f"num_heads={self.num_heads}")
        if not 1 <= self.cross_attention_frequency <= self.num_layers:
            raise ValueError(f"QFormerConfig.cross_attention_frequency must be in 1..num_layers, "
                             f"got {self.cross_attention_frequency}")
        if self.encoder_tokens < 0:
            raise ValueError(f"QFormerConfig.encoder_tokens must be ≥ 0, got {self.encoder_tokens}")
        if self.num_queries != len(OBSERVATIONS):
            raise ValueError(f"QFormerConfig.num_queries must be {len(OBSERVATIONS)} (one per "
                             f"CheXpert observation), got {self.num_queries}")

    @classmethod
    def debug(cls, encoder_hidden_size: int = 64, **overrides) -> QFormerConfig:
        """2 layers of width 32, cross-attention in both: 14 queries in ~31k parameters."""
        kwargs = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64,
                  "cross_attention_frequency": 1, "encoder_hidden_size": encoder_hidden_size,
                  "dropout": 0.0, "attention_dropout": 0.0}
        return cls(**(kwargs | overrides))

    def to_hf(self) -> Blip2QFormerConfig:
        return Blip2QFormerConfig(
            hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
            cross_attention_frequency=self.cross_attention_frequency,
            encoder_hidden_size=self.encoder_hidden_size, hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.attention_dropout)


@dataclass
class DiseaseOutput:
    tokens: torch.Tensor              # (B, 14, D)
    logits: torch.Tensor              # (B, 14)
    attention: torch.Tensor           # (B, 14, N) last cross-attention layer, mean over heads
    loss: torch.Tensor | None = None  # disease_loss when labels were given


class DiseaseQFormer(nn.Module):
    """BLIP-2 Q-Former (randomly initialised) with one learned query per observation.

    Head: one Linear(D, 1) per query, stored as a (14, D) weight + (14,) bias. Each query is
    already a dedicated disease slot; a per-query head costs 14·(D+1) parameters and gives every
    observation its own bias, i.e. its own prior: prevalences differ by orders of magnitude
    (Support Devices vs Pleural Other), which a shared head would have to encode in the tokens.
    """

    def __init__(self, config: QFormerConfig) -> None:
        super().__init__()
        self.config = config
        hf = config.to_hf()
        hf._attn_implementation = "eager"  # sdpa returns no attention weights; the map needs them
        self.qformer = Blip2QFormerModel(hf)
        self.queries = nn.Parameter(torch.randn(1, config.num_queries, config.hidden_size) * 0.02)
        self.head_weight = nn.Parameter(torch.randn(config.num_queries, config.hidden_size) * 0.02)
        self.head_bias = nn.Parameter(torch.zeros(config.num_queries))
        self.spatial: nn.Linear | None = None
        if config.spatial_head:
            if config.encoder_tokens < 1:
                raise ValueError("QFormerConfig.spatial_head needs encoder_tokens (the visual tokens per "
                                 "view), which ModelConfig.derive fills from the vision encoder")
            self.spatial = nn.Linear(config.encoder_tokens * config.encoder_hidden_size, config.num_queries)
        # the training data's positive rates, for ``imbalance``; set by the trainer, not saved
        self.register_buffer("prior", torch.full((config.num_queries,), float("nan")), persistent=False)

    def set_prior(self, labels: torch.Tensor) -> None:
        """Each observation's positive rate in ``labels`` (N, 14), read by the config's policies."""
        targets, weights = disease_targets(labels, self.config.uncertain_policy, self.config.blank_policy)
        rate = (targets * weights).sum(0) / weights.sum(0).clamp_min(1.0)
        self.prior.copy_(rate.to(self.prior))

    @property
    def out_dim(self) -> int:
        return self.config.hidden_size

    def forward(self, visual_tokens: torch.Tensor, visual_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, label_mask: torch.Tensor | None = None
                ) -> DiseaseOutput:
        """visual_tokens (B, N, C), visual_mask (B, N) bool; labels (B, 14) CheXpert values."""
        B = visual_tokens.shape[0]
        queries = self.queries.expand(B, -1, -1)                         # (B, 14, D)
        out = self.qformer(query_embeds=queries, encoder_hidden_states=visual_tokens,
                           encoder_attention_mask=visual_mask, output_attentions=True)
        tokens = out.last_hidden_state                                   # (B, 14, D)
        logits = torch.einsum("bqd,qd->bq", tokens, self.head_weight) + self.head_bias  # (B, 14)
        if self.spatial is not None:
            logits = logits + self._spatial_logits(visual_tokens, visual_mask)
        attention = out.cross_attentions[-1].mean(dim=1)                 # (B, H, 14, N) → (B, 14, N)
        loss = None
        if labels is not None:
            loss = disease_loss(logits, labels, label_mask, self.config.uncertain_policy,
                                self.config.blank_policy, self.config.imbalance, self.prior)
        return DiseaseOutput(tokens=tokens, logits=logits, attention=attention, loss=loss)

    def _spatial_logits(self, visual_tokens: torch.Tensor, visual_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, V·n, C) tokens, n per view (one view after mean fusion) → (B, 14): the spatial
        head on each view's grid, averaged over the views with a valid token."""
        B, N, C = visual_tokens.shape
        n = self.config.encoder_tokens
        if N % n:
            raise ValueError(f"spatial head: {N} visual tokens are not whole views of {n} tokens")
        per_view = self.spatial(visual_tokens.reshape(B, N // n, n * C))                 # (B, V, 14)
        if visual_mask is None:
            return per_view.mean(1)
        valid = visual_mask.reshape(B, N // n, n).any(-1).to(per_view.dtype)            # (B, V)
        return (per_view * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1.0)
