"""`r2genkg calibrate`: refit a checkpoint's decision thresholds on a labelled split, keeping the old ones."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxr.datasets import load_split
from cxr.observations import OBSERVATIONS
from generator.checkpoint import read_config_data
from generator.config_io import from_dict
from generator.decisions import (
    DEFAULT_THRESHOLD,
    THRESHOLDS_FILE,
    ThresholdRules,
    fit_thresholds,
    read_thresholds,
)
from training.calibrate import PREVIOUS_FILE, calibrate_checkpoint
from training.config import ExperimentConfig
from training.evaluate_checkpoint import evaluate_checkpoint


@pytest.fixture
def checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "best"
    shutil.copytree(tiny_checkpoint, copy)
    return copy


def test_calibrate_refits_on_the_split_and_keeps_the_previous_thresholds(checkpoint, m3kg_config):
    before = (checkpoint / THRESHOLDS_FILE).read_text()
    done = calibrate_checkpoint(checkpoint, m3kg_config, "test", ["train.thresholds.min_positives=1",
                                                                  "train.thresholds.min_f1=0.0"], progress=False)
    assert (checkpoint / PREVIOUS_FILE).read_text() == before
    assert done.kept == checkpoint / PREVIOUS_FILE and done.rules == ThresholdRules(min_positives=1, min_f1=0.0)
    assert read_thresholds(checkpoint) == done.thresholds
    assert done.thresholds.fit_on == "test (8 studies)"
    # the same fit from the probabilities the generate path writes (an independent pass over the split)
    report = evaluate_checkpoint(checkpoint, m3kg_config, "test", checkpoint.parent / "eval", meteor=False,
                                 progress=False)
    rows = {r["id"]: r for r in map(json.loads, (report.output_dir / "predictions.jsonl").open())}
    config = from_dict(ExperimentConfig, read_config_data(checkpoint))
    records = load_split(config.data, "test")
    from cxr.labeler import label_reports

    labels = label_reports([r.report for r in records])
    probs = np.array([[rows[r.study_id]["observations"][o.value] for o in OBSERVATIONS] for r in records])
    again = fit_thresholds(probs, labels, "test", ThresholdRules(min_positives=1, min_f1=0.0))
    assert np.allclose(again.positive, done.thresholds.positive, atol=1e-5)


def test_the_rules_come_from_the_overrides(checkpoint, m3kg_config):
    fitted = calibrate_checkpoint(checkpoint, m3kg_config, "test", ["train.thresholds.min_positives=1",
                                                                    "train.thresholds.min_f1=0.0"],
                                  progress=False).thresholds
    assert any(f is not None for f in fitted.f1), "the tiny test split has positives to fit on"
    # more positives required than the 8 studies hold: nothing is fit, every cut stays at 0.5
    unfit = calibrate_checkpoint(checkpoint, m3kg_config, "test", ["train.thresholds.min_positives=9"],
                                 progress=False).thresholds
    assert unfit.f1 == (None,) * len(OBSERVATIONS) and set(unfit.positive) == {DEFAULT_THRESHOLD}
    assert json.loads((checkpoint / PREVIOUS_FILE).read_text())["observations"] == fitted.to_dict()["observations"]


def test_calibrate_command_prints_the_table_and_names_bad_input(checkpoint, m3kg_config):
    from r2genkg.cli import app

    store = ["--store-path", str(m3kg_config.path), "--features-cache", str(m3kg_config.features_cache)]
    ok = CliRunner().invoke(app, ["calibrate", str(checkpoint), "--split", "test", "--min-positives", "1",
                                  *store], env={"COLUMNS": "300"})
    assert ok.exit_code == 0, ok.output
    assert "Decision thresholds" in ok.output and PREVIOUS_FILE in ok.output
    bad = CliRunner().invoke(app, ["calibrate", str(checkpoint), "--min-f1", "2", *store], env={"COLUMNS": "300"})
    assert bad.exit_code != 0 and "min_f1 must be in [0, 1]" in bad.output
