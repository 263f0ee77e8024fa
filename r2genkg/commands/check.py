"""`r2genkg check`: the knowledge-graph consistency check (``generator.check``) of reports in a CSV.

Input: REPORTS.csv, one report per row and no header (the labeler's input, ``label.read_reports_csv``);
optionally PROBS.csv, the classifier's 14 probabilities per report, one row per report in the same
order (a first row of observation names, in any order, is read as a header; without one the
columns are in the order of ``cxr.observations.OBSERVATIONS``), with the checkpoint whose
thresholds and disagreement margin judge them.
Output: OUT.jsonl, one ``{"row": N, "warnings": [{"kind", "sentence", "detail"}, …]}`` per report
in input order; N is the report's row number in REPORTS.csv (from 1).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated

import typer

from cxr.observations import OBSERVATIONS
from cxr.readers.common import read_text
from cxr.records import DataError


def read_probabilities(path: Path, rows: int) -> list[list[float]]:
    """``rows`` rows of 14 probabilities in OBSERVATIONS order (see the module docstring)."""
    table = [r for r in csv.reader(io.StringIO(read_text(path), newline="")) if r and any(c.strip() for c in r)]
    names = [o.value for o in OBSERVATIONS]
    order = list(range(len(names)))
    if table and {c.strip() for c in table[0]} == set(names):
        header = [c.strip() for c in table.pop(0)]
        order = [header.index(n) for n in names]
    if len(table) != rows:
        raise DataError(f"{path}: {len(table)} rows of probabilities for {rows} reports; give one row per report")
    out = []
    for i, row in enumerate(table, start=1):
        if len(row) != len(names):
            raise DataError(f"{path}: row {i} has {len(row)} values, expected {len(names)} (one per observation)")
        try:
            values = [float(row[j]) for j in order]
        except ValueError:
            raise DataError(f"{path}: row {i} holds a value that is not a number: {row}") from None
        if any(not 0.0 <= v <= 1.0 for v in values):
            raise DataError(f"{path}: row {i} holds a probability outside [0, 1]")
        out.append(values)
    return out


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check(
        reports_path: Annotated[Path, typer.Argument(metavar="REPORTS.csv", exists=True, dir_okay=False,
                                                     help="Header-less CSV, one report per row.")],
        output: Annotated[Path, typer.Option("--output", help="JSONL to write, one line per report.")],
        probabilities: Annotated[Path | None, typer.Option(
            "--probabilities", exists=True, dir_okay=False,
            help="CSV of the classifier's 14 probabilities per report (adds disagrees_with_image; needs --checkpoint).")] = None,
        checkpoint: Annotated[Path | None, typer.Option(
            "--checkpoint", exists=True, file_okay=False,
            help="Checkpoint folder whose thresholds.json (thresholds and disagreement margin) judge --probabilities.")] = None,
        m3kg: Annotated[Path | None, typer.Option(
            "--m3kg", exists=True, file_okay=False,
            help="A folder with kg_relations.csv and res_dict_aliases.json (default: the bundled M3KG).")] = None,
    ) -> None:
        """Check reports for contradictions, laterality, relations M3KG does not hold, disagreement with the image, repeats."""
        from cxr.files import atomic_file
        from generator.check import KnownRelations, ReportChecker
        from generator.decisions import read_thresholds
        from graphdb.m3kg import M3KGFiles
        from r2genkg.commands.label import read_reports_csv

        reports = read_reports_csv(reports_path)
        probs = None
        thresholds = None
        if probabilities is not None:
            if checkpoint is None:
                raise typer.BadParameter("--probabilities needs --checkpoint (its thresholds judge them)")
            thresholds = read_thresholds(checkpoint)
            if thresholds.margin is None:
                raise DataError(f"{checkpoint}/thresholds.json has no disagreement margin (written before it "
                                f"existed): run `r2genkg calibrate {checkpoint}` to fit it on val")
            probs = read_probabilities(probabilities, len(reports))
        elif checkpoint is not None:
            raise typer.BadParameter("--checkpoint is only used with --probabilities")
        checker = ReportChecker(KnownRelations.load(M3KGFiles.in_dir(m3kg) if m3kg else None), thresholds)
        warned = 0
        with atomic_file(output, "w", encoding="utf-8") as f:
            for i, report in enumerate(reports):
                found = checker.check(report.text, probs[i] if probs is not None else None)
                warned += bool(found)
                f.write(json.dumps({"row": report.row, "warnings": [w.to_dict() for w in found]}) + "\n")
        typer.echo(f"checked {len(reports)} reports, {warned} with warnings → {output}")
