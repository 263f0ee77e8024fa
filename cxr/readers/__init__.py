"""Dataset readers, and the one place that picks one: every source → ``list[StudyRecord]``.

``read_dataset(DatasetKind.R2GEN, "annotation.json", policy=ErrorPolicy.lenient())`` picks the
reader from ``READERS``; ``detect_kind(path)`` guesses the kind from a path. A new reader is a
module here plus a ``DatasetKind`` member and a ``READERS`` line (and a ``Corpus`` member if
models train on it).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from cxr.readers.chexpert_plus import read_chexpert_plus
from cxr.readers.common import ImageCheck
from cxr.readers.folder import read_folder
from cxr.readers.r2gen import bundled_iu_annotation, read_r2gen
from cxr.records import DataError, ErrorPolicy, StudyRecord

__all__ = [
    "Corpus", "DatasetKind", "ImageCheck", "bundled_iu_annotation", "detect_kind", "read_chexpert_plus",
    "read_dataset", "read_folder", "read_r2gen",
]


class DatasetKind(str, Enum):
    """A file format (which reader)."""

    R2GEN = "r2gen"                   # annotation.json of IU X-ray / MIMIC-CXR
    CHEXPERT_PLUS = "chexpert_plus"   # df_chexpert_plus_240401.csv
    FOLDER = "folder"                 # study sub-folders, or a study_id,image_path CSV manifest


class Corpus(str, Enum):
    """A training corpus (what ``DataConfig.dataset`` names): its format, and its tag on records."""

    IU_XRAY = "iu_xray"
    MIMIC_CXR = "mimic_cxr"
    CHEXPERT_PLUS = "chexpert_plus"

    @property
    def kind(self) -> DatasetKind:
        return DatasetKind.CHEXPERT_PLUS if self is Corpus.CHEXPERT_PLUS else DatasetKind.R2GEN


READERS: dict[DatasetKind, Callable[..., list[StudyRecord]]] = {
    DatasetKind.R2GEN: read_r2gen,
    DatasetKind.CHEXPERT_PLUS: read_chexpert_plus,
    DatasetKind.FOLDER: read_folder,
}


def detect_kind(path: Path) -> DatasetKind:
    """A folder or manifest CSV → FOLDER; ``*.json`` → R2GEN; a CSV with ``path_to_image`` → CHEXPERT_PLUS."""
    if path.is_dir():
        return DatasetKind.FOLDER
    if path.suffix.lower() == ".json":
        return DatasetKind.R2GEN
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", errors="replace") as f:
            header = f.readline()
        return DatasetKind.CHEXPERT_PLUS if "path_to_image" in header else DatasetKind.FOLDER
    raise DataError(f"{path}: not a folder, .json annotation or .csv file")


def read_dataset(
    kind: DatasetKind | str,
    path: Path | str,
    image_root: Path | None = None,
    splits: Sequence[str] | None = None,
    policy: ErrorPolicy | None = None,
    check_images: ImageCheck | str | bool | None = None,
    **options: Any,
) -> list[StudyRecord]:
    """Dispatch to the reader of ``kind``; ``options`` go to it (``dataset=``, ``use_dicom=``).

    ``check_images=None`` keeps the reader's default (NONE for R2Gen / CheXpert Plus, whose
    annotations often travel without images; DECODE for a folder).
    """
    kind = DatasetKind(kind)
    if check_images is not None:
        options["check_images"] = check_images
    return READERS[kind](Path(path), image_root=image_root, splits=splits, policy=policy, **options)
