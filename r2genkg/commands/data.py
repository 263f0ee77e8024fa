"""`r2genkg data-stats`: read a dataset with its reader and print per-split counts.

Input: an R2Gen annotation.json (default: the bundled IU X-ray file), a CheXpert Plus CSV or a
folder / manifest.  Output: a table of studies, images and mean report words per split, then
the skipped-item summary.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cxr.readers import DatasetKind, ImageCheck, bundled_iu_annotation, read_dataset
from cxr.records import DataError, ErrorPolicy, StudyRecord

SPLIT_ORDER = ("train", "val", "test")


@dataclass(frozen=True)
class SplitStats:
    split: str
    studies: int
    images: int
    mean_report_words: float


def split_stats(records: Sequence[StudyRecord]) -> list[SplitStats]:
    """One row per split present (train, val, test first), then an ``all`` row."""
    groups: dict[str, list[StudyRecord]] = {}
    for record in records:
        groups.setdefault(record.split, []).append(record)
    order = sorted(groups, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 3, s))
    rows = [_stats(split, groups[split]) for split in order]
    return rows + [_stats("all", list(records))]


def _stats(split: str, records: Sequence[StudyRecord]) -> SplitStats:
    words = sum(len(r.report.split()) for r in records)
    return SplitStats(split, len(records), sum(len(r.image_paths) for r in records),
                      words / len(records) if records else 0.0)


def _table(title: str, rows: Sequence[SplitStats]) -> Table:
    table = Table(title=title)
    for name in ("split", "studies", "images", "mean report words"):
        table.add_column(name, justify="left" if name == "split" else "right")
    for row in rows:
        table.add_row(row.split or "(none)", f"{row.studies:,}", f"{row.images:,}",
                      f"{row.mean_report_words:.1f}")
    return table


def register(app: typer.Typer) -> None:
    @app.command("data-stats")
    def data_stats(
        kind: Annotated[DatasetKind, typer.Option(help="Which reader to use.")] = DatasetKind.R2GEN,
        annotation: Annotated[Path | None, typer.Option(
            help="R2Gen annotation.json (kind r2gen; default: the bundled IU X-ray file).")] = None,
        path: Annotated[Path | None, typer.Option(
            help="CheXpert Plus CSV, study folder or manifest CSV (or an annotation.json).")] = None,
        image_root: Annotated[Path | None, typer.Option(
            help="Folder the image paths are relative to.")] = None,
        check_images: Annotated[ImageCheck | None, typer.Option(
            help="none | exists | decode (default: the reader's own).")] = None,
        strict: Annotated[bool, typer.Option(
            "--strict/--lenient", help="Stop at the first bad item, or skip and count bad items.")] = True,
    ) -> None:
        """Per-split study / image counts, mean report length in words, and skipped items."""
        if annotation is not None and (path is not None or kind is not DatasetKind.R2GEN):
            raise typer.BadParameter("--annotation is for --kind r2gen; use --path otherwise")
        if path is None and kind is not DatasetKind.R2GEN:
            raise typer.BadParameter(f"--kind {kind.value} needs --path")
        source = annotation or path or bundled_iu_annotation()
        policy = ErrorPolicy.strict() if strict else ErrorPolicy.lenient()
        console = Console()
        try:
            records = read_dataset(kind, source, image_root=image_root, policy=policy,
                                   check_images=check_images)
        except DataError as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(1) from exc
        console.print(f"{kind.value}: {source}", soft_wrap=True, markup=False)
        console.print(_table("studies per split", split_stats(records)))
        console.print(f"skipped: {policy.summary()}", soft_wrap=True, markup=False)
