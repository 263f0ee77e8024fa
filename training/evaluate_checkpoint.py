"""Evaluate a checkpoint on a split: generate → predictions.jsonl → NLG + CE (14 and 5) + AUROC.

predictions.jsonl rows: {"id", "report", "observations": {observation: p}, "states": {observation: state},
"positive": [observation, …], "evidence": {...}, "coverage": {"covered": [...], "added": [...]}}
results.json: ``training.evaluate``'s metrics (AUROC included) plus how they were made.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cxr.datasets import load_split, prepare_images
from generator.checkpoint import load_bundle, read_config_data
from generator.config_io import apply_overrides, from_dict, to_dict
from generator.decisions import Thresholds
from generator.engine import resolve_device
from generator.model import GenerationSettings
from graphdb.store import StoreConfig
from training.config import ExperimentConfig
from training.data import StudyCollator, StudyDataset
from training.evaluate import EvalResult, evaluate_records
from training.predict import predict


@dataclass
class CheckpointEval:
    result: EvalResult
    output_dir: Path
    seconds: float
    studies_per_second: float
    skipped_studies: int
    thresholds: Thresholds

    @property
    def auroc(self) -> dict[str, float | None]:
        return self.result.scores.auroc or {}

    @property
    def mean_auroc(self) -> float | None:
        return self.result.mean_auroc


def checkpoint_split(checkpoint: Path, split: str, overrides: list[str] | None,
                     progress: bool = True) -> tuple[ExperimentConfig, StudyDataset]:
    """``checkpoint``'s config (with ``overrides``) and its ``split``, images prepared: what evaluating
    and calibrating a saved checkpoint both start from."""
    config = from_dict(ExperimentConfig, apply_overrides(read_config_data(checkpoint), overrides or []))
    prepare_images(config.data, splits=[split], progress=progress)
    return config, StudyDataset(load_split(config.data, split), config.data, progress=progress)


def evaluate_checkpoint(checkpoint: str | Path, store: StoreConfig, split: str = "test",
                        output_dir: str | Path | None = None, overrides: list[str] | None = None,
                        generation: GenerationSettings | None = None, batch_size: int | None = None,
                        meteor: bool = True, progress: bool = True) -> CheckpointEval:
    checkpoint = Path(checkpoint)
    config, dataset = checkpoint_split(checkpoint, split, overrides, progress)
    if generation is not None:
        config = replace(config, generation=generation)
    out = Path(output_dir) if output_dir is not None else checkpoint / f"eval_{split}"
    out.mkdir(parents=True, exist_ok=True)
    collator = StudyCollator()
    device = resolve_device("auto")
    with load_bundle(checkpoint, store, config) as bundle:
        model = bundle.model.to(device)
        thresholds = model.thresholds
        t0 = time.perf_counter()
        results = list(predict(model, dataset, config.generation, batch_size or config.train.batch_size,
                               device, progress=progress, desc=f"generate {split}", collator=collator))
        seconds = time.perf_counter() - t0
    preds_path = out / "predictions.jsonl"
    with preds_path.open("w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps({"id": r.study_id, "report": r.report, "observations": r.probabilities,
                                "states": r.states, "positive": r.positive, "evidence": asdict(r.evidence),
                                "coverage": r.coverage}) + "\n")
    result = evaluate_records(preds_path, dataset.records, config.data.clean_style,
                              source=f"{config.data.annotation_path} ({split})", meteor=meteor, progress=progress)
    if result is None:
        raise ValueError(f"the {split} split of {config.data.annotation_path} has no reference reports to score")
    report = CheckpointEval(result, out, seconds, len(results) / seconds if seconds else 0.0,
                            collator.skipped_studies, thresholds)
    payload: dict[str, Any] = {**result.to_dict(), "classifier_auroc": report.auroc,
                               "classifier_mean_auroc": report.mean_auroc, "checkpoint": str(checkpoint),
                               "generation": to_dict(config.generation), "generation_seconds": seconds,
                               "thresholds": thresholds.to_dict(),
                               "skipped_studies": collator.skipped_studies}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return report
