"""Studies → seeds → per-study subgraphs → the on-disk cache that training reads.

Seeds come from the report (teacher forcing: the labeler's positive/uncertain observations, or
the entities the stored report mentions) or, at inference, from the model's predictions. The fill
is resumable: studies already in the cache are skipped.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from cxr.labeler import label_reports
from cxr.observations import OBSERVATIONS, Observation
from cxr.readers import bundled_iu_annotation, read_r2gen
from cxr.records import DataError, StudyRecord
from graphdb.cache import SubgraphCacheWriter
from graphdb.schema import StudySeeds, Subgraph, SubgraphSpec
from graphdb.store import GraphStore
from graphdb.tensorize import NodeTable

SEED_SOURCES = ("labels", "mentions", "both")


def label_observations(reports: Sequence[str]) -> list[tuple[Observation, ...]]:
    """Positive or uncertain observations of each report (the labeler's teacher-forcing seeds)."""
    labels = label_reports(list(reports))
    return [tuple(o for o, v in zip(OBSERVATIONS, row) if not math.isnan(v) and v != 0.0) for row in labels]


def seeds_for(store: GraphStore, records: Sequence[StudyRecord], source: str) -> list[StudySeeds]:
    if source not in SEED_SOURCES:
        raise DataError(f"seed source must be one of {SEED_SOURCES}, got {source!r}")
    ids = [r.study_id for r in records]
    observations = (dict(zip(ids, label_observations([r.report for r in records])))
                    if source in ("labels", "both") else {})
    if source == "labels":
        return [StudySeeds(sid, observations[sid]) for sid in ids]
    seeds = store.study_seeds(ids, observations)
    if source == "mentions" and seeds and not any(s.entities for s in seeds):
        raise DataError("no study of this corpus has mentions in the store: run `r2genkg kg build` first, "
                        "or use --seeds labels")
    return seeds


@dataclass(frozen=True)
class FillReport:
    studies: int
    new: int
    seconds: float
    cache: Path

    def __str__(self) -> str:
        rate = self.new / self.seconds if self.seconds > 0 else float("inf")
        return (f"{self.studies:,} studies in the cache {self.cache} ({self.new:,} new, "
                f"{self.seconds:.1f} s, {rate:,.0f} studies/s)")


GLOBAL_ID = "global"
"""The study id under which the paper-mode global subgraph is cached."""


def fill_global(store: GraphStore, spec: SubgraphSpec, cache_dir: Path) -> FillReport:
    """Cache the paper's global multi-scale subgraph (one entry, ``GLOBAL_ID``)."""
    table = _table(store)
    t0 = time.perf_counter()
    meta = {"mode": "global", "global_scales": list(spec.global_scales)}
    with SubgraphCacheWriter(cache_dir, table, meta) as writer:
        g = store.global_subgraph(spec)
        new = writer.add([Subgraph(GLOBAL_ID, g.seeds, g.nodes, g.edges)])
    return FillReport(1, new, time.perf_counter() - t0, cache_dir)


def _table(store: GraphStore) -> NodeTable:
    table = NodeTable.from_nodes(*store.node_table())
    if len(table) <= len(OBSERVATIONS):
        raise DataError("the store holds no entities: run `r2genkg kg load-m3kg` first")
    return table


def fill_cache(store: GraphStore, annotation: Path | None, splits: Sequence[str] | None, source: str,
               spec: SubgraphSpec, cache_dir: Path, batch_size: int = 512, chunk: int = 2048) -> FillReport:
    records = [r for r in read_r2gen(annotation or bundled_iu_annotation()) if not splits or r.split in splits]
    if not records:
        raise DataError(f"no studies for split(s) {list(splits or [])} in {annotation or 'the bundled IU annotation'}")
    table = _table(store)
    meta = {"mode": "per-study", "seeds": source, "level_budgets": list(spec.level_budgets)}
    t0 = time.perf_counter()
    new = 0
    with SubgraphCacheWriter(cache_dir, table, meta) as writer:
        todo = [r for r in records if r.study_id not in writer]
        with tqdm(total=len(records), initial=len(records) - len(todo), desc="subgraph cache", unit="study") as bar:
            for start in range(0, len(todo), chunk):
                part = todo[start:start + chunk]
                graphs = store.study_subgraphs(seeds_for(store, part, source), spec, batch_size=batch_size)
                new += writer.add(graphs)
                writer.flush()
                bar.update(len(part))
        total = len(writer)
    return FillReport(total, new, time.perf_counter() - t0, cache_dir)
