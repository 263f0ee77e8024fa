"""R2GenKGForConditionalGeneration: vLLM's model for an ``r2genkg export-llm`` folder.

A study with V views arrives as V image items, V placeholders side by side (the export's chat
template writes them so). Each item carries the whole study, so that any item alone gives the
study's spliced prompt E (T, H); item 0 expands to the first T - (V - 1) positions and item j ≥ 1
to one position each, so the V placeholders together are E, whatever the scheduler batches. Item
hashes (the processor and encoder caches' keys) cover the whole study and the item's index.

Precomputed prompts (``image_embeds``, one (T, H) tensor per prompt) pass through unchanged.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.config.multimodal import MultiModalDummyOptions
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    WeightsMapper,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import ImageEmbeddingItems, ImageProcessorItems, MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    ProcessorInputs,
    PromptReplacement,
    PromptUpdate,
    TimingContext,
)

from cxr.images import normalise, stack_views
from generator.export import load_adapter
from generator.vllm_plugin import ARCHITECTURE
from generator.vllm_plugin.manifest import PLACEHOLDER, ExportManifest

ADAPTER_PREFIX = "adapter."
VIEW_FIELDS = ("pixel_values", "view_mask", "part", "parts")


@functools.lru_cache(maxsize=8)
def manifest_of(model_dir: str) -> ExportManifest:
    return ExportManifest.read(model_dir)


def placeholder_counts(prompt_tokens: int, items: int) -> list[int]:
    """How many prompt positions each of a study's ``items`` views stands for (they sum to T)."""
    if not 1 <= items <= prompt_tokens:
        raise ValueError(f"a study needs 1 to {prompt_tokens} views, got {items}")
    return [prompt_tokens - (items - 1)] + [1] * (items - 1)


def study_pixels(images: Sequence[Any], image_size: int, max_views: int) -> tuple[np.ndarray, np.ndarray]:
    """A prompt's images (PIL or arrays, any mode) → (Vmax, S, S) uint8 + (Vmax,) mask, resized as
    the engine's ``prepare`` does (``normalise`` follows in the model: uint8 crosses vLLM's process
    boundary at a quarter of the bytes). Colour images are read as grayscale (PIL's L)."""
    if len(images) > max_views:
        raise ValueError(f"a study has at most {max_views} views, got {len(images)} images")
    views = [image.convert("L") if isinstance(image, Image.Image) else _gray(np.asarray(image)) for image in images]
    return stack_views(views, image_size, max_views)


def _gray(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3:   # (H, W, C)
        return np.asarray(Image.fromarray(array[..., :3].astype(np.uint8)).convert("L"))
    return array.astype(np.uint8)


class R2GenKGProcessingInfo(BaseProcessingInfo):
    @property
    def manifest(self) -> ExportManifest:
        return manifest_of(str(self.ctx.model_config.model))

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": self.manifest.max_views}

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        return {"image": self.manifest.prompt_tokens}

    def get_default_tok_params(self) -> Any:
        # the prompt is the placeholders alone: the study's own <bos> is inside its embeddings
        return super().get_default_tok_params().with_kwargs(add_special_tokens=False)


class R2GenKGDummyInputsBuilder(BaseDummyInputsBuilder[R2GenKGProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return self.info.manifest.placeholder * mm_counts.get("image", 0)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int],
                          mm_options: MultiModalDummyOptions) -> Any:
        size = self.info.manifest.image_size
        return {"image": self._get_dummy_images(width=size, height=size, num_images=mm_counts.get("image", 0),
                                                overrides=mm_options.get("image"))}


class R2GenKGProcessor(BaseMultiModalProcessor[R2GenKGProcessingInfo]):
    def _call_hf_processor(self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]) -> BatchFeature:
        """No HF processor: the prompt's views → one study, repeated once per item."""
        images = list(hf_data.get("images") or [])
        manifest = self.info.manifest
        pixels, valid = study_pixels(images, manifest.image_size, manifest.max_views)
        n = len(images)
        return BatchFeature({
            "pixel_values": torch.from_numpy(pixels).unsqueeze(0).repeat(n, 1, 1, 1),
            "view_mask": torch.from_numpy(valid).unsqueeze(0).repeat(n, 1),
            "part": torch.arange(n), "parts": torch.full((n,), n)})

    def _cached_apply_hf_processor(self, inputs: ProcessorInputs, timing_ctx: TimingContext) -> Any:
        """vLLM's processor cache, unless it holds some of a study's items but not all: the missing
        ones would be processed without their study's other views. (Beam search re-sends every
        prompt at every step: with the cache, only the items' keys cross to the engine.)"""
        if inputs.cache is not None:
            cached = inputs.cache.is_cached(self._get_mm_hashes(inputs).get("image", []))
            if all(cached) or not any(cached):
                return super()._cached_apply_hf_processor(inputs, timing_ctx)
        return self._apply_hf_processor(inputs, timing_ctx)

    def _get_mm_hashes(self, inputs: ProcessorInputs) -> Any:
        hashes = super()._get_mm_hashes(inputs)
        views = hashes.get("image")
        if views and isinstance(inputs.mm_data_items.get("image"), ImageProcessorItems):
            study = hashlib.sha256("|".join(views).encode()).hexdigest()
            hashes["image"] = [f"r2genkg-{study}-{j}-of-{len(views)}" for j in range(len(views))]
        return hashes

    def _get_mm_fields_config(self, hf_inputs: BatchFeature,
                              hf_processor_mm_kwargs: Mapping[str, object]) -> Mapping[str, MultiModalFieldConfig]:
        fields = {name: MultiModalFieldConfig.batched("image") for name in VIEW_FIELDS}
        return fields | {"image_embeds": MultiModalFieldConfig.batched("image")}

    def _get_prompt_updates(self, mm_items: MultiModalDataItems, hf_processor_mm_kwargs: Mapping[str, object],
                            out_mm_kwargs: MultiModalKwargsItems) -> Sequence[PromptUpdate]:
        if "image" not in mm_items:   # every item came from the cache, with its update
            return []
        token = self.info.manifest.placeholder_id
        items = mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems))
        if isinstance(items, ImageEmbeddingItems):
            def count(i: int) -> int:
                return items.get_feature_size(i)
        else:
            counts = placeholder_counts(self.info.manifest.prompt_tokens, items.get_count())

            def count(i: int) -> int:
                return counts[i]
        return [PromptReplacement(modality="image", target=[token], replacement=lambda i: [token] * count(i))]


@MULTIMODAL_REGISTRY.register_processor(R2GenKGProcessor, info=R2GenKGProcessingInfo,
                                        dummy_inputs=R2GenKGDummyInputsBuilder)
class R2GenKGForConditionalGeneration(nn.Module, SupportsMultiModal):
    """The exported LLM (vLLM's own implementation of it) + the R2GenKG adapter as its image tower."""

    # an exported HF causal LM: model.* and lm_head.* are the language model's
    hf_to_vllm_mapper = WeightsMapper(orig_to_new_prefix={"model.": "language_model.model.",
                                                          "lm_head.": "language_model.lm_head."})

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return PLACEHOLDER
        raise ValueError(f"{ARCHITECTURE} takes images (chest X-ray views) only, not {modality}")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        model_config = vllm_config.model_config
        self.export_dir = Path(model_config.model)
        self.manifest = manifest_of(str(self.export_dir))
        config = model_config.hf_config
        # with --limit-mm-per-prompt '{"image": 0}' (precomputed prompts only) no adapter is built
        # and no graph is opened
        self.adapter: nn.Module | None = None
        self._knowledge = None
        self.dtype = model_config.dtype
        if model_config.get_multimodal_config().get_limit_per_prompt("image") > 0:
            with torch.device("cpu"), _default_dtype(torch.float32):   # the adapter runs as it trained
                bundle = load_adapter(self.export_dir)
            self._knowledge = bundle.knowledge    # the graph store stays open while the model lives
            self.adapter = bundle.model
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config, hf_config=config, prefix=maybe_prefix(prefix, "language_model"),
                architectures=[self.manifest.llm_architecture])
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors
        self.configure_mm_token_handling(config.get_text_config().vocab_size, [self.manifest.placeholder_id])

    # ---- the image tower: views → the study's spliced prompt ----
    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        dtype = self.dtype
        embeds = kwargs.get("image_embeds")
        if embeds is not None:   # precomputed prompts: (T, H) each
            return [e.to(dtype) for e in _rows(embeds)]
        if kwargs.get("pixel_values") is None:
            return []
        if self.adapter is None:
            raise ValueError("this server takes precomputed prompts only (--limit-mm-per-prompt image=0): "
                             "send image_embeds, or start it without the limit to send views")
        pixels, masks = _rows(kwargs["pixel_values"]), _rows(kwargs["view_mask"])
        parts = [int(p) for p in _rows(kwargs["part"])]
        totals = [int(n) for n in _rows(kwargs["parts"])]
        out: list[torch.Tensor] = []
        study: torch.Tensor | None = None
        for i, (pixel, mask, part, total) in enumerate(zip(pixels, masks, parts, totals)):
            same = i > 0 and study is not None and part == parts[i - 1] + 1 and torch.equal(pixel, pixels[i - 1])
            if not same:    # a new study (items of one study arrive side by side: computed once)
                study = self._study(pixel, mask)
            counts = placeholder_counts(study.shape[0], total)
            start = sum(counts[:part])
            out.append(study[start:start + counts[part]].to(dtype))
        return out

    @torch.no_grad()
    def _study(self, pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One study's views (Vmax, S, S) uint8 → its spliced prompt (T, H)."""
        assert self.adapter is not None
        device = self._device()
        self.adapter.to(device)

        def embed(ids: torch.Tensor) -> torch.Tensor:
            return self.language_model.embed_input_ids(ids.to(device)).float()

        valid = mask.bool().cpu().numpy()
        images = torch.from_numpy(normalise(pixels.cpu().numpy().astype(np.uint8), valid))   # as Engine.prepare
        embeds, _, _ = self.adapter.prompt_embeds(images.unsqueeze(0).to(device),
                                                  torch.from_numpy(valid).unsqueeze(0).to(device), ["vllm"], embed)
        return embeds[0]

    def _device(self) -> torch.device:
        return next(self.language_model.parameters()).device

    # ---- the language model ----
    def forward(self, input_ids: torch.Tensor | None, positions: torch.Tensor,
                intermediate_tensors: Any = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs: object) -> Any:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """The LLM from the export's top-level safetensors; the adapter was loaded (strictly checked)
        from r2genkg/adapter.safetensors when it was built."""
        loaded = AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)
        if self.adapter is not None:
            loaded |= {ADAPTER_PREFIX + name for name, _ in self.adapter.named_parameters()}
        return loaded


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """vLLM builds the model under the LLM's dtype; the adapter is built in ``dtype`` instead."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _rows(value: object) -> list[torch.Tensor]:
    """A batched field: a stacked tensor (N, ...) or a list of N tensors → N tensors."""
    if isinstance(value, torch.Tensor):
        return list(value.unbind(0))
    return [torch.as_tensor(v) for v in value]  # type: ignore[union-attr]


