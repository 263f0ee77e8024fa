"""Training logs as accelerate trackers: ``train_log.csv`` and ``val_log.csv`` (+ TensorBoard when
the optional ``tensorboard`` package is installed).

``accelerator.log({"train/loss": …}, step=s)`` → a row ``step, loss, …`` of ``train_log.csv``; the
part before "/" picks the file. On resume, rows past the checkpoint's step are dropped (they will
be logged again), so a resumed run's logs equal an uninterrupted run's.
"""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

from accelerate.tracking import GeneralTracker


class CsvTracker(GeneralTracker):
    name = "csv"
    requires_logging_directory = False

    def __init__(self, directory: Path, keep_through_step: int | None) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.fields: dict[str, list[str]] = {}
        for path in self.directory.glob("*_log.csv"):
            self._truncate(path, keep_through_step)

    @property
    def tracker(self) -> CsvTracker:
        return self

    def _truncate(self, path: Path, keep_through_step: int | None) -> None:
        if keep_through_step is None:
            path.unlink()
            return
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_through_step]
        with path.open("w", newline="", encoding="utf-8") as f:
            if rows:
                writer = csv.DictWriter(f, list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
                self.fields[path.name] = list(rows[0])

    def log(self, values: dict[str, Any], step: int | None = None, **kwargs: Any) -> None:
        groups: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            group, _, name = key.rpartition("/")
            groups.setdefault(group or "train", {})[name] = value
        for group, row in groups.items():
            name = f"{group}_log.csv"
            row = {"step": step, **row}
            new = name not in self.fields
            if new:
                self.fields[name] = list(row)
            with (self.directory / name).open("a", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, self.fields[name], extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)


def csv_trackers(directory: Path, keep_through_step: int | None) -> list[GeneralTracker | str]:
    """The CSV tracker, plus accelerate's TensorBoard tracker when tensorboard is installed."""
    trackers: list[GeneralTracker | str] = [CsvTracker(directory, keep_through_step)]
    if importlib.util.find_spec("tensorboard") is not None:
        trackers.append("tensorboard")
    return trackers
