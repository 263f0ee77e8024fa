"""`r2genkg check REPORTS.csv --output OUT.jsonl [--probabilities P.csv --checkpoint DIR]`: one line per
report in input order, its CSV row number, the warnings; bad input is one line naming the problem."""

from __future__ import annotations

import csv
import json

from typer.testing import CliRunner

from cxr.observations import OBSERVATIONS, Observation
from generator.decisions import Thresholds, write_thresholds
from r2genkg.cli import app

REPORTS = [
    "The heart is normal in size. The lungs are clear.",
    "No pleural effusion. Small right pleural effusion.",        # a comma-free contradiction
    "The heart is enlarged, the lungs are clear.",                 # a comma inside: quoted
]


def _csv(path, rows) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)


def _run(*args: str):
    return CliRunner().invoke(app, ["check", *args], env={"COLUMNS": "300"})


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_line_per_report_in_order_with_its_row_number(tmp_path):
    src = tmp_path / "reports.csv"
    src.write_text('The heart is normal in size. The lungs are clear.\n\n'
                   'No pleural effusion. Small right pleural effusion.\n"The heart is enlarged, the lungs are clear."\n')
    out = tmp_path / "out" / "checked.jsonl"
    result = _run(str(src), "--output", str(out))
    assert result.exit_code == 0, result.output
    rows = _lines(out)
    assert [r["row"] for r in rows] == [1, 3, 4]          # the blank line 2 is skipped, not renumbered
    assert rows[0]["warnings"] == [] and rows[2]["warnings"] == []
    assert [w["kind"] for w in rows[1]["warnings"]] == ["contradiction"]
    assert set(rows[1]["warnings"][0]) == {"kind", "sentence", "detail"}
    assert "3 reports, 1 with warnings" in result.output


def _checkpoint(tmp_path, margin):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    write_thresholds(folder, Thresholds(margin=margin))    # every cut 0.5
    return folder


def _probabilities(tmp_path, cardiomegaly: list[float], header: bool = True):
    rows = []
    for p in cardiomegaly:
        row = [0.1] * len(OBSERVATIONS)
        row[OBSERVATIONS.index(Observation.CARDIOMEGALY)] = p
        rows.append(row)
    path = tmp_path / "probs.csv"
    _csv(path, ([[o.value for o in reversed(OBSERVATIONS)]] + [r[::-1] for r in rows]) if header else rows)
    return path


def test_probabilities_add_disagreement_with_the_image(tmp_path):
    src, out = tmp_path / "reports.csv", tmp_path / "out.jsonl"
    _csv(src, [[r] for r in REPORTS])
    ckpt = _checkpoint(tmp_path, margin=2.0)
    for header in (True, False):          # a header in any column order, or the OBSERVATIONS order
        probs = _probabilities(tmp_path, [0.1, 0.1, 0.001], header=header)
        result = _run(str(src), "--output", str(out), "--probabilities", str(probs), "--checkpoint", str(ckpt))
        assert result.exit_code == 0, result.output
        rows = _lines(out)
        assert [w["kind"] for w in rows[2]["warnings"]] == ["disagrees_with_image"]
        assert "cardiomegaly" in rows[2]["warnings"][0]["detail"]
    probs = _probabilities(tmp_path, [0.1, 0.1, 0.4])     # near the cut: no warning
    assert _run(str(src), "--output", str(out), "--probabilities", str(probs), "--checkpoint", str(ckpt)).exit_code == 0
    assert _lines(out)[2]["warnings"] == []


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    src, out = tmp_path / "reports.csv", tmp_path / "out.jsonl"
    _csv(src, [[r] for r in REPORTS])
    probs = _probabilities(tmp_path, [0.1, 0.1])
    result = _run(str(src), "--output", str(out), "--probabilities", str(probs), "--checkpoint",
                  str(_checkpoint(tmp_path, margin=2.0)))
    assert result.exit_code == 2 and "2 rows of probabilities for 3 reports" in result.output
    result = _run(str(src), "--output", str(out), "--probabilities", str(probs))
    assert result.exit_code != 0 and "needs --checkpoint" in result.output
    old = tmp_path / "old"
    old.mkdir()
    write_thresholds(old, Thresholds())                  # written before the margin existed
    result = _run(str(src), "--output", str(out), "--probabilities", str(_probabilities(tmp_path, [0.1] * 3)),
                  "--checkpoint", str(old))
    assert result.exit_code == 2 and "r2genkg calibrate" in result.output
    bad = tmp_path / "bad.csv"
    _csv(bad, [[0.5] * 3] * 3)
    (tmp_path / "x").mkdir()
    result = _run(str(src), "--output", str(out), "--probabilities", str(bad), "--checkpoint",
                  str(_checkpoint(tmp_path / "x", margin=1.0)))
    assert result.exit_code == 2 and "row 1 has 3 values" in result.output
    assert not out.exists()
