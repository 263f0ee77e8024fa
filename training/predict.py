"""Run the model's one ``generate()`` over a dataset: validation, test and batch jobs call this.

Yields ``GenerationResult``s in dataset order; studies with no readable image are skipped (and
counted by the collator), never crash the run.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from tqdm import tqdm

from generator.model import GenerationResult, GenerationSettings, R2GenKG
from training.data import StudyCollator, StudyDataset, make_loader


def predict(model: R2GenKG, dataset: StudyDataset, settings: GenerationSettings, batch_size: int,
            device: torch.device | str = "cpu", progress: bool = True, desc: str = "generate",
            collator: StudyCollator | None = None) -> Iterator[GenerationResult]:
    loader = make_loader(dataset, batch_size, shuffle=False, collator=collator or StudyCollator())
    with tqdm(total=len(dataset), desc=desc, unit="study", disable=not progress) as bar:
        for batch in loader:
            batch = batch.to(device)
            yield from model.generate(batch.images, batch.view_mask, batch.study_ids, settings)
            bar.update(len(batch))
