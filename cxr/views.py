"""A study's views: which files are read, in what order, and what happened to each.

``read_views`` (files → (S, S) uint8 views + one ``ViewNote`` per file) is the one place batch
generation decides which views a study uses: readable ones, in order, up to the model's
``max_views``; every other file is a note saying why it was skipped. ``view_warnings`` flags a
decoded view that is nearly flat (a bit depth or window gone wrong: the model would see a blank).
``frontal_first`` orders DICOM files by their ViewPosition (PA / AP before LL / LATERAL).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.images import DICOM_SUFFIXES, IMAGE_SUFFIXES, load_image, resize_view
from cxr.records import DataError

log = logging.getLogger(__name__)
FRONTAL_VIEWS = frozenset({"PA", "AP", "FRONTAL", "AP AXIAL", "PA LLD", "AP LLD", "AP RLD", "PA RLD"})
FLAT_LEVELS = 16   # a view whose 1st-99th percentile spread is under this many of 255 gray levels is "nearly flat"


@dataclass
class ViewNote:
    """What happened to one view of a study, for the output line: used, or skipped with the reason."""

    view: str                              # the file, or "image k" for an upload
    used: bool
    reason: str | None = None              # why it was skipped
    warnings: list[str] = field(default_factory=list)


def view_rank(view: str) -> int:
    """0 for a frontal view, 1 for anything else (lateral, LL, …), 0 when unknown (empty)."""
    view = view.strip().upper()
    return 0 if not view or view in FRONTAL_VIEWS else 1


def view_warnings(view: np.ndarray) -> list[str]:
    """Warnings about a decoded (H, W) uint8 view: nearly flat (98% of its pixels within a few gray
    levels), which is what a wrong bit depth or window gives, and what no radiograph looks like."""
    low, high = (int(v) for v in np.percentile(view, (1, 99)))
    if high - low >= FLAT_LEVELS:
        return []
    return [(f"nearly flat: 98% of its pixels lie within gray levels {low}–{high} of 255 "
             "(a wrong bit depth or window?); the report may not reflect the image")]


def prepare_view(image: Image.Image | np.ndarray, size: int | None) -> tuple[np.ndarray, list[str]]:
    """A decoded view → (the (size, size) uint8 view the model sees, or the view itself without a
    size; its warnings)."""
    view = resize_view(image, size) if size is not None else np.asarray(image, dtype=np.uint8)
    return view, view_warnings(view)


def read_views(paths: Sequence[str | Path], max_views: int, size: int | None = None,
               load: Callable[[Path], Image.Image] = load_image,
               study: str = "") -> tuple[list[np.ndarray], list[ViewNote]]:
    """The study's first ``max_views`` readable files, decoded (and downsized to ``size``), and a note
    per file: used, unreadable (the decoder's reason), or beyond ``max_views``. An unreadable file and
    a view's warnings are also logged, naming ``study``."""
    views: list[np.ndarray] = []
    notes: list[ViewNote] = []
    for path in paths:
        if len(views) >= max_views:
            notes.append(ViewNote(str(path), False, f"beyond the model's max_views={max_views}"))
            continue
        try:
            view, warnings = prepare_view(load(Path(path)), size)
        except DataError as exc:
            log.warning("study %s: view skipped: %s", study, exc)
            notes.append(ViewNote(str(path), False, str(exc)))
            continue
        for warning in warnings:
            log.warning("study %s: %s: %s", study, path, warning)
        views.append(view)
        notes.append(ViewNote(str(path), True, warnings=warnings))
    return views, notes


def dicom_view_position(path: Path) -> str:
    """The DICOM header's ViewPosition ("PA", "LL", …), "" when absent or unreadable; pixels unread."""
    import pydicom  # lazy: importing pydicom pulls in requests (see cxr.images)
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition"])
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError):
        return ""
    return str(ds.get("ViewPosition", "") or "")


def frontal_first(paths: Sequence[Path]) -> list[Path]:
    """DICOM files with a lateral ViewPosition after the rest; otherwise the given order (stable).
    PNG / JPEG files (by suffix) are not opened; any other file's header is read for ViewPosition
    (a file that is not DICOM has none)."""
    def rank(path: Path) -> int:
        raster = path.suffix.lower() in IMAGE_SUFFIXES - DICOM_SUFFIXES
        return 0 if raster else view_rank(dicom_view_position(path))
    return sorted(paths, key=rank)
