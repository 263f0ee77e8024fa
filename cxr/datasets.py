"""Which studies a run reads: ``DataConfig`` → the records of a split, with phantoms rendered first.

``load_split(config, "val")`` → ``list[StudyRecord]`` (image paths under ``config.image_root``,
unchecked; the first N when ``config.limit`` says so). Training, evaluation and run_batch on a
checkpoint's own split all read through here and ``cxr.readers.read_dataset``. Relative
``image_root`` and ``annotation`` are under the project home (cxr.home), wherever the command runs.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxr.clean import CleanStyle
from cxr.home import in_home
from cxr.phantom.generate import generate_phantoms
from cxr.phantom.render import PhantomConfig
from cxr.readers import Corpus, DatasetKind, read_dataset
from cxr.readers.r2gen import bundled_iu_annotation, load_annotation
from cxr.records import StudyRecord

SPLITS = ("train", "val", "test")
PHANTOM_MIN_SIZE = 64      # PhantomConfig.size is validated to [64, 4096]
# Phantoms render on up to this many processes (identical images, one per study), but a split of
# fewer studies than PARALLEL_FROM stays in this process: starting the workers would cost more.
PHANTOM_WORKERS, PARALLEL_FROM = 8, 100


@dataclass
class DataConfig:
    annotation: str | None = None         # R2Gen annotation.json or CheXpert Plus CSV; None → bundled IU X-ray
    image_root: str = "outputs/phantoms"  # where images live (phantoms rendered here if `phantoms`)
    dataset: Corpus = Corpus.IU_XRAY      # iu_xray | mimic_cxr (R2Gen annotation.json) | chexpert_plus (its CSV)
    phantoms: bool = True                 # render phantoms for the annotation first (resumable)
    image_size: int = 224                 # images are resized to this square size
    # phantoms are drawn at max(phantom_size, image_size), then resized to image_size like any image;
    # drawn at a small side, fine signs (a blunted costophrenic angle, plate atelectasis) are lost
    phantom_size: int = 0
    max_views: int = 2                    # at most this many views a study (IU: frontal + lateral)
    max_report_tokens: int = 60           # read by the tokenizer side; stored and validated here
    limit: dict[str, int] = field(default_factory=dict)  # {"train": 64}: first N per split (debug)
    preload: bool = True                  # decode every image once into a uint8 array in RAM
    workers: int = 0                      # DataLoader workers
    clean_style: CleanStyle = CleanStyle.IU_XRAY

    def __post_init__(self) -> None:
        for name, kind in (("dataset", Corpus), ("clean_style", CleanStyle)):
            try:
                setattr(self, name, kind(getattr(self, name)))
            except ValueError:
                raise ValueError(f"DataConfig.{name} must be one of {[k.value for k in kind]}, "
                                 f"got {getattr(self, name)!r}") from None
        if not 8 <= self.image_size <= 4096:
            raise ValueError(f"DataConfig.image_size must be in [8, 4096], got {self.image_size}")
        if self.phantom_size and not PHANTOM_MIN_SIZE <= self.phantom_size <= 4096:
            raise ValueError(f"DataConfig.phantom_size must be 0 (drawn at image_size) or in "
                             f"[{PHANTOM_MIN_SIZE}, 4096], got {self.phantom_size}")
        if self.max_views < 1:
            raise ValueError(f"DataConfig.max_views must be >= 1, got {self.max_views}")
        if self.max_report_tokens < 1:
            raise ValueError(f"DataConfig.max_report_tokens must be >= 1, got {self.max_report_tokens}")
        if self.workers < 0:
            raise ValueError(f"DataConfig.workers must be >= 0, got {self.workers}")
        for split, count in self.limit.items():
            if split not in SPLITS:
                raise ValueError(f"DataConfig.limit has unknown split {split!r}; expected one of {SPLITS}")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"DataConfig.limit[{split!r}] must be an integer >= 0, got {count!r}")
        if self.dataset is Corpus.CHEXPERT_PLUS and self.annotation is None:
            raise ValueError("DataConfig.annotation must be the CheXpert Plus CSV (df_chexpert_plus_240401.csv) "
                             "when dataset is chexpert_plus")

    @property
    def annotation_path(self) -> Path:
        return in_home(self.annotation) if self.annotation else bundled_iu_annotation()

    @property
    def image_root_path(self) -> Path:
        return in_home(self.image_root)


def prepare_images(config: DataConfig, splits: Sequence[str] | None = None, progress: bool = True) -> Path:
    """Render phantoms for ``splits`` (default: all) if ``config.phantoms``; return the image root.

    Resumable: studies whose images exist are skipped, so calling this before every run is cheap.
    ``config.limit`` applies per split, as in ``load_split``.
    """
    root = config.image_root_path
    if not config.phantoms:
        return root
    annotation = config.annotation_path
    phantom = PhantomConfig(size=max(config.image_size, config.phantom_size, PHANTOM_MIN_SIZE))
    for split in splits or list(load_annotation(annotation)):
        limit = config.limit.get(split)
        workers = 1 if limit is not None and limit < PARALLEL_FROM else min(PHANTOM_WORKERS, os.cpu_count() or 1)
        generate_phantoms(annotation, root, phantom, splits=[split], limit=limit, workers=workers,
                          progress=progress)
    return root


def load_split(config: DataConfig, split: str) -> list[StudyRecord]:
    """The split's records, paths under ``config.image_root`` (unchecked); first N if limited."""
    kind = config.dataset.kind
    options = {"dataset": config.dataset.value} if kind is DatasetKind.R2GEN else {}
    records = read_dataset(kind, config.annotation_path, image_root=config.image_root_path, splits=[split],
                           **options)
    limit = config.limit.get(split)
    return records if limit is None else records[:limit]
