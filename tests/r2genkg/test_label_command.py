"""`r2genkg label` / `label-stats`: CheXpert-compatible CSV round trip, annotation input, bad input."""

from __future__ import annotations

import csv
import json

import pytest
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


EMPTY_ROW = {o.value: "" for o in OBSERVATIONS}


def _run(args: list[str]):
    return CliRunner().invoke(_app(), ["label", *args, "--no-progress"], env={"COLUMNS": "300"})


def _label_file(tmp_path, data: bytes) -> list[dict[str, str]]:
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_bytes(data)
    result = _run(["--reports-path", str(src), "--output-path", str(out)])
    assert result.exit_code == 0, result.output
    return _read(out)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_accepts_the_chexpert_labeler_flags_and_default_output(tmp_path, monkeypatch):
    src = tmp_path / "reports.csv"
    src.write_text("Small right pneumothorax.\n")
    out = tmp_path / "labels.csv"
    result = _run(["--reports_path", str(src), "--output_path", str(out)])
    assert result.exit_code == 0, result.output
    assert _read(out)[0]["Pneumothorax"] == "1.0"
    monkeypatch.chdir(tmp_path)   # label.py's default --output_path
    result = _run(["--reports_path", str(src)])
    assert result.exit_code == 0, result.output
    assert _read(tmp_path / "labeled_reports.csv")[0]["Pneumothorax"] == "1.0"


def test_blank_lines_are_skipped(tmp_path):
    rows = _label_file(tmp_path, b"No pneumothorax.\n\n   \r\n\nMild cardiomegaly.\n\n")
    assert [r["Reports"] for r in rows] == ["No pneumothorax.", "Mild cardiomegaly."]


@pytest.mark.parametrize("header", ["Reports", "report", "TEXT", " Findings "])
def test_header_row_is_skipped_and_logged(tmp_path, caplog, header):
    rows = _label_file(tmp_path, f"\n{header}\nNo pneumothorax.\nReports\n".encode())
    # only a first row is a header: a later "Reports" is a (meaningless) report like any other
    assert [r["Reports"] for r in rows] == ["No pneumothorax.", "Reports"]
    assert _warnings(caplog)[0] == f"{tmp_path / 'in.csv'}: row 2 ({header!r}) is a header, not a report: skipped"


def test_first_row_that_is_a_report_is_kept(tmp_path, caplog):
    rows = _label_file(tmp_path, b"Report unchanged: no pneumothorax.\n")
    assert len(rows) == 1 and rows[0]["Pneumothorax"] == "0.0"
    assert not any("header" in w for w in _warnings(caplog))


def test_utf8_byte_order_mark_is_dropped(tmp_path):
    rows = _label_file(tmp_path, "Reports\nNo pneumothorax.\n".encode("utf-8-sig"))
    assert [r["Reports"] for r in rows] == ["No pneumothorax."]   # "\ufeffReports" would be a report


def test_cp1252_file_is_read_with_a_one_line_warning(tmp_path, caplog):
    text = "No pneumothorax.\n\"Small left effusion \u2013 unchanged, 2\u00b0 review.\"\n"
    rows = _label_file(tmp_path, text.encode("cp1252"))
    assert rows[1]["Reports"] == "Small left effusion \u2013 unchanged, 2\u00b0 review."
    assert rows[1]["Pleural Effusion"] == "1.0"
    offset = text.encode("cp1252").index(b"\x96")
    notice = f"{tmp_path / 'in.csv'}: byte 0x96 at offset {offset} is not UTF-8; read as cp1252 (Windows Latin-1)"
    assert _warnings(caplog) == [notice]


def test_undecodable_file_fails_with_one_line_naming_file_and_offset(tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"No effusion.\nab\x81cd\n")   # 0x81: invalid UTF-8 and undefined in cp1252
    result = _run(["--reports-path", str(src), "--output-path", str(tmp_path / "o.csv")])
    assert result.exit_code != 0
    assert "unknown text encoding: byte 0x81 at offset 15 is not UTF-8" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_empty_and_non_english_reports_get_blanks_and_a_warning_naming_the_row(tmp_path, caplog):
    rows = _label_file(tmp_path, b'Small right pneumothorax.\nKein Pneumothorax. Kleiner Pleuraerguss links.\n""\n')
    assert rows[0]["Pneumothorax"] == "1.0"
    for row in rows[1:]:
        assert {k: v for k, v in row.items() if k != "Reports"} == EMPTY_ROW
    src = tmp_path / "in.csv"
    assert _warnings(caplog) == [f"{src}: row 2: not English report, its labels are left blank",
                                 f"{src}: row 3: empty report, its labels are left blank"]


def test_hedged_reports_are_uncertain_and_leave_no_finding_blank(tmp_path):
    rows = _label_file(tmp_path, b"Pneumothorax is not excluded.\n"
                                 b"It is not unlikely that there is a small left effusion.\n")
    assert rows[0]["Pneumothorax"] == "-1.0" and rows[0]["No Finding"] == ""
    assert rows[1]["Pleural Effusion"] == "-1.0" and rows[1]["No Finding"] == ""
