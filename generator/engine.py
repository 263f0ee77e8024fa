"""The generation engine: studies (raw views) → the adapter (steps 1-6, PyTorch) → an LLM backend → results.

StudyInput views: (H, W) uint8 grayscale of any size → resized, normalised (V, 1, S, S).
The adapter runs in micro-batches; the HF backend decodes each micro-batch, the vLLM backends
take every prompt of the call at once and keep them all in flight. Eval, run_batch and the API
all call ``Engine.generate``, which calls the model's one ``generate`` path.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TypeVar

import numpy as np
import torch

from cxr.images import normalise, stack_views
from cxr.views import ViewNote
from generator.backends import (
    BackendKind,
    HFBackend,
    LLMBackend,
    RemoteVLLMBackend,
    VLLMBackend,
    VLLMMode,
)
from generator.checkpoint import ModelBundle, Progress, checkpoint_id, load_bundle, quiet
from generator.coverage import announce
from generator.model import GenerationResult, R2GenKG
from generator.settings import GenerationSettings
from graphdb.store import StoreConfig

log = logging.getLogger(__name__)

SERVED_NAME = "r2genkg-llm"    # what `vllm serve --served-model-name` is given in our docs and compose file
# on_token(study_index, token_id): the index is into the studies passed to Engine.generate
StudyTokenCallback = Callable[[int, int], None]
# on_decided(study_index, findings): the study's findings decided positive, before its first token
StudyDecidedCallback = Callable[[int, list[str]], None]
T = TypeVar("T")


@dataclass
class StudyInput:
    study_id: str
    views: list[np.ndarray]        # (H, W) uint8 grayscale, any size; views past max_views are dropped
    notes: list[ViewNote] = field(default_factory=list)   # what happened to each view (for the output line)


@dataclass
class EngineConfig:
    backend: BackendKind = BackendKind.HF
    micro_batch: int = 16          # studies per adapter forward (and per HF generate call)
    device: str = "auto"           # auto → cuda when available
    vllm_mode: VLLMMode = VLLMMode.EMBEDS   # embeds | inside | prompt-embeds (generator.backends.VLLMMode)
    vllm_model_dir: str | None = None   # offline vLLM: the export dir (default CHECKPOINT/llm_export, made if absent)
    vllm_url: str | None = None          # remote vLLM: http://host:8001/v1
    vllm_model: str = SERVED_NAME        # the served model name (vllm serve … --served-model-name)
    vllm_api_key: str | None = None
    vllm_concurrency: int = 64

    def __post_init__(self) -> None:
        self.backend, self.vllm_mode = BackendKind(self.backend), VLLMMode(self.vllm_mode)
        if self.micro_batch < 1:
            raise ValueError(f"EngineConfig.micro_batch must be ≥ 1, got {self.micro_batch}")
        if self.backend is BackendKind.VLLM_REMOTE and not self.vllm_url:
            raise ValueError("EngineConfig: the vllm-remote backend needs vllm_url (e.g. http://127.0.0.1:8001/v1)")


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


class Engine:
    """One model + one backend. Not thread-safe: one thread generates (the server owns one worker)."""

    def __init__(self, model: R2GenKG, backend: LLMBackend | None = None, micro_batch: int = 16,
                 device: str = "cpu", default_settings: GenerationSettings | None = None,
                 image_size: int = 224, max_views: int = 2, model_id: str = "r2genkg",
                 bundle: ModelBundle | None = None) -> None:
        self.model = model.to(device).eval()
        self.backend = backend or HFBackend(self.model.llm, self.model.tokenizer, max_batch=micro_batch)
        self.micro_batch, self.device = micro_batch, device
        self.default_settings = default_settings or GenerationSettings()
        self.image_size, self.max_views, self.model_id = image_size, max_views, model_id
        self._bundle = bundle

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, config: EngineConfig | None = None,
                        store: StoreConfig | None = None, progress: Progress = quiet) -> Self:
        """``store``: where the graph lives (default: ``StoreConfig.from_env()``); ``progress``
        hears each loading step (``r2genkg serve`` prints them)."""
        config = config or EngineConfig()
        checkpoint = Path(checkpoint)
        bundle = load_bundle(checkpoint, store or StoreConfig.from_env(), progress=progress)
        run = bundle.config
        try:
            device = resolve_device(config.device)
            progress(f"starting the LLM backend ({config.backend.value}) and placing the model on {device}")
            backend = _make_backend(config, bundle, checkpoint)
            return cls(bundle.model, backend, config.micro_batch, device, run.generation, run.data.image_size,
                       run.data.max_views, checkpoint_id(checkpoint), bundle)
        except BaseException:
            bundle.close()
            raise

    # ---- inputs ----
    def prepare(self, views: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Views → (V, 1, S, S) normalised + (V,) mask, as training's data pipeline makes them."""
        if not views:
            raise ValueError("a study needs at least one image")
        pixels, valid = stack_views(views, self.image_size, self.max_views)
        return torch.from_numpy(normalise(pixels, valid)), torch.from_numpy(valid)

    def check(self, settings: GenerationSettings) -> None:
        """Raise ``BackendError`` if this engine's backend cannot decode with ``settings``."""
        check = getattr(self.backend, "check", None)
        if check is not None:
            check(settings)

    # ---- the one entry point ----
    @torch.no_grad()
    def generate(self, studies: Sequence[StudyInput], settings: GenerationSettings | None = None,
                 on_token: StudyTokenCallback | None = None,
                 on_decided: StudyDecidedCallback | None = None) -> list[GenerationResult]:
        prepared = [self.prepare(s.views) for s in studies]
        if getattr(self.backend, "takes_views", False):   # the adapter inside vLLM: the views go there too
            return self._generate_all([s.study_id for s in studies], [p[0] for p in prepared],
                                      [p[1] for p in prepared], settings or self.default_settings, on_token,
                                      on_decided, [s.views[:self.max_views] for s in studies])
        return self.generate_tensors([s.study_id for s in studies], [p[0] for p in prepared],
                                     [p[1] for p in prepared], settings, on_token, on_decided)

    @torch.no_grad()
    def generate_tensors(self, study_ids: Sequence[str], images: Sequence[torch.Tensor],
                         view_masks: Sequence[torch.Tensor], settings: GenerationSettings | None = None,
                         on_token: StudyTokenCallback | None = None,
                         on_decided: StudyDecidedCallback | None = None) -> list[GenerationResult]:
        """Already-normalised studies ((V, 1, S, S), (V,)) in adapter micro-batches."""
        settings = settings or self.default_settings
        out: list[GenerationResult] = []
        if self.backend.max_batch is None:     # vLLM: every prompt in flight at once
            return self._generate_all(list(study_ids), images, view_masks, settings, on_token, on_decided)
        for start in range(0, len(study_ids), self.micro_batch):
            end = start + self.micro_batch
            out += self.model.generate(torch.stack(list(images[start:end])).to(self.device),
                                       torch.stack(list(view_masks[start:end])).to(self.device),
                                       list(study_ids[start:end]), settings, self.backend,
                                       _offset(on_token, start), _offset(on_decided, start))
        return out

    def _generate_all(self, study_ids: list[str], images: Sequence[torch.Tensor], view_masks: Sequence[torch.Tensor],
                      settings: GenerationSettings, on_token: StudyTokenCallback | None,
                      on_decided: StudyDecidedCallback | None,
                      views: list[list[np.ndarray]] | None = None) -> list[GenerationResult]:
        """Every prompt at once. With ``views`` (the INSIDE mode) vLLM writes the reports from the
        views with its own copy of the adapter; the local adapter gives the probabilities, decisions
        and evidence (the same weights and inputs), and the coverage pass's prompts."""
        chunks = []
        for start in range(0, len(study_ids), self.micro_batch):
            end = start + self.micro_batch
            chunks.append(self.model.prompt_embeds(torch.stack(list(images[start:end])).to(self.device),
                                                   torch.stack(list(view_masks[start:end])).to(self.device),
                                                   study_ids[start:end]))
            announce(on_decided, chunks[-1][2].states, start)
        if not chunks:
            return []
        embeds = torch.cat([c[0] for c in chunks])
        mask = torch.cat([c[1] for c in chunks])
        if views is not None:
            completions = self.backend.generate_views(views, settings, on_token)  # type: ignore[attr-defined]
        else:
            completions = self.backend.generate(embeds, mask, settings, on_token)
        out: list[GenerationResult] = []
        for i, (e, m, enc) in enumerate(chunks):
            start = i * self.micro_batch
            out += self.model.results(study_ids[start:start + len(e)], completions[start:start + len(e)], enc,
                                      int(m.shape[1]), settings, self.backend)
        return out

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()
        if self._bundle is not None:
            self._bundle.close()
            self._bundle = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _offset(callback: Callable[[int, T], None] | None, start: int) -> Callable[[int, T], None] | None:
    """A per-micro-batch callback: its rows are the engine's rows from ``start``."""
    if callback is None:
        return None
    return lambda row, value: callback(start + row, value)


def _make_backend(config: EngineConfig, bundle: ModelBundle, checkpoint: Path) -> LLMBackend | None:
    model = bundle.model
    if config.backend is BackendKind.HF:
        return HFBackend(model.llm, model.tokenizer, max_batch=config.micro_batch)
    if config.backend is BackendKind.VLLM:
        from generator.export import export_llm

        directory = Path(config.vllm_model_dir or checkpoint / "llm_export")
        if not (directory / "config.json").is_file():
            log.warning("no exported LLM at %s: exporting it now", directory)
            export_llm(checkpoint, directory, bundle)
        return VLLMBackend(directory, model.tokenizer, config.vllm_mode, dtype=bundle.config.model.llm.dtype)
    assert config.vllm_url is not None
    return RemoteVLLMBackend(config.vllm_url, config.vllm_model, model.tokenizer, config.vllm_api_key,
                             config.vllm_concurrency, mode=config.vllm_mode)
