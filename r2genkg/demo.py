"""The data pipeline end to end on the bundled IU X-ray reports (what `r2genkg demo` runs).

annotation → labels (CheXpert-style) → phantom X-rays for a sample → M3KG in the graph store +
the sample's studies → per-study subgraphs (JSONL) → read back → baseline → metrics.
Every step writes under one output folder; a rerun reuses what is there (phantoms resume).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from cxr.images import load_image
from cxr.labeler import label_reports
from cxr.labeler.stats import format_rates, label_rates
from cxr.phantom.generate import generate_phantoms
from cxr.phantom.render import PhantomConfig
from cxr.readers.common import ImageCheck
from cxr.readers.r2gen import bundled_iu_annotation, load_annotation, read_r2gen
from graphdb.store import StoreConfig, StoreKind
from training.baselines import NearestReportBaseline
from training.evaluate import EvalResult, evaluate


@dataclass(frozen=True)
class DemoConfig:
    out: Path = Path("outputs/demo")
    annotation: Path | None = None     # None: the bundled IU X-ray annotation
    train_studies: int = 300           # sampled from the train split (phantoms are drawn for these)
    test_studies: int = 60             # sampled from the test split
    image_size: int = 256
    seed: int = 0
    workers: int = 1
    meteor: bool = True
    store: StoreConfig | None = None   # None: the embedded store under <out>/kg

    def __post_init__(self) -> None:
        for name in ("train_studies", "test_studies", "image_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"DemoConfig.{name} must be >= 1, got {getattr(self, name)}")


def write_subset(annotation: Path, out: Path, n_train: int, n_test: int, seed: int) -> Path:
    """A smaller annotation.json with a seeded sample of the train and test splits."""
    data = load_annotation(annotation)
    rng = random.Random(seed)
    subset = {"train": [], "val": [], "test": []}
    for split, n in (("train", n_train), ("test", n_test)):
        items = list(data.get(split, []))
        if len(items) < n:
            raise ValueError(f"{annotation}: split {split!r} has {len(items)} studies, {n} requested")
        subset[split] = sorted(rng.sample(items, n), key=lambda item: item["id"])
    path = out / "annotation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(subset, indent=1), encoding="utf-8")
    return path


def run_demo(config: DemoConfig, console: Console | None = None) -> EvalResult:
    console = console or Console()
    annotation = config.annotation or bundled_iu_annotation()

    console.rule("step 1: read the annotation")
    records = read_r2gen(annotation)
    by_split = {s: sum(r.split == s for r in records) for s in ("train", "val", "test")}
    console.print(f"{annotation}: {len(records)} studies {by_split}", highlight=False)

    console.rule("step 2: label every report (14 CheXpert observations)")
    labels = label_reports([r.report for r in records])
    console.print(format_rates(label_rates(labels)), highlight=False)

    console.rule("step 3: phantom chest X-rays for a sample")
    subset = write_subset(annotation, config.out, config.train_studies, config.test_studies, config.seed)
    images = config.out / "images"
    summary = generate_phantoms(subset, images, PhantomConfig(size=config.image_size, seed=config.seed),
                                workers=config.workers)
    console.print(str(summary), highlight=False)

    console.rule("step 4: knowledge graph: M3KG + the sample's studies, per-study subgraphs")
    _knowledge_graph(config, subset, console)

    console.rule("step 5: read them back through the dataset reader")
    train = read_r2gen(subset, image_root=images, splits=["train"], check_images=ImageCheck.DECODE)
    test = read_r2gen(subset, image_root=images, splits=["test"], check_images=ImageCheck.DECODE)
    first = load_image(test[0].image_paths[0])
    console.print(f"{len(train)} train + {len(test)} test studies decoded; e.g. {test[0].image_paths[0]} "
                  f"{first.size[0]}×{first.size[1]} mode {first.mode}", highlight=False)

    console.rule("step 6: nearest-neighbour report retrieval baseline → metrics")
    predictions = NearestReportBaseline().fit(train).predict(test)
    preds_path = config.out / "predictions.jsonl"
    with preds_path.open("w", encoding="utf-8") as f:
        for record, report in zip(test, predictions):
            f.write(json.dumps({"id": record.study_id, "report": report}) + "\n")
    return evaluate(preds_path, subset, "test", meteor=config.meteor,
                    output=config.out / "results.json", progress=True)


def _knowledge_graph(config: DemoConfig, subset: Path, console: Console) -> None:
    """Load the M3KG (idempotent), attach the sample's studies and their mentions, and write
    their per-study subgraphs to <out>/subgraphs.jsonl (a rerun skips the studies written)."""
    import time

    from graphdb.extract import RuleExtractor
    from graphdb.m3kg import load_m3kg
    from graphdb.pipeline import write_study_subgraphs
    from graphdb.schema import SubgraphSpec
    from graphdb.store import open_store

    store_config = config.store or StoreConfig(kind=StoreKind.EMBEDDED, path=config.out / "kg")
    with open_store(store_config) as store:
        t0 = time.perf_counter()
        store.upsert(load_m3kg())
        records = read_r2gen(subset)
        store.attach_studies(RuleExtractor().extract(records))
        console.print(f"{store_config.kind.value} store ready in {time.perf_counter() - t0:.1f} s", highlight=False)
        console.print(store.stats().format(), highlight=False)
        report = write_study_subgraphs(store, subset, None, "labels", SubgraphSpec(), config.out / "subgraphs.jsonl")
        console.print(str(report), highlight=False)
        (example,) = store.study_subgraphs(store.study_seeds([records[0].study_id]))
        sizes = [len(example.at_level(i).nodes) for i in range(3)]
        console.print(f"e.g. {records[0].study_id} (seeds: the entities its report mentions): nested levels of "
                      f"{sizes} nodes, {len(example.edges)} edges", highlight=False)
