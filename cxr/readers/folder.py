"""Read a folder of chest X-rays into ``StudyRecord``s, from either of two layouts.

(a) ``root/<study_id>/*.png|jpg|jpeg|dcm`` + optional ``report.txt``; views sorted by name, then
    DICOM files whose ViewPosition is lateral (LL, LATERAL, …) after the rest; a DICOM file is known
    by its content too (a PACS export's ``IM00001`` has no extension);
(b) a CSV manifest ``study_id,image_path[,view,report,split]``, several rows (views) per study;
    with a ``view`` column (PA, AP, FRONTAL, LATERAL, LL, …) frontal views come first.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxr.images import IMAGE_SUFFIXES, is_dicom
from cxr.readers.common import (
    ImageCheck,
    as_image_check,
    csv_rows,
    image_problem,
    normalise_split,
    tidy,
    wanted_splits,
)
from cxr.records import DataError, ErrorPolicy, StudyRecord
from cxr.views import frontal_first, view_rank

log = logging.getLogger(__name__)

REPORT_FILE = "report.txt"
MANIFEST_COLUMNS = ("study_id", "image_path")


@dataclass
class _ManifestStudy:
    where: str           # the first row, for messages
    split: str
    report: str
    views: list[Path] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)   # from the optional view column: frontal 0, lateral 1


def read_folder(
    path: Path,
    image_root: Path | None = None,
    splits: Sequence[str] | None = None,
    policy: ErrorPolicy | None = None,
    check_images: ImageCheck | str | bool = ImageCheck.DECODE,
    dataset: str = "folder",
) -> list[StudyRecord]:
    """Layout (a) when ``path`` is a directory, (b) when it is a CSV file.

    By default every view is decoded once, so unreadable or missing images surface here:
    strict mode raises ``DataError`` naming the file, lenient mode skips and counts the study.
    """
    path = Path(path)
    policy = policy or ErrorPolicy.strict()
    check = as_image_check(check_images)
    if path.is_dir():
        if splits is not None:
            raise ValueError(f"{path}: a folder of study sub-folders has no splits; pass splits=None")
        return _read_study_folders(path, policy, check, dataset)
    if path.is_file():
        root = image_root if image_root is not None else path.parent
        return _read_manifest(path, root, wanted_splits(splits), policy, check, dataset)
    raise DataError(f"{path}: no such folder or manifest file")


def _read_study_folders(root: Path, policy: ErrorPolicy, check: ImageCheck, dataset: str) -> list[StudyRecord]:
    records = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            log.warning("%s: ignored, studies are sub-folders of %s", entry, root)
            continue
        views, ignored = [], []
        for f in sorted(entry.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                views.append(f)
            elif f.name == REPORT_FILE or f.name.startswith("."):
                continue
            elif f.is_file() and _dicom_by_content(f):    # e.g. a PACS export's IM00001
                views.append(f)
            else:
                ignored.append(f.name)
        if ignored:
            log.warning("%s: ignored non-image entries %s", entry, ignored)
        where = f"{root}: study {entry.name}"
        report, problem = _report_of(entry)
        problem = problem or ("no image files (.png, .jpg, .jpeg, .dcm)" if not views else None)
        problem = problem or image_problem(views, check)
        if problem:
            policy.fail(f"{where}: {problem}", entry.name)
            continue
        records.append(StudyRecord(entry.name, tuple(frontal_first(views)), report, dataset=dataset))
    return records


def _dicom_by_content(file: Path) -> bool:
    """The DICOM preamble and ``DICM``, whatever the file's name; an unreadable file is not one."""
    try:
        return is_dicom(file)
    except OSError:
        return False


def _report_of(folder: Path) -> tuple[str, str | None]:
    """(report text or "", problem or None)."""
    file = folder / REPORT_FILE
    if not file.is_file():
        return "", None
    try:
        return tidy(file.read_text(encoding="utf-8")), None
    except (OSError, UnicodeDecodeError) as exc:
        return "", f"{file}: unreadable report ({exc})"


def _read_manifest(
    manifest: Path, root: Path, wanted: frozenset[str] | None, policy: ErrorPolicy,
    check: ImageCheck, dataset: str,
) -> list[StudyRecord]:
    studies: dict[str, _ManifestStudy] = {}
    for index, line, row in csv_rows(manifest, MANIFEST_COLUMNS, policy):
        where = f"{manifest}: row {index} (line {line})"
        study_id, image = row["study_id"].strip(), row["image_path"].strip()
        report, raw_split = tidy(row.get("report") or ""), (row.get("split") or "").strip()
        split = normalise_split(raw_split) if raw_split else ""
        problem = ("empty study_id" if not study_id else "empty image_path" if not image
                   else f"unknown split {raw_split!r}" if split is None else None)
        if problem:
            policy.fail(f"{where}: {problem}", study_id)
            continue
        if wanted is not None and split not in wanted:
            continue
        study = studies.setdefault(study_id, _ManifestStudy(where, split, report))
        problem = (
            f"split {split!r} differs from {study.split!r} in {study.where}" if split != study.split
            else f"report differs from the one in {study.where}"
            if report and study.report and report != study.report else None
        )
        if problem:
            policy.fail(f"{where}: study {study_id}: {problem}", study_id)
            continue
        study.report = study.report or report
        study.views.append(root / image)
        study.ranks.append(view_rank(row.get("view") or ""))
    records = []
    for study_id, study in studies.items():
        if problem := image_problem(study.views, check):
            policy.fail(f"{study.where}: study {study_id}: {problem}", study_id)
            continue
        ordered = tuple(v for _, v in sorted(zip(study.ranks, study.views), key=lambda rv: rv[0]))  # stable
        records.append(StudyRecord(study_id, ordered, study.report,
                                   split=study.split, dataset=dataset))
    return records
