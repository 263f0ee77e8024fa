"""Checkpoints: the weights that cannot be reloaded from a local path + config + tokenizer + bank.

Layout of a checkpoint directory::

    config.yaml          the ExperimentConfig (model part already derived)
    model.pt             state dict minus frozen parts that come from a local path (LLM base, Swin)
    tokenizer/, llm_config.json   (generator.llm.save_llm_artifacts)
    bank/                the disease-token FAISS index + metadata (when built)
    trainer_state.pt     optimizer, scheduler, RNG states, counters (training checkpoints only)

A checkpoint directory is written under a temporary name and renamed, so a crash never leaves
a half-written one where a resume would look.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch

from encoders.vision import FreezeMode
from generator.config import KGMode
from generator.llm import LLMTraining, load_built_llm, load_tokenizer, save_llm_artifacts
from generator.model import R2GenKG
from graphdb.provider import open_knowledge
from graphdb.store import GraphStore, StoreConfig
from retrieval.index import TokenIndex
from training.config import ExperimentConfig
from training.config_io import diff, from_dict, save_config, to_dict

log = logging.getLogger(__name__)

CONFIG_FILE, MODEL_FILE, STATE_FILE, BANK_DIR = "config.yaml", "model.pt", "trainer_state.pt", "bank"
# Model fields that say where things are, not what the model is: a checkpoint may move.
WHERE_FIELDS = ("kg.store_path", "kg.store", "kg.uri", "kg.features_cache", "kg.features_model", "vision.weights",
                "llm.path")


class CheckpointError(ValueError):
    pass


@dataclass
class ModelBundle:
    """A model and the graph store its subgraph provider reads; close() releases the store."""

    model: R2GenKG
    config: ExperimentConfig
    store: GraphStore | None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_model(config: ExperimentConfig, tokenizer: Any) -> ModelBundle:
    """A fresh model for ``config``; opens the graph store when the KG mode needs one."""
    store = provider = features = None
    kg = config.model.kg
    if kg.mode != KGMode.NONE:
        store_config = StoreConfig(kind=kg.store, path=Path(kg.store_path), uri=kg.uri)
        store, provider, features = open_knowledge(store_config, kg.spec, kg.features_cache, kg.features_model)
    try:
        model = R2GenKG(config.model, tokenizer, features, provider)
    except BaseException:
        if store is not None:
            store.close()
        raise
    return ModelBundle(model, config, store)


def _reloadable_prefixes(model: R2GenKG) -> tuple[str, ...]:
    """State-dict prefixes of frozen weights that come back from a local path on load."""
    cfg = model.config
    out = []
    if cfg.llm.path is not None and cfg.llm.training != LLMTraining.FULL:
        out.append("llm.")
    if cfg.vision.weights is not None and cfg.vision.freeze == FreezeMode.ALL:
        out.append("vision.backbone.")
    return tuple(out)


def model_state(model: R2GenKG) -> dict[str, torch.Tensor]:
    skip = _reloadable_prefixes(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items()
            if not k.startswith(skip) or k in trainable}


def load_model_state(model: R2GenKG, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict about everything the checkpoint should hold; names the first offending tensors."""
    own = model.state_dict()
    expected = set(model_state(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{source}: checkpoint does not fit the model: missing {missing[:5]} "
                              f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise CheckpointError(f"{source}: tensor shapes differ: " + "; ".join(bad[:5]))
    model.load_state_dict(state, strict=False)


def load_weights(model: R2GenKG, directory: Path) -> None:
    """The checkpoint's weights (strictly checked) and its disease-token bank, onto ``model``."""
    state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
    load_model_state(model, state, directory)
    if (directory / BANK_DIR).is_dir():
        model.bank = TokenIndex.load(directory / BANK_DIR)


def save_checkpoint(directory: Path, model: R2GenKG, config: ExperimentConfig,
                    trainer_state: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(model_state(model), tmp / MODEL_FILE)
    save_config(config, tmp / CONFIG_FILE)
    save_llm_artifacts(tmp, model.llm, model.tokenizer, model.config.llm)
    if model.bank is not None:
        model.bank.save(tmp / BANK_DIR)
    if trainer_state is not None:
        torch.save(trainer_state, tmp / STATE_FILE)
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old)
    else:
        tmp.rename(directory)
    return directory


def read_config(directory: Path) -> ExperimentConfig:
    import yaml

    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no {CONFIG_FILE})")
    return from_dict(ExperimentConfig, yaml.safe_load(path.read_text(encoding="utf-8")))


def read_tokenizer(directory: Path, saved: ExperimentConfig) -> Any:
    """The checkpoint's tokenizer (trained on its reports), or the local LLM folder's."""
    if saved.model.llm.path is None:
        return load_built_llm(directory, saved.model.llm)[1]
    return load_tokenizer(saved.model.llm, None)


def check_compatible(saved: ExperimentConfig, requested: ExperimentConfig, allowed: tuple[str, ...],
                     source: Path) -> None:
    """Raise naming every field that differs, except the ``allowed`` dotted prefixes."""
    diffs = [d for d in diff(to_dict(saved), to_dict(requested))
             if not d.startswith(allowed)]
    if diffs:
        raise CheckpointError(f"{source}: the checkpoint's config differs from the requested one: "
                              + "; ".join(diffs[:8]))


def load_bundle(directory: str | Path, config: ExperimentConfig | None = None) -> ModelBundle:
    """Rebuild the model of a checkpoint (to CPU; the caller places it) with its weights and bank.

    ``config`` (optional) replaces the saved one for non-model fields (generation, data paths).
    """
    directory = Path(directory)
    saved = read_config(directory)
    config = config or saved
    check_compatible(saved.model, config.model, WHERE_FIELDS, directory)  # names the differing fields
    bundle = build_model(config, read_tokenizer(directory, saved))
    try:
        load_weights(bundle.model, directory)
    except BaseException:
        bundle.close()
        raise
    return bundle
