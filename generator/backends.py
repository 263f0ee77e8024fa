"""LLM backends: spliced prompt embeddings (B, T, H) + mask (B, T) → one ``Completion`` per row.

- ``HFBackend``: transformers ``generate(inputs_embeds=…)``: greedy, beam, sampling; the reference.
- ``VLLMBackend``: offline ``vllm.LLM`` on an ``r2genkg export-llm`` folder, through our plugin.
- ``RemoteVLLMBackend``: a ``vllm serve EXPORT`` server, called with the ``openai`` client, many
  requests in flight.
Both take a ``VLLMMode``: the spliced prompt as multimodal embeddings (EMBEDS, the default), the
views for vLLM's own copy of the adapter (INSIDE), or ``prompt_embeds`` (greedy only).
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

import numpy as np
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
    VLLM_REMOTE = "vllm-remote"    # a `vllm serve EXPORT` server


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
            "the vLLM backend needs the `vllm` package (pip install 'r2genkg[gpu]' on a CUDA GPU, or the CPU build: "
            f"scripts/vllm_cpu_env.sh). Use --engine hf without it. Import error: {exc}") from exc
    return vllm


class VLLMMode(str, Enum):
    """How a study reaches vLLM, which serves an ``r2genkg export-llm`` folder through our plugin."""

    EMBEDS = "embeds"                 # adapter outside: each spliced prompt (T, H) goes as image_embeds
    INSIDE = "inside"                 # adapter inside vLLM: the views go as images; the plugin splices
    PROMPT_EMBEDS = "prompt-embeds"   # the older path: prompt_embeds (greedy only; kept to compare)


# vllm.LLM / `vllm serve` settings per mode (docs/deploy.md gives the same as command-line flags)
LLM_KWARGS: dict[VLLMMode, dict[str, Any]] = {
    VLLMMode.EMBEDS: {"enable_mm_embeds": True, "limit_mm_per_prompt": {"image": 0}},
    VLLMMode.INSIDE: {"enable_mm_embeds": True},     # views; spliced prompts for the coverage pass
    VLLMMode.PROMPT_EMBEDS: {"enable_prompt_embeds": True, "limit_mm_per_prompt": {"image": 0}},
}


def _check_beams(settings: GenerationSettings, mode: VLLMMode) -> None:
    """vLLM's beam search scores with the log-probabilities alone: what it cannot do is refused."""
    if settings.num_beams == 1:
        return
    if mode is VLLMMode.PROMPT_EMBEDS:
        raise BackendError(f"vLLM does not run beam search on prompt_embeds inputs (num_beams={settings.num_beams}); "
                           "use the embeds or inside mode (--vllm-mode), greedy, or the hf engine")
    unsupported = {name: value for name, value in (("repetition_penalty", settings.repetition_penalty != 1.0),
                                                   ("no_repeat_ngram_size", settings.no_repeat_ngram_size != 0),
                                                   ("min_new_tokens", settings.min_new_tokens != 0),
                                                   ("temperature", settings.sampling)) if value}
    if unsupported:
        raise BackendError(f"vLLM's beam search (num_beams={settings.num_beams}) cannot apply "
                           f"{', '.join(unsupported)}; leave them at their defaults or use the hf engine")


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


# step(beams): for each (row, generated tokens so far), the top-k next tokens → log-probabilities
BeamStep = Callable[[list[tuple[int, list[int]]], int], list[dict[int, float]]]
DEAD = -1.0e9


def hf_beam_search(step: BeamStep, rows: int, settings: GenerationSettings, eos_id: int | None) -> list[list[int]]:
    """Beam search by transformers' rules (``GenerationMixin._beam_search``, early_stopping=False),
    over any engine that gives the top-k next-token log-probabilities of a prefix.

    Each step takes the 2 × num_beams best continuations of a row's beams by summed log-probability.
    Of those, the ones ending in eos (or at max_new_tokens) among the first num_beams join the
    finished hypotheses, scored by log-probability / (generated length, eos counted) ** length_penalty;
    the best num_beams that do not end run on. A row stops when no running beam can beat its worst
    finished hypothesis (scored at the current length) or at max_new_tokens. vLLM's own beam search
    differs in two rules (docs/serving.md): it divides by the prompt's length plus the generated one,
    and it keeps every eos among a beam's 2 × num_beams candidates.
    """
    n, lp, limit = settings.num_beams, settings.length_penalty, settings.max_new_tokens
    running: list[list[tuple[list[int], float]]] = [[([], 0.0)] for _ in range(rows)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(rows)]
    open_rows = set(range(rows))
    for length in range(limit):   # `length` tokens generated so far
        order = sorted(open_rows)
        asks = [(r, tokens) for r in order for tokens, _ in running[r]]
        if not asks:
            break
        answers = iter(step(asks, 2 * n))
        at_limit = length + 1 >= limit
        for r in order:
            candidates = [(score + lp_tok, tokens + [tok]) for tokens, score in running[r]
                          for tok, lp_tok in next(answers).items()]
            candidates.sort(key=lambda c: c[0], reverse=True)
            candidates = candidates[:2 * n]
            stops = [at_limit or c[1][-1] == eos_id for c in candidates]
            for rank, ((score, tokens), stop) in enumerate(zip(candidates, stops)):
                if stop and rank < n:
                    finished[r].append((score / (length + 1) ** lp, tokens))
            finished[r] = sorted(finished[r], key=lambda f: f[0], reverse=True)[:n]
            running[r] = [(tokens, score) for (score, tokens), stop in zip(candidates, stops) if not stop][:n]
            # transformers' heuristic: the best running beam, scored at the current length
            best = running[r][0][1] / (length + 1) ** lp if running[r] else DEAD
            if at_limit or not running[r] or (len(finished[r]) == n and best <= finished[r][-1][0]):
                open_rows.discard(r)
    return [finished[r][0][1] if finished[r] else (running[r][0][0] if running[r] else []) for r in range(rows)]


def view_images(views: Sequence[Any]) -> list[Any]:
    """A study's (H, W) uint8 views → PIL images (mode L), what vLLM takes as image items."""
    from PIL import Image

    return [v if isinstance(v, Image.Image) else Image.fromarray(np.asarray(v, dtype=np.uint8)) for v in views]


class VLLMBackend:
    """In-process vLLM on an export folder (our plugin's model); all prompts go in one call.

    ``mode`` EMBEDS and INSIDE send multimodal prompts (the placeholder token and the study as its
    image data); PROMPT_EMBEDS sends ``prompt_embeds``. Beam search follows transformers' rules
    (``hf_beam_search``), one vLLM call per step for every live beam, as ``LLM.beam_search`` does
    with vLLM's own rules.
    """

    kind = BackendKind.VLLM
    max_batch = None

    def __init__(self, model_dir: str | Path, tokenizer: PreTrainedTokenizerBase,
                 mode: VLLMMode | str = VLLMMode.EMBEDS, **llm_kwargs: Any) -> None:
        from generator.vllm_plugin.manifest import ExportManifest

        vllm = _import_vllm()
        import generator.vllm_plugin as plugin

        plugin.register()
        self.vllm, self.tokenizer, self.mode = vllm, tokenizer, VLLMMode(mode)
        self.manifest = ExportManifest.read(model_dir)
        self.takes_views = self.mode is VLLMMode.INSIDE
        self.llm = vllm.LLM(model=str(model_dir), **(LLM_KWARGS[self.mode] | llm_kwargs))
        self.placeholder = self.manifest.placeholder_id

    def check(self, settings: GenerationSettings) -> None:
        _check_beams(settings, self.mode)

    def generate(self, embeds: Tensor, mask: Tensor, settings: GenerationSettings,
                 on_token: TokenCallback | None = None) -> list[Completion]:
        _check_beams(settings, self.mode)
        rows = [e[m.bool()].detach().cpu() for e, m in zip(embeds, mask)]
        if self.mode is VLLMMode.PROMPT_EMBEDS:
            prompts: list[dict[str, Any]] = [{"prompt_embeds": row} for row in rows]
        else:   # a list of one (T, H) tensor: one embedding item (a bare 2-D tensor would be read as images)
            prompts = [{"prompt_token_ids": [self.placeholder], "multi_modal_data": {"image": [row]}} for row in rows]
        return self._run(prompts, settings, on_token)

    def generate_views(self, views: Sequence[Sequence[Any]], settings: GenerationSettings,
                       on_token: TokenCallback | None = None) -> list[Completion]:
        """INSIDE: each study's views as images; vLLM's copy of the adapter splices the prompt."""
        _check_beams(settings, self.mode)
        prompts = [{"prompt_token_ids": [self.placeholder] * len(v), "multi_modal_data": {"image": view_images(v)}}
                   for v in views]
        return self._run(prompts, settings, on_token)

    def _run(self, prompts: list[dict[str, Any]], settings: GenerationSettings,
             on_token: TokenCallback | None) -> list[Completion]:
        eos = self.tokenizer.eos_token_id
        if settings.num_beams > 1:
            # transformers' beam search rules over vLLM's engine, one step of every live beam per call
            # (vLLM's LLM.beam_search runs the same way, with its own rules: docs/serving.md)
            def step(asks: list[tuple[int, list[int]]], k: int) -> list[dict[int, float]]:
                params = self.vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=k)
                beams = [prompts[row] | {"prompt_token_ids": prompts[row]["prompt_token_ids"] + tokens}
                         for row, tokens in asks]
                outputs = self.llm.generate(beams, params, use_tqdm=False)
                return [{t: lp.logprob for t, lp in o.outputs[0].logprobs[0].items()} for o in outputs]

            ids = hf_beam_search(step, len(prompts), settings, eos)
        else:
            params = self.vllm.SamplingParams(**_sampling_kwargs(settings, eos))
            ids = [o.outputs[0].token_ids for o in self.llm.generate(prompts, params, use_tqdm=False)]
        done = [trim(row, eos, None, settings.max_new_tokens) for row in ids]
        _replay(done, on_token)
        return done

    def close(self) -> None:
        """Stop vLLM's engine process (and its workers) now, not at interpreter exit."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()


def encode_embeds(tensor: Tensor) -> str:
    """vLLM's wire format for ``prompt_embeds``: base64 of ``torch.save`` bytes of a (T, H) tensor."""
    buf = io.BytesIO()
    torch.save(tensor.detach().cpu().contiguous(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# fields the openai client takes as arguments; vLLM's own (stop_token_ids, min_tokens,
# repetition_penalty, prompt_embeds, return_token_ids, use_beam_search, length_penalty) go in extra_body
_OPENAI_FIELDS = frozenset({"max_tokens", "temperature", "top_p", "seed", "n"})


def png_data_url(view: Any) -> str:
    """A (H, W) uint8 view → a lossless ``data:image/png;base64,…`` URL (an ``image_url`` part)."""
    buf = io.BytesIO()
    view_images([view])[0].save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class RemoteVLLMBackend:
    """A ``vllm serve EXPORT`` server; ``concurrency`` requests in flight.

    - EMBEDS: ``/chat/completions`` with one ``image_embeds`` part per study (the spliced prompt);
      the server runs ``--enable-mm-embeds --limit-mm-per-prompt '{"image": 0}'``.
    - INSIDE: the views as ``image_url`` parts (lossless PNG); the coverage pass sends spliced
      prompts as in EMBEDS, so the server needs ``--enable-mm-embeds`` too.
    - PROMPT_EMBEDS: ``/completions`` with ``prompt_embeds`` (greedy only). ``prompt=""`` because the
      client requires a prompt; vLLM takes an empty one as absent.
    Beam search (EMBEDS, INSIDE): vLLM's own ``use_beam_search`` with ``n`` = the beam width (the best
    beam is the first choice), so its rules are vLLM's, not transformers' (docs/serving.md: a chat
    request cannot continue a beam from token ids, which ``hf_beam_search`` needs).
    The openai client retries what may pass (connection errors, 408, 409, 429, 5xx) ``max_retries``
    times with backoff, and never a 4xx such as 401.
    """

    kind = BackendKind.VLLM_REMOTE
    max_batch = None

    def __init__(self, url: str, model: str, tokenizer: PreTrainedTokenizerBase, api_key: str | None = None,
                 concurrency: int = 64, timeout: float = 300.0, max_retries: int = 2,
                 client: openai.OpenAI | None = None, mode: VLLMMode | str = VLLMMode.EMBEDS) -> None:
        if not url.startswith(("http://", "https://")):
            raise BackendError(f"vLLM url must be http(s)://host:port/v1, got {url!r}")
        self.url, self.model, self.tokenizer, self.mode = url.rstrip("/"), model, tokenizer, VLLMMode(mode)
        self.takes_views = self.mode is VLLMMode.INSIDE
        self.client = client or openai.OpenAI(base_url=self.url, api_key=api_key or "EMPTY",
                                              max_retries=max_retries, timeout=timeout)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="vllm-remote")

    def check(self, settings: GenerationSettings) -> None:
        _check_beams(settings, self.mode)

    def _fields(self, settings: GenerationSettings) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the client's own arguments, vLLM's extra_body) for ``settings``."""
        _check_beams(settings, self.mode)
        fields = _sampling_kwargs(settings, self.tokenizer.eos_token_id) | {"return_token_ids": True}
        if settings.num_beams > 1:
            fields.update(n=settings.num_beams, use_beam_search=True, length_penalty=settings.length_penalty)
        known = {k: v for k, v in fields.items() if k in _OPENAI_FIELDS}
        return known, {k: v for k, v in fields.items() if k not in _OPENAI_FIELDS}

    def generate(self, embeds: Tensor, mask: Tensor, settings: GenerationSettings,
                 on_token: TokenCallback | None = None) -> list[Completion]:
        known, extra = self._fields(settings)
        rows = [e[m.bool()] for e, m in zip(embeds, mask)]
        if self.mode is VLLMMode.PROMPT_EMBEDS:
            requests = [lambda r=row: self.client.completions.create(
                model=self.model, prompt="", **known, extra_body={"prompt_embeds": encode_embeds(r), **extra})
                for row in rows]
        else:
            requests = [self._chat([{"type": "image_embeds", "image_embeds": encode_embeds(row)}], known, extra)
                        for row in rows]
        return self._send(requests, settings, on_token)

    def generate_views(self, views: Sequence[Sequence[Any]], settings: GenerationSettings,
                       on_token: TokenCallback | None = None) -> list[Completion]:
        known, extra = self._fields(settings)
        requests = [self._chat([{"type": "image_url", "image_url": {"url": png_data_url(v)}} for v in study],
                               known, extra) for study in views]
        return self._send(requests, settings, on_token)

    def _chat(self, content: list[dict[str, Any]], known: dict[str, Any],
              extra: dict[str, Any]) -> Callable[[], Any]:
        return lambda: self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": content}], **known, extra_body=extra)

    def _send(self, requests: list[Callable[[], Any]], settings: GenerationSettings,
              on_token: TokenCallback | None) -> list[Completion]:
        done = list(self.pool.map(lambda request: self._one(request, settings.max_new_tokens), requests))
        _replay(done, on_token)
        return done

    def _one(self, request: Callable[[], Any], max_new_tokens: int) -> Completion:
        try:
            response = request()
        except openai.APIStatusError as exc:
            raise BackendError(f"vLLM server {self.url}: HTTP {exc.status_code}: {_error_text(exc)}") from exc
        except openai.APIConnectionError as exc:   # refused, reset, timed out (after the retries)
            raise BackendError(f"vLLM server {self.url} unreachable: {type(exc).__name__}: {exc}") from exc
        choice = response.choices[0]
        text = choice.message.content if hasattr(choice, "message") else choice.text
        ids = (choice.model_extra or {}).get("token_ids")   # vLLM's return_token_ids
        if ids is None:   # servers without return_token_ids: re-tokenise the text
            ids = self.tokenizer.encode(text or "", add_special_tokens=False)
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
