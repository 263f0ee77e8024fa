"""`r2genkg data-stats` through typer's CliRunner: bundled IU counts, CheXpert Plus strict / lenient."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cxr.records import StudyRecord
from r2genkg.commands.data import SplitStats, register, split_stats

CHEXPERT_HEADER = [
    "path_to_image",
    "path_to_dcm",
    "frontal_lateral",
    "ap_pa",
    "report",
    "section_findings",
    "section_impression",
    "split",
]


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app: a group, so the command keeps its name."""

    register(app)
    return app


def run(app: typer.Typer, *args: str):
    return CliRunner().invoke(app, ["data-stats", *args], terminal_width=200)


def write_csv(path: Path, malformed: bool) -> Path:
    rows = [
        [
            "train/patient00001/study1/view1_frontal.jpg",
            "",
            "Frontal",
            "PA",
            "r",
            "Lungs clear.",
            "Normal.",
            "train",
        ],
        [
            "train/patient00001/study1/view2_lateral.jpg",
            "",
            "Lateral",
            "",
            "r",
            "Lungs clear.",
            "Normal.",
            "train",
        ],
        [
            "valid/patient64541/study1/view1_frontal.jpg",
            "",
            "Frontal",
            "AP",
            "No edema seen here.",
            "",
            "",
            "valid",
        ],
    ]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CHEXPERT_HEADER)
        writer.writerows(rows)
        if malformed:
            writer.writerow(["train/patient00002/study1/view1_frontal.jpg", "too", "few"])
    return path


def test_default_is_the_bundled_iu_file(app):
    result = run(app)
    assert result.exit_code == 0, result.output
    lines = {
        line.split("│")[1].strip(): line
        for line in result.output.splitlines()
        if line.count("│") > 2
    }
    assert "2,069" in lines["train"] and "4,138" in lines["train"]
    assert "296" in lines["val"] and "590" in lines["test"] and "2,955" in lines["all"]
    assert "skipped: 0 bad items" in result.output


def test_chexpert_plus_strict_fails_lenient_skips(app, tmp_path):
    path = write_csv(tmp_path / "df.csv", malformed=True)
    strict = run(app, "--kind", "chexpert_plus", "--path", str(path))
    assert strict.exit_code == 1
    assert "df.csv: row 4 (line 5): 3 field(s), the header has 8" in strict.output
    lenient = run(app, "--kind", "chexpert_plus", "--path", str(path), "--lenient")
    assert lenient.exit_code == 0, lenient.output
    assert "1 bad items skipped" in lenient.output and "row 4 (line 5)" in lenient.output
    rows = {
        line.split("│")[1].strip(): line
        for line in lenient.output.splitlines()
        if line.count("│") > 2
    }
    assert [c.strip() for c in rows["train"].split("│")[2:5]] == ["1", "2", "3.0"]
    assert [c.strip() for c in rows["val"].split("│")[2:5]] == ["1", "1", "4.0"]


def test_bad_option_combinations(app, tmp_path):
    assert run(app, "--kind", "chexpert_plus").exit_code == 2
    assert run(app, "--kind", "folder", "--annotation", str(tmp_path)).exit_code == 2


def test_split_stats_rows():
    records = [
        StudyRecord("a", (Path("x"), Path("y")), "one two", split="val"),
        StudyRecord("b", (Path("z"),), "one two three four", split="train"),
        StudyRecord("c", (Path("w"),), "x", split=""),
    ]
    assert split_stats(records) == [
        SplitStats("train", 1, 1, 4.0),
        SplitStats("val", 1, 2, 2.0),
        SplitStats("", 1, 1, 1.0),
        SplitStats("all", 3, 4, 7 / 3),
    ]
