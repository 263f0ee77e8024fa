"""`r2genkg demo` end to end on a small sample: real reports → phantoms → reader → baseline → metrics."""
from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from r2genkg.commands import demo
from r2genkg.options import one_line_errors


def make_app() -> typer.Typer:
    app = typer.Typer()
    demo.register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer from collapsing the group
        pass

    return one_line_errors(app)


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--train-studies", "12", "--test-studies", "5",
            "--image-size", "128", "--no-meteor"]
    result = CliRunner().invoke(make_app(), args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["counts"]["scored"] == 5
    nlg = results["metrics"]["nlg"]
    assert 0.0 < nlg["BLEU_1"] <= 1.0 and nlg["METEOR"] is None
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 5
    assert len(list((out / "images").glob("*/*.png"))) == 2 * (12 + 5)
    # second run: phantoms already there are reused, not redrawn
    again = CliRunner().invoke(make_app(), args)
    assert again.exit_code == 0, again.output
    assert "0 rendered" in again.output and "17 already present" in again.output


def test_demo_rejects_bad_sizes(tmp_path):
    result = CliRunner().invoke(make_app(), ["demo", "--out", str(tmp_path), "--test-studies", "0"])
    assert result.exit_code == 2
    assert "test_studies" in result.output
