"""Every shipped config loads and validates; a wrong field is named by its dotted path."""
from __future__ import annotations

from pathlib import Path

import pytest

from cxr.readers import Corpus
from generator.config import KGMode
from generator.config_io import ConfigError
from training.config import load_experiment

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_the_expected_configs_ship():
    assert {p.stem for p in CONFIGS} >= {"debug", "iu_phantom", "iu_xray", "mimic_cxr", "chexpert_plus"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads(path):
    cfg = load_experiment(path)
    assert cfg.name == path.stem
    assert cfg.generation.max_new_tokens >= cfg.model.max_report_tokens


def test_paper_settings_iu_xray():
    cfg = load_experiment(CONFIGS[0].parent / "iu_xray.yaml")
    assert cfg.model.vision.model_name == "swin_base_patch4_window7_224" and cfg.model.kg.mode == KGMode.GLOBAL
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.min_lr, cfg.train.batch_size) == (15, 9e-5, 1e-6, 6)
    assert cfg.model.max_report_tokens == 60
    g = cfg.generation
    assert (g.num_beams, g.repetition_penalty, g.length_penalty) == (3, 2.0, 2.0)
    cp = load_experiment(CONFIGS[0].parent / "chexpert_plus.yaml")
    assert (cp.train.epochs, cp.model.max_report_tokens, cp.data.dataset) == (10, 100, Corpus.CHEXPERT_PLUS)


@pytest.mark.parametrize("override, message", [
    ("model.vison.img_size=64", r"model\.vison: unknown field; did you mean 'vision'"),
    ("model.kg.mode=sometimes", r"model\.kg\.mode: Input should be 'none', 'global' or 'per_study', got 'sometimes'"),
    ("train.batch_size=0", r"train: TrainConfig\.batch_size must be ≥ 1"),
    ("train.eval_batch_size=0", r"train: TrainConfig\.eval_batch_size must be ≥ 1 or null"),
    ("train.epochs=two", r"train\.epochs: Input should be a valid integer, got 'two'"),
    ("model.disease_tokens.enabled=maybe", r"model\.disease_tokens\.enabled: Input should be a valid boolean, got 'maybe'"),
    ("model.kg.level_budgets=[1,2]", r"model\.kg\.level_budgets\.2: missing required field"),
    ("model.kg.mode=none", r"model: ModelConfig\.cross_attention must be false when kg\.mode is 'none'"),
])
def test_bad_fields_are_named(override, message):
    debug = CONFIGS[0].parent / "debug.yaml"
    with pytest.raises(ConfigError, match=message):
        load_experiment(debug, [override])


def test_malformed_override_and_missing_file(tmp_path):
    debug = CONFIGS[0].parent / "debug.yaml"
    with pytest.raises(ConfigError, match="section.field=value"):
        load_experiment(debug, ["train.lr"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_experiment(bad)


def test_base_inheritance_and_overrides(tmp_path):
    child = tmp_path / "child.yaml"
    debug = CONFIGS[0].parent / "debug.yaml"
    child.write_text(f"base: {debug}\nname: child\ntrain: {{epochs: 7}}\n")
    cfg = load_experiment(child, ["train.lr=0.01"])
    assert (cfg.name, cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == ("child", 7, 0.01, 8)
