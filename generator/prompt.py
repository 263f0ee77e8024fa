"""Splice the projected image/knowledge tokens into the prompt; the one place that fixes the order.

Sequence per study (every study has the same prefix length, so a batch needs no left padding):

    <bos> "Human: <Img>" [visual | KG scales | V2KG | KG2V | disease] "</Img> {prompt}{diagnosis}\\nAssistant:" report <eos>

The bracket is ``prefix`` (B, P, H), already projected to the LLM width, in the paper's order:
visual tokens + KG tokens + V2KG + KG2V + disease tokens (absent parts are simply left out).
Training: labels are -100 except on the report and its <eos>.

``{diagnosis}`` (when the diagnosis prompt is on) is the decided state of each of the 13 findings as
text: the positive ones by name, the uncertain ones as "uncertain <name>", the negative ones left
out, e.g. " Findings: cardiomegaly, uncertain atelectasis." or " Findings: none.". It is padded to
the longest possible sentence, so every prompt keeps the same length. Off, it is empty and the
prompt is token for token the one before it existed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from cxr.observations import FINDINGS, STATES, State

IMAGE_SLOT, DIAGNOSIS_SLOT = "{image}", "{diagnosis}"
TEMPLATE = "Human: <Img>{image}</Img> {prompt}{diagnosis}\nAssistant:"
DIAGNOSIS_HEADER = " Findings:"
IGNORE_INDEX = -100


@dataclass
class DiagnosisIds:
    """The findings sentence: " Findings: cardiomegaly, uncertain atelectasis." (" Findings: none."),
    right-padded to the longest possible sentence so that every prompt has the same length."""

    header: list[int]
    entries: list[dict[int, list[int]]]   # per finding: state code → ids (positive, uncertain only)
    separator: list[int]
    end: list[int]
    none: list[int]
    pad: int
    width: int = 0

    def __post_init__(self) -> None:
        longest = [max(map(len, e.values())) for e in self.entries]
        self.width = len(self.header) + sum(longest) + len(self.separator) * (len(longest) - 1) + \
            max(len(self.end), len(self.none))

    def row(self, states: list[int]) -> list[int]:
        """One study's state codes (14,) → its findings tokens (``width``,)."""
        said = [self.entries[j][s] for j, s in enumerate(states[1:]) if s in self.entries[j]]
        ids = list(self.header)
        for k, entry in enumerate(said):
            ids += (self.separator if k else []) + entry
        ids += self.end if said else self.none
        return ids + [self.pad] * (self.width - len(ids))

    def ids(self, states: Tensor) -> Tensor:
        """State codes (B, 14) → the findings tokens (B, width)."""
        return torch.tensor([self.row(row) for row in states.tolist()], dtype=torch.long, device=states.device)


@dataclass
class PromptIds:
    before: list[int]   # <bos> + text before the image slot
    after: list[int]    # text after the slot (the instruction and "Assistant:")
    diagnosis: DiagnosisIds | None = None
    diagnosis_at: int = 0   # where in ``after`` the findings go

    def tail(self, batch: int, states: Tensor | None, device: torch.device) -> Tensor:
        """``after`` with the findings spliced in: (B, T) ids."""
        after = torch.tensor(self.after, dtype=torch.long, device=device).unsqueeze(0).expand(batch, -1)
        if self.diagnosis is None:
            return after
        if states is None:
            raise ValueError("the diagnosis prompt is on: the decided states (B, 14) are needed")
        at = self.diagnosis_at
        return torch.cat([after[:, :at], self.diagnosis.ids(states.to(device)), after[:, at:]], dim=1)


def _diagnosis_ids(tokenizer: PreTrainedTokenizerBase) -> DiagnosisIds:
    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    positive, uncertain = STATES.index(State.POSITIVE), STATES.index(State.UNCERTAIN)
    entries = [{positive: encode(f" {o.value.lower()}"), uncertain: encode(f" uncertain {o.value.lower()}")}
               for o in FINDINGS]
    return DiagnosisIds(encode(DIAGNOSIS_HEADER), entries, encode(","), encode("."), encode(" none."),
                        tokenizer.pad_token_id)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, template: str = TEMPLATE,
               diagnosis: bool = False) -> PromptIds:
    if template.count(IMAGE_SLOT) != 1:
        raise ValueError(f"prompt template must contain {IMAGE_SLOT} exactly once: {template!r}")
    if diagnosis and template.count(DIAGNOSIS_SLOT) != 1:
        raise ValueError(f"the diagnosis prompt needs {DIAGNOSIS_SLOT} exactly once in the template: {template!r}")
    if template.find(DIAGNOSIS_SLOT) != -1 and template.find(DIAGNOSIS_SLOT) < template.find(IMAGE_SLOT):
        raise ValueError(f"prompt template: {DIAGNOSIS_SLOT} must come after {IMAGE_SLOT}: {template!r}")
    if not diagnosis:
        template = template.replace(DIAGNOSIS_SLOT, "")
    before, after = template.replace("{prompt}", prompt).split(IMAGE_SLOT)
    ids = [tokenizer.bos_token_id, *tokenizer(before, add_special_tokens=False).input_ids]
    if not diagnosis:
        return PromptIds(ids, tokenizer(after, add_special_tokens=False).input_ids)
    head, tail = after.split(DIAGNOSIS_SLOT)
    head_ids = tokenizer(head, add_special_tokens=False).input_ids
    return PromptIds(ids, head_ids + tokenizer(tail, add_special_tokens=False).input_ids, _diagnosis_ids(tokenizer),
                     len(head_ids))


def report_ids(tokenizer: PreTrainedTokenizerBase, reports: Sequence[str], max_tokens: int) -> list[list[int]]:
    """Each report's tokens, cut to ``max_tokens``, then <eos> (the model learns to stop)."""
    encoded = tokenizer([" " + r for r in reports], add_special_tokens=False).input_ids
    return [ids[:max_tokens] + [tokenizer.eos_token_id] for ids in encoded]


# token ids → embeddings: an nn.Embedding, or the embedding function of an LLM served elsewhere (vLLM)
Embed = nn.Embedding | Callable[[Tensor], Tensor]


def _embed_ids(embed: Embed, ids: list[int], batch: int, device: torch.device) -> Tensor:
    return embed(torch.tensor(ids, dtype=torch.long, device=device)).unsqueeze(0).expand(batch, -1, -1)


def splice_for_generation(embed: Embed, ids: PromptIds, prefix: Tensor,
                          states: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(inputs_embeds (B, L, H), attention_mask (B, L)) for generate(); ``states`` (B, 14) when the
    diagnosis prompt is on."""
    B, dev = prefix.size(0), prefix.device
    embeds = torch.cat([_embed_ids(embed, ids.before, B, dev).to(prefix.dtype), prefix,
                        embed(ids.tail(B, states, dev)).to(prefix.dtype)], dim=1)
    return embeds, torch.ones(embeds.shape[:2], dtype=torch.long, device=dev)


def splice_for_training(embed: nn.Embedding, ids: PromptIds, prefix: Tensor, reports: list[list[int]],
                        pad_id: int, states: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(inputs_embeds (B, L+T, H), attention_mask (B, L+T), labels (B, L+T)); reports right-padded."""
    context, mask = splice_for_generation(embed, ids, prefix, states)
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
