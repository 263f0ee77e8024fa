"""Reference baselines that need no training: nearest-neighbour report retrieval on pixels.

Images (B, V views) → (B, D) thumbnail vectors → cosine k=1 neighbour in the train set → its report.
A floor every learned model must beat; it uses the images, so it also checks that phantoms carry signal.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxr.images import load_image
from cxr.records import StudyRecord


@dataclass(frozen=True)
class RetrievalConfig:
    thumb: int = 32   # side of the per-view thumbnail; D = views · thumb²
    views: int = 2    # first N views of each study (missing views are zeros)

    def __post_init__(self) -> None:
        if self.thumb < 4:
            raise ValueError(f"RetrievalConfig.thumb must be >= 4, got {self.thumb}")
        if self.views < 1:
            raise ValueError(f"RetrievalConfig.views must be >= 1, got {self.views}")


def study_vector(record: StudyRecord, config: RetrievalConfig) -> np.ndarray:
    """(views · thumb²,) float32, each view zero-mean unit-norm so exposure differences cancel."""
    parts = []
    for i in range(config.views):
        if i < len(record.image_paths):
            img = load_image(record.image_paths[i]).resize((config.thumb, config.thumb))
            v = np.asarray(img, dtype=np.float32).ravel()
            v -= v.mean()
            v /= np.linalg.norm(v) + 1e-6
        else:
            v = np.zeros(config.thumb * config.thumb, np.float32)
        parts.append(v)
    return np.concatenate(parts)


class NearestReportBaseline:
    """Predict, for each query study, the report of its most similar training study."""

    def __init__(self, config: RetrievalConfig | None = None) -> None:
        self.config = config or RetrievalConfig()
        self._bank: np.ndarray | None = None   # (N, D)
        self._reports: list[str] = []

    def fit(self, train: Sequence[StudyRecord]) -> NearestReportBaseline:
        if not train:
            raise ValueError("NearestReportBaseline.fit needs at least one training study")
        self._bank = np.stack([study_vector(r, self.config) for r in train])
        self._reports = [r.report for r in train]
        return self

    def predict(self, queries: Sequence[StudyRecord]) -> list[str]:
        if self._bank is None:
            raise RuntimeError("call fit() before predict()")
        q = np.stack([study_vector(r, self.config) for r in queries])   # (B, D)
        nearest = (q @ self._bank.T).argmax(axis=1)                      # (B,)
        return [self._reports[i] for i in nearest]
