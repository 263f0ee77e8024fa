"""`r2genkg label` and `r2genkg label-stats`: the CheXpert-compatible report labeler CLI.

Input: a header-less CSV with one report per row (the CheXpert labeler's ``--reports_path``; blank
lines are skipped, a first row that is a known column name such as "Reports" is taken for a
header, a cp1252 file is read with a warning), or an R2Gen annotation.json (+ split).
Output: a CSV with ``Reports`` then the 14 observation columns holding 1.0 / 0.0 / -1.0 / blank.
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from tqdm.auto import tqdm

from cxr.observations import OBSERVATIONS
from cxr.readers.common import read_text
from cxr.readers.r2gen import load_annotation
from cxr.records import DataError

log = logging.getLogger(__name__)

REPORTS_COLUMN = "Reports"
# A first row holding one of these (any case) is a column name, not a report: our own output's
# and the CheXpert labeler's "Reports", and the usual report-column names of datasets.
HEADER_WORDS = frozenset({"reports", "report", "text", "report text", "report_text", "findings",
                          "impression", "sentence", "sentences"})


@dataclass(frozen=True)
class Report:
    text: str
    where: str    # names the report in messages: "in.csv: row 3", "annotation.json: test[5]"
    row: int | None = None   # its row number in a CSV (from 1; blank lines count)


def _is_blank(row: list[str]) -> bool:
    """An empty line, or one of white space only. A quoted empty field ("") is an empty report."""
    return not row or (len(row) == 1 and row[0] != "" and not row[0].strip())


def read_reports_csv(path: Path) -> list[Report]:
    """One report per row, no header (the CheXpert labeler's input). Each row must be one field;
    blank lines are skipped, as the CheXpert labeler (pandas) skips them."""
    reports: list[Report] = []
    first = True
    rows = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        for row_number, row in enumerate(rows, start=1):
            if _is_blank(row):
                continue
            if len(row) != 1:
                raise DataError(f"{path}: row {row_number} has {len(row)} fields, expected 1 report per row"
                                " (quote reports that contain commas)")
            if first and row[0].strip().casefold() in HEADER_WORDS:
                log.warning("%s: row %d (%r) is a header, not a report: skipped", path, row_number, row[0])
            else:
                reports.append(Report(row[0], f"{path}: row {row_number}", row_number))
            first = False
    except csv.Error as err:   # e.g. an unterminated quote
        raise DataError(f"{path}: malformed CSV near row {rows.line_num}: {err}") from err
    return reports


def _load(reports_path: Path | None, annotation: Path | None, split: str | None) -> list[Report]:
    if (reports_path is None) == (annotation is None):
        raise typer.BadParameter("give exactly one of --reports-path or --annotation")
    if split is not None and annotation is None:
        raise typer.BadParameter("--split needs --annotation")
    if reports_path is not None:
        return read_reports_csv(reports_path)
    return read_reports_annotation(annotation, split)


def read_reports_annotation(path: Path, split: str | None = None) -> list[Report]:
    """The reports of an R2Gen annotation.json (only ``report`` is needed: no image paths), in file
    order or of one split; the file is parsed by the R2Gen reader's ``load_annotation``."""
    data = load_annotation(path)
    if split is not None and split not in data:
        raise DataError(f"{path}: no split {split!r}; it has {sorted(data)}")
    reports: list[Report] = []
    for name in [split] if split else list(data):
        for i, item in enumerate(data[name]):
            if not isinstance(item, dict) or not isinstance(item.get("report"), str):
                raise DataError(f"{path}: {name}[{i}] has no string field 'report'")
            reports.append(Report(item["report"], f"{path}: {name}[{i}]"))
    return reports


def write_labels_csv(path: Path, reports: list[Report], labels: np.ndarray) -> None:
    """CheXpert labeler output: Reports + 14 columns, 1.0 / 0.0 / -1.0, blank for not mentioned."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([REPORTS_COLUMN] + [o.value for o in OBSERVATIONS])
        for report, row in zip(reports, labels):
            writer.writerow([report.text] + ["" if np.isnan(v) else f"{v:.1f}" for v in row])


def _label(reports: list[Report], progress: bool) -> np.ndarray:
    """(N, 14) labels; each report the labeler cannot read (empty, not English) is named in a warning."""
    from cxr.labeler import ReportLabeler

    results = ReportLabeler().label_many([r.text for r in reports], progress=progress)
    for report, result in zip(reports, results):
        if result.unread is not None:
            log.warning("%s: %s report, its labels are left blank", report.where, result.unread.value)
    return np.stack([r.as_array() for r in results]) if results else np.empty((0, len(OBSERVATIONS)))


# The CheXpert labeler's own spellings (--reports_path, --output_path) are accepted too.
ReportsPath = Annotated[Path | None, typer.Option(
    "--reports-path", "--reports_path", exists=True, dir_okay=False,
    help="Header-less CSV, one report per row (UTF-8, or cp1252 with a warning).")]
AnnotationPath = Annotated[Path | None, typer.Option(
    "--annotation", exists=True, dir_okay=False, help="R2Gen annotation.json instead of a CSV.")]
Split = Annotated[str | None, typer.Option("--split", help="Only this split of --annotation.")]


def register(app: typer.Typer) -> None:
    @app.command("label")
    def label(
        reports_path: ReportsPath = None,
        output_path: Annotated[Path, typer.Option(
            "--output-path", "--output_path", help="CSV to write (Reports + 14 columns).")] = Path("labeled_reports.csv"),
        annotation: AnnotationPath = None,
        split: Split = None,
        progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    ) -> None:
        """Label reports with the 14 CheXpert observations (CheXpert labeler CSV format)."""
        try:
            reports = _load(reports_path, annotation, split)
        except DataError as err:
            raise typer.BadParameter(str(err)) from err
        labels = _label(reports, progress)
        write_labels_csv(output_path, reports, labels)
        tqdm.write(f"labelled {len(reports)} reports → {output_path}")

    @app.command("label-stats")
    def label_stats(reports_path: ReportsPath = None, annotation: AnnotationPath = None,
                    split: Split = None) -> None:
        """Print the positive / negative / uncertain / blank rate of each observation."""
        from cxr.labeler import format_rates, label_rates

        try:
            reports = _load(reports_path, annotation, split)
        except DataError as err:
            raise typer.BadParameter(str(err)) from err
        typer.echo(f"{len(reports)} reports")
        typer.echo(format_rates(label_rates(_label(reports, progress=False))))
