"""R2GenKG: images (B, V, 1, S, S) → 14 disease probabilities + report text.

step 1 vision: Swin per view, fused over views           → visual tokens (B, Nv, Cv)
step 2 disease queries: Q-Former, 14 queries + head       → disease tokens (B, 14, Dq), logits (B, 14)
step 3 knowledge: seeds → subgraphs → R-GCN, multi-scale  → scale tokens (B, S, Dg), node tokens (B, M, Dg)
step 4 cross-attention: V2KG (B, Nv, D), KG2V (B, S, D)
step 5 disease-aware vision tokens: top-k bank tokens per disease token → disease tokens refined
step 6 project every group to the LLM width, splice into the prompt (generator/prompt.py), decode

Every decision (KG seeds, the diagnosis prompt's states, ``positive``) comes from the classifier's
probabilities and the per-observation thresholds (``self.thresholds``, generator.decisions).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from cxr.clean import drop_repeated_sentences
from cxr.observations import OBSERVATIONS, STATES, Observation, State, label_states, positive_mask
from encoders.fusion import BankAttention, BiCrossAttention
from encoders.graph import GraphOutput, MultiScaleFusion
from encoders.qformer import DiseaseOutput, DiseaseQFormer
from encoders.vision import SwinEncoder
from generator.backends import Completion, DecidedCallback, HFBackend, LLMBackend, TokenCallback
from generator.check import checker_for, read_report
from generator.config import KG2VQueries, KGMode, ModelConfig
from generator.coverage import announce, decided_findings, merge, missing_findings
from generator.decisions import Thresholds, state_names
from generator.explain import explain, study_graph
from generator.llm import build_llm, embed_tokens
from generator.prompt import prompt_ids, report_ids, splice_for_generation, splice_for_training
from generator.settings import GenerationSettings
from graphdb.provider import SubgraphBatch, SubgraphProvider
from retrieval.index import TokenIndex
from retrieval.tokens import RetrievedTokens, retrieve_for_batch


@dataclass
class Evidence:
    seeds: tuple[str, ...] = ()            # what the study's subgraph grew from
    node_ids: tuple[str, ...] = ()         # the subgraph's nodes ("Entity:<key>", "Observation:<name>")
    retrieved: dict[str, list[int]] = field(default_factory=dict)  # observation → bank token ids
    graph: dict[str, list[dict[str, Any]]] | None = None   # the subgraph by name (generator.explain.study_graph)


@dataclass
class GenerationResult:
    study_id: str
    report: str
    probabilities: dict[str, float]        # the classifier's 14 observation probabilities
    evidence: Evidence
    states: dict[str, str] = field(default_factory=dict)   # observation → decided state (thresholds)
    prompt_tokens: int = 0                 # positions the LLM read (prompt + image/KG/disease tokens)
    completion_tokens: int = 0
    finish_reason: str = "stop"            # "stop" (eos) | "length" (max_new_tokens)
    covered: list[str] = field(default_factory=list)   # decided findings stated by the coverage pass
    added: list[str] = field(default_factory=list)     # the sentences that pass added (generator.coverage)
    warnings: list[dict[str, str]] = field(default_factory=list)   # the report check (generator.check)
    sentences: list[dict[str, Any]] = field(default_factory=list)  # evidence per sentence (generator.explain)
    thresholds: dict[str, float | None] = field(default_factory=dict)  # each observation's decision cut (None: never)
    # the disease queries' attention over the image grid: {"grid": g, "maps": {observation: [per view: g*g]}}
    attention: dict[str, Any] | None = None

    @property
    def coverage(self) -> dict[str, list[str]]:
        """What the coverage pass did, as batch rows, predictions.jsonl and the API report it."""
        return {"covered": self.covered, "added": self.added}

    @property
    def positive(self) -> list[str]:
        """The observations decided positive, in OBSERVATIONS order."""
        return [name for name, state in self.states.items() if state == State.POSITIVE.value]


@dataclass
class Encoded:
    prefix: Tensor                         # (B, P, H) projected, spliced between the prompt parts
    disease: DiseaseOutput
    visual: Tensor                         # (B, Nv, Cv) detached: what the training loop mines
    subgraphs: SubgraphBatch | None
    retrieved: RetrievedTokens | None
    states: Tensor                         # (B, 14) decided state codes (cxr.observations.STATES)
    prompt_states: Tensor                  # (B, 14) the states the prompt carried (training: reference or decided)


@dataclass
class ModelOutput:
    loss: Tensor
    lm_loss: Tensor
    classifier_loss: Tensor
    encoded: Encoded


def _projection(width: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, hidden), nn.LayerNorm(hidden))


class R2GenKG(nn.Module):
    """The whole model. Graph access (``provider``) and the disease-token bank are injected."""

    def __init__(self, config: ModelConfig, tokenizer: PreTrainedTokenizerBase,
                 features: np.ndarray | None = None, provider: SubgraphProvider | None = None,
                 llm_hidden_size: int | None = None) -> None:
        """``llm_hidden_size``: build the adapter alone (``self.llm`` is None), for an LLM that
        lives elsewhere (the vLLM plugin, generator.vllm_plugin) with this hidden size."""
        super().__init__()
        self.vision = SwinEncoder(config.vision)
        use_kg = config.kg.mode != KGMode.NONE
        if use_kg and (features is None or provider is None):
            raise ValueError(f"kg.mode={config.kg.mode.value} needs node features and a subgraph provider")
        text_dim = features.shape[1] if features is not None else config.kg.graph.text_dim
        self.config = config = config.derive(self.vision.out_dim, text_dim, self.vision.tokens_per_view)
        self.tokenizer = tokenizer
        self.provider = provider
        self.bank: TokenIndex | None = None   # set by the training loop / checkpoint loader
        self.thresholds = Thresholds()        # fit on val by the training loop; saved in the checkpoint
        self.qformer = DiseaseQFormer(config.qformer)
        self.graph = MultiScaleFusion(config.kg.multiscale(), features) if use_kg else None
        self.fusion = BiCrossAttention(config.fusion) if config.cross_attention else None
        dq, cv, dg, d = config.qformer.hidden_size, self.vision.out_dim, config.kg.graph.out_dim, config.fusion.dim
        self.bank_attention = (BankAttention(dq, cv, config.disease_tokens.heads, config.qformer.dropout)
                               if config.disease_tokens.enabled else None)
        self.llm = build_llm(config.llm, tokenizer) if llm_hidden_size is None else None
        h = self.llm.config.get_text_config().hidden_size if self.llm is not None else llm_hidden_size
        self.proj = nn.ModuleDict({"visual": _projection(cv, h)})
        if use_kg:
            self.proj["kg"] = _projection(dg, h)
        if self.fusion is not None:
            self.proj["v2kg"], self.proj["kg2v"] = _projection(d, h), _projection(d, h)
        if config.disease_tokens.enabled:
            self.proj["disease"] = _projection(dq, h)
        self.prompt = prompt_ids(tokenizer, config.prompt, diagnosis=config.diagnosis_prompt)

    # ---- steps 1-6: everything before the LLM ----
    def encode(self, images: Tensor, view_mask: Tensor, study_ids: list[str],
               labels: Tensor | None = None, teacher_forcing: bool = False,
               use_decided: Tensor | None = None) -> Encoded:
        """``labels`` (training): the prompt carries their states, except in the studies where
        ``use_decided`` (B,) is True, which get the model's own decisions (the training schedule)."""
        # step 1: vision
        vis = self.vision(images, view_mask)                                   # (B, Nv, Cv)
        # step 2: disease queries (+ classifier loss when labels are given), then the decisions
        disease = self.qformer(vis.tokens, vis.mask, labels)
        probs = torch.sigmoid(disease.logits.detach().float())
        states = self.thresholds.states(probs)
        prompt_states = states
        if labels is not None:
            prompt_states = label_states(labels).long().to(states.device)
            if use_decided is not None:
                prompt_states = torch.where(use_decided.to(states.device)[:, None], states, prompt_states)
        parts: list[Tensor] = [self.proj["visual"](vis.tokens) * vis.mask.unsqueeze(-1)]
        # step 3: knowledge
        subgraphs = None
        if self.graph is not None:
            subgraphs = self._subgraphs(probs, states, labels if teacher_forcing else None, len(study_ids))
            ms = self.graph(subgraphs.graphs)                                  # (U, ...) distinct graphs
            idx = subgraphs.index.to(images.device)
            scales, scale_mask = ms.scales[idx], ms.scale_mask[idx]            # (B, S, Dg), (B, S)
            nodes = GraphOutput(ms.graph.nodes[idx], ms.graph.mask[idx], ms.graph.level[idx])
            parts.append(self.proj["kg"](scales) * scale_mask.unsqueeze(-1))
            # step 4: cross-attention both ways
            if self.fusion is not None:
                queries = (scales, scale_mask) if self.config.kg.kg2v_queries == KG2VQueries.SCALES \
                    else (nodes.nodes, nodes.mask)
                fused = self.fusion(vis.tokens, nodes.nodes, nodes.mask, vis.mask, *queries)
                parts += [self.proj["v2kg"](fused.v2kg), self.proj["kg2v"](fused.kg2v)]
        # step 5: disease-aware vision tokens
        retrieved = None
        if self.bank_attention is not None:
            tokens = disease.tokens
            if self.bank is not None and len(self.bank):
                # query = the disease's attention-weighted visual token: the space the bank was mined in
                query = torch.einsum("bqn,bnc->bqc", disease.attention, vis.tokens)
                retrieved = retrieve_for_batch(self.bank, query, study_ids, self.config.disease_tokens.top_k,
                                               training=self.training)
                tokens = self.bank_attention(tokens, retrieved.tokens, retrieved.mask)
            parts.append(self.proj["disease"](tokens))
        # step 6 (first half): the prefix, in the documented order
        prefix = torch.cat(parts, dim=1)
        return Encoded(prefix, disease, vis.tokens.detach(), subgraphs, retrieved, states, prompt_states)

    def _subgraphs(self, probs: Tensor, states: Tensor, labels: Tensor | None, batch: int) -> SubgraphBatch:
        assert self.provider is not None
        if self.config.kg.mode == KGMode.GLOBAL:
            g = self.provider.global_graph()
            return SubgraphBatch(g.graphs.to(probs.device), torch.zeros(batch, dtype=torch.long), g.subgraphs)
        if labels is not None:   # teacher forcing: the report's own positive (and uncertain) labels
            positive = positive_mask(labels, self.config.qformer.uncertain_policy)
        else:
            positive = states == STATES.index(State.POSITIVE)
            # a study needs some seed: fall back to the observation closest to its threshold
            ratio = probs / torch.tensor(self.thresholds.positive, dtype=probs.dtype, device=probs.device)
            positive[torch.arange(batch), ratio.argmax(1)] |= ~positive.any(1)
        seed_sets = [tuple(o for o, p in zip(OBSERVATIONS, row) if p) for row in positive.tolist()]
        sub = self.provider.batch(seed_sets)
        return SubgraphBatch(sub.graphs.to(probs.device), sub.index, sub.subgraphs)

    # ---- training ----
    def forward(self, images: Tensor, view_mask: Tensor, study_ids: list[str], labels: Tensor,
                reports: list[str], teacher_forcing: bool = False, use_decided: Tensor | None = None) -> ModelOutput:
        enc = self.encode(images, view_mask, study_ids, labels, teacher_forcing, use_decided)
        targets = report_ids(self.tokenizer, reports, self.config.max_report_tokens)
        embeds, mask, lm_labels = splice_for_training(embed_tokens(self.llm), self.prompt, enc.prefix,
                                                      targets, self.tokenizer.pad_token_id, enc.prompt_states)
        lm_loss = self.llm(inputs_embeds=embeds, attention_mask=mask, labels=lm_labels).loss
        cls_loss = enc.disease.loss if enc.disease.loss is not None else lm_loss.new_zeros(())
        return ModelOutput(lm_loss + self.config.classifier_weight * cls_loss, lm_loss, cls_loss, enc)

    @torch.no_grad()
    def probabilities(self, images: Tensor, view_mask: Tensor) -> Tensor:
        """The classifier alone (steps 1-2): (B, 14) probabilities; what thresholds are fit on."""
        was_training = self.training
        self.eval()
        try:
            vis = self.vision(images, view_mask)
            return torch.sigmoid(self.qformer(vis.tokens, vis.mask).logits.float())
        finally:
            self.train(was_training)

    def text_loss(self, labels: Tensor, reports: list[str]) -> Tensor:
        """The LM loss of ``reports`` given the prompt alone, with their own labels' states in the
        diagnosis slot and no image or knowledge tokens: the decoder warm-up's objective."""
        embed = embed_tokens(self.llm)
        targets = report_ids(self.tokenizer, reports, self.config.max_report_tokens)
        states = label_states(labels).long().to(embed.weight.device) if self.config.diagnosis_prompt else None
        empty = embed.weight.new_zeros(len(reports), 0, embed.embedding_dim)
        embeds, mask, lm_labels = splice_for_training(embed, self.prompt, empty, targets,
                                                      self.tokenizer.pad_token_id, states)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=lm_labels).loss

    # ---- the one generate path: validation, test, batch and the API all call this ----
    @torch.no_grad()
    def prompt_embeds(self, images: Tensor, view_mask: Tensor, study_ids: list[str],
                      embed: Callable[[Tensor], Tensor] | None = None) -> tuple[Tensor, Tensor, Encoded]:
        """Steps 1-6 without decoding: the spliced prompt (B, T, H), its mask (B, T), and what made it.
        ``embed``: token ids → embeddings of the LLM that decodes (default: ``self.llm``'s table)."""
        was_training = self.training
        self.eval()
        try:
            enc = self.encode(images, view_mask, study_ids)
            embeds, mask = splice_for_generation(embed or embed_tokens(self.llm), self.prompt, enc.prefix,
                                                 enc.prompt_states)
        finally:
            self.train(was_training)
        return embeds, mask, enc

    @torch.no_grad()
    def generate(self, images: Tensor, view_mask: Tensor, study_ids: list[str],
                 settings: GenerationSettings | None = None, backend: LLMBackend | None = None,
                 on_token: TokenCallback | None = None,
                 on_decided: DecidedCallback | None = None) -> list[GenerationResult]:
        """Reports for a batch: ``prompt_embeds`` → ``backend`` (default: HF on ``self.llm``) → text.
        ``on_decided`` hears each row's decided findings before decoding starts (a stream needs
        them to know which sentences the coverage pass may replace)."""
        settings = settings or GenerationSettings()
        embeds, mask, enc = self.prompt_embeds(images, view_mask, study_ids)
        announce(on_decided, enc.states)
        was_training = self.llm.training
        self.llm.eval()
        try:
            backend = backend or HFBackend(self.llm, self.tokenizer)
            completions = backend.generate(embeds, mask, settings, on_token)
            return self.results(study_ids, completions, enc, int(mask.shape[1]), settings, backend)
        finally:
            self.llm.train(was_training)

    def results(self, study_ids: list[str], completions: list[Completion], enc: Encoded,
                prompt_tokens: int, settings: GenerationSettings,
                backend: LLMBackend | None = None) -> list[GenerationResult]:
        """Completions → results; with ``settings.cover_decisions`` and a ``backend``, then the
        coverage pass (generator.coverage)."""
        texts = [t.strip() for t in self.tokenizer.batch_decode([c.token_ids for c in completions],
                                                                 skip_special_tokens=True)]
        if settings.drop_repeated_sentences:
            texts = [drop_repeated_sentences(t)[0] for t in texts]
        probs = torch.sigmoid(enc.disease.logits.float()).cpu().numpy()
        states = enc.states.cpu().numpy()
        out = [GenerationResult(sid, text, {o.value: float(p) for o, p in zip(OBSERVATIONS, probs[b])},
                                 self._evidence(enc, b), state_names(states[b]), prompt_tokens, len(c.token_ids),
                                 c.finish_reason)
                for b, (sid, text, c) in enumerate(zip(study_ids, texts, completions))]
        if settings.cover_decisions and backend is not None:
            self.cover(out, enc, settings, backend)
        if not settings.evidence:
            return out
        checker = checker_for(self.thresholds)     # the final text, against this model's own probabilities
        sources = self.bank.meta.study_ids.tolist() if self.bank is not None else []
        reports = self.bank.reports if self.bank is not None else {}
        cuts = self.thresholds.cuts()
        attention = self._attention_maps(enc)
        for b, r in enumerate(out):
            r.thresholds, r.attention = cuts, attention[b]
            reading = read_report(r.report)       # read once: the check and the evidence both use it
            r.warnings = [w.to_dict() for w in checker.check(r.report, probs[b].tolist(), reading)]
            subgraph = enc.subgraphs.subgraphs[int(enc.subgraphs.index[b])] if enc.subgraphs is not None else None
            r.evidence.graph = study_graph(subgraph)
            r.sentences = [e.to_dict() for e in explain(r.report, r.probabilities, self.thresholds, subgraph,
                                                        r.evidence.retrieved, sources, reports, reading)]
        return out

    @torch.no_grad()
    def cover(self, results: list[GenerationResult], enc: Encoded, settings: GenerationSettings,
              backend: LLMBackend) -> None:
        """In place: each report that leaves out a finding decided positive gets the decoder's own
        sentences for it (generator.coverage): pass 1 prompts with all of a study's missing
        findings, pass 2 (``settings.cover_passes`` ≥ 2) with each one still missing alone, then
        ``settings.cover_samples`` seeded samples per finding still missing. Needs
        the diagnosis prompt; without it, nothing changes."""
        if self.prompt.diagnosis is None:
            return
        decided = decided_findings(enc.states)
        greedy_passes = settings.cover_passes
        for n in range(greedy_passes + settings.cover_samples):
            need = {b: m for b, r in enumerate(results) if (m := missing_findings(r.report, decided[b]))}
            # pass 1: one row per study, all its missing findings; later passes: one per finding
            asks = [(b, tuple(m)) for b, m in need.items()] if n == 0 else \
                [(b, (o,)) for b, m in need.items() for o in m]
            if not asks:
                return
            if n < greedy_passes:
                texts = self._cover_pass(enc, asks, settings, backend)
            else:   # seeded samples, one row per call: a sample must not depend on the rest of the batch
                sample = replace(settings, temperature=1.0, top_p=1.0, num_beams=1, seed=n - greedy_passes)
                texts = [self._cover_pass(enc, [ask], sample, backend)[0] for ask in asks]
            for (b, findings), text in zip(asks, texts):
                r = results[b]
                merged = merge(r.report, text, decided[b], [o for o in findings if o in
                                                            missing_findings(r.report, decided[b])])
                if merged.covered:
                    r.report = merged.report
                    r.covered += [o.value for o in merged.covered]
                    r.added += list(merged.added)

    def _cover_pass(self, enc: Encoded, asks: list[tuple[int, tuple[Observation, ...]]],
                    settings: GenerationSettings, backend: LLMBackend) -> list[str]:
        """One decoding pass: row (study b, findings) has study b's prefix and a prompt listing only
        those findings as positive."""
        positive = STATES.index(State.POSITIVE)
        states = torch.full((len(asks), len(OBSERVATIONS)), STATES.index(State.NEGATIVE), dtype=torch.long)
        for i, (_, findings) in enumerate(asks):
            for o in findings:
                states[i, OBSERVATIONS.index(o)] = positive
        prefix = enc.prefix[torch.tensor([b for b, _ in asks], device=enc.prefix.device)]
        was_training = self.llm.training
        self.llm.eval()
        try:
            embeds, mask = splice_for_generation(embed_tokens(self.llm), self.prompt, prefix, states.to(prefix.device))
            completions = backend.generate(embeds, mask, settings, None)
        finally:
            self.llm.train(was_training)
        return [t.strip() for t in self.tokenizer.batch_decode([c.token_ids for c in completions],
                                                                skip_special_tokens=True)]

    def _attention_maps(self, enc: Encoded) -> list[dict[str, Any]]:
        """Each study's disease-query attention (14, N) as a grid per observation and view: the
        vision tokens are a g×g grid per view (averaged over views, or one grid per view)."""
        att = enc.disease.attention.float().cpu()                       # (B, 14, N)
        per_view = self.vision.tokens_per_view
        g = math.isqrt(per_view)
        views = att.shape[-1] // per_view
        maps = att.reshape(att.shape[0], len(OBSERVATIONS), views, per_view)
        return [{"grid": g, "maps": {o.value: [[round(v, 5) for v in view] for view in maps[b, j].tolist()]
                                     for j, o in enumerate(OBSERVATIONS)}} for b in range(att.shape[0])]

    @staticmethod
    def _evidence(enc: Encoded, b: int) -> Evidence:
        ev = Evidence()
        if enc.subgraphs is not None:
            ev.seeds, ev.node_ids = enc.subgraphs.seeds(b), enc.subgraphs.node_ids(b)
        if enc.retrieved is not None:
            ids = enc.retrieved.ids[b].tolist()
            ev.retrieved = {o.value: [i for i in row if i >= 0] for o, row in zip(OBSERVATIONS, ids)}
        return ev

