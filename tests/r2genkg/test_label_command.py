"""`r2genkg label` / `label-stats`: CheXpert-compatible CSV round trip, annotation input, bad input."""

from __future__ import annotations

import csv
import json

import typer
from typer.testing import CliRunner

from cxr.observations import OBSERVATIONS
from r2genkg.commands.label import register


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _read(path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_csv_round_trip(tmp_path):
    reports = [
        "No pneumothorax or pleural effusion.",
        "Mild cardiomegaly, possible small left effusion.",  # comma inside: quoted
        "",
    ]
    src = tmp_path / "in.csv"
    with src.open("w", newline="") as f:
        csv.writer(f).writerows([[r] for r in reports])
    out = tmp_path / "out" / "labels.csv"
    result = CliRunner().invoke(
        _app(), ["label", "--reports-path", str(src), "--output-path", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    with out.open(newline="") as f:
        header = next(csv.reader(f))
    assert header == ["Reports"] + [o.value for o in OBSERVATIONS]
    rows = _read(out)
    assert [r["Reports"] for r in rows] == reports
    assert (
        rows[0]["Pneumothorax"] == "0.0"
        and rows[0]["No Finding"] == "1.0"
        and rows[0]["Edema"] == ""
    )
    assert rows[1]["Cardiomegaly"] == "1.0" and rows[1]["Pleural Effusion"] == "-1.0"
    assert rows[1]["No Finding"] == ""


def test_annotation_input_with_split(tmp_path):
    ann = tmp_path / "annotation.json"
    ann.write_text(
        json.dumps(
            {
                "train": [
                    {
                        "id": "a",
                        "report": "Stable cardiomegaly.",
                        "image_path": [],
                        "split": "train",
                    }
                ],
                "test": [
                    {
                        "id": "b",
                        "report": "Small right pneumothorax.",
                        "image_path": [],
                        "split": "test",
                    }
                ],
            }
        )
    )
    out = tmp_path / "labels.csv"
    result = CliRunner().invoke(
        _app(),
        [
            "label",
            "--annotation",
            str(ann),
            "--split",
            "test",
            "--output-path",
            str(out),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = _read(out)
    assert len(rows) == 1 and rows[0]["Pneumothorax"] == "1.0"


def test_malformed_csv_names_the_row(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("No effusion.\nHeart normal, lungs clear.\n")  # unquoted comma on row 2
    result = CliRunner().invoke(
        _app(),
        ["label", "--reports-path", str(src), "--output-path", str(tmp_path / "o.csv")],
        env={"COLUMNS": "300"},
    )  # keep the error message on one line
    assert result.exit_code != 0
    assert "row 2" in result.output and "2 fields" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_needs_exactly_one_input(tmp_path):
    result = CliRunner().invoke(_app(), ["label", "--output-path", str(tmp_path / "o.csv")])
    assert result.exit_code != 0 and "exactly one" in result.output


def test_label_stats_prints_rates(iu_annotation):
    result = CliRunner().invoke(
        _app(), ["label-stats", "--annotation", str(iu_annotation), "--split", "val"]
    )
    assert result.exit_code == 0, result.output
    assert "296 reports" in result.output
    assert all(o.value in result.output for o in OBSERVATIONS)
