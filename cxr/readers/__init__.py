"""Dataset readers: every source (R2Gen JSON, CheXpert Plus CSV, a folder) → ``list[StudyRecord]``.

``read_dataset(DatasetKind.R2GEN, "annotation.json", policy=ErrorPolicy.lenient())`` picks the
reader; each reader can also be called directly.
"""
from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from cxr.readers.chexpert_plus import read_chexpert_plus
from cxr.readers.common import ImageCheck
from cxr.readers.folder import read_folder
from cxr.readers.r2gen import bundled_iu_annotation, read_r2gen
from cxr.records import ErrorPolicy, StudyRecord

__all__ = [
    "DatasetKind", "ImageCheck", "bundled_iu_annotation", "read_chexpert_plus", "read_dataset",
    "read_folder", "read_r2gen",
]


class DatasetKind(str, Enum):
    R2GEN = "r2gen"                   # annotation.json of IU X-ray / MIMIC-CXR
    CHEXPERT_PLUS = "chexpert_plus"   # df_chexpert_plus_240401.csv
    FOLDER = "folder"                 # study sub-folders, or a study_id,image_path CSV manifest


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
    reader = {
        DatasetKind.R2GEN: read_r2gen,
        DatasetKind.CHEXPERT_PLUS: read_chexpert_plus,
        DatasetKind.FOLDER: read_folder,
    }[kind]
    return reader(Path(path), image_root=image_root, splits=splits, policy=policy, **options)
