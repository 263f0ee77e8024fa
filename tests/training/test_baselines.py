"""The nearest-neighbour retrieval baseline returns the report of the most similar training study."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.records import StudyRecord
from training.baselines import NearestReportBaseline, RetrievalConfig


def study(tmp_path: Path, name: str, pattern: np.ndarray, report: str) -> StudyRecord:
    paths = []
    for view in range(2):
        path = tmp_path / name / f"{view}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pattern.astype(np.uint8)).save(path)
        paths.append(path)
    return StudyRecord(name, tuple(paths), report)


def test_query_gets_report_of_most_similar_image(tmp_path):
    yy, xx = np.mgrid[0:64, 0:64]
    left = np.where(xx < 32, 200, 20)
    top = np.where(yy < 32, 200, 20)
    train = [study(tmp_path, "a", left, "left bright"), study(tmp_path, "b", top, "top bright")]
    # a noisy, brighter copy of "top" must still retrieve "top bright"
    noisy_top = np.clip(top * 0.8 + 30 + np.random.default_rng(0).normal(0, 10, top.shape), 0, 255)
    query = study(tmp_path, "q", noisy_top, "?")
    assert NearestReportBaseline().fit(train).predict([query]) == ["top bright"]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least one"):
        NearestReportBaseline().fit([])
    with pytest.raises(RuntimeError, match="fit"):
        NearestReportBaseline().predict([])
    with pytest.raises(ValueError, match="thumb"):
        RetrievalConfig(thumb=2)
