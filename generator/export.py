"""Export a checkpoint for vLLM: one folder that the R2GenKG vLLM plugin (generator.vllm_plugin) serves.

OUT/config.json, model.safetensors     the LLM (LoRA merged), architecture R2GenKGForConditionalGeneration
OUT/tokenizer files                    the checkpoint's tokenizer + the view placeholder token and a chat
                                       template that renders one placeholder per image, and nothing else
OUT/r2genkg/adapter.safetensors        every non-LLM weight (vision, Q-Former, R-GCN, projections)
OUT/r2genkg/config.yaml, thresholds.json, knowledge.json, bank/
                                       what rebuilds the adapter (checkpoint layout, generator.checkpoint)
OUT/r2genkg/export.json                what was exported, from which checkpoint, and the plugin's numbers
The adapter sits in a sub-folder: vLLM loads every *.safetensors at the top level as LLM weights.

Two ways to serve it (docs/deploy.md):
- adapter inside vLLM: ``vllm serve OUT`` (the plugin builds the adapter, opens the graph read-only
  from the R2GENKG_STORE / NEO4J_* settings, and answers chat completions with ``image_url`` views);
- adapter outside: ``vllm serve OUT --enable-mm-embeds --limit-mm-per-prompt '{"image": 0}'`` (no
  adapter, no graph in vLLM; ``r2genkg serve --engine vllm-remote`` sends each spliced prompt as
  ``image_embeds``).
"""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

from cxr.files import atomic_directory
from generator.checkpoint import (
    BANK_DIR,
    CONFIG_FILE,
    KNOWLEDGE_FILE,
    ModelBundle,
    load_bundle,
    read_run_config,
)
from generator.config_io import dump_yaml
from generator.decisions import THRESHOLDS_FILE
from generator.vllm_plugin import ARCHITECTURE  # what config.json names; the plugin registers it
from generator.vllm_plugin.manifest import (
    ADAPTER_DIR,
    ADAPTER_FILE,
    CHAT_TEMPLATE,
    MANIFEST_FILE,
    PLACEHOLDER,
    ExportManifest,
)
from graphdb.store import StoreConfig


def export_llm(checkpoint: str | Path, out_dir: str | Path, bundle: ModelBundle | None = None,
               store: StoreConfig | None = None) -> Path:
    """Write ``out_dir`` atomically (a temporary sibling, then a rename). Returns ``out_dir``.

    Without ``bundle`` the checkpoint is loaded over ``store`` (default: ``StoreConfig.from_env()``).
    """
    checkpoint, out = Path(checkpoint), Path(out_dir)
    own = bundle is None
    bundle = bundle or load_bundle(checkpoint, store or StoreConfig.from_env())
    try:
        with atomic_directory(out) as tmp:
            _write_export(tmp, out, checkpoint, bundle, merge_in_place=own)
        return out
    finally:
        if own:
            bundle.close()


@torch.no_grad()
def prompt_length(bundle: ModelBundle) -> int:
    """T, the spliced prompt's length (the same for every study): one dummy study through the adapter."""
    model, data = bundle.model, bundle.config.data
    views = torch.zeros(1, data.max_views, 1, data.image_size, data.image_size)
    mask = torch.ones(1, data.max_views, dtype=torch.bool)
    device = next(model.parameters()).device
    return int(model.prompt_embeds(views.to(device), mask.to(device), ["export"])[0].shape[1])


def _write_export(tmp: Path, out: Path, checkpoint: Path, bundle: ModelBundle, merge_in_place: bool) -> None:
    model = bundle.model
    prompt_tokens = prompt_length(bundle)
    # merging rewrites the LoRA layers in place: a caller that keeps its model gets a merged copy
    llm = model.llm if merge_in_place else copy.deepcopy(model.llm)
    if hasattr(llm, "merge_and_unload"):   # a peft (LoRA) wrapper
        llm = llm.merge_and_unload()
    llm.save_pretrained(tmp, safe_serialization=True)
    # save_pretrained writes the class's own name; vLLM picks the model class by this field
    hf_config = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    inner = hf_config["architectures"][0]
    hf_config["architectures"] = [ARCHITECTURE]
    (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": [PLACEHOLDER]})
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(tmp)
    # the adapter: every non-LLM weight, and what rebuilds it (vision weights come from here, not a path)
    adapter = tmp / ADAPTER_FILE
    adapter.parent.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("llm.")},
              str(adapter))
    config = bundle.config
    config = replace(config, model=replace(config.model, vision=replace(config.model.vision, weights=None)))
    (adapter.parent / CONFIG_FILE).write_text(dump_yaml(config), encoding="utf-8")
    for name in (THRESHOLDS_FILE, KNOWLEDGE_FILE):
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, adapter.parent / name)
    if (checkpoint / BANK_DIR).is_dir():
        shutil.copytree(checkpoint / BANK_DIR, adapter.parent / BANK_DIR)
    manifest = ExportManifest(str(checkpoint.resolve()), bundle.config.name,
                              llm.config.get_text_config().hidden_size, inner, prompt_tokens,
                              bundle.config.data.max_views, bundle.config.data.image_size,
                              int(tokenizer.convert_tokens_to_ids(PLACEHOLDER)))
    data = manifest.to_dict() | {
        "serve_adapter_inside": f"vllm serve {out} --served-model-name r2genkg",
        "serve_adapter_outside": f"vllm serve {out} --served-model-name r2genkg-llm --enable-mm-embeds "
                                 "--limit-mm-per-prompt '{\"image\": 0}'"}
    (tmp / MANIFEST_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def load_adapter(export_dir: str | Path, store: StoreConfig | None = None) -> ModelBundle:
    """The adapter of an export, without its LLM (the plugin's LLM is vLLM's): weights strictly
    checked, the bank and thresholds, the graph opened read-only over ``store`` (default: the
    environment) and checked against the fingerprint the checkpoint was trained on. On CPU."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from encoders.state import load_state
    from generator.checkpoint import (
        build_model,
        check_fingerprint,
        load_bank_and_thresholds,
        read_fingerprint,
    )

    export_dir = Path(export_dir)
    manifest = ExportManifest.read(export_dir)
    directory = export_dir / ADAPTER_DIR
    config = read_run_config(directory)
    tokenizer = AutoTokenizer.from_pretrained(export_dir, local_files_only=True)
    bundle = build_model(config, tokenizer, store or StoreConfig.from_env(), llm_hidden_size=manifest.hidden_size)
    try:
        check_fingerprint(read_fingerprint(directory), bundle, directory)
        load_state(bundle.model, load_file(str(export_dir / ADAPTER_FILE)), export_dir / ADAPTER_FILE)
        load_bank_and_thresholds(bundle.model, directory)
    except BaseException:
        bundle.close()
        raise
    bundle.model.eval()
    return bundle
