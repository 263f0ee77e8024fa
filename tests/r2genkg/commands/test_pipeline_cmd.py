"""`r2genkg pipeline`: the README's main job (phantoms → M3KG → train → run_batch → evaluate →
table) in a temp dir; a rerun resumes every step instead of redoing it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r2genkg.cli import app

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def test_pipeline_end_to_end_then_resumes(tmp_path: Path, m3kg_store: Path):
    paths = [f"data.image_root={tmp_path / 'images'}", f"train.output_dir={tmp_path / 'run'}"]
    args = ["pipeline", "--config", str(REPO / "configs" / "debug.yaml"), "--no-meteor",
            "--store-path", str(m3kg_store), "--features-cache", str(tmp_path / "features"), *paths]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for step in ("1/6 phantoms", "2/6 M3KG", "3/6 train", "4/6 run_batch", "5/6 evaluate", "6/6 results"):
        assert step in result.output
    assert "NLG (590 reports)" in result.output and "Classifier AUROC" in result.output
    assert re.search(r"wall time: [0-9.]+ s \(phantoms [0-9.]+ s, M3KG [0-9.]+ s, train [0-9.]+ s, "
                     r"run_batch [0-9.]+ s, evaluate [0-9.]+ s, results [0-9.]+ s\)", result.output)
    rows = [json.loads(x) for x in (tmp_path / "run" / "test_reports.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows}) == 590
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "resumed from" in again.output and "0 reports written" in again.output and "590 already there" in again.output
