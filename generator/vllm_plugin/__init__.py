"""The R2GenKG vLLM plugin: vLLM serves an ``r2genkg export-llm`` folder as one multimodal model.

pyproject.toml declares ``register`` under the ``vllm.general_plugins`` entry point, so vLLM calls
it in its engine and in every worker process. The model (generator.vllm_plugin.model) is registered
lazily: vLLM imports it, in a subprocess first, only when it loads an export.

An image item of a prompt is either
- a **view** (``vllm serve EXPORT``: chat completions with ``image_url`` parts; several views of one
  study in one message): the plugin runs the whole adapter (vision, Q-Former, R-GCN over the graph,
  disease-token bank) and splices the study's prompt; or
- the **spliced prompt itself**, precomputed by our engine and sent as ``image_embeds``
  (``--enable-mm-embeds --limit-mm-per-prompt '{"image": 0}'``: no adapter is built in vLLM).
Either way the prompt's placeholders expand to the study's T prompt positions, the decoder reads
exactly what HF ``generate(inputs_embeds=…)`` reads, and vLLM's beam search works.
"""
from __future__ import annotations

ARCHITECTURE = "R2GenKGForConditionalGeneration"
MODEL_CLASS = "generator.vllm_plugin.model:R2GenKGForConditionalGeneration"


def register() -> None:
    """Register the model with vLLM; safe to call more than once."""
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
