"""Pieces every reader shares: split names, text tidying, text decoding, image checks and CSV rows
with line numbers.

CSV rows come out as ``(index, line, row)``; malformed rows (too many / too few fields) are
reported through the ``ErrorPolicy`` and never reach the reader.
"""
from __future__ import annotations

import codecs
import csv
import logging
from collections.abc import Collection, Iterator, Sequence
from enum import Enum
from pathlib import Path

from cxr.images import load_image
from cxr.records import DataError, ErrorPolicy

log = logging.getLogger(__name__)

SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class ImageCheck(str, Enum):
    NONE = "none"       # trust the listing (annotation files often ship without images)
    EXISTS = "exists"   # every view file must exist
    DECODE = "decode"   # every view must decode with cxr.images.load_image (slow, thorough)


def as_image_check(value: ImageCheck | str | bool) -> ImageCheck:
    """``True`` → EXISTS, ``False`` → NONE, names → the enum."""
    if isinstance(value, bool):
        return ImageCheck.EXISTS if value else ImageCheck.NONE
    return ImageCheck(value)


def image_check_for(value: ImageCheck | str | bool, image_root: object) -> ImageCheck:
    """``as_image_check``, refusing a check that has no ``image_root`` to resolve paths against."""
    check = as_image_check(value)
    if check is not ImageCheck.NONE and image_root is None:
        raise ValueError("check_images needs image_root")
    return check


def normalise_split(value: str) -> str | None:
    """``train`` / ``val`` / ``test`` for a known name (CheXpert's ``valid`` → ``val``), else None."""
    return SPLIT_ALIASES.get(value.strip().lower())


def wanted_splits(splits: Sequence[str] | None) -> frozenset[str] | None:
    """The requested splits in canonical form; a name that is no split is a ValueError."""
    if splits is None:
        return None
    canonical = {s: normalise_split(s) for s in splits}
    unknown = [s for s, c in canonical.items() if c is None]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; expected some of {sorted(SPLIT_ALIASES)}")
    return frozenset(c for c in canonical.values() if c)


def tidy(text: str) -> str:
    """Collapse every whitespace run (newlines included) to one space and strip."""
    return " ".join(text.split())


def read_text(path: Path) -> str:
    """A text file as UTF-8, its byte order mark dropped. A file that is not UTF-8 (a Windows /
    Latin-1 export) is read as cp1252 with a one-line warning naming the first non-UTF-8 byte;
    one that is neither is a ``DataError`` naming the file and the byte offsets."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc})") from exc
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        not_utf8 = f"byte 0x{data[at]:02x} at offset {at} is not UTF-8"
    try:
        text = data[skip:].decode("cp1252")
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        raise DataError(f"{path}: unknown text encoding: {not_utf8}, byte 0x{data[at]:02x} at offset {at} "
                        "is not cp1252 either; save the file as UTF-8") from exc
    log.warning("%s: %s; read as cp1252 (Windows Latin-1)", path, not_utf8)
    return text


def resolve(root: Path | None, relative: str) -> Path:
    return Path(relative) if root is None else root / relative


def image_problem(paths: Sequence[Path], check: ImageCheck) -> str | None:
    """Why the first bad view of a study is bad, or None when all pass ``check``."""
    if check is ImageCheck.NONE:
        return None
    for path in paths:
        if not path.is_file():
            return f"image file not found: {path}"
        if check is ImageCheck.DECODE:
            try:
                load_image(path)
            except DataError as exc:
                return str(exc)
    return None


def csv_rows(
    path: Path, required: Collection[str], policy: ErrorPolicy
) -> Iterator[tuple[int, int, dict[str, str]]]:
    """Yield ``(row index from 1, line number, row)``; header and row problems name ``path``."""
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot open CSV file ({exc})") from exc
    with fh:
        reader = csv.DictReader(fh)
        try:
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}; header is {header}")
            for index, row in enumerate(reader, start=1):
                where = f"{path}: row {index} (line {reader.line_num})"
                if None in row:
                    policy.fail(f"{where}: {len(row[None])} field(s) more than the header's {len(header)}")
                elif None in row.values():
                    got = sum(v is not None for v in row.values())
                    policy.fail(f"{where}: {got} field(s), the header has {len(header)}")
                else:
                    yield index, reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: malformed CSV near line {reader.line_num} ({exc})") from exc
