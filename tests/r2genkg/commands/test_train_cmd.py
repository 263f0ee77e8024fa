"""`r2genkg train --config configs/debug.yaml` then `r2genkg test` on its best checkpoint: the
README's main job, as CI runs it (paths moved into a temp dir); bad input exits 2 with the field."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r2genkg.cli import app

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(map(str, args)))
    return result.exit_code, result.output


def test_debug_config_trains_and_evaluates(tmp_path: Path, m3kg_store: Path, iu_annotation: Path):
    run_dir = tmp_path / "run"
    paths = [f"data.image_root={tmp_path / 'images'}", f"train.output_dir={run_dir}",
             "train.epochs=3", "data.limit={train: 48, val: 12, test: 12}"]
    graph = ["--store-path", m3kg_store, "--features-cache", tmp_path / "features"]
    code, out = run("train", *graph, "--config", REPO / "configs" / "debug.yaml", *paths)
    assert code == 0, out
    assert "stopped (epochs) after 3 epochs" in out and "samples/s" in out
    assert (run_dir / "best" / "model.pt").is_file() and (run_dir / "val_log.csv").is_file()
    code, out = run("test", *graph, run_dir / "best", "--no-meteor")
    assert code == 0, out
    assert "Classifier AUROC" in out and "F1 micro" in out
    assert ("scoring 12 of 590 test studies (data.limit.test=12 from the checkpoint's config); --full for all"
            in out)
    results = json.loads((run_dir / "best" / "eval_test" / "results.json").read_text())
    assert results["counts"]["scored"] == 12 and "classifier_auroc" in results
    assert results["split_scope"] == {"split": "test", "studies": 12, "total": 590, "limit": 12}
    # --full: the whole split, one flag away (a 20-study split keeps this quick)
    iu = json.loads(iu_annotation.read_text())
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"train": [], "val": [], "test": iu["test"][:20]}))
    code, out = run("test", *graph, run_dir / "best", "--no-meteor", "--full", "--set", f"data.annotation={small}",
                    "--output", tmp_path / "full")
    assert code == 0 and "scoring" not in out, out
    results = json.loads((tmp_path / "full" / "results.json").read_text())
    assert results["counts"]["scored"] == 20
    assert results["split_scope"] == {"split": "test", "studies": 20, "total": 20, "limit": None}
    # a second `train` resumes the finished run instead of starting over
    code, out = run("train", *graph, "--config", REPO / "configs" / "debug.yaml", *paths)
    assert code == 0 and "resumed from" in out, out


def test_bad_config_field_exits_2_naming_it(tmp_path: Path):
    code, out = run("train", "--config", REPO / "configs" / "debug.yaml", "model.llm.hidden_size=sixty")
    assert code == 2 and "model.llm.hidden_size: Input should be a valid integer, got 'sixty'" in out


def test_test_on_a_folder_that_is_not_a_checkpoint(tmp_path: Path):
    code, out = run("test", tmp_path)
    assert code == 2 and "not a checkpoint" in out
