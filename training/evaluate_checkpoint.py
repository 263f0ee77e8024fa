"""Evaluate a checkpoint on a split: generate → predictions.jsonl → NLG + CE (14 and 5) + AUROC.

predictions.jsonl rows: {"id", "report", "probabilities": {observation: p}, "evidence": {...}}
results.json: the ``evaluate`` metrics plus the classifier's AUROC per observation.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr.clean import CleanStyle
from cxr.observations import OBSERVATIONS
from generator.model import GenerationSettings
from training.checkpoint import load_bundle, read_config
from training.config import ExperimentConfig
from training.config_io import apply_overrides, from_dict, to_dict
from training.data import StudyCollator, StudyDataset, load_split, prepare_images
from training.evaluate import EvalResult, evaluate
from training.metrics.auroc import auroc_per_observation
from training.predict import predict


@dataclass
class CheckpointEval:
    result: EvalResult
    auroc: dict[str, float | None]
    output_dir: Path
    seconds: float
    studies_per_second: float
    skipped_studies: int

    @property
    def mean_auroc(self) -> float | None:
        values = [v for v in self.auroc.values() if v is not None]
        return float(np.mean(values)) if values else None


def evaluate_checkpoint(checkpoint: str | Path, split: str = "test", output_dir: str | Path | None = None,
                        overrides: list[str] | None = None, generation: GenerationSettings | None = None,
                        batch_size: int | None = None, meteor: bool = True, progress: bool = True) -> CheckpointEval:
    checkpoint = Path(checkpoint)
    config = read_config(checkpoint)
    if overrides:
        config = from_dict(ExperimentConfig, apply_overrides(to_dict(config), overrides))
    if generation is not None:
        config = replace(config, generation=generation)
    out = Path(output_dir) if output_dir is not None else checkpoint / f"eval_{split}"
    out.mkdir(parents=True, exist_ok=True)
    prepare_images(config.data, splits=[split], progress=progress)
    dataset = StudyDataset(load_split(config.data, split), config.data, progress=progress)
    collator = StudyCollator()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with load_bundle(checkpoint, config) as bundle:
        model = bundle.model.to(device)
        t0 = time.perf_counter()
        results = list(predict(model, dataset, config.generation, batch_size or config.train.batch_size,
                               device, progress=progress, desc=f"generate {split}", collator=collator))
        seconds = time.perf_counter() - t0
    preds_path = out / "predictions.jsonl"
    with preds_path.open("w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps({"id": r.study_id, "report": r.report, "probabilities": r.probabilities,
                                "evidence": asdict(r.evidence)}) + "\n")
    partial = bool(config.data.limit.get(split)) or collator.skipped_studies > 0
    result = evaluate(preds_path, config.data.annotation_path, split, CleanStyle(config.data.clean_style),
                      meteor=meteor, allow_missing=partial, progress=progress)
    labels = {r.study_id: dataset.labels[i].numpy() for i, r in enumerate(dataset.records)}
    probs = np.array([[r.probabilities[o.value] for o in OBSERVATIONS] for r in results])
    aurocs = auroc_per_observation(probs, np.stack([labels[r.study_id] for r in results]))
    report = CheckpointEval(result, aurocs, out, seconds, len(results) / seconds if seconds else 0.0,
                            collator.skipped_studies)
    payload: dict[str, Any] = {**result.to_dict(), "classifier_auroc": aurocs,
                               "classifier_mean_auroc": report.mean_auroc, "checkpoint": str(checkpoint),
                               "generation": to_dict(config.generation), "generation_seconds": seconds,
                               "skipped_studies": collator.skipped_studies}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return report
