"""Benchmark: the M3KG in both stores: load time, and per-study subgraphs for all IU studies.

What, side by side in one run, for the embedded store (LadybugDB) and, when reachable, Neo4j:
  1. loading the full M3KG (37,424 triples) into an empty store, re-loading it (idempotent), and
     loading it again after clearing the store (Neo4j: restart the server first for the cold number);
  2. per-study 3-level subgraphs for all 2,955 IU studies (seeds: the labeler's observations),
     batched (one round trip per level per 512 studies, equal seeds computed once) against
     one query per study (batch 1, no dedupe, timed on a sample and extrapolated);
and prints the ratios to the targets (load ≤ 10 s Neo4j / ≤ 3 s embedded, ≥ 500 studies/s,
batched ≥ 10x one-per-study).
Needs: for Neo4j, `scripts/neo4j.sh start` (NEO4J_URI / NEO4J_PASSWORD as for the tests). The
benchmark CLEARS that database, so it runs only on a server it proves to be that one
(graphdb.dev_server: the DBMS id in <home>/run/server-id); any other Neo4j is skipped, untouched.
Run: ``.venv/bin/python benchmarks/bench_graph.py [--no-neo4j] [--single-sample 100]``
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cxr.readers import bundled_iu_annotation, read_r2gen
from graphdb.embedded_store import EmbeddedGraphStore
from graphdb.m3kg import load_m3kg
from graphdb.pipeline import label_observations
from graphdb.schema import KnowledgeGraph, StudySeeds, SubgraphSpec
from graphdb.store import GraphStore, GraphStoreError

LOAD_TARGET = {"ladybug": 3.0, "neo4j": 10.0}
RATE_TARGET = 500.0
RATIO_TARGET = 10.0


def iu_seeds() -> list[StudySeeds]:
    records = list(read_r2gen(bundled_iu_annotation()))
    observations = label_observations([r.report for r in records])
    return [StudySeeds(r.study_id, obs) for r, obs in zip(records, observations)]


def bench_store(name: str, store: GraphStore, kg: KnowledgeGraph, seeds: list[StudySeeds], single_sample: int) -> dict:
    store.clear()
    t0 = time.perf_counter()
    store.upsert(kg)
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.upsert(kg)
    reload = time.perf_counter() - t0
    store.clear()                                  # a second load into an empty store: warm server
    t0 = time.perf_counter()
    store.upsert(kg)
    warm = time.perf_counter() - t0

    spec = SubgraphSpec()
    store.study_subgraphs(seeds[:64], spec)        # warm caches / query plans outside the timing
    t0 = time.perf_counter()
    batched = store.study_subgraphs(seeds, spec, batch_size=512)
    batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nodedupe = store.study_subgraphs(seeds[:4 * single_sample], spec, batch_size=512, dedupe=False)
    nodedupe_rate = 4 * single_sample / (time.perf_counter() - t0)
    assert nodedupe == batched[:4 * single_sample], "dedupe changed a subgraph"
    t0 = time.perf_counter()
    single = store.study_subgraphs(seeds[:single_sample], spec, batch_size=1, dedupe=False)
    single_rate = single_sample / (time.perf_counter() - t0)
    assert single == batched[:single_sample], "one-per-study and batched subgraphs differ"
    return {"name": name, "load": load, "warm": warm, "reload": reload, "rate": len(seeds) / batched_s,
            "single_rate": single_rate, "nodedupe_rate": nodedupe_rate, "unique": len({s.signature for s in seeds}),
            "nodes": sum(len(g.nodes) for g in batched) / len(batched),
            "edges": sum(len(g.edges) for g in batched) / len(batched), "graphs": batched}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-neo4j", action="store_true", help="embedded store only")
    ap.add_argument("--single-sample", type=int, default=100, help="studies timed one query each")
    args = ap.parse_args()

    t0 = time.perf_counter()
    kg = load_m3kg()
    parse = time.perf_counter() - t0
    seeds = iu_seeds()
    print(f"M3KG: {len(kg.entities):,} entities, {len(kg.triples):,} triples, parsed in {parse:.2f} s "
          f"(CSV + aliases + observation links; the same for both stores)")
    print(f"IU studies: {len(seeds):,} ({len({s.signature for s in seeds})} distinct seed sets)\n")

    results = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedGraphStore(Path(tmp) / "kg") as emb:
        results.append(bench_store("embedded (LadybugDB)", emb, kg, seeds, args.single_sample))
    if not args.no_neo4j:
        from graphdb.dev_server import DevServer, connect_owned

        try:
            neo = connect_owned(DevServer.from_env())
        except GraphStoreError as err:
            print(f"neo4j skipped: {err}\n")
        else:
            with neo:
                results.append(bench_store("neo4j 5.26", neo, kg, seeds, args.single_sample))

    kinds = ["ladybug", "neo4j"]
    print(f"{'store':22} {'load s':>7} {'2nd load':>8} {'target':>7} {'reload s':>8} {'studies/s':>10} {'no-dedupe/s':>11} "
          f"{'1-by-1/s':>9} {'batched/1-by-1':>14} {'nodes':>6} {'edges':>7}")
    for kind, r in zip(kinds, results):
        print(f"{r['name']:22} {r['load']:7.2f} {r['warm']:8.2f} {LOAD_TARGET[kind]:7.1f} {r['reload']:8.2f} {r['rate']:10.0f} "
              f"{r['nodedupe_rate']:11.0f} {r['single_rate']:9.1f} {r['rate'] / r['single_rate']:13.1f}x "
              f"{r['nodes']:6.1f} {r['edges']:7.0f}")
    print("load: first load into an empty store (Neo4j: right after a server start, cold JIT); 2nd load: "
          "cleared and loaded again; reload: the same graph again (idempotent, nothing changes)")
    print("studies/s: batched, equal seed sets computed once; no-dedupe/s: batched, every study computed "
          "(first 4x--single-sample studies); 1-by-1/s: batch of 1, no dedupe")
    print()
    for kind, r in zip(kinds, results):
        print(f"{r['name']}: load {LOAD_TARGET[kind] / max(r['load'], r['warm']):.2f}x under target (worst of 2); "
              f"subgraphs {r['rate'] / RATE_TARGET:.2f}x the 500/s target; "
              f"batched {r['rate'] / r['single_rate'] / RATIO_TARGET:.2f}x the 10x target")
    if len(results) == 2:
        same = results[0]["graphs"] == results[1]["graphs"]
        print(f"\nboth stores returned identical subgraphs for all {len(seeds):,} studies: {same}")


if __name__ == "__main__":
    main()
