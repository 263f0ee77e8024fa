"""Benchmark: read per-study subgraphs as PyG tensors from the SubgraphCache, one core.

What: the per-study subgraphs of all 2,955 IU X-ray studies, computed from the real M3KG in the
embedded store exactly as `r2genkg kg subgraphs` does (seeds: the labeler's observations, budgets
16/48/96); write them to a cache, then read every study back.
Prints studies/s of ``SubgraphCache.get`` against the 20,000/s target, beside the naive ways:
``tensorize`` on Subgraph objects already in memory (no store at all), and one pickle file per study.
Needs: nothing but the repo. Run: ``.venv/bin/python benchmarks/bench_subgraph_cache.py [--studies N]``
"""
from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import torch
from timing import best_rate

from cxr.readers import bundled_iu_annotation, read_r2gen
from graphdb.cache import SubgraphCache, SubgraphCacheWriter
from graphdb.m3kg import load_m3kg
from graphdb.pipeline import label_observations
from graphdb.schema import StudySeeds, SubgraphSpec
from graphdb.store import EmbeddedGraphStore
from graphdb.tensorize import NodeTable, tensorize

TARGET = 20_000.0   # studies / s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=2955, help="the first N IU studies")
    parser.add_argument("--naive-studies", type=int, default=300, help="the slow baselines read only these")
    args = parser.parse_args()
    torch.set_num_threads(1)

    spec = SubgraphSpec()
    records = list(read_r2gen(bundled_iu_annotation()))[:args.studies]
    seeds = [StudySeeds(r.study_id, obs) for r, obs in zip(records, label_observations([r.report for r in records]))]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedGraphStore(Path(tmp) / "kg") as store:
        store.upsert(load_m3kg())
        table = NodeTable.from_nodes(*store.node_table())
        subgraphs = {g.study: g for g in store.study_subgraphs(seeds, spec)}
    studies = list(subgraphs)
    n_nodes = sum(len(sg.nodes) for sg in subgraphs.values())
    n_edges = sum(len(sg.edges) for sg in subgraphs.values())

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        t0 = time.perf_counter()
        with SubgraphCacheWriter(root, table, {"mode": "study", "spec": spec}, chunk_size=1024) as writer:
            writer.add(subgraphs.values())
        write_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
        t0 = time.perf_counter()
        cache = SubgraphCache.open(root, table)
        open_s = time.perf_counter() - t0

        pickles = Path(tmp) / "pickles"
        pickles.mkdir()
        for s in studies:
            (pickles / f"{s}.data.pkl").write_bytes(pickle.dumps(cache.get(s)))
        for s in studies[:args.naive_studies]:
            (pickles / f"{s}.subgraph.pkl").write_bytes(pickle.dumps(subgraphs[s]))

        few = studies[:args.naive_studies]
        cached = best_rate(cache.get, studies, 5)
        rows = [
            ("SubgraphCache.get", cached),
            ("SubgraphCache.get(level=1)", best_rate(lambda s: cache.get(s, level=1), studies, 5)),
            ("SubgraphCache.get_subgraph", best_rate(cache.get_subgraph, few, 1)),
            ("naive: tensorize(Subgraph in memory)", best_rate(lambda s: tensorize(subgraphs[s], table), few, 1)),
            ("naive: pickle per study (Data)",
             best_rate(lambda s: pickle.loads((pickles / f"{s}.data.pkl").read_bytes()), studies)),
            ("naive: pickle per study (Subgraph) + tensorize",
             best_rate(lambda s: tensorize(pickle.loads((pickles / f"{s}.subgraph.pkl").read_bytes()), table), few, 1)),
        ]

    print(f"studies: {len(studies)} IU X-ray studies, their per-study subgraphs from the real M3KG in the embedded "
          f"store (seeds: the labeler's observations; {len(table)} nodes), budgets "
          f"{spec.level_budgets}; mean {n_nodes / len(studies):.0f} nodes, {n_edges / len(studies):.0f} edges "
          "(forward) per study; one core, best of 3 (cache: of 5) "
          f"(single pass over the first {args.naive_studies} for get_subgraph and the tensorize baselines)")
    print(f"cache write: {write_s:.2f} s ({len(studies) / write_s:,.0f} studies/s), {size_mb:.1f} MB on disk, "
          f"open: {open_s * 1e3:.0f} ms\n")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}} : {value:9,.0f} studies/s   {cached / value:6.1f}x slower than the cache"
              if value < cached else f"{name:<{width}} : {value:9,.0f} studies/s")
    print(f"\ncache vs target {TARGET:,.0f}/s: {cached / TARGET:.2f}x")


if __name__ == "__main__":
    main()
