"""Batch generation: studies from a folder / manifest / R2Gen annotation / CheXpert Plus CSV → JSONL.

One line per study: id, report, the 14 predicted probabilities, the labeler's labels of the
generated text, the KG entities and retrieved token ids used, the views used and skipped (with the
reason, and warnings such as a nearly flat image), the model id and timing.
Resumable and crash-safe: ids already in the output are skipped; each line goes out in a single
``write`` on an O_APPEND descriptor and is fsynced per batch, and a torn last line (power loss)
is cut on the next run. Failures go to ``<output>.failures.jsonl`` with the study id and reasons.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cxr.datasets import load_split, prepare_images
from cxr.images import load_image
from cxr.labeler import label_reports
from cxr.observations import OBSERVATIONS
from cxr.readers import DatasetKind, ImageCheck, detect_kind, read_dataset
from cxr.records import DataError, ErrorPolicy, StudyRecord
from cxr.views import read_views
from generator.checkpoint import read_run_config
from generator.engine import Engine, StudyInput
from generator.model import GenerationResult
from generator.settings import GenerationSettings

log = logging.getLogger(__name__)
LABEL_NAMES = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}


@dataclass
class Failure:
    id: str | None                   # None only for an item the reader could not tie to a study
    stage: str                       # read | image | generate
    reason: str
    views: list[dict[str, Any]] = field(default_factory=list)   # image: what happened to each view


@dataclass
class BatchSummary:
    written: int = 0
    skipped_done: int = 0            # already in the output from an earlier run
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    records: list[StudyRecord] = field(default_factory=list)

    @property
    def reports_per_second(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0


def read_studies(checkpoint: Path, source: Path | None, split: str | None, image_root: Path | None,
                 kind: DatasetKind | None = None, progress: bool = True) -> tuple[list[StudyRecord], list[Failure]]:
    """The studies to generate for, and the items the reader had to skip (as failures).

    Without ``source``: the checkpoint's own dataset split (phantoms rendered if its config says so);
    otherwise ``source`` is read by ``kind`` (default: ``detect_kind``).
    """
    policy = ErrorPolicy.lenient()
    if source is None:
        data = read_run_config(checkpoint).data
        if image_root is not None:
            data.image_root = str(image_root.absolute())   # a flag: from here, not the project home
        split = split or "test"
        data.limit = {}
        prepare_images(data, splits=[split], progress=progress)
        records = load_split(data, split)
    else:
        kind = kind or detect_kind(source)
        splits = None if kind is DatasetKind.FOLDER or split is None else [split]
        root = image_root if image_root is not None else (source if source.is_dir() else source.parent)
        records = read_dataset(kind, source, image_root=root, splits=splits, policy=policy,
                               check_images=ImageCheck.NONE)
    return records, [Failure(study_id, "read", message) for study_id, message in policy.skips]


def split_studies(checkpoint: Path, n: int, split: str = "test") -> tuple[list[StudyInput], list[StudyRecord]]:
    """The first ``n`` studies of the checkpoint's own ``split``, views decoded (phantoms rendered if
    its config says so), and their records (reference reports): what the benchmarks and the vLLM
    checks generate for."""
    data = read_run_config(checkpoint).data
    data.limit = {split: n}
    prepare_images(data, splits=[split], progress=False)
    records = load_split(data, split)
    return [StudyInput(r.study_id, [np.asarray(load_image(p)) for p in r.image_paths[:data.max_views]])
            for r in records], records


# ---- the output file -----------------------------------------------------------------------
def done_ids(output: Path) -> set[str]:
    """Ids already written; a last line without its newline (a torn write) is cut off first."""
    if not output.is_file():
        return set()
    data = output.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: cutting a torn last line (%d bytes) left by a crash", output, len(data) - end)
        with output.open("r+b") as f:
            f.truncate(end)
    ids = set()
    for n, line in enumerate(data[:end].splitlines(), 1):
        if line.strip():
            try:
                ids.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"{output}: line {n} is not a run_batch result ({exc}); "
                                "pass another --output or remove the file") from exc
    return ids


class LineWriter:
    """Appends whole lines with one ``os.write`` each (O_APPEND) and fsyncs on ``flush``."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        while data:   # a regular file takes it in one go; loop only for the pathological case
            data = data[os.write(self.fd, data):]

    def flush(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def failures_path(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".jsonl") + ".failures.jsonl")


# ---- rows ------------------------------------------------------------------------------------
def result_row(result: GenerationResult, study: StudyInput, labels: np.ndarray, engine: Engine,
               settings: GenerationSettings, batch_seconds: float, batch_size: int) -> dict[str, Any]:
    return {
        "id": result.study_id,
        "report": result.report,
        "observations": result.probabilities,
        "states": result.states,
        "positive": result.positive,
        "coverage": result.coverage,
        "warnings": result.warnings,
        "sentences": result.sentences,
        "thresholds": result.thresholds,
        "attention": result.attention,   # None (like sentences and warnings empty) with --no-evidence
        "labels": {o.value: LABEL_NAMES[float(v)] for o, v in zip(OBSERVATIONS, labels) if not np.isnan(v)},
        "kg": {"seeds": list(result.evidence.seeds), "nodes": list(result.evidence.node_ids),
               "graph": result.evidence.graph},
        "retrieved": result.evidence.retrieved,
        "views": [asdict(n) for n in study.notes],
        "model": engine.model_id,
        "engine": engine.backend.kind.value,
        "generation": asdict(settings),
        "tokens": {"prompt": result.prompt_tokens, "completion": result.completion_tokens,
                   "finish_reason": result.finish_reason},
        "timing": {"batch_seconds": round(batch_seconds, 4), "batch_size": batch_size,
                   "seconds_per_study": round(batch_seconds / batch_size, 4)},
    }


def _load(record: StudyRecord, max_views: int, size: int) -> StudyInput | Failure:
    """The study's views, decoded and downsized to the model's size (what the engine would do)."""
    views, notes = read_views(record.image_paths, max_views, size, study=record.study_id)
    if not views:
        reason = "; ".join(n.reason for n in notes if n.reason) or "the study lists no image"
        return Failure(record.study_id, "image", reason, [asdict(n) for n in notes])
    return StudyInput(record.study_id, views, notes)


def _chunks(items: Sequence[StudyRecord], size: int) -> Iterator[Sequence[StudyRecord]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ---- the job ---------------------------------------------------------------------------------
def run_batch(engine: Engine, records: Sequence[StudyRecord], output: Path, batch_size: int = 16,
              settings: GenerationSettings | None = None, progress: bool = True,
              read_failures: Sequence[Failure] = ()) -> BatchSummary:
    settings = settings or engine.default_settings
    summary = BatchSummary(failures=list(read_failures), records=list(records))
    done = done_ids(output)
    todo = [r for r in records if r.study_id not in done]
    summary.skipped_done = len(records) - len(todo)
    fail_writer = LineWriter(failures_path(output))
    os.ftruncate(fail_writer.fd, 0)   # failures of this run only; an earlier run's are retried now
    for f in read_failures:
        fail_writer.write(asdict(f))
    writer = LineWriter(output)
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="run_batch", unit="report", disable=not progress)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load") as pool:
            # images of batch k+1 decode while batch k generates
            loads = pool.map(lambda chunk: [_load(r, engine.max_views, engine.image_size) for r in chunk],
                             _chunks(todo, batch_size))
            for loaded in loads:
                studies = [s for s in loaded if isinstance(s, StudyInput)]
                failed = [s for s in loaded if isinstance(s, Failure)]
                rows, failed_gen = _generate(engine, studies, settings)
                for row in rows:
                    writer.write(row)
                writer.flush()
                for f in failed + failed_gen:
                    fail_writer.write(asdict(f))
                fail_writer.flush()
                summary.written += len(rows)
                summary.failures += failed + failed_gen
                bar.update(len(loaded))
                bar.set_postfix(failed=len(summary.failures))
    finally:
        bar.close()
        writer.close()
        fail_writer.close()
        summary.seconds = time.perf_counter() - t0
    return summary


def _generate(engine: Engine, studies: list[StudyInput],
              settings: GenerationSettings) -> tuple[list[dict[str, Any]], list[Failure]]:
    """The batch at once; if it fails, study by study, so one bad study fails alone."""
    if not studies:
        return [], []
    try:
        t0 = time.perf_counter()
        results = engine.generate(studies, settings)
        seconds = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - isolate the study at fault below
        if len(studies) == 1:
            return [], [Failure(studies[0].study_id, "generate", f"{type(exc).__name__}: {exc}")]
        rows, failures = [], []
        for study in studies:
            r, f = _generate(engine, [study], settings)
            rows += r
            failures += f
        return rows, failures
    labels = label_reports([r.report for r in results])
    return [result_row(r, study, labels[i], engine, settings, seconds, len(results))
            for i, (r, study) in enumerate(zip(results, studies))], []
