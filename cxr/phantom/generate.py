"""Batch phantom generation: an R2Gen annotation → one PNG per listed ``image_path``, under an output root.

Resumable (studies whose images all exist are skipped), atomic (temp file + rename), optionally
parallel (progress advances per finished study; the pixels never depend on the order);
``phantoms_manifest.json`` in the root records config, seed and version, and a resume with a
different one is refused.
"""
from __future__ import annotations

import json
import logging
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cxr.files import atomic_file
from cxr.phantom.render import PHANTOM_VERSION, PhantomConfig, render_study
from cxr.phantom.spec import FindingSpec, Labeler, specs_from_report
from cxr.readers.r2gen import read_r2gen
from cxr.records import DataError

log = logging.getLogger(__name__)

MANIFEST = "phantoms_manifest.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ManifestMismatch(DataError):
    """The output root already holds phantoms made with another config / version."""


@dataclass
class Summary:
    studies: int = 0          # studies considered (after splits / limit)
    written: int = 0          # studies rendered this run
    skipped: int = 0          # studies whose images all existed
    images_written: int = 0
    seconds: float = 0.0
    out_root: Path | None = None

    def __str__(self) -> str:
        rate = self.images_written / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.studies} studies: {self.written} rendered ({self.images_written} images, "
                f"{rate:.1f} images/s), {self.skipped} already present → {self.out_root}")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """(H, W) uint8 → 8-bit grayscale PNG bytes.

    Written directly (PNG "Up" filter, zlib RLE strategy): ~3× faster than PIL's adaptive filtering
    on noisy radiographs at about the same size, and byte-identical run to run.
    """
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"encode_png needs a 2-D uint8 array, got {image.dtype} {image.shape}")
    h, w = image.shape
    raw = np.empty((h, w + 1), np.uint8)
    raw[:, 0] = 2  # filter type "Up": each row minus the row above (mod 256)
    raw[0, 1:] = image[0]
    np.subtract(image[1:], image[:-1], out=raw[1:, 1:])
    packer = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = packer.compress(raw.tobytes()) + packer.flush()
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit, greyscale, no interlace
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def write_atomic(path: Path, data: bytes) -> None:
    """A killed run never leaves half a PNG (cxr.files.atomic_file; no fsync: phantoms are remade)."""
    with atomic_file(path, durable=False) as handle:
        handle.write(data)


def _manifest(config: PhantomConfig) -> dict[str, Any]:
    return {"version": PHANTOM_VERSION, "seed": config.seed, "config": config.to_dict()}


def check_manifest(out_root: Path, config: PhantomConfig, overwrite: bool) -> None:
    """Write the manifest, or refuse when an existing one disagrees (unless ``overwrite``)."""
    path = out_root / MANIFEST
    want = _manifest(config)
    if path.exists() and not overwrite:
        try:
            have = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestMismatch(f"{path}: unreadable manifest ({exc}); pass overwrite to start again") from exc
        if have != want:
            diff = sorted(k for k in set(have.get("config", {})) | set(want["config"])
                          if have.get("config", {}).get(k) != want["config"].get(k))
            if have.get("version") != want["version"]:
                diff.append("version")
            raise ManifestMismatch(
                f"{path}: existing phantoms were made with a different setup (differs in {diff}: "
                f"have {have}, want {want}); use another --out or --overwrite")
        return
    out_root.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(want, indent=2, sort_keys=True) + "\n").encode("utf-8"))


@dataclass(frozen=True)
class _Task:
    study_id: str
    specs: tuple[FindingSpec, ...]
    paths: tuple[Path, ...]
    config: PhantomConfig


def _run(task: _Task) -> int:
    images = render_study(task.specs, task.study_id, task.config, n_views=len(task.paths))
    for image, path in zip(images, task.paths):
        write_atomic(path, encode_png(image, task.config.compress_level))
    return len(images)


# Studies queued per worker process: enough that a worker never waits for the next one, few enough
# that the labeler (in this process) keeps pace and progress follows the renders.
IN_FLIGHT_PER_WORKER = 4


def _run_all(tasks: Iterable[_Task], workers: int) -> Iterator[int]:
    """Each study's image count as it finishes (completion order), here or on ``workers`` processes."""
    if workers == 1:
        yield from map(_run, tasks)
        return
    # an executor (not multiprocessing.Pool): a worker that dies raises BrokenProcessPool instead of hanging
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    pending: set[Future[int]] = set()
    try:
        for task in tasks:
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
            pending.add(pool.submit(_run, task))
        yield from (f.result() for f in as_completed(pending))
    finally:
        pool.shutdown(cancel_futures=True)


def _target(out_root: Path, relative: Path, where: str) -> Path:
    if relative.is_absolute() or ".." in relative.parts:
        raise DataError(f"{where}: image_path {str(relative)!r} must be relative and stay inside the output root")
    return out_root / relative


def default_labeler() -> Labeler:
    from cxr.labeler import ReportLabeler  # imported on use: the labeler is a sibling package

    return ReportLabeler()


def generate_phantoms(annotation: Path, out_root: Path, config: PhantomConfig | None = None,
                      splits: Sequence[str] | None = None, limit: int | None = None, overwrite: bool = False,
                      workers: int = 1, labeler: Labeler | None = None, progress: bool = True) -> Summary:
    """Render every study of ``annotation`` (optionally some ``splits``, first ``limit``) under ``out_root``."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    annotation, out_root = Path(annotation), Path(out_root)
    config = config or PhantomConfig()
    records = read_r2gen(annotation, image_root=None, splits=splits)
    if limit is not None:
        records = records[:limit]
    check_manifest(out_root, config, overwrite)
    labeler = labeler or default_labeler()
    summary = Summary(studies=len(records), out_root=out_root)
    start = time.perf_counter()

    bar = tqdm(total=len(records), desc="phantoms", unit="study", disable=not progress)

    def tasks() -> Iterator[_Task]:   # consumed lazily: a skipped study counts when it is reached
        for rec in records:
            paths = tuple(_target(out_root, Path(p), f"{annotation}: id {rec.study_id!r}") for p in rec.image_paths)
            if not overwrite and all(p.is_file() for p in paths):
                summary.skipped += 1
                bar.update(1)
                continue
            summary.written += 1
            yield _Task(rec.study_id, tuple(specs_from_report(rec.report, labeler)), paths, config)

    try:
        for n_images in _run_all(tasks(), workers):
            summary.images_written += n_images
            bar.update(1)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    log.info("%s", summary)
    return summary
