"""Export a checkpoint's LLM for vLLM: LoRA merged into the base, an HF directory with its tokenizer.

OUT/config.json, model.safetensors, tokenizer files   what `vllm serve OUT --enable-prompt-embeds` loads
OUT/r2genkg/adapter.safetensors                      every non-LLM weight (vision, Q-Former, R-GCN, projections)
OUT/r2genkg/export.json                              what was exported, from which checkpoint
The adapter sits in a sub-folder: vLLM loads every *.safetensors at the top level as LLM weights.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from safetensors.torch import save_file

from cxr.files import atomic_directory
from generator.checkpoint import ModelBundle, load_bundle
from graphdb.store import StoreConfig

ADAPTER_FILE, MANIFEST_FILE = "r2genkg/adapter.safetensors", "r2genkg/export.json"


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


def _write_export(tmp: Path, out: Path, checkpoint: Path, bundle: ModelBundle, merge_in_place: bool) -> None:
    model = bundle.model
    # merging rewrites the LoRA layers in place: a caller that keeps its model gets a merged copy
    llm = model.llm if merge_in_place else copy.deepcopy(model.llm)
    if hasattr(llm, "merge_and_unload"):   # a peft (LoRA) wrapper
        llm = llm.merge_and_unload()
    llm.save_pretrained(tmp, safe_serialization=True)
    model.tokenizer.save_pretrained(tmp)
    adapter = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("llm.")}
    (tmp / ADAPTER_FILE).parent.mkdir()
    save_file(adapter, str(tmp / ADAPTER_FILE))
    manifest = {"checkpoint": str(checkpoint.resolve()), "run": bundle.config.name,
                "hidden_size": llm.config.get_text_config().hidden_size,
                "serve": f"vllm serve {out} --enable-prompt-embeds --served-model-name r2genkg-llm"}
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
