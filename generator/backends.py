"""LLM backends: spliced prompt embeddings (B, T, H) + mask (B, T) → one ``Completion`` per row.

- ``HFBackend``: transformers ``generate(inputs_embeds=…)``: greedy, beam, sampling; the reference.
- ``VLLMBackend``: offline ``vllm.LLM(enable_prompt_embeds=True)`` on an exported LLM directory.
- ``RemoteVLLMBackend``: a ``vllm serve DIR --enable-prompt-embeds`` server, called with the
  ``openai`` client: base64 ``torch.save`` tensors on ``/v1/completions``, many requests in flight.
vLLM has no beam search for ``prompt_embeds`` inputs: its backends refuse ``num_beams > 1``.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import openai
import torch
from torch import Tensor
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from generator.llm import generate_from_embeds
from generator.settings import GenerationSettings

# on_token(row, token_id): called while decoding, from the thread that generates
TokenCallback = Callable[[int, int], None]
# on_decided(row, findings): a row's findings decided positive, known before its first token
DecidedCallback = Callable[[int, list[str]], None]


class BackendKind(str, Enum):
    HF = "hf"
    VLLM = "vllm"                  # offline, in this process
    VLLM_REMOTE = "vllm-remote"    # a `vllm serve --enable-prompt-embeds` server


class BackendError(RuntimeError):
    pass


@dataclass
class Completion:
    token_ids: list[int]           # the new tokens, eos and padding removed
    finish_reason: str             # "stop" (eos) | "length" (max_new_tokens)


class LLMBackend(Protocol):
    kind: BackendKind
    max_batch: int | None          # rows per call the backend wants; None → send everything at once

    def generate(self, embeds: Tensor, mask: Tensor, settings: GenerationSettings,
                 on_token: TokenCallback | None = None) -> list[Completion]: ...


def trim(ids: Sequence[int], eos_id: int | None, pad_id: int | None, max_new_tokens: int) -> Completion:
    """Cut a generated row at its first eos; drop padding. Finished before the limit → "stop"."""
    ids = list(ids)
    if eos_id is not None and eos_id in ids:
        return Completion(ids[:ids.index(eos_id)], "stop")
    ids = [i for i in ids if i != pad_id]
    return Completion(ids, "length" if len(ids) >= max_new_tokens else "stop")


class _StepTap(LogitsProcessor):
    """Reports each row's newest token as decoding goes; scores pass through unchanged.

    With ``inputs_embeds`` only, ``input_ids`` holds just the generated ids, so at step t the
    processor sees tokens 0..t-1. A row stops reporting at its eos (later positions are padding);
    ``sent[row]`` counts what was reported, and ``HFBackend`` reports the rest after ``generate``.
    """

    def __init__(self, on_token: TokenCallback, eos_id: int | None) -> None:
        self.on_token, self.eos_id = on_token, eos_id
        self.sent: dict[int, int] = {}
        self.finished: set[int] = set()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1]:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                if row in self.finished:
                    continue
                if token == self.eos_id:
                    self.finished.add(row)
                    continue
                self.on_token(row, token)
                self.sent[row] = self.sent.get(row, 0) + 1
        return scores


class HFBackend:
    """Batched ``generate(inputs_embeds=…)``; the prompt length is fixed, so rows need no padding."""

    kind = BackendKind.HF

    def __init__(self, llm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_batch: int | None = 32) -> None:
        self.llm, self.tokenizer, self.max_batch = llm, tokenizer, max_batch

    def generate(self, embeds: Tensor, mask: Tensor, settings: GenerationSettings,
                 on_token: TokenCallback | None = None) -> list[Completion]:
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        kwargs: dict[str, Any] = {
            "max_new_tokens": settings.max_new_tokens, "num_beams": settings.num_beams,
            "repetition_penalty": settings.repetition_penalty, "length_penalty": settings.length_penalty,
            "no_repeat_ngram_size": settings.no_repeat_ngram_size, "do_sample": settings.sampling,
            "eos_token_id": eos, "pad_token_id": pad}
        if settings.min_new_tokens:
            kwargs["min_new_tokens"] = settings.min_new_tokens
        if settings.sampling:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        # beams reorder rows at every step: only greedy / sampling stream token by token
        tap = _StepTap(on_token, eos) if on_token is not None and settings.num_beams == 1 else None
        if tap is not None:
            kwargs["logits_processor"] = LogitsProcessorList([tap])
        with torch.random.fork_rng(devices=[] if embeds.device.type == "cpu" else [embeds.device],
                                   enabled=settings.seed is not None):
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
            out = generate_from_embeds(self.llm, embeds, mask, **kwargs).tolist()
        done = [trim(row, eos, pad, settings.max_new_tokens) for row in out]
        if on_token is not None:
            for row, c in enumerate(done):
                # what the tap did not report (the last token; beam search: everything)
                for token in c.token_ids[(tap.sent.get(row, 0) if tap else 0):]:
                    on_token(row, token)
        return done


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise BackendError(
            "the vLLM backend needs the `vllm` package (pip install 'r2genkg[gpu]', a CUDA GPU; vllm>=0.11 for "
            f"prompt_embeds on the V1 engine). Use --engine hf without it. Import error: {exc}") from exc
    return vllm


def _refuse_beams(settings: GenerationSettings) -> None:
    if settings.num_beams > 1:
        raise BackendError(f"vLLM does not run beam search on prompt_embeds inputs (num_beams={settings.num_beams}); "
                           "use greedy (generation.num_beams=1) or the hf engine")


def _sampling_kwargs(settings: GenerationSettings, eos_id: int | None) -> dict[str, Any]:
    """vLLM SamplingParams / completion fields equal to HF's decoding (temperature 0 = greedy)."""
    kwargs: dict[str, Any] = {"max_tokens": settings.max_new_tokens, "temperature": settings.temperature,
                              "top_p": settings.top_p, "repetition_penalty": settings.repetition_penalty}
    if settings.seed is not None:
        kwargs["seed"] = settings.seed
    if settings.min_new_tokens:
        kwargs["min_tokens"] = settings.min_new_tokens
    if eos_id is not None:
        kwargs["stop_token_ids"] = [eos_id]
    return kwargs


class VLLMBackend:
    """In-process vLLM on ``export_llm``'s directory; all prompts go in one call (continuous batching)."""

    kind = BackendKind.VLLM
    max_batch = None

    def __init__(self, model_dir: str | Path, tokenizer: PreTrainedTokenizerBase, **llm_kwargs: Any) -> None:
        vllm = _import_vllm()
        self.vllm, self.tokenizer = vllm, tokenizer
        self.llm = vllm.LLM(model=str(model_dir), enable_prompt_embeds=True, **llm_kwargs)

    def generate(self, embeds: Tensor, mask: Tensor, settings: GenerationSettings,
                 on_token: TokenCallback | None = None) -> list[Completion]:
        _refuse_beams(settings)
        params = self.vllm.SamplingParams(**_sampling_kwargs(settings, self.tokenizer.eos_token_id))
        prompts = [{"prompt_embeds": e[m.bool()].detach().cpu()} for e, m in zip(embeds, mask)]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        done = [trim(o.outputs[0].token_ids, self.tokenizer.eos_token_id, None, settings.max_new_tokens)
                for o in outputs]
        _replay(done, on_token)
        return done


def encode_embeds(tensor: Tensor) -> str:
    """vLLM's wire format for ``prompt_embeds``: base64 of ``torch.save`` bytes of a (T, H) tensor."""
    buf = io.BytesIO()
    torch.save(tensor.detach().cpu().contiguous(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# completions fields the openai client takes as arguments; vLLM's own (stop_token_ids, min_tokens,
# repetition_penalty, prompt_embeds, return_token_ids) go in extra_body
_OPENAI_FIELDS = frozenset({"max_tokens", "temperature", "top_p", "seed"})


class RemoteVLLMBackend:
    """Sends each row to ``{url}/completions`` as ``prompt_embeds``; ``concurrency`` requests in flight.

    The openai client retries what may pass (connection errors, 408, 409, 429, 5xx) ``max_retries``
    times with backoff, and never a 4xx such as 401. ``prompt=""`` because the client requires a
    prompt; vLLM takes an empty one as absent and reads ``prompt_embeds`` instead.
    """

    kind = BackendKind.VLLM_REMOTE
    max_batch = None

    def __init__(self, url: str, model: str, tokenizer: PreTrainedTokenizerBase, api_key: str | None = None,
                 concurrency: int = 64, timeout: float = 300.0, max_retries: int = 2,
                 client: openai.OpenAI | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise BackendError(f"vLLM url must be http(s)://host:port/v1, got {url!r}")
        self.url, self.model, self.tokenizer = url.rstrip("/"), model, tokenizer
        self.client = client or openai.OpenAI(base_url=self.url, api_key=api_key or "EMPTY",
                                              max_retries=max_retries, timeout=timeout)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="vllm-remote")

    def generate(self, embeds: Tensor, mask: Tensor, settings: GenerationSettings,
                 on_token: TokenCallback | None = None) -> list[Completion]:
        _refuse_beams(settings)
        fields = _sampling_kwargs(settings, self.tokenizer.eos_token_id)
        known = {k: v for k, v in fields.items() if k in _OPENAI_FIELDS}     # the client's own parameters
        extra = {k: v for k, v in fields.items() if k not in _OPENAI_FIELDS}  # vLLM's, sent in the body
        rows = [e[m.bool()] for e, m in zip(embeds, mask)]
        done = list(self.pool.map(lambda row: self._one(row, known, extra, settings.max_new_tokens), rows))
        _replay(done, on_token)
        return done

    def _one(self, row: Tensor, known: dict[str, Any], extra: dict[str, Any], max_new_tokens: int) -> Completion:
        try:
            response = self.client.completions.create(
                model=self.model, prompt="", **known,
                extra_body={"prompt_embeds": encode_embeds(row), "return_token_ids": True, **extra})
        except openai.APIStatusError as exc:
            raise BackendError(f"vLLM server {self.url}: HTTP {exc.status_code}: {_error_text(exc)}") from exc
        except openai.APIConnectionError as exc:   # refused, reset, timed out (after the retries)
            raise BackendError(f"vLLM server {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        choice = response.choices[0]
        ids = (choice.model_extra or {}).get("token_ids")   # vLLM's return_token_ids
        if ids is None:   # servers without return_token_ids: re-tokenise the text
            ids = self.tokenizer.encode(choice.text or "", add_special_tokens=False)
        c = trim(ids, self.tokenizer.eos_token_id, None, max_new_tokens)
        return Completion(c.token_ids, choice.finish_reason or c.finish_reason)

    def close(self) -> None:
        self.pool.shutdown(wait=False)
        self.client.close()


def _error_text(exc: openai.APIStatusError) -> str:
    """The server's error message on one line (vLLM: ``{"error": {"message": …}}``), at most 300 chars."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(message or exc.response.text or exc.message).split())[:300]


def _replay(done: list[Completion], on_token: TokenCallback | None) -> None:
    if on_token is not None:
        for row, c in enumerate(done):
            for token in c.token_ids:
                on_token(row, token)
