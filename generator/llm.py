"""The decoder LLM and its tokenizer: a local HF causal LM (frozen / LoRA / full) or a small one built from config.

Token ids (B, T) → embeddings (B, T, C) via ``embed_tokens``; spliced embeddings (B, T, C) → logits (B, T, V).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from cxr.home import in_home

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOKENIZER_DIR = "tokenizer"        # save_llm_artifacts layout
LLM_CONFIG_FILE = "llm_config.json"


class LLMTraining(str, Enum):
    FULL = "full"       # every weight trains (the small built-from-config model)
    LORA = "lora"       # frozen base + LoRA adapters (the paper's 7B setting)
    FROZEN = "frozen"   # nothing in the LLM trains; only the modules feeding it do


class LLMArch(str, Enum):
    LLAMA = "llama"
    QWEN2 = "qwen2"


@dataclass
class LLMConfig:
    path: str | None = None        # local HF causal-LM dir (weights + tokenizer); None → built from the sizes below
    arch: LLMArch = LLMArch.LLAMA  # architecture of the built-from-config model
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int | None = None  # None → num_heads (no grouped-query attention)
    intermediate_size: int = 1024
    max_positions: int = 512
    vocab_size: int = 2000         # BPE vocabulary target for the tokenizer trained on the reports
    min_frequency: int = 2
    training: LLMTraining = LLMTraining.FULL  # paper: frozen LLM + LoRA when a 7B path is given
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    dtype: str = "float32"         # float32 | bfloat16 | float16: dtype of the LLM weights

    @classmethod
    def debug(cls) -> LLMConfig:
        """A tiny model that trains in seconds on CPU."""
        return cls(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, vocab_size=600)

    def __post_init__(self) -> None:
        self.arch, self.training = LLMArch(self.arch), LLMTraining(self.training)
        self.lora_targets = tuple(self.lora_targets)
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions",
                     "min_frequency", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise ValueError(f"LLMConfig.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"LLMConfig.num_heads={self.num_heads} must divide hidden_size={self.hidden_size}")
        if self.num_kv_heads is not None and (self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads):
            raise ValueError(f"LLMConfig.num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}")
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):   # byte-level BPE starts from 256 byte symbols
            raise ValueError(f"LLMConfig.vocab_size must be ≥ {256 + len(SPECIAL_TOKENS)}, got {self.vocab_size}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"LLMConfig.lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets or not all(isinstance(t, str) and t for t in self.lora_targets):
            raise ValueError(f"LLMConfig.lora_targets must be non-empty module names, got {self.lora_targets}")
        if self.dtype not in DTYPES:
            raise ValueError(f"LLMConfig.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


# --- tokenizer -------------------------------------------------------------------------------

def train_tokenizer(texts: Sequence[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts``: lossless on any text, no special token added on encode.

    The model splices bos / eos around the image and knowledge tokens itself, so the tokenizer
    must not add them. Training is deterministic for the same texts.
    """
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("train_tokenizer: empty corpus (no non-blank text)")
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    # no prefix space: decode(encode(x)) == x without a leading blank to strip
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                  special_tokens=list(SPECIAL_TOKENS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **SPECIAL_TOKENS)


def load_tokenizer(config: LLMConfig, texts: Sequence[str] | None = None) -> PreTrainedTokenizerFast:
    """The local model's own tokenizer (pad := eos when it has none), or a BPE trained on ``texts``."""
    if config.path is not None:
        tokenizer = AutoTokenizer.from_pretrained(_checked_path(config.path), local_files_only=True)
        if tokenizer.pad_token is None:   # LLaMA ships none; padding is masked out anyway
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer
    if texts is None:
        raise ValueError("load_tokenizer: texts are required to train a tokenizer when LLMConfig.path is None")
    return train_tokenizer(texts, config.vocab_size, config.min_frequency)


# --- model -----------------------------------------------------------------------------------

def _checked_path(path: str) -> Path:
    p = in_home(path)   # a config path: under the project home (cxr.home)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"LLMConfig.path={path!r}: no local model directory with config.json there "
                                "(weights are never downloaded; point it at a local HF checkpoint)")
    return p


def _hf_config(config: LLMConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaConfig | Qwen2Config:
    kwargs = {"vocab_size": len(tokenizer), "hidden_size": config.hidden_size,
              "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
              "num_key_value_heads": config.num_kv_heads or config.num_heads,
              "intermediate_size": config.intermediate_size, "max_position_embeddings": config.max_positions,
              "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
              "pad_token_id": tokenizer.pad_token_id, "tie_word_embeddings": True}
    return (LlamaConfig if config.arch is LLMArch.LLAMA else Qwen2Config)(**kwargs)


def _apply_training(model: PreTrainedModel, config: LLMConfig) -> PreTrainedModel:
    model.requires_grad_(config.training is LLMTraining.FULL)
    if config.training is not LLMTraining.LORA:
        return model
    from peft import LoraConfig, get_peft_model  # peft only when LoRA is asked for

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)   # freezes the base, leaves only lora_ weights trainable


def build_llm(config: LLMConfig, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """A local HF causal LM (``config.path``) or a fresh one from the sizes, in the config's training mode."""
    if config.path is not None:
        model = AutoModelForCausalLM.from_pretrained(_checked_path(config.path), local_files_only=True,
                                                     dtype=config.torch_dtype)
    else:
        cls = LlamaForCausalLM if config.arch is LLMArch.LLAMA else Qwen2ForCausalLM
        hf_config = _hf_config(config, tokenizer)
        hf_config._attn_implementation = "sdpa"
        model = cls(hf_config).to(config.torch_dtype)
    return _apply_training(model, config)


def embed_tokens(model: nn.Module) -> nn.Embedding:
    """The input embedding table (V, C); a peft wrapper forwards ``get_input_embeddings``."""
    return model.get_input_embeddings()


@torch.no_grad()
def generate_from_embeds(model: PreTrainedModel, embeds: Tensor, mask: Tensor, **gen_kwargs) -> Tensor:
    """Generate from a spliced prompt ``embeds`` (B, T, C) with ``mask`` (B, T) → new token ids (B, N).

    In transformers 5.x, ``generate(inputs_embeds=...)`` without ``input_ids`` starts from an
    empty (B, 0) id tensor, so it returns only the generated tokens (no prompt positions to cut).
    Finished rows are right-padded with ``pad_token_id``. Left-pad ``embeds`` for a batch of
    prompts of different lengths. Id-based logit processors (repetition penalty, no-repeat
    n-grams) only see the generated ids, never the prompt.
    """
    return model.generate(inputs_embeds=embeds, attention_mask=mask, **gen_kwargs)


# --- checkpoints -----------------------------------------------------------------------------

def save_llm_artifacts(directory: str | Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast,
                       config: LLMConfig) -> None:
    """Tokenizer always; the HF architecture config too for a built model (a path model has its own)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory / TOKENIZER_DIR)
    if config.path is None:
        model.config.to_json_file(directory / LLM_CONFIG_FILE)   # peft forwards .config to the base model


def load_built_llm(directory: str | Path, config: LLMConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Rebuild a built-from-config model (fresh weights) and its tokenizer from ``save_llm_artifacts``.

    The caller then loads the trained weights (generator.checkpoint.load_weights).
    """
    directory = Path(directory)
    if config.path is not None:
        raise ValueError("load_built_llm: LLMConfig.path is set; use load_tokenizer + build_llm for path models")
    tokenizer = AutoTokenizer.from_pretrained(directory / TOKENIZER_DIR, local_files_only=True)
    data = json.loads((directory / LLM_CONFIG_FILE).read_text())
    hf_config = AutoConfig.for_model(data.pop("model_type"), **data)
    hf_config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(hf_config).to(config.torch_dtype)
    return _apply_training(model, config), tokenizer
