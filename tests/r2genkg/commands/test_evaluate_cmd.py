"""`r2genkg evaluate` end to end through Typer's CliRunner on the bundled IU test split."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from r2genkg.commands.evaluate import register
from r2genkg.options import one_line_errors
from training.evaluate import evaluate


@pytest.fixture(scope="module")
def app():
    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command keeps "evaluate" a named subcommand
    def _noop() -> None:
        """Nothing."""

    return one_line_errors(app)


@pytest.fixture()
def predictions(tmp_path, iu_annotation):
    test = json.loads(iu_annotation.read_text())["test"]
    path = tmp_path / "preds.jsonl"
    with path.open("w") as f:  # every study "predicted" by the previous study's real report
        for a, b in zip(test, test[-1:] + test[:-1]):
            f.write(json.dumps({"id": a["id"], "report": b["report"]}) + "\n")
    return path


def run(app, *args):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)])


def test_end_to_end_json_matches_python_api(app, predictions, iu_annotation, tmp_path):
    out = tmp_path / "results.json"
    result = run(
        app,
        "--predictions",
        predictions,
        "--references",
        iu_annotation,
        "--split",
        "test",
        "--output",
        out,
        "--style",
        "iu_xray",
        "--no-meteor",
    )
    assert result.exit_code == 0, result.output
    for heading in ("BLEU_4", "CIDEr", "F1 macro", "all 14", "Pleural Effusion", "support"):
        assert heading in result.output
    written = json.loads(out.read_text())
    api = evaluate(predictions, iu_annotation, "test", "iu_xray", meteor=False).to_dict()
    assert written == json.loads(json.dumps(api))
    assert f"{written['metrics']['nlg']['BLEU_4']:.4f}" in result.output
    assert written["counts"]["scored"] == 590


def test_bad_line_is_reported_with_exit_code_2(app, predictions, iu_annotation):
    with predictions.open("a") as f:
        f.write('{"id": "CXR1_1_IM-0001", "report": \n')
    result = run(app, "--predictions", predictions, "--references", iu_annotation, "--no-meteor")
    assert result.exit_code == 2
    assert "line 591: malformed JSON" in result.output


def test_wrong_split_is_reported(app, predictions, iu_annotation):
    result = run(
        app,
        "--predictions",
        predictions,
        "--references",
        iu_annotation,
        "--split",
        "val",
        "--no-meteor",
    )
    assert result.exit_code == 2
    assert "not in split 'val'" in result.output


@pytest.mark.slow
def test_with_meteor(app, predictions, iu_annotation, tmp_path):
    out = tmp_path / "results.json"
    result = run(
        app,
        "--predictions",
        predictions,
        "--references",
        iu_annotation,
        "--output",
        out,
        "--no-clinical",
    )
    assert result.exit_code == 0, result.output
    meteor = json.loads(out.read_text())["metrics"]["nlg"]["METEOR"]
    assert 0.05 < meteor < 0.9 and f"{meteor:.4f}" in result.output
    assert "Per observation" not in result.output


def test_the_models_decisions_are_scored_when_the_predictions_carry_them(app, predictions, iu_annotation, tmp_path):
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    with predictions.open("w") as f:   # every study decided Cardiomegaly
        f.writelines(json.dumps({**r, "positive": ["Cardiomegaly"]}) + "\n" for r in rows)
    out = tmp_path / "results.json"
    result = run(app, "--predictions", predictions, "--references", iu_annotation, "--output", out, "--no-meteor")
    assert result.exit_code == 0, result.output
    assert "5, decisions" in result.output and "consistency F1" in result.output
    decided = json.loads(out.read_text())["metrics"]["decisions_ce_5"]["per_class"]
    cardiomegaly = next(c for c in decided if c["observation"] == "Cardiomegaly")
    assert cardiomegaly["recall"] == 1.0 and cardiomegaly["fp"] + cardiomegaly["tp"] == 590
