"""Checkpoints: a trained R2GenKG saved and rebuilt (the model, not the deployment).

Layout of a checkpoint directory::

    config.yaml          the run's config (RunConfig; training writes its ExperimentConfig)
    model.pt             state dict minus frozen parts that come from a local path (LLM base, vision)
    knowledge.json       the GraphFingerprint of the graph it was trained on (KG modes)
    thresholds.json      the per-observation decision thresholds, fit on val (generator.decisions)
    tokenizer/, llm_config.json   (generator.llm.save_llm_artifacts)
    bank/                the disease-token FAISS index + metadata (when built)

Where the graph lives comes from the caller (``graphdb.store.StoreConfig``, from the command line
or the environment), never from the checkpoint; loading against a graph whose fingerprint differs
fails with the differences named. Checkpoints written before fingerprints still load, with a
warning that the graph cannot be verified.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import torch
import yaml

from cxr.files import atomic_directory
from encoders.state import StateDictError, load_state
from encoders.vision import FreezeMode
from generator.config import KGMode, RunConfig
from generator.config_io import ConfigError, diff, dump_yaml, from_dict, to_dict
from generator.decisions import THRESHOLDS_FILE, read_thresholds, write_thresholds
from generator.llm import LLMTraining, load_built_llm, load_tokenizer, save_llm_artifacts
from generator.model import R2GenKG
from graphdb.fingerprint import GraphFingerprint
from graphdb.provider import Knowledge, open_knowledge
from graphdb.store import StoreConfig, StoreKind
from retrieval.index import TokenIndex

log = logging.getLogger(__name__)

CONFIG_FILE, MODEL_FILE, KNOWLEDGE_FILE, BANK_DIR = "config.yaml", "model.pt", "knowledge.json", "bank"
# Where pretrained weights are read from: a checkpoint that moved may point elsewhere.
PRETRAINED_PATHS = ("vision.weights", "llm.path")
# Deployment fields that checkpoints before the StoreConfig split saved under model.kg.
LEGACY_KG_FIELDS = ("store", "store_path", "uri", "features_cache", "features_model")
# progress(step): told what a long load is doing now, e.g. "opening the graph store …" (serve prints it)
Progress = Callable[[str], None]


def quiet(step: str) -> None:
    """The default ``Progress``: says nothing."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used as asked; the message names the checkpoint and the reason."""


@dataclass
class ModelBundle:
    """A model and the knowledge graph its subgraph provider reads; close() releases the store."""

    model: R2GenKG
    config: RunConfig
    knowledge: Knowledge | None

    @property
    def fingerprint(self) -> GraphFingerprint | None:
        return self.knowledge.fingerprint if self.knowledge is not None else None

    def close(self) -> None:
        if self.knowledge is not None:
            self.knowledge.close()
            self.knowledge = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_model(config: RunConfig, tokenizer: Any, store: StoreConfig, progress: Progress = quiet,
                llm_hidden_size: int | None = None) -> ModelBundle:
    """A fresh model for ``config``; opens the graph ``store`` says when the KG mode needs one.
    ``llm_hidden_size``: the adapter alone, for an LLM of that width that lives elsewhere."""
    knowledge = None
    if config.model.kg.mode != KGMode.NONE:
        where = store.path if store.kind is StoreKind.EMBEDDED else store.uri
        progress(f"opening the graph store ({store.kind.value}, {where}) and its node features")
        knowledge = open_knowledge(store, config.model.kg.spec)
    try:
        progress("building the model (vision encoder, Q-Former, R-GCN" + (", LLM)" if llm_hidden_size is None else ")"))
        model = R2GenKG(config.model, tokenizer, knowledge.features if knowledge else None,
                        knowledge.provider if knowledge else None, llm_hidden_size)
    except BaseException:
        if knowledge is not None:
            knowledge.close()
        raise
    return ModelBundle(model, config, knowledge)


# ---- weights ----------------------------------------------------------------------------------
def _reloaded_keys(model: R2GenKG) -> set[str]:
    """State-dict keys of frozen weights that come back from a local path on load (not saved)."""
    cfg = model.config
    prefixes = []
    if cfg.llm.path is not None and cfg.llm.training != LLMTraining.FULL:
        prefixes.append("llm.")
    if cfg.vision.weights is not None and cfg.vision.freeze == FreezeMode.ALL:
        prefixes.append("vision.backbone.")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k for k in model.state_dict() if k.startswith(tuple(prefixes)) and k not in trainable}


def model_state(model: R2GenKG) -> dict[str, torch.Tensor]:
    """What a checkpoint saves: every tensor except frozen ones that a local path gives back."""
    skip = _reloaded_keys(model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in skip}


def load_weights(model: R2GenKG, directory: Path) -> None:
    """The checkpoint's weights (strictly checked) and its disease-token bank, onto ``model``."""
    state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
    try:
        load_state(model, state, directory / MODEL_FILE, allow_missing=_reloaded_keys(model))
    except StateDictError as err:
        raise CheckpointError(str(err)) from None
    load_bank_and_thresholds(model, directory)


def load_bank_and_thresholds(model: R2GenKG, directory: Path) -> None:
    """The disease-token bank (when the folder has one) and the decision thresholds, onto ``model``."""
    if (directory / BANK_DIR).is_dir():
        model.bank = TokenIndex.load(directory / BANK_DIR)
    try:
        model.thresholds = read_thresholds(directory)
    except ValueError as err:
        raise CheckpointError(str(err)) from None


# ---- writing ----------------------------------------------------------------------------------
def write_model_files(directory: Path, model: R2GenKG, config: RunConfig,
                      fingerprint: GraphFingerprint | None) -> None:
    """Everything ``load_bundle`` needs, into an existing ``directory`` (not atomic on its own)."""
    torch.save(model_state(model), directory / MODEL_FILE)
    (directory / CONFIG_FILE).write_text(dump_yaml(config), encoding="utf-8")
    if fingerprint is not None:
        (directory / KNOWLEDGE_FILE).write_text(yaml.safe_dump(fingerprint.to_dict(), sort_keys=False),
                                                encoding="utf-8")
    save_llm_artifacts(directory, model.llm, model.tokenizer, model.config.llm)
    write_thresholds(directory, model.thresholds)
    if model.bank is not None:
        model.bank.save(directory / BANK_DIR)


def save_model(directory: str | Path, model: R2GenKG, config: RunConfig,
               fingerprint: GraphFingerprint | None) -> Path:
    """Write a checkpoint whole or not at all (a temporary sibling, then a rename)."""
    with atomic_directory(directory) as tmp:
        write_model_files(tmp, model, config, fingerprint)
    return Path(directory)


# ---- reading ----------------------------------------------------------------------------------
def read_config_data(directory: str | Path) -> dict[str, Any]:
    """config.yaml as plain data, with the deployment fields old checkpoints saved removed."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no {CONFIG_FILE})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise CheckpointError(f"{path}: unreadable YAML ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a mapping, got {type(data).__name__}")
    kg = data.get("model", {}).get("kg", {}) if isinstance(data.get("model"), dict) else {}
    legacy = [k for k in LEGACY_KG_FIELDS if isinstance(kg, dict) and k in kg]
    if legacy:
        log.info("%s: ignoring the deployment fields older versions saved (model.kg.%s); the graph "
                 "comes from --store / R2GENKG_STORE and friends now", directory, ", model.kg.".join(legacy))
        for key in legacy:
            kg.pop(key)
    if isinstance(kg, dict) and kg.pop("seed_threshold", None) is not None:
        log.info("%s: ignoring model.kg.seed_threshold; seeds now come from the per-observation thresholds "
                 "(%s, 0.5 when the checkpoint has none)", directory, THRESHOLDS_FILE)
    return data


def read_run_config(directory: str | Path) -> RunConfig:
    """The checkpoint's RunConfig (its training settings, if any, are not read here)."""
    data = read_config_data(directory)
    data.pop("train", None)
    try:
        return from_dict(RunConfig, data)
    except ConfigError as err:
        raise CheckpointError(f"{directory}: its {CONFIG_FILE} does not fit this version of r2genkg: {err}") from None


def read_fingerprint(directory: str | Path) -> GraphFingerprint | None:
    path = Path(directory) / KNOWLEDGE_FILE
    if not path.is_file():
        return None
    try:
        return GraphFingerprint.from_dict(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (ValueError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path}: damaged graph fingerprint ({err})") from None


def read_tokenizer(directory: Path, config: RunConfig) -> Any:
    """The checkpoint's tokenizer (trained on its reports), or the local LLM folder's."""
    if config.model.llm.path is None:
        return load_built_llm(directory, config.model.llm)[1]
    return load_tokenizer(config.model.llm, None)


def check_same_model(saved: RunConfig, requested: RunConfig, source: Path) -> None:
    """Raise naming every architecture field that differs (pretrained-weight paths may differ)."""
    diffs = [d for d in diff(to_dict(saved.model), to_dict(requested.model)) if not d.startswith(PRETRAINED_PATHS)]
    if diffs:
        raise CheckpointError(f"{source}: the requested model differs from the checkpoint's: " + "; ".join(diffs[:8]))


def check_fingerprint(saved: GraphFingerprint | None, bundle: ModelBundle, source: Path) -> None:
    """The graph opened now must be the one the checkpoint was trained on."""
    current = bundle.fingerprint
    if current is None:
        return
    if saved is None:
        log.warning("%s was written before graph fingerprints: cannot check that the graph it reads now "
                    "(%s nodes, node table %s) is the one it was trained on", source, f"{current.nodes:,}",
                    current.node_table)
        return
    problems = saved.differences(current)
    if problems:
        raise CheckpointError(f"{source} was trained on another knowledge graph: " + "; ".join(problems)
                              + " (trained vs now). Point --store / --store-path / --neo4j-uri / "
                              "--features-model at the graph it was trained on.")


def load_bundle(directory: str | Path, store: StoreConfig, config: RunConfig | None = None,
                progress: Progress = quiet) -> ModelBundle:
    """Rebuild a checkpoint's model (on CPU; the caller places it) with its weights and bank.

    ``config`` (optional) replaces the saved one for everything but the architecture
    (generation, data paths); the store is the deployment's. ``progress`` hears each step.
    """
    directory = Path(directory)
    progress(f"reading the checkpoint {directory} (config, tokenizer)")
    saved = read_run_config(directory)
    if config is not None:
        check_same_model(saved, config, directory)
    config = config or saved
    bundle = build_model(config, read_tokenizer(directory, config), store, progress)
    try:
        check_fingerprint(read_fingerprint(directory), bundle, directory)
        progress("loading the weights" + (" and the disease-token index" if (directory / BANK_DIR).is_dir() else ""))
        load_weights(bundle.model, directory)
    except BaseException:
        bundle.close()
        raise
    return bundle


def checkpoint_id(directory: str | Path) -> str:
    """The run name + the first 12 hex of the weights' sha256: names what wrote a report."""
    directory = Path(directory)
    digest = hashlib.sha256()
    with (directory / MODEL_FILE).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return f"{read_run_config(directory).name}@{digest.hexdigest()[:12]}"
