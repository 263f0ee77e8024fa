"""Subgraphs for the model: observation seeds → tensorized per-study subgraphs, or the global one.

Per-study subgraphs grow from a set of observations (the report's labels under teacher forcing,
the classifier's predictions otherwise). There are 2^14 possible sets but a dataset uses few
(138 on all of IU X-ray), so each set is computed once through the store and memoised; a batch
encodes only its distinct sets. ``SubgraphProvider.batch`` → PyG Batch of U unique graphs +
(B,) row index into it.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxr.observations import Observation
from graphdb.embedded_store import EmbeddedGraphStore
from graphdb.features import TextEncoder, node_features
from graphdb.fingerprint import GraphContent, GraphFingerprint
from graphdb.m3kg import bundled_m3kg, load_m3kg
from graphdb.pyg import Batch
from graphdb.schema import StudySeeds, Subgraph, SubgraphSpec
from graphdb.store import GraphStore, StoreConfig, StoreKind, open_store
from graphdb.tensorize import NodeTable, SubgraphData, collate, tensorize

SeedSet = tuple[Observation, ...]
log = logging.getLogger(__name__)


@dataclass
class SubgraphBatch:
    graphs: Batch                  # U distinct subgraphs
    index: torch.Tensor            # (B,) long: study b uses graphs[index[b]]
    subgraphs: list[Subgraph]      # (U,) the graphs as nodes/edges, for evidence

    def node_ids(self, b: int) -> tuple[str, ...]:
        return tuple(n.id for n in self.subgraphs[int(self.index[b])].nodes)

    def seeds(self, b: int) -> tuple[str, ...]:
        return self.subgraphs[int(self.index[b])].seeds


class SubgraphProvider:
    """Memoised seed set → (Subgraph, SubgraphData), computed in batches through a GraphStore."""

    def __init__(self, store: GraphStore, spec: SubgraphSpec, table: NodeTable | None = None) -> None:
        self.store = store
        self.spec = spec
        self.table = table or NodeTable.from_nodes(*store.node_table())
        self._memo: dict[SeedSet, tuple[Subgraph, SubgraphData]] = {}
        self._global: tuple[Subgraph, SubgraphData] | None = None

    def __len__(self) -> int:
        return len(self._memo)

    def _fill(self, seed_sets: Sequence[SeedSet]) -> None:
        todo = sorted({s for s in seed_sets if s not in self._memo}, key=lambda s: [o.value for o in s])
        if not todo:
            return
        seeds = [StudySeeds(f"seeds:{i}", observations=s) for i, s in enumerate(todo)]
        for seed_set, graph in zip(todo, self.store.study_subgraphs(seeds, self.spec)):
            self._memo[seed_set] = (graph, tensorize(graph, self.table))

    def warm(self, seed_sets: Sequence[SeedSet]) -> int:
        """Compute every set not yet memoised (e.g. all the training labels' sets) in one go."""
        before = len(self._memo)
        self._fill([canonical(s) for s in seed_sets])
        return len(self._memo) - before

    def batch(self, seed_sets: Sequence[SeedSet]) -> SubgraphBatch:
        canon = [canonical(s) for s in seed_sets]
        self._fill(canon)
        unique = list(dict.fromkeys(canon))
        row = {s: i for i, s in enumerate(unique)}
        index = torch.tensor([row[s] for s in canon], dtype=torch.long)
        return SubgraphBatch(collate([self._memo[s][1] for s in unique]), index,
                             [self._memo[s][0] for s in unique])

    def global_graph(self) -> SubgraphBatch:
        """The paper's global multi-scale subgraph, as a one-graph batch (index broadcast by caller)."""
        if self._global is None:
            graph = self.store.global_subgraph(self.spec)
            self._global = (graph, tensorize(graph, self.table))
        graph, data = self._global
        return SubgraphBatch(collate([data]), torch.zeros(1, dtype=torch.long), [graph])


def canonical(seed_set: Sequence[Observation | str]) -> SeedSet:
    """Sorted, deduplicated, in the 14-column order; strings are accepted by name."""
    obs = {o if isinstance(o, Observation) else Observation.from_name(o) for o in seed_set}
    return tuple(o for o in Observation if o in obs)


def _open_for_reading(config: StoreConfig) -> tuple[GraphStore, GraphContent]:
    """The model only reads the graph. An embedded store is opened read-only, so several
    processes (training, evaluation, the API) can share it; an empty one gets the bundled M3KG
    first, in a short read-write session. A Neo4j server is shared anyway. Then ``_current``
    checks that a store holding the bundled M3KG holds all of today's version of it."""
    if config.kind is not StoreKind.EMBEDDED:
        store = open_store(config)
        if store.stats().nodes.get("Entity", 0) == 0:
            store.upsert(load_m3kg(), progress=True)
        return _current(store, config)
    if not (Path(config.path) / EmbeddedGraphStore.FILE).exists():
        _reload(config, clear=False)
    store = EmbeddedGraphStore(config.path, read_only=True)
    if store.stats().nodes.get("Entity", 0) == 0:
        store.close()
        _reload(config, clear=False)
        store = EmbeddedGraphStore(config.path, read_only=True)
    return _current(store, config)


@functools.cache
def bundled_content() -> GraphContent:
    """What a load of today's bundled M3KG holds; parsed once per process (about 0.8 s), since
    every open of a store compares the store with it."""
    return GraphContent.of_graph(bundled_m3kg())


def _reload(config: StoreConfig, clear: bool) -> None:
    """Load the bundled M3KG into the embedded store at ``config.path`` in a short read-write session."""
    with EmbeddedGraphStore(config.path) as writer:
        if clear:
            writer.clear()
        writer.upsert(load_m3kg(), progress=True)


def _current(store: GraphStore, config: StoreConfig) -> tuple[GraphStore, GraphContent]:
    """``store`` and its content, after one check: a store with the bundled M3KG's entities but
    other triples, counts or EXPRESSES links holds an out-of-date load of it (made by an older
    r2genkg, or by a defect since fixed). An embedded store without studies is a cache of the
    bundle, so it is reloaded; any other store is the user's and is left as it is, with a warning
    that names the command that reloads it. A store with other entities (a graph built from
    one's own reports) is not compared."""
    stored = store.content()
    expected = bundled_content()
    if stored.entities_digest != expected.entities_digest or stored == expected:
        return store, stored
    where = config.path if config.kind is StoreKind.EMBEDDED else f"{config.uri} (database {config.database})"
    changed = "; ".join(expected.differences(stored))
    if config.kind is StoreKind.EMBEDDED and store.stats().nodes.get("Study", 0) == 0:
        log.warning("the graph store %s held an out-of-date load of the bundled M3KG (%s: today's vs stored): "
                    "reloading it", where, changed)
        store.close()
        _reload(config, clear=True)
        store = EmbeddedGraphStore(config.path, read_only=True)
        return store, store.content()
    log.warning("the graph store %s holds an out-of-date load of the bundled M3KG (%s: today's vs stored); "
                "reload it with `r2genkg kg load-m3kg --replace` (deletes its studies too; attach them again "
                "after) to train on today's graph", where, changed)
    return store, stored


@dataclass
class Knowledge:
    """An open store, its node features, a subgraph provider over it and its fingerprint."""

    store: GraphStore
    provider: SubgraphProvider
    features: np.ndarray           # (N_nodes, D) float32, row i = provider.table node i
    fingerprint: GraphFingerprint

    def close(self) -> None:
        self.store.close()


def open_knowledge(config: StoreConfig, spec: SubgraphSpec) -> Knowledge:
    """Open the store (loading the bundled M3KG into an empty one), its node table's text
    features (embedded once, cached under ``config.features_cache``) and a provider over it.
    The caller closes it."""
    store, content = _open_for_reading(config)
    try:
        table = NodeTable.from_nodes(*store.node_table())
        encoder = TextEncoder(config.features_model)
        features = node_features(table, encoder, config.features_cache)
    except BaseException:
        store.close()
        raise
    return Knowledge(store, SubgraphProvider(store, spec, table), features,
                     GraphFingerprint.of(table, encoder.id, features.shape[1], content))
