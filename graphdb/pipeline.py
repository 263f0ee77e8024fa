"""Studies → seeds → per-study subgraphs → a JSONL file (what `r2genkg kg subgraphs` writes).

Seeds come from the report (teacher forcing: the labeler's positive/uncertain observations, or
the entities the stored report mentions). The file is for inspection and other tools; training
gets its subgraphs from graphdb.provider. One study a line; a rerun skips the ids already written.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cxr.files import write_text_atomic
from cxr.labeler import label_reports
from cxr.observations import Observation, UncertainPolicy, positive_sets
from cxr.readers import bundled_iu_annotation, read_r2gen
from cxr.records import DataError, StudyRecord
from graphdb.schema import StudySeeds, Subgraph, SubgraphEdge, SubgraphNode, SubgraphSpec
from graphdb.store import GraphStore

SEED_SOURCES = ("labels", "mentions", "both")
GLOBAL_ID = "global"
"""The id of the paper-mode global subgraph's line."""


def label_observations(reports: Sequence[str]) -> list[tuple[Observation, ...]]:
    """Positive or uncertain observations of each report (U-Ones: the teacher-forcing seeds)."""
    return positive_sets(label_reports(list(reports)), UncertainPolicy.ONES)


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


# ---- one line per subgraph ----------------------------------------------------------------

def subgraph_record(subgraph: Subgraph) -> dict[str, Any]:
    """A Subgraph as one JSON object, ``id`` first (a resumed run reads only that)."""
    return {"id": subgraph.study, "seeds": list(subgraph.seeds),
            "nodes": [{"id": n.id, "name": n.name, "type": n.type, "count": n.count, "level": n.level}
                      for n in subgraph.nodes],
            "edges": [{"head": e.head, "type": e.type, "tail": e.tail, "count": e.count} for e in subgraph.edges]}


def subgraph_from_record(record: dict[str, Any]) -> Subgraph:
    nodes = tuple(SubgraphNode(*n["id"].split(":", 1), n["name"], n["type"], n["count"], n["level"])
                  for n in record["nodes"])
    edges = tuple(SubgraphEdge(e["head"], e["type"], e["tail"], e["count"]) for e in record["edges"])
    return Subgraph(record["id"], tuple(record["seeds"]), nodes, edges)


def read_subgraphs(path: Path) -> list[Subgraph]:
    with open(path, encoding="utf-8") as handle:
        return [subgraph_from_record(json.loads(line)) for line in handle if line.strip()]


def _line(subgraph: Subgraph) -> str:
    return json.dumps(subgraph_record(subgraph), ensure_ascii=False, separators=(",", ":")) + "\n"


_ID_PREFIX = '{"id":'
_DECODER = json.JSONDecoder()


def _written_ids(path: Path) -> set[str]:
    """The ids already in ``path``. A line a crash cut short (no newline) is dropped, and redone."""
    done: set[str] = set()
    if not path.exists():
        return done
    with open(path, "r+b") as handle:
        offset = 0
        for number, raw in enumerate(handle, 1):
            if not raw.endswith(b"\n"):
                handle.truncate(offset)
                break
            line = raw.decode("utf-8", errors="replace")
            try:
                if not line.startswith(_ID_PREFIX):
                    raise ValueError(line[:40])
                study, _ = _DECODER.raw_decode(line, len(_ID_PREFIX))
            except ValueError:
                raise DataError(f"{path}:{number} is not a subgraph line: write to another --out, "
                                "or delete the file to start over") from None
            done.add(study)
            offset += len(raw)
    return done


# ---- writers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SubgraphsReport:
    studies: int
    new: int
    seconds: float
    path: Path

    def __str__(self) -> str:
        rate = self.new / self.seconds if self.seconds > 0 else float("inf")
        return (f"{self.studies:,} studies in {self.path} ({self.new:,} new, "
                f"{self.seconds:.1f} s, {rate:,.0f} studies/s)")


def _require_entities(store: GraphStore) -> None:
    if store.stats().nodes.get("Entity", 0) == 0:
        raise DataError("the store holds no entities: run `r2genkg kg load-m3kg` first")


def write_study_subgraphs(store: GraphStore, annotation: Path | None, splits: Sequence[str] | None, source: str,
                          spec: SubgraphSpec, out: Path, batch_size: int = 512, chunk: int = 2048) -> SubgraphsReport:
    """Append one line per study of ``annotation`` (the given splits) not yet in ``out``."""
    records = [r for r in read_r2gen(annotation or bundled_iu_annotation()) if not splits or r.split in splits]
    if not records:
        raise DataError(f"no studies for split(s) {list(splits or [])} in {annotation or 'the bundled IU annotation'}")
    _require_entities(store)
    t0 = time.perf_counter()
    _same_settings(out, {"seeds": source, "level_budgets": list(spec.level_budgets)})
    seen = _written_ids(out)
    todo = []
    for r in records:   # a study id listed twice is written once (the first)
        if r.study_id not in seen:
            seen.add(r.study_id)
            todo.append(r)
    out.parent.mkdir(parents=True, exist_ok=True)
    with (open(out, "a", encoding="utf-8") as handle,
          tqdm(total=len(records), initial=len(records) - len(todo), desc="subgraphs", unit="study") as bar):
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            graphs = store.study_subgraphs(seeds_for(store, part, source), spec, batch_size=batch_size)
            handle.writelines(_line(g) for g in graphs)
            handle.flush()
            bar.update(len(part))
    return SubgraphsReport(len(seen), len(todo), time.perf_counter() - t0, out)


def _same_settings(out: Path, settings: dict[str, object]) -> None:
    """``<out>.settings.json`` records how ``out`` was made; a rerun with other settings would mix
    two kinds of subgraph in one file, so it is refused with one line."""
    path = out.with_name(out.name + ".settings.json")
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved != settings:
            raise DataError(f"{out} was written with {saved}, not {settings}: pass another --out, or the same "
                            "settings to resume it")
    elif not out.exists():
        write_text_atomic(path, json.dumps(settings) + "\n")


def write_global_subgraph(store: GraphStore, spec: SubgraphSpec, out: Path) -> SubgraphsReport:
    """Write the paper's global multi-scale subgraph as the one line of ``out`` (id ``GLOBAL_ID``)."""
    _require_entities(store)
    t0 = time.perf_counter()
    g = store.global_subgraph(spec)
    write_text_atomic(out, _line(Subgraph(GLOBAL_ID, g.seeds, g.nodes, g.edges)))
    return SubgraphsReport(1, 1, time.perf_counter() - t0, out)
