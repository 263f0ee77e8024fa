"""Decision thresholds from a labelled split: what training fits each validation, and `r2genkg calibrate`,
which refits a saved checkpoint's thresholds without retraining it (a site's own val data, other rules).

The checkpoint keeps the thresholds it had as ``thresholds.prev.json`` next to the new ``thresholds.json``.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from generator.checkpoint import load_bundle
from generator.decisions import (
    THRESHOLDS_FILE,
    ThresholdRules,
    Thresholds,
    fit_thresholds,
    write_thresholds,
)
from generator.engine import resolve_device
from generator.model import R2GenKG
from graphdb.store import StoreConfig
from training.data import StudyCollator, StudyDataset, make_loader
from training.evaluate_checkpoint import checkpoint_split

PREVIOUS_FILE = "thresholds.prev.json"


def classifier_outputs(model: R2GenKG, dataset: StudyDataset, batch_size: int,
                       device: torch.device | str) -> tuple[np.ndarray, np.ndarray]:
    """The classifier over ``dataset``: (probabilities (n, 14), the studies' labels (n, 14)), row-aligned."""
    loader = make_loader(dataset, batch_size, shuffle=False, collator=StudyCollator())
    ids, probs = [], []
    for batch in loader:
        batch = batch.to(device)
        probs.append(model.probabilities(batch.images, batch.view_mask).cpu().numpy())
        ids += batch.study_ids
    if not ids:
        raise ValueError("no study of the split has a readable image: nothing to fit thresholds on")
    labels = dict(zip((r.study_id for r in dataset.records), dataset.labels.numpy()))
    return np.concatenate(probs), np.stack([labels[i] for i in ids])


def fit_on_split(model: R2GenKG, dataset: StudyDataset, split: str, rules: ThresholdRules,
                 batch_size: int, device: torch.device | str) -> Thresholds:
    probabilities, labels = classifier_outputs(model, dataset, batch_size, device)
    return fit_thresholds(probabilities, labels, split, rules)


@dataclass
class Calibration:
    previous: Thresholds
    thresholds: Thresholds
    rules: ThresholdRules
    checkpoint: Path
    kept: Path | None      # where the previous thresholds file went (None: there was none)

    @property
    def path(self) -> Path:
        return self.checkpoint / THRESHOLDS_FILE


def calibrate_checkpoint(checkpoint: str | Path, store: StoreConfig, split: str = "val",
                         overrides: list[str] | None = None, batch_size: int | None = None,
                         progress: bool = True) -> Calibration:
    """Refit ``checkpoint``'s thresholds on ``split`` (its labels come from its reference reports)
    under the rules of its ``train.thresholds`` (``overrides`` may change them, and the data paths)."""
    checkpoint = Path(checkpoint)
    config, dataset, _ = checkpoint_split(checkpoint, split, overrides, progress)
    rules = config.train.thresholds
    if not len(dataset):
        raise ValueError(f"the {split} split of {config.data.annotation_path} is empty")
    device = resolve_device("auto")
    with load_bundle(checkpoint, store, config) as bundle:
        model = bundle.model.to(device)
        previous = model.thresholds
        thresholds = fit_on_split(model, dataset, split, rules, batch_size or config.train.batch_size, device)
    done = Calibration(previous, thresholds, rules, checkpoint, kept=None)
    if done.path.is_file():
        done.kept = checkpoint / PREVIOUS_FILE
        shutil.copy2(done.path, done.kept)
    write_thresholds(checkpoint, thresholds)
    return done
