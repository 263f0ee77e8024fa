"""graphdb.provider: seed sets → memoised, deduplicated subgraph batches; the global subgraph;
the model's read-only store access that lets several processes share one embedded graph."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from cxr.observations import Observation as O
from graphdb.embedded_store import EmbeddedGraphStore
from graphdb.provider import SubgraphProvider, _open_for_reading, canonical
from graphdb.schema import SubgraphSpec
from graphdb.store import StoreConfig, StoreKind


def test_canonical_orders_and_dedupes():
    assert canonical(["Edema", O.CARDIOMEGALY, "edema"]) == (O.CARDIOMEGALY, O.EDEMA)
    with pytest.raises(ValueError, match="unknown CheXpert observation"):
        canonical(["Edemaa"])


def test_batch_dedupes_and_memoises(m3kg_store):
    with EmbeddedGraphStore(m3kg_store, read_only=True) as store:
        provider = SubgraphProvider(store, SubgraphSpec(level_budgets=(8, 16, 32)))
        sub = provider.batch([(O.CARDIOMEGALY,), (O.EDEMA, O.CARDIOMEGALY), (O.CARDIOMEGALY,), ()])
        assert sub.index.tolist() == [0, 1, 0, 2] and sub.graphs.num_graphs == 3
        assert len(provider) == 3
        assert sub.seeds(0) == sub.seeds(2) and sub.node_ids(3) == ()   # no seed: an empty subgraph
        assert "Observation:Cardiomegaly" in sub.node_ids(0)
        levels = np.bincount(sub.graphs[0].level.numpy())
        assert all(levels[k] <= b for k, b in enumerate((8, 16, 32)))
        again = provider.batch([(O.CARDIOMEGALY,)])          # memoised: no new computation
        assert len(provider) == 3 and again.subgraphs[0] is sub.subgraphs[0]
        g = provider.global_graph()
        assert g.graphs.num_graphs == 1 and g.graphs.num_nodes == 558


def _open_and_count(path: str, queue: mp.Queue) -> None:
    store = _open_for_reading(StoreConfig(kind=StoreKind.EMBEDDED, path=path))
    queue.put(store.stats().nodes["Entity"])
    store.close()


@pytest.mark.slow
def test_two_processes_read_one_store_while_a_third_holds_it(m3kg_store):
    """Training, evaluation and the API each open the graph read-only: they can run together."""
    ctx = mp.get_context("spawn")
    holder = _open_for_reading(StoreConfig(kind=StoreKind.EMBEDDED, path=m3kg_store))
    try:
        queue = ctx.Queue()
        procs = [ctx.Process(target=_open_and_count, args=(str(m3kg_store), queue)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [queue.get(timeout=5) for _ in procs] == [2418, 2418]
    finally:
        holder.close()


def test_an_empty_store_gets_the_m3kg_first(tmp_path):
    store = _open_for_reading(StoreConfig(kind=StoreKind.EMBEDDED, path=tmp_path / "kg"))
    try:
        assert store.stats().nodes["Entity"] == 2418
    finally:
        store.close()
