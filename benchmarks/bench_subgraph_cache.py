"""Benchmark: read per-study subgraphs as PyG tensors from the SubgraphCache, one core.

What: 2,955 synthetic studies (the IU X-ray count) whose subgraphs grow from the real M3KG the way
the per-study query does (random observations → linked seed entities, then 1-hop and 2-hop
neighbours by mention count, budgets 16/48/96); write them to a cache, then read every study back.
Prints studies/s of ``SubgraphCache.get`` against the 20,000/s target, beside the naive ways:
``tensorize`` on Subgraph objects already in memory (no store at all), and one pickle file per study.
Needs: nothing but the repo. Run: ``.venv/bin/python benchmarks/bench_subgraph_cache.py [--studies N]``
"""
from __future__ import annotations

import argparse
import pickle
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from timing import best_rate

from cxr.observations import OBSERVATIONS
from graphdb.cache import SubgraphCache, SubgraphCacheWriter
from graphdb.m3kg import load_m3kg
from graphdb.schema import (
    EDGE_TYPES,
    EXPRESSES,
    KnowledgeGraph,
    Subgraph,
    SubgraphEdge,
    SubgraphNode,
    SubgraphSpec,
)
from graphdb.tensorize import NodeTable, tensorize

TARGET = 20_000.0   # studies / s


class StudySubgraphs:
    """Per-study subgraphs from a KnowledgeGraph in plain Python: only a benchmark input, shaped
    like the store's per-study query (levels 0/1/2, node budgets, edges among the chosen nodes)."""

    def __init__(self, kg: KnowledgeGraph, spec: SubgraphSpec) -> None:
        self.spec = spec
        self.entities = {e.key: e for e in kg.entities}
        self.linked: dict[str, list[str]] = defaultdict(list)     # observation → entity keys
        self.expresses: dict[str, list[str]] = defaultdict(list)  # entity key → observations
        for link in kg.links:
            self.linked[link.observation.value].append(link.entity)
            self.expresses[link.entity].append(link.observation.value)
        self.out: dict[str, dict[str, list[tuple[str, int]]]] = defaultdict(dict)  # head → tail → [(type, count)]
        nbrs: dict[str, set[str]] = defaultdict(set)
        for t in kg.triples:
            self.out[t.head].setdefault(t.tail, []).append((t.relation.label, t.count))
            nbrs[t.head].add(t.tail)
            nbrs[t.tail].add(t.head)
        self.neighbours = {k: sorted(v, key=lambda n: (-self.entities[n].count, n)) for k, v in nbrs.items()}
        self.observations = [o.value for o in OBSERVATIONS if self.linked[o.value]]
        self._edges: dict[tuple[str, str], list[tuple[tuple[int, str, str], SubgraphEdge]]] = {}

    def edges(self, head: str, tail: str) -> list[tuple[tuple[int, str, str], SubgraphEdge]]:
        """(sort key, edge) of head → tail, made once: thousands of frozen dataclasses per study
        would otherwise dominate building the input."""
        if (head, tail) not in self._edges:
            h, t = f"Entity:{head}", f"Entity:{tail}"
            self._edges[head, tail] = [((EDGE_TYPES.index(r), h, t), SubgraphEdge(h, r, t, c))
                                       for r, c in self.out[head].get(tail, ())]
        return self._edges[head, tail]

    def build(self, study: str, rng: random.Random) -> Subgraph:
        b0, b1, b2 = self.spec.level_budgets
        observations = rng.sample(self.observations, rng.randint(1, 4))
        pool = sorted({k for o in observations for k in self.linked[o]})
        seeds = rng.sample(pool, min(b0, len(pool)))
        levels = {k: 0 for k in seeds}
        frontier = seeds
        for level, budget in ((1, b1), (2, b2)):
            added: list[str] = []
            for key in frontier:
                for n in self.neighbours.get(key, ()):
                    if len(added) == budget:
                        break
                    if n not in levels:
                        levels[n] = level
                        added.append(n)
            frontier = added
        obs_counts = {o: sum(self.entities[k].count for k in self.linked[o]) for o in observations}
        nodes = [SubgraphNode("Observation", o, o, "observation", obs_counts[o], 0) for o in observations]
        nodes += [SubgraphNode("Entity", k, self.entities[k].name, self.entities[k].type.value,
                               self.entities[k].count, lv) for k, lv in levels.items()]
        nodes.sort(key=lambda n: (n.level, -n.count, n.id))
        out = self.out
        keyed = [pair for h in levels if h in out for t in levels if t in out[h] for pair in self.edges(h, t)]
        keyed += [((EDGE_TYPES.index(EXPRESSES), f"Entity:{k}", f"Observation:{o}"),
                   SubgraphEdge(f"Entity:{k}", EXPRESSES, f"Observation:{o}", 1))
                  for k in levels for o in self.expresses.get(k, ()) if o in obs_counts]
        keyed.sort(key=lambda pair: pair[0])
        return Subgraph(study, tuple(f"Entity:{k}" for k in sorted(seeds)), tuple(nodes),
                        tuple(e for _, e in keyed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=2955)
    parser.add_argument("--naive-studies", type=int, default=300, help="the slow baselines read only these")
    args = parser.parse_args()
    torch.set_num_threads(1)

    kg = load_m3kg()
    table = NodeTable.from_graph(kg)
    spec = SubgraphSpec()
    source, rng = StudySubgraphs(kg, spec), random.Random(0)
    subgraphs = {f"study-{i:05d}": source.build(f"study-{i:05d}", rng) for i in range(args.studies)}
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

    print(f"studies: {len(studies)} synthetic, from the real M3KG ({len(table)} nodes), budgets "
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
