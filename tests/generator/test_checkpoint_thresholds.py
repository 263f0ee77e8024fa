"""generator.checkpoint and the decision thresholds: a checkpoint carries thresholds.json and
load_bundle puts them back on the model (its decisions follow them); a checkpoint without one
decides at 0.5 with a warning, a damaged one is named; a config.yaml written when seeds had one
global ``model.kg.seed_threshold`` still loads.

The checkpoints here are written by ``save_model`` from an untrained debug model without the KG
(no training run, no node features to embed), which keeps the file fast."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from generator.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    build_model,
    load_bundle,
    read_config_data,
    read_run_config,
    save_model,
)
from generator.decisions import NEVER, THRESHOLDS_FILE, Thresholds
from generator.model import GenerationSettings
from graphdb.store import StoreConfig
from tests.generator.conftest import debug_experiment, study_batch

NO_KG = ("model.kg.mode=none", "model.cross_attention=false")
FITTED = Thresholds(positive=tuple(0.05 + 0.05 * j for j in range(13)) + (NEVER,),
                    uncertain=(0.02,) + (NEVER,) * 13, fit_on="val (7 studies)",
                    f1=tuple(0.5 + 0.01 * j for j in range(13)) + (None,))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> StoreConfig:
    """Never opened (no KG), but load_bundle takes one."""
    root = tmp_path_factory.mktemp("unused_store")
    return StoreConfig(path=root / "embedded", features_cache=root / "features")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tiny_tokenizer, store) -> Path:
    root = tmp_path_factory.mktemp("thresholds_ckpt")
    cfg = debug_experiment(root, *NO_KG)
    bundle = build_model(cfg, tiny_tokenizer, store)
    bundle.model.thresholds = FITTED
    return save_model(root / "ckpt", bundle.model, cfg, None)


@pytest.fixture
def copy(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(saved, out)
    return out


def test_a_checkpoint_carries_its_thresholds(saved, store):
    data = json.loads((saved / THRESHOLDS_FILE).read_text())
    assert data == json.loads(json.dumps(FITTED.to_dict()))
    assert data["fit_on"] == "val (7 studies)"
    with load_bundle(saved, store) as bundle:
        assert bundle.model.thresholds == FITTED


def test_the_loaded_model_decides_by_them(copy, store):
    images, mask, ids, _, _ = study_batch(2)
    settings = GenerationSettings(max_new_tokens=1)
    everything = Thresholds(positive=(1e-6,) * 14, fit_on="test")
    (copy / THRESHOLDS_FILE).write_text(json.dumps(everything.to_dict()))
    with load_bundle(copy, store) as bundle:
        assert bundle.model.thresholds == everything
        results = bundle.model.eval().generate(images, mask, ids, settings)
    assert all(len(r.positive) == 14 for r in results)
    nothing = Thresholds(positive=(NEVER,) * 14, fit_on="test")
    (copy / THRESHOLDS_FILE).write_text(json.dumps(nothing.to_dict()))
    with load_bundle(copy, store) as bundle:
        results = bundle.model.eval().generate(images, mask, ids, settings)
    assert all(r.positive == [] and set(r.states.values()) == {"negative"} for r in results)


def test_a_checkpoint_without_thresholds_decides_at_one_half(copy, store, caplog):
    (copy / THRESHOLDS_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="generator.decisions"), load_bundle(copy, store) as bundle:
        assert bundle.model.thresholds == Thresholds()
        assert bundle.model.thresholds.positive == (0.5,) * 14
    assert f"has no {THRESHOLDS_FILE}" in caplog.text


@pytest.mark.parametrize("text", ["{broken", json.dumps({"fit_on": "val"}), "[]"])
def test_a_damaged_thresholds_file_is_named(copy, store, text):
    (copy / THRESHOLDS_FILE).write_text(text)
    with pytest.raises(CheckpointError, match=rf"{THRESHOLDS_FILE}") as info:
        load_bundle(copy, store)
    assert str(info.value).startswith(str(copy / THRESHOLDS_FILE))


def test_saving_again_writes_the_current_thresholds(saved, store, tmp_path):
    with load_bundle(saved, store) as bundle:
        bundle.model.thresholds = Thresholds(fit_on="resaved")
        save_model(tmp_path / "again", bundle.model, bundle.config, None)
    assert json.loads((tmp_path / "again" / THRESHOLDS_FILE).read_text())["fit_on"] == "resaved"
    with load_bundle(tmp_path / "again", store) as bundle:
        assert bundle.model.thresholds == Thresholds(fit_on="resaved")


def _add_seed_threshold(path: Path, value) -> None:
    data = yaml.safe_load(path.read_text())
    data["model"]["kg"]["seed_threshold"] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_the_obsolete_seed_threshold_is_dropped(copy, saved, store, caplog):
    assert "seed_threshold" not in yaml.safe_load((saved / CONFIG_FILE).read_text())["model"]["kg"]
    _add_seed_threshold(copy / CONFIG_FILE, 0.3)
    with caplog.at_level(logging.INFO, logger="generator.checkpoint"):
        data = read_config_data(copy)
    assert "seed_threshold" not in data["model"]["kg"]
    assert "ignoring model.kg.seed_threshold" in caplog.text
    assert read_run_config(copy).model == read_run_config(saved).model
    with load_bundle(copy, store) as bundle:
        assert bundle.model.thresholds == FITTED   # seeds and decisions come from thresholds.json
        assert not hasattr(bundle.model.config.kg, "seed_threshold")


def test_a_null_seed_threshold_is_dropped_too(copy, saved):
    _add_seed_threshold(copy / CONFIG_FILE, None)
    assert "seed_threshold" not in read_config_data(copy)["model"]["kg"]
    assert read_run_config(copy).model == read_run_config(saved).model


def test_a_new_config_cannot_set_seed_threshold(tmp_path):
    from generator.config_io import ConfigError

    with pytest.raises(ConfigError, match=r"model\.kg\.seed_threshold: unknown field"):
        debug_experiment(tmp_path, "model.kg.seed_threshold=0.3")

