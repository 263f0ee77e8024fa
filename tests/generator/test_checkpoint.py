"""generator.checkpoint: a checkpoint holds the model and a fingerprint of its graph, not where the
graph lives. Old checkpoints (deployment fields in config.yaml, no fingerprint) still load; a
checkpoint loaded against another graph, or one this version cannot read, fails naming why."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from generator.checkpoint import (
    CONFIG_FILE,
    KNOWLEDGE_FILE,
    CheckpointError,
    load_bundle,
    read_fingerprint,
    read_run_config,
)
from graphdb.fingerprint import GraphContent
from graphdb.m3kg import load_m3kg
from graphdb.schema import EDGE_TYPES

pytestmark = pytest.mark.slow


@pytest.fixture
def copy(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, out)
    return out


def _edit_yaml(path: Path, edit) -> None:
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _probabilities(checkpoint: Path, store) -> torch.Tensor:
    torch.manual_seed(0)
    images, masks = torch.randn(2, 2, 1, 64, 64), torch.ones(2, 2, dtype=torch.bool)
    with load_bundle(checkpoint, store) as bundle:
        results = bundle.model.eval().generate(images, masks, ["a", "b"])
    return torch.tensor([list(r.probabilities.values()) for r in results])


def test_a_checkpoint_records_its_graph_and_no_deployment(tiny_checkpoint, m3kg_config):
    saved = yaml.safe_load((tiny_checkpoint / CONFIG_FILE).read_text())
    assert not set(saved["model"]["kg"]) & {"store", "store_path", "uri", "features_cache", "features_model"}
    fingerprint = read_fingerprint(tiny_checkpoint)
    assert fingerprint is not None and fingerprint.edge_types == tuple(EDGE_TYPES) and fingerprint.nodes > 1000
    assert fingerprint.content == GraphContent.of_graph(load_m3kg()).digest   # links and counts included
    with load_bundle(tiny_checkpoint, m3kg_config) as bundle:
        assert bundle.fingerprint == fingerprint


def test_an_old_checkpoint_loads_and_says_what_it_cannot_check(copy, tiny_checkpoint, m3kg_config, caplog):
    def legacy(data):
        data["model"]["kg"].update(store="embedded", store_path="/somewhere/else", uri="bolt://old:7687",
                                   features_cache="/old/features", features_model=None)
    _edit_yaml(copy / CONFIG_FILE, legacy)
    (copy / KNOWLEDGE_FILE).unlink()
    assert read_run_config(copy).model == read_run_config(tiny_checkpoint).model
    with caplog.at_level(logging.WARNING, logger="generator.checkpoint"):
        old = _probabilities(copy, m3kg_config)
    assert "written before graph fingerprints" in caplog.text
    torch.testing.assert_close(old, _probabilities(tiny_checkpoint, m3kg_config))


@pytest.mark.parametrize(("field", "value", "named"), [
    ("edge_types", list(reversed(EDGE_TYPES)), "relation types"),
    ("node_table", "0123456789abcdef", "node table"),
    ("features", "another-encoder-123", "node text encoder"),
    ("content", "0123456789abcdef" * 4, r"graph content \(triples, their counts, EXPRESSES links\)"),
])
def test_another_graph_fails_loudly(copy, m3kg_config, field, value, named):
    _edit_yaml(copy / KNOWLEDGE_FILE, lambda data: data.__setitem__(field, value))
    with pytest.raises(CheckpointError, match=f"trained on another knowledge graph: {named}"):
        load_bundle(copy, m3kg_config)


def test_a_fingerprint_without_content_loads_unchecked(copy, m3kg_config):
    """Checkpoints written before the content digest: the other fields are still checked."""
    _edit_yaml(copy / KNOWLEDGE_FILE, lambda data: data.pop("content"))
    assert read_fingerprint(copy).content is None
    with load_bundle(copy, m3kg_config) as bundle:
        assert bundle.fingerprint.content is not None


def test_checkpoints_this_version_cannot_read_are_named(copy, tmp_path, m3kg_config):
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_bundle(tmp_path, m3kg_config)
    _edit_yaml(copy / CONFIG_FILE, lambda data: data["model"].__setitem__("quantum", True))
    with pytest.raises(CheckpointError, match=r"does not fit this version of r2genkg: model\.quantum: unknown field"):
        load_bundle(copy, m3kg_config)


def test_weights_that_do_not_fit_are_named(copy, m3kg_config):
    state = torch.load(copy / "model.pt", weights_only=True)
    name = next(k for k in state if k.startswith("qformer."))
    state[name] = torch.zeros(3)
    torch.save(state, copy / "model.pt")
    with pytest.raises(CheckpointError, match=rf"mis-shaped \[{name}: saved \(3,\)"):
        load_bundle(copy, m3kg_config)
