"""scripts/decision_errors.py: a run's positive decisions against the reference labels, per observation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr.observations import (
    FIVE_OBSERVATIONS,
    NEGATIVE,
    OBSERVATIONS,
    POSITIVE,
    UNCERTAIN,
    Observation,
)
from tests.script_module import load_script

decision_errors = load_script("decision_errors")


def _labels(**values: float) -> np.ndarray:
    row = np.full(len(OBSERVATIONS), np.nan)
    for name, v in values.items():
        row[OBSERVATIONS.index(Observation(name.replace("_", " ")))] = v
    return row


def _run(tmp_path: Path, positives: dict[str, list[str]]) -> Path:
    out = tmp_path / "run" / "best" / "eval_test"
    out.mkdir(parents=True)
    out.joinpath("predictions.jsonl").write_text(
        "".join(json.dumps({"id": i, "report": "", "positive": p}) + "\n" for i, p in positives.items()))
    return tmp_path / "run"


def test_false_positives_are_split_by_what_the_reference_said(tmp_path: Path) -> None:
    labels = {"a": _labels(Cardiomegaly=POSITIVE), "b": _labels(Cardiomegaly=UNCERTAIN),
              "c": _labels(Cardiomegaly=NEGATIVE), "d": _labels(), "e": _labels(Cardiomegaly=POSITIVE)}
    run = _run(tmp_path, {"a": ["Cardiomegaly"], "b": ["Cardiomegaly"], "c": ["Cardiomegaly"],
                          "d": ["Cardiomegaly", "No Finding"], "e": []})
    per, f1 = decision_errors.decision_errors(run, labels, list(FIVE_OBSERVATIONS))
    cardio = next(r for r in per if r["observation"] == "Cardiomegaly")
    assert (cardio["tp"], cardio["fp"], cardio["fn"]) == (1, 3, 1)
    assert dict(cardio["fp_reference"]) == {"uncertain": 1, "negative": 1, "blank": 1}
    assert f1 == pytest.approx(2 * 1 / (4 + 2))   # No Finding is not one of the five


def test_an_unscored_run_and_a_foreign_id_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not found"):
        decision_errors.decision_errors(tmp_path / "nothing", {}, list(FIVE_OBSERVATIONS))
    run = _run(tmp_path, {"x": []})
    with pytest.raises(SystemExit, match="not in the IU test split"):
        decision_errors.decision_errors(run, {"a": _labels()}, list(FIVE_OBSERVATIONS))


def test_reference_labels_cover_the_590_test_studies() -> None:
    labels = decision_errors.reference_labels("test")
    assert len(labels) == 590
    assert all(row.shape == (len(OBSERVATIONS),) for row in labels.values())
