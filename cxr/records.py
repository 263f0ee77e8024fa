"""The one study record every dataset reader yields, and the strict / lenient error policy.

Reader → ``StudyRecord`` (study id, view image paths, findings, impression, report, split).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyRecord:
    study_id: str
    image_paths: tuple[Path, ...]   # one per view, absolute or relative to the image root
    report: str                     # the text a model is trained to write (findings + impression)
    findings: str = ""
    impression: str = ""
    split: str = ""                 # train | val | test | "" when the source has none
    dataset: str = ""               # iu_xray | mimic_cxr | chexpert_plus | folder | …


class DataError(ValueError):
    """Bad input. The message always names the file (and row / item) at fault."""


class ErrorMode(str, Enum):
    STRICT = "strict"     # stop at the first bad item
    LENIENT = "lenient"   # skip it, count it, keep the first messages


@dataclass
class ErrorPolicy:
    """Decides whether a bad item stops the read or is skipped and counted.

    Readers call ``policy.fail(msg, study_id)`` for every bad item; in strict mode that raises
    ``DataError``, in lenient mode it is counted and logged, and ``summary()`` reports it.
    ``skips`` keeps every skipped item as (study id or None when the item has none, message): what
    run_batch writes to its failures file.
    """

    mode: ErrorMode = ErrorMode.STRICT
    skipped: int = 0
    messages: list[str] = field(default_factory=list)
    max_messages: int = 20
    skips: list[tuple[str | None, str]] = field(default_factory=list)

    @classmethod
    def strict(cls) -> ErrorPolicy:
        return cls(ErrorMode.STRICT)

    @classmethod
    def lenient(cls) -> ErrorPolicy:
        return cls(ErrorMode.LENIENT)

    def fail(self, message: str, study_id: str | None = None) -> None:
        if self.mode is ErrorMode.STRICT:
            raise DataError(message)
        self.skipped += 1
        self.skips.append((study_id or None, message))
        if len(self.messages) < self.max_messages:
            self.messages.append(message)
        log.warning("skipped: %s", message)

    def summary(self) -> str:
        if not self.skipped:
            return "0 bad items"
        more = "" if self.skipped <= len(self.messages) else f" (first {len(self.messages)} shown)"
        return f"{self.skipped} bad items skipped{more}:\n  " + "\n  ".join(self.messages)
