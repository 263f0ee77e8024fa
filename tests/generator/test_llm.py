"""generator.llm: a lossless BPE without automatic specials, tiny LLaMA / Qwen2 from config, the three
training modes (LoRA on a local checkpoint), checkpoints of trainable weights, and generate-from-embeddings."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from generator.llm import (
    LLMArch,
    LLMConfig,
    LLMTraining,
    build_llm,
    embed_tokens,
    generate_from_embeds,
    load_built_llm,
    load_tokenizer,
    save_llm_artifacts,
    train_tokenizer,
)

REPORT = "the heart is normal in size. no pleural effusion or pneumothorax."
SENTENCES = [
    "the heart is normal in size.",
    "no pleural effusion or pneumothorax.",
    "mild cardiomegaly is seen.",
    "lungs are clear bilaterally.",
]
CORPUS = [REPORT, *SENTENCES] * 3


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=600)


def tiny(**overrides) -> LLMConfig:
    return LLMConfig(**{**vars(LLMConfig.debug()), **overrides})


def built(tokenizer, seed=0, **overrides):
    torch.manual_seed(seed)
    return build_llm(tiny(**overrides), tokenizer)


def trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# --- tokenizer -------------------------------------------------------------------------------

def test_tokenizer_round_trips_without_automatic_specials(tok):
    ids = tok(REPORT).input_ids
    assert tok.decode(ids) == REPORT
    specials = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    assert len(specials) == 4 and None not in specials
    assert not specials & set(ids) and not specials & set(tok("abc").input_ids)
    assert len(ids) < len(REPORT) / 2                  # merges were learned, not raw bytes


def test_tokenizer_is_deterministic_and_rejects_empty_corpus(tok):
    again = train_tokenizer(CORPUS, vocab_size=600)
    assert again.get_vocab() == tok.get_vocab() and again(REPORT).input_ids == tok(REPORT).input_ids
    for empty in ([], ["", "  \n"]):
        with pytest.raises(ValueError, match="empty corpus"):
            train_tokenizer(empty, vocab_size=600)
    with pytest.raises(ValueError, match="texts"):
        load_tokenizer(tiny(), None)


# --- model -----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", list(LLMArch))
def test_built_model_forward_from_embeddings(tok, arch):
    model = built(tok, arch=arch, num_kv_heads=1).eval()
    assert model.config.vocab_size == len(tok) and model.config.tie_word_embeddings
    assert model.config.pad_token_id == tok.pad_token_id and model.config._attn_implementation == "sdpa"
    embeds = torch.randn(2, 5, 64)
    logits = model(inputs_embeds=embeds, attention_mask=torch.ones(2, 5, dtype=torch.long)).logits
    assert logits.shape == (2, 5, len(tok))
    assert embed_tokens(model).weight.shape == (len(tok), 64)


def test_full_and_frozen_modes(tok):
    full, frozen = built(tok), built(tok, training=LLMTraining.FROZEN)
    assert trainable_names(full) == {n for n, _ in full.named_parameters()}
    assert trainable_names(frozen) == set()


@pytest.fixture(scope="module")
def local_checkpoint(tok, tmp_path_factory):
    """A tiny LLaMA saved as a HF checkpoint with no pad token, like the real ones."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    built(tok).save_pretrained(directory)
    tok.save_pretrained(directory)
    cfg_file = directory / "tokenizer_config.json"
    cfg_file.write_text(cfg_file.read_text().replace('"pad_token": "<pad>"', '"pad_token": null'))
    return str(directory)


def test_lora_on_a_local_checkpoint(local_checkpoint):
    config = tiny(path=local_checkpoint, training="lora", lora_targets=["q_proj", "v_proj"])
    tokenizer = load_tokenizer(config)
    assert tokenizer.pad_token == tokenizer.eos_token      # pad := eos when the checkpoint has none
    model = build_llm(config, tokenizer)
    names = trainable_names(model)
    assert names and all("lora_" in n for n in names)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names} == {"q_proj", "v_proj"}
    assert embed_tokens(model).weight.shape[0] == len(tokenizer)
    logits = model(inputs_embeds=torch.randn(1, 3, 64), attention_mask=torch.ones(1, 3, dtype=torch.long)).logits
    assert logits.shape == (1, 3, len(tokenizer))


def test_local_checkpoint_dtype_and_frozen(local_checkpoint):
    config = tiny(path=local_checkpoint, training=LLMTraining.FROZEN, dtype="bfloat16")
    model = build_llm(config, load_tokenizer(config))
    assert trainable_names(model) == set()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_missing_path_is_never_downloaded(tmp_path, tok):
    for path in (tmp_path / "nope", tmp_path):             # absent; present without config.json
        config = tiny(path=str(path))
        for call, arg in ((build_llm, (config, tok)), (load_tokenizer, (config,))):
            with pytest.raises(FileNotFoundError, match="never downloaded") as err:
                call(*arg)
            assert str(path) in str(err.value)


# --- checkpoints -----------------------------------------------------------------------------

def test_save_and_rebuild_a_built_model(tok, tmp_path):
    config = tiny(arch="qwen2", num_kv_heads=1)
    model = built(tok, arch="qwen2", num_kv_heads=1).eval()
    save_llm_artifacts(tmp_path, model, tok, config)
    rebuilt, tokenizer = load_built_llm(tmp_path, config)
    assert type(rebuilt) is type(model) and rebuilt.config.to_dict() == model.config.to_dict()
    assert tokenizer(REPORT).input_ids == tok(REPORT).input_ids and tokenizer.decode(tok(REPORT).input_ids) == REPORT
    rebuilt.load_state_dict(model.state_dict())
    ids = torch.tensor([tok(REPORT).input_ids])
    assert torch.allclose(rebuilt.eval()(ids).logits, model(ids).logits)


@pytest.mark.parametrize(("field", "value"), [
    ("hidden_size", 0), ("num_heads", 3), ("num_kv_heads", 3), ("vocab_size", 10), ("lora_dropout", 1.0),
    ("lora_targets", ()), ("dtype", "float8"), ("num_layers", 0), ("lora_r", 0),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"LLMConfig.{field}"):
        LLMConfig(**{field: value})


def test_config_coerces_strings():
    config = LLMConfig(arch="qwen2", training="lora", lora_targets=["q_proj"])
    assert config.arch is LLMArch.QWEN2 and config.training is LLMTraining.LORA and config.lora_targets == ("q_proj",)
    with pytest.raises(ValueError):
        LLMConfig(training="partial")


# --- generation ------------------------------------------------------------------------------

def test_overfit_then_generate_from_embeddings(tok):
    model = built(tok)
    rows = [[tok.bos_token_id, *tok(s).input_ids, tok.eos_token_id] for s in SENTENCES]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])   # right-padded (4, T)
    mask = (torch.arange(width) < torch.tensor([len(r) for r in rows])[:, None]).long()
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(60):
        out = model(inputs_embeds=embed_tokens(model)(ids), attention_mask=mask, labels=labels)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    # after bos the first word is one of 4 equally likely starts (ln 4 per row, a floor of ~0.11 on
    # the mean), so the memorisation check leaves that one prediction out
    determined = labels[:, 1:].clone()
    determined[:, 0] = -100
    loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), determined.flatten(), ignore_index=-100)
    assert loss.item() < 0.1, loss.item()

    model.eval()
    gen = {"max_new_tokens": width + 2, "do_sample": False,
           "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    bos = embed_tokens(model)(torch.tensor([[tok.bos_token_id]]))          # (1, 1, C)
    new = generate_from_embeds(model, bos, torch.ones(1, 1, dtype=torch.long), **gen)
    assert new.shape[1] <= width + 2 and new[0, 0] != tok.bos_token_id       # only new tokens come back
    assert tok.decode(new[0], skip_special_tokens=True) in SENTENCES

    # two-token prompts (bos + first word) pick each memorised sentence apart
    prompts = ids[:, :2]
    new = generate_from_embeds(model, embed_tokens(model)(prompts), torch.ones_like(prompts), **gen)
    texts = [tok.decode(torch.cat([p[1:], n]), skip_special_tokens=True) for p, n in zip(prompts, new, strict=True)]
    assert texts == SENTENCES
