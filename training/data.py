"""Training data: R2Gen annotation → ``StudyDataset`` items → ``StudyBatch`` tensors.

Item: images (V, 1, S, S) normalised, view_mask (V,), labels (14,) NaN = blank, cleaned report.
Batch: images (B, V, 1, S, S), view_mask (B, V), labels (B, 14).  Unreadable views are skipped
with a warning, never a crash; the collator drops studies left with no view and counts them.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cxr.clean import clean_report
from cxr.datasets import DataConfig
from cxr.images import load_views, normalise
from cxr.labeler import label_reports
from cxr.observations import OBSERVATIONS, Observation, UncertainPolicy, positive_sets
from cxr.records import DataError, StudyRecord
from cxr.sentences import SentenceOrder, order_reports

log = logging.getLogger(__name__)

MAX_LISTED = 5             # study ids quoted in an error message


# --- dataset ----------------------------------------------------------------------------------
@dataclass
class StudyItem:
    study_id: str
    images: torch.Tensor        # (V, 1, S, S) float, normalised; invalid / padded views are 0
    view_mask: torch.Tensor     # (V,) bool, True = a readable view
    labels: torch.Tensor        # (14,) float: 1 / 0 / -1, NaN = blank
    report: str                 # cleaned report text
    skipped_views: int          # views listed (within max_views) that could not be read


class StudyDataset(Dataset):
    """Studies as ``StudyItem``s; ``preload`` decodes all images once at construction (fast epochs).

    ``labels`` (N, 14) may be passed when already computed; otherwise ``label_reports`` runs once.
    ``sentence_order`` orders each cleaned report's sentences (``cxr.sentences``): the text a
    batch carries as the decoder's target. ``cache_dir`` (preload only) saves the decoded array as .npy keyed by the records' ids and
    paths, image size and views, so a rerun skips decoding.  Delete it after fixing image files.
    """

    def __init__(self, records: Sequence[StudyRecord], config: DataConfig,
                 labels: np.ndarray | None = None, cache_dir: str | Path | None = None,
                 progress: bool = True, sentence_order: SentenceOrder = SentenceOrder.REPORT) -> None:
        self.records = list(records)
        self.config = config
        n = len(self.records)
        if labels is None:
            labels = label_reports([r.report for r in self.records])
        if labels.shape != (n, len(OBSERVATIONS)):
            raise ValueError(
                f"labels must have shape ({n}, {len(OBSERVATIONS)}), got {labels.shape}")
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        # the decoder's targets; references are scored from ``records`` as written
        self.reports = order_reports([clean_report(r.report, config.clean_style) for r in self.records],
                                     sentence_order)
        self._pixels: np.ndarray | None = None   # (N, V, S, S) uint8 when preloaded
        self._valid: np.ndarray | None = None    # (N, V) bool
        if config.preload:
            self._pixels, self._valid = self._preload(cache_dir, progress)

    def __len__(self) -> int:
        return len(self.records)

    def label_seed_sets(self, uncertain: UncertainPolicy = UncertainPolicy.ONES) -> list[tuple[Observation, ...]]:
        """Each study's positive observations under ``uncertain``: the KG seeds of teacher forcing."""
        return positive_sets(self.labels, uncertain)

    def __getitem__(self, index: int) -> StudyItem:
        record = self.records[index]
        if self._pixels is not None and self._valid is not None:
            pixels, valid = self._pixels[index], self._valid[index]
        else:
            pixels, valid = self._load(record)
        listed = min(len(record.image_paths), self.config.max_views)
        return StudyItem(
            study_id=record.study_id,
            images=torch.from_numpy(normalise(pixels, valid)),
            view_mask=torch.from_numpy(valid.copy()),
            labels=self.labels[index].clone(),
            report=self.reports[index],
            skipped_views=listed - int(valid.sum()),
        )

    def _preload(self, cache_dir: str | Path | None,
                 progress: bool) -> tuple[np.ndarray, np.ndarray]:
        size, views = self.config.image_size, self.config.max_views
        cache = Path(cache_dir) / f"studies-{self._cache_key()}" if cache_dir is not None else None
        if cache is not None and (cache / "valid.npy").is_file():
            log.info("loading decoded images from %s", cache)
            return np.load(cache / "pixels.npy"), np.load(cache / "valid.npy")
        pixels = np.zeros((len(self.records), views, size, size), dtype=np.uint8)
        valid = np.zeros((len(self.records), views), dtype=bool)
        bar = tqdm(self.records, desc="decode", unit="study", disable=not progress)
        for i, record in enumerate(bar):
            pixels[i], valid[i] = self._load(record)
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            np.save(cache / "pixels.npy", pixels)
            np.save(cache / "valid.npy", valid)  # written last: it marks a complete cache
        return pixels, valid

    def _load(self, record: StudyRecord) -> tuple[np.ndarray, np.ndarray]:
        """(V, S, S) uint8 + (V,) valid; an unreadable view is skipped with a warning, never a crash."""
        pixels, valid, problems = load_views(record.image_paths, self.config.image_size, self.config.max_views)
        for problem in problems:
            log.warning("skipping unreadable view: %s", problem)
        return pixels, valid

    def _cache_key(self) -> str:
        # ids + paths stand for (annotation, split, limit); size and views for the array's shape
        content = [[r.study_id, [str(p) for p in r.image_paths]] for r in self.records]
        blob = json.dumps([content, self.config.image_size, self.config.max_views]).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()[:16]


# --- batching ---------------------------------------------------------------------------------
@dataclass
class StudyBatch:
    study_ids: list[str]
    images: torch.Tensor        # (B, V, 1, S, S)
    view_mask: torch.Tensor     # (B, V) bool
    labels: torch.Tensor        # (B, 14) float, NaN = blank
    reports: list[str]

    def to(self, device: torch.device | str) -> StudyBatch:
        return StudyBatch(self.study_ids, self.images.to(device), self.view_mask.to(device),
                          self.labels.to(device), self.reports)

    def __len__(self) -> int:
        return len(self.study_ids)


@dataclass
class StudyCollator:
    """Stacks items into a ``StudyBatch``, dropping (and counting) studies with no readable view.

    The counters live in the process that collates: with DataLoader workers > 0 each worker
    has its own copy, so read them with workers=0 when the exact totals matter.
    """

    skipped_studies: int = 0
    skipped_views: int = 0

    # accelerate's register_for_checkpointing protocol: the counts survive a resume
    def state_dict(self) -> dict[str, int]:
        return {"skipped_studies": self.skipped_studies, "skipped_views": self.skipped_views}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skipped_studies, self.skipped_views = state["skipped_studies"], state["skipped_views"]

    def __call__(self, items: Sequence[StudyItem]) -> StudyBatch:
        self.skipped_views += sum(item.skipped_views for item in items)
        kept = [item for item in items if bool(item.view_mask.any())]
        dropped = [item.study_id for item in items if not bool(item.view_mask.any())]
        if dropped:
            self.skipped_studies += len(dropped)
            log.warning("dropping %d studies with no readable image: %s", len(dropped), dropped)
        if not kept:
            raise DataError(f"empty batch: none of the {len(items)} studies {_listed(dropped)} "
                            "has a readable image")
        return StudyBatch(
            study_ids=[item.study_id for item in kept],
            images=torch.stack([item.images for item in kept]),
            view_mask=torch.stack([item.view_mask for item in kept]),
            labels=torch.stack([item.labels for item in kept]),
            reports=[item.report for item in kept],
        )


def _listed(ids: Sequence[str]) -> str:
    more = f" and {len(ids) - MAX_LISTED} more" if len(ids) > MAX_LISTED else ""
    return f"({', '.join(ids[:MAX_LISTED])}{more})"


# --- order ---------------------------------------------------------------------------------
def make_loader(dataset: StudyDataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                epoch: int = 0, collator: StudyCollator | None = None, workers: int = 0) -> DataLoader:
    """DataLoader whose order depends only on (seed, epoch): its own generator, never the global
    RNG, so a resumed run (``Accelerator.skip_first_batches``) sees the same order and the same
    dropout draws as an uninterrupted one."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(seed + epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=collator or StudyCollator(), num_workers=workers)
