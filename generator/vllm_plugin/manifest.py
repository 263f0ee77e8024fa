"""The export folder's layout and manifest: what ``r2genkg export-llm`` writes and the vLLM plugin,
the vLLM backends and the tests read. Standard library only, so any of them may import it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADAPTER_DIR = "r2genkg"
ADAPTER_FILE, MANIFEST_FILE = f"{ADAPTER_DIR}/adapter.safetensors", f"{ADAPTER_DIR}/export.json"

PLACEHOLDER = "<|r2genkg_view|>"                   # one per view in a prompt; expands to the study's prompt
# one placeholder per image part of every message; text parts are ignored (the prompt is the model's own)
CHAT_TEMPLATE = ("{%- for message in messages -%}{%- if message['content'] is not string -%}"
                 "{%- for part in message['content'] -%}{%- if part['type'] in ['image', 'image_url', "
                 "'image_embeds'] -%}" + PLACEHOLDER + "{%- endif -%}{%- endfor -%}{%- endif -%}{%- endfor -%}")


@dataclass(frozen=True)
class ExportManifest:
    checkpoint: str
    run: str
    hidden_size: int
    llm_architecture: str      # the inner LM vLLM builds (LlamaForCausalLM, Qwen2ForCausalLM)
    prompt_tokens: int         # T: every study's spliced prompt has this many positions
    max_views: int
    image_size: int
    placeholder_id: int        # the placeholder's token id in the export's tokenizer
    placeholder: str = PLACEHOLDER

    @classmethod
    def read(cls, export_dir: str | Path) -> ExportManifest:
        path = Path(export_dir) / MANIFEST_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{export_dir}: not an r2genkg export (no {MANIFEST_FILE}); "
                                    "write one with `r2genkg export-llm CHECKPOINT OUT`")
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = sorted(set(cls.__dataclass_fields__) - set(known) - {"placeholder"})
        if missing:
            raise ValueError(f"{path}: written by an older r2genkg (no {', '.join(missing)}); export it again")
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
