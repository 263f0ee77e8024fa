"""Splice the projected image/knowledge tokens into the prompt; the one place that fixes the order.

Sequence per study (every study has the same prefix length, so a batch needs no left padding):

    <bos> "Human: <Img>" [visual | KG scales | V2KG | KG2V | disease] "</Img> {prompt}\\nAssistant:" report <eos>

The bracket is ``prefix`` (B, P, H), already projected to the LLM width, in the paper's order:
visual tokens + KG tokens + V2KG + KG2V + disease tokens (absent parts are simply left out).
Training: labels are -100 except on the report and its <eos>.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

IMAGE_SLOT = "{image}"
TEMPLATE = "Human: <Img>{image}</Img> {prompt}\nAssistant:"
IGNORE_INDEX = -100


@dataclass
class PromptIds:
    before: list[int]   # <bos> + text before the image slot
    after: list[int]    # text after the slot (the instruction and "Assistant:")


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, template: str = TEMPLATE) -> PromptIds:
    if template.count(IMAGE_SLOT) != 1:
        raise ValueError(f"prompt template must contain {IMAGE_SLOT} exactly once: {template!r}")
    before, after = template.replace("{prompt}", prompt).split(IMAGE_SLOT)
    ids = tokenizer(before, add_special_tokens=False).input_ids
    return PromptIds([tokenizer.bos_token_id, *ids], tokenizer(after, add_special_tokens=False).input_ids)


def report_ids(tokenizer: PreTrainedTokenizerBase, reports: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Each report's tokens, cut to ``max_tokens``, then <eos> (the model learns to stop)."""
    encoded = tokenizer([" " + r for r in reports], add_special_tokens=False).input_ids
    return [ids[:max_tokens] + [tokenizer.eos_token_id] for ids in encoded]


def _embed_ids(embed: nn.Embedding, ids: list[int], batch: int, device: torch.device) -> Tensor:
    return embed(torch.tensor(ids, dtype=torch.long, device=device)).unsqueeze(0).expand(batch, -1, -1)


def splice_for_generation(embed: nn.Embedding, ids: PromptIds, prefix: Tensor) -> tuple[Tensor, Tensor]:
    """(inputs_embeds (B, L, H), attention_mask (B, L)) for generate()."""
    B, dev = prefix.size(0), prefix.device
    embeds = torch.cat([_embed_ids(embed, ids.before, B, dev).to(prefix.dtype), prefix,
                        _embed_ids(embed, ids.after, B, dev).to(prefix.dtype)], dim=1)
    return embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=dev)


def splice_for_training(embed: nn.Embedding, ids: PromptIds, prefix: Tensor, reports: list[list[int]],
                        pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """(inputs_embeds (B, L+T, H), attention_mask (B, L+T), labels (B, L+T)); reports right-padded."""
    context, mask = splice_for_generation(embed, ids, prefix)
    B, L, dev = context.size(0), context.size(1), prefix.device
    T = max(len(r) for r in reports)
    report = torch.full((B, T), pad_id, dtype=torch.long, device=dev)
    report_mask = torch.zeros(B, T, dtype=torch.long, device=dev)
    for b, r in enumerate(reports):
        report[b, :len(r)] = torch.tensor(r, dtype=torch.long, device=dev)
        report_mask[b, :len(r)] = 1
    embeds = torch.cat([context, embed(report).to(context.dtype)], dim=1)
    labels = torch.cat([torch.full((B, L), IGNORE_INDEX, dtype=torch.long, device=dev),
                        report.masked_fill(report_mask == 0, IGNORE_INDEX)], dim=1)
    return embeds, torch.cat([mask, report_mask], dim=1), labels
