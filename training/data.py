"""Training data: R2Gen annotation → ``StudyDataset`` items → ``StudyBatch`` tensors.

Item: images (V, 1, S, S) normalised, view_mask (V,), labels (14,) NaN = blank, cleaned report.
Batch: images (B, V, 1, S, S), view_mask (B, V), labels (B, 14).  Unreadable views are skipped
with a warning, never a crash; the collator drops studies left with no view and counts them.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from cxr.clean import CleanStyle, clean_report
from cxr.images import load_image
from cxr.labeler import label_reports
from cxr.observations import OBSERVATIONS, POSITIVE, UNCERTAIN, Observation
from cxr.phantom.generate import generate_phantoms
from cxr.phantom.render import PhantomConfig
from cxr.readers.r2gen import bundled_iu_annotation, load_annotation, read_r2gen
from cxr.records import DataError, StudyRecord

log = logging.getLogger(__name__)

# pixels in [0, 1] → [-2, 2]: fixed constants (not ImageNet's) because the images are grayscale
IMAGE_MEAN = 0.5
IMAGE_STD = 0.25
DATASETS = ("iu_xray", "mimic_cxr", "chexpert_plus")
SPLITS = ("train", "val", "test")
PHANTOM_MIN_SIZE = 64      # PhantomConfig.size is validated to [64, 4096]
MAX_LISTED = 5             # study ids quoted in an error message


@dataclass
class DataConfig:
    annotation: str | None = None         # R2Gen annotation.json; None → the bundled IU X-ray one
    image_root: str = "outputs/phantoms"  # where images live (phantoms rendered here if `phantoms`)
    dataset: str = "iu_xray"              # iu_xray | mimic_cxr (R2Gen annotation.json) | chexpert_plus (its CSV)
    phantoms: bool = True                 # render phantoms for the annotation first (resumable)
    image_size: int = 224                 # images are resized to this square size
    max_views: int = 2                    # at most this many views a study (IU: frontal + lateral)
    max_report_tokens: int = 60           # read by the tokenizer side; stored and validated here
    limit: dict[str, int] = field(default_factory=dict)  # {"train": 64}: first N per split (debug)
    preload: bool = True                  # decode every image once into a uint8 array in RAM
    workers: int = 0                      # DataLoader workers
    clean_style: str = "iu_xray"          # cxr.clean.CleanStyle value

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"DataConfig.dataset must be one of {DATASETS}, got {self.dataset!r}")
        if not 8 <= self.image_size <= 4096:
            raise ValueError(f"DataConfig.image_size must be in [8, 4096], got {self.image_size}")
        if self.max_views < 1:
            raise ValueError(f"DataConfig.max_views must be >= 1, got {self.max_views}")
        if self.max_report_tokens < 1:
            raise ValueError(
                f"DataConfig.max_report_tokens must be >= 1, got {self.max_report_tokens}")
        if self.workers < 0:
            raise ValueError(f"DataConfig.workers must be >= 0, got {self.workers}")
        if not isinstance(self.limit, dict):
            raise TypeError(f"DataConfig.limit must map split names to counts, got {self.limit!r}")
        for split, count in self.limit.items():
            if split not in SPLITS:
                raise ValueError(
                    f"DataConfig.limit has unknown split {split!r}; expected one of {SPLITS}")
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(
                    f"DataConfig.limit[{split!r}] must be an integer >= 0, got {count!r}")
        styles = [s.value for s in CleanStyle]
        if self.clean_style not in styles:
            raise ValueError(
                f"DataConfig.clean_style must be one of {styles}, got {self.clean_style!r}")

    @property
    def annotation_path(self) -> Path:
        return Path(self.annotation) if self.annotation else bundled_iu_annotation()


# --- reading ----------------------------------------------------------------------------------
def prepare_images(config: DataConfig, splits: Sequence[str] | None = None,
                   progress: bool = True) -> Path:
    """Render phantoms for ``splits`` (default: all) if ``config.phantoms``; return the image root.

    Resumable: studies whose images exist are skipped, so calling this before every run is cheap.
    ``config.limit`` applies per split, as in ``load_split``.
    """
    root = Path(config.image_root)
    if not config.phantoms:
        return root
    annotation = config.annotation_path
    phantom = PhantomConfig(size=max(config.image_size, PHANTOM_MIN_SIZE))
    for split in splits or list(load_annotation(annotation)):
        generate_phantoms(annotation, root, phantom, splits=[split], limit=config.limit.get(split),
                          workers=1, progress=progress)
    return root


def load_split(config: DataConfig, split: str) -> list[StudyRecord]:
    """The split's records, paths under ``config.image_root`` (unchecked); first N if limited."""
    if config.dataset == "chexpert_plus":
        from cxr.readers.chexpert_plus import read_chexpert_plus

        if config.annotation is None:
            raise ValueError("DataConfig.annotation must be the CheXpert Plus CSV (df_chexpert_plus_240401.csv)")
        records = read_chexpert_plus(Path(config.annotation), image_root=Path(config.image_root), splits=[split])
    else:
        records = read_r2gen(config.annotation_path, image_root=Path(config.image_root), splits=[split],
                             dataset=config.dataset)
    limit = config.limit.get(split)
    return records if limit is None else records[:limit]


def load_view(path: Path, size: int) -> np.ndarray | None:
    """(size, size) uint8, or None (a warning names ``path``) if missing or corrupt."""
    try:
        image = load_image(path)
        return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop an epoch
        log.warning("skipping unreadable view %s: %s", path, exc)
        return None


def load_study(record: StudyRecord, size: int, max_views: int) -> tuple[np.ndarray, np.ndarray]:
    """(V, S, S) uint8 + (V,) bool valid mask; views past ``max_views`` dropped, absent ones 0."""
    pixels = np.zeros((max_views, size, size), dtype=np.uint8)
    valid = np.zeros(max_views, dtype=bool)
    for v, path in enumerate(record.image_paths[:max_views]):
        view = load_view(Path(path), size)
        if view is not None:
            pixels[v], valid[v] = view, True
    return pixels, valid


# --- dataset ----------------------------------------------------------------------------------
@dataclass
class StudyItem:
    study_id: str
    images: torch.Tensor        # (V, 1, S, S) float, normalised; invalid / padded views are 0
    view_mask: torch.Tensor     # (V,) bool, True = a readable view
    labels: torch.Tensor        # (14,) float: 1 / 0 / -1, NaN = blank
    report: str                 # cleaned report text
    skipped_views: int          # views listed (within max_views) that could not be read


def normalise(pixels: np.ndarray, valid: np.ndarray) -> torch.Tensor:
    """(V, S, S) uint8 + (V,) bool → (V, 1, S, S) float normalised, zero where not valid."""
    images = (torch.from_numpy(pixels).float() / 255.0 - IMAGE_MEAN) / IMAGE_STD
    images[~torch.from_numpy(valid)] = 0.0  # padding stays neutral, not a "black image" (-2)
    return images.unsqueeze(1)


class StudyDataset(Dataset):
    """Studies as ``StudyItem``s; ``preload`` decodes all images once at construction (fast epochs).

    ``labels`` (N, 14) may be passed when already computed; otherwise ``label_reports`` runs once.
    ``cache_dir`` (preload only) saves the decoded array as .npy keyed by the records' ids and
    paths, image size and views, so a rerun skips decoding.  Delete it after fixing image files.
    """

    def __init__(self, records: Sequence[StudyRecord], config: DataConfig,
                 labels: np.ndarray | None = None, cache_dir: str | Path | None = None,
                 progress: bool = True) -> None:
        self.records = list(records)
        self.config = config
        n = len(self.records)
        if labels is None:
            labels = label_reports([r.report for r in self.records])
        if labels.shape != (n, len(OBSERVATIONS)):
            raise ValueError(
                f"labels must have shape ({n}, {len(OBSERVATIONS)}), got {labels.shape}")
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        self.reports = [clean_report(r.report, config.clean_style) for r in self.records]
        self._pixels: np.ndarray | None = None   # (N, V, S, S) uint8 when preloaded
        self._valid: np.ndarray | None = None    # (N, V) bool
        if config.preload:
            self._pixels, self._valid = self._preload(cache_dir, progress)

    def __len__(self) -> int:
        return len(self.records)

    def label_seed_sets(self, uncertain_positive: bool = True) -> list[tuple[Observation, ...]]:
        """Each study's positive observations (uncertain too, CheXpert U-Ones): KG seeds."""
        keep = (self.labels == POSITIVE) | ((self.labels == UNCERTAIN) & uncertain_positive)
        return [tuple(o for o, k in zip(OBSERVATIONS, row) if k) for row in keep.tolist()]

    def __getitem__(self, index: int) -> StudyItem:
        record = self.records[index]
        if self._pixels is not None and self._valid is not None:
            pixels, valid = self._pixels[index], self._valid[index]
        else:
            pixels, valid = load_study(record, self.config.image_size, self.config.max_views)
        listed = min(len(record.image_paths), self.config.max_views)
        return StudyItem(
            study_id=record.study_id,
            images=normalise(pixels, valid),
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
            pixels[i], valid[i] = load_study(record, size, views)
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            np.save(cache / "pixels.npy", pixels)
            np.save(cache / "valid.npy", valid)  # written last: it marks a complete cache
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


# --- order ------------------------------------------------------------------------------------
def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The epoch's index order: a permutation seeded by ``seed + epoch``; unshuffled: 0..n-1."""
    if not shuffle:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=generator).tolist()


class ResumableSampler(Sampler[int]):
    """``epoch_order(n, seed, epoch)`` minus its first ``skip`` indices: exact mid-epoch resume."""

    def __init__(self, n: int, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                 skip: int = 0) -> None:
        if not 0 <= skip <= n:
            raise ValueError(f"skip must be in [0, {n}], got {skip}")
        self.order = epoch_order(n, seed, epoch, shuffle)[skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def make_loader(dataset: StudyDataset, batch_size: int, shuffle: bool = True, seed: int = 0,
                epoch: int = 0, collator: StudyCollator | None = None, workers: int = 0,
                skip_batches: int = 0) -> DataLoader:
    """DataLoader; its order depends only on (seed, epoch); ``skip_batches`` resumes past them."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if skip_batches < 0:
        raise ValueError(f"skip_batches must be >= 0, got {skip_batches}")
    skip = min(skip_batches * batch_size, len(dataset))
    sampler = ResumableSampler(len(dataset), shuffle=shuffle, seed=seed, epoch=epoch, skip=skip)
    # its own generator: creating an iterator must not draw from the global RNG, or a resumed
    # run's dropout masks would shift by one draw against an uninterrupted run
    generator = torch.Generator().manual_seed(seed + epoch)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, generator=generator,
                      collate_fn=collator or StudyCollator(), num_workers=workers)
