"""Evaluate a checkpoint on a split: generate → predictions.jsonl → NLG + CE (14 and 5) + AUROC.

predictions.jsonl rows: {"id", "report", "observations": {observation: p}, "states": {observation: state},
"positive": [observation, …], "evidence": {...}, "coverage": {"covered": [...], "added": [...]}}
results.json: ``training.evaluate``'s metrics (AUROC included) plus how they were made, with how
much of the split was scored (a debug config's ``data.limit`` scores only its first studies).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
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


@dataclass(frozen=True)
class SplitScope:
    """How much of a split is read: the checkpoint config's ``data.limit`` may cut it."""

    split: str
    studies: int             # read
    total: int               # in the split
    limit: int | None        # data.limit[split] that cut it; None: the whole split

    @property
    def cut(self) -> bool:
        return self.studies < self.total


@dataclass
class CheckpointEval:
    result: EvalResult
    output_dir: Path
    seconds: float
    studies_per_second: float
    skipped_studies: int
    thresholds: Thresholds
    scope: SplitScope

    @property
    def auroc(self) -> dict[str, float | None]:
        return self.result.scores.auroc or {}

    @property
    def mean_auroc(self) -> float | None:
        return self.result.mean_auroc


def checkpoint_split(checkpoint: Path, split: str, overrides: list[str] | None, progress: bool = True,
                     full: bool = False) -> tuple[ExperimentConfig, StudyDataset, SplitScope]:
    """``checkpoint``'s config (with ``overrides``) and its ``split``, images prepared: what evaluating
    and calibrating a saved checkpoint both start from. ``full``: the whole split, whatever the
    config's ``data.limit`` says."""
    config = from_dict(ExperimentConfig, apply_overrides(read_config_data(checkpoint), overrides or []))
    if full:
        config = replace(config, data=replace(config.data, limit={k: n for k, n in config.data.limit.items()
                                                                  if k != split}))
    limit = config.data.limit.get(split)
    everything = load_split(replace(config.data, limit={}), split)
    records = everything if limit is None else everything[:limit]     # as load_split cuts it
    prepare_images(config.data, splits=[split], progress=progress)
    scope = SplitScope(split, len(records), len(everything), limit)
    return config, StudyDataset(records, config.data, progress=progress), scope


def evaluate_checkpoint(checkpoint: str | Path, store: StoreConfig, split: str = "test",
                        output_dir: str | Path | None = None, overrides: list[str] | None = None,
                        generation: GenerationSettings | None = None, batch_size: int | None = None,
                        meteor: bool = True, progress: bool = True, full: bool = False,
                        on_scope: Callable[[SplitScope], None] | None = None) -> CheckpointEval:
    """Generate ``split`` with ``checkpoint`` and score it. ``full``: every study of the split, not the
    config's ``data.limit``; ``on_scope`` hears how much is scored before generation starts."""
    checkpoint = Path(checkpoint)
    config, dataset, scope = checkpoint_split(checkpoint, split, overrides, progress, full)
    if on_scope is not None:
        on_scope(scope)
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
                                "coverage": r.coverage, "warnings": r.warnings,
                                "sentences": r.sentences, "thresholds": r.thresholds,
                                "attention": r.attention}) + "\n")
    result = evaluate_records(preds_path, dataset.records, config.data.clean_style,
                              source=f"{config.data.annotation_path} ({split})", meteor=meteor, progress=progress)
    if result is None:
        raise ValueError(f"the {split} split of {config.data.annotation_path} has no reference reports to score")
    report = CheckpointEval(result, out, seconds, len(results) / seconds if seconds else 0.0,
                            collator.skipped_studies, thresholds, scope)
    payload: dict[str, Any] = {**result.to_dict(), "classifier_auroc": report.auroc,
                               "classifier_mean_auroc": report.mean_auroc, "checkpoint": str(checkpoint),
                               "generation": to_dict(config.generation), "generation_seconds": seconds,
                               "thresholds": thresholds.to_dict(),
                               "skipped_studies": collator.skipped_studies, "split_scope": asdict(scope)}
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return report
