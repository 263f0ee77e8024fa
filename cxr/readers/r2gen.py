"""Read an R2Gen ``annotation.json`` (IU X-ray, MIMIC-CXR) into ``StudyRecord``s.

Format: ``{"train"|"val"|"test": [{"id", "report", "image_path": [...], "split"}, ...]}``;
MIMIC-CXR items add ``study_id`` / ``subject_id`` and paths ``p10/p10000032/s50414267/<dicom>.jpg``.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import Any

from cxr.readers.common import ImageCheck, image_check_for, image_problem, resolve, wanted_splits
from cxr.records import DataError, ErrorPolicy, StudyRecord


def bundled_iu_annotation() -> Path:
    """The real IU X-ray annotation shipped in ``cxr/resources`` (2,069 / 296 / 590 studies)."""
    return Path(str(files("cxr") / "resources" / "iu_xray" / "annotation.json"))


def load_annotation(path: Path) -> dict[str, Any]:
    """Parse the JSON; unreadable or malformed files are a ``DataError`` with line / column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read annotation file ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError(f"{path}: expected an object mapping split names to lists of studies")
    return data


def _item_problem(item: Any, split: str) -> str | None:
    if not isinstance(item, dict):
        return f"expected an object, got {type(item).__name__}"
    for key, kind in (("id", str), ("report", str), ("image_path", list)):
        if key not in item:
            return f"missing key {key!r}"
        if not isinstance(item[key], kind):
            return f"{key!r} must be a {kind.__name__}, got {type(item[key]).__name__}"
    if not item["id"].strip():
        return "empty 'id'"
    if not item["report"].strip():
        return "empty report"
    paths = item["image_path"]
    if not paths or not all(isinstance(p, str) and p.strip() for p in paths):
        return "'image_path' must be a non-empty list of non-empty strings"
    if "split" in item and item["split"] != split:
        return f"'split' is {item['split']!r} but the item is listed under {split!r}"
    return _mimic_problem(item)


def _mimic_problem(item: dict[str, Any]) -> str | None:
    """MIMIC-CXR items: ids are integers and every path sits in ``p<subject>/s<study>/``."""
    ids = {k: item[k] for k in ("subject_id", "study_id") if k in item}
    for key, value in ids.items():
        if isinstance(value, bool) or not (isinstance(value, int) or str(value).isdigit()):
            return f"{key!r} must be an integer, got {value!r}"
    if len(ids) == 2:
        folder = f"p{ids['subject_id']}/s{ids['study_id']}"
        for p in item["image_path"]:
            if folder not in str(PurePosixPath(p).parent):
                return f"image path {p!r} is not under {folder}/"
    return None


def read_r2gen(
    annotation: Path,
    image_root: Path | None = None,
    splits: Sequence[str] | None = None,
    dataset: str = "iu_xray",
    policy: ErrorPolicy | None = None,
    check_images: ImageCheck | str | bool = ImageCheck.NONE,
) -> list[StudyRecord]:
    """One ``StudyRecord`` per item, in file order; ``study_id`` is the item's R2Gen ``id``.

    IU X-ray reports are findings and impression already concatenated by R2Gen, so
    ``findings`` and ``impression`` stay empty; ``report`` is the text exactly as in the file, so
    ``cxr.clean.clean_report`` reproduces R2Gen's training text.
    Image paths are joined to ``image_root`` when given; ``check_images`` needs it.
    """
    annotation = Path(annotation)
    policy = policy or ErrorPolicy.strict()
    check = image_check_for(check_images, image_root)
    wanted = wanted_splits(splits)
    data = load_annotation(annotation)
    if wanted is not None and (absent := sorted(wanted - data.keys())):
        raise DataError(f"{annotation}: no split(s) {absent}; the file has {sorted(data)}")
    records: list[StudyRecord] = []
    seen: set[str] = set()
    for split, items in data.items():
        if wanted is not None and split not in wanted:
            continue
        for index, item in enumerate(items):
            item_id = item.get("id") if isinstance(item, dict) else None
            where = f"{annotation}: {split}[{index}] (id {item_id!r})"
            problem = _item_problem(item, split) or ("duplicate id" if item_id in seen else None)
            paths = () if problem else tuple(resolve(image_root, p) for p in item["image_path"])
            problem = problem or image_problem(paths, check)
            if problem:
                policy.fail(f"{where}: {problem}", item_id if isinstance(item_id, str) else None)
                continue
            seen.add(item_id)
            records.append(StudyRecord(item_id, paths, item["report"], split=split, dataset=dataset))
    return records
