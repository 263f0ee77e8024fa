"""graphdb.provider: seed sets → memoised, deduplicated subgraph batches; the global subgraph;
the model's read-only store access that lets several processes share one embedded graph; an
out-of-date load of the bundled M3KG is found on open (reloaded when it is an embedded cache)."""
from __future__ import annotations

import logging
import multiprocessing as mp
from dataclasses import replace

import numpy as np
import pytest

from cxr.observations import Observation as O
from graphdb.embedded_store import EmbeddedGraphStore
from graphdb.fingerprint import GraphContent
from graphdb.m3kg import load_m3kg
from graphdb.provider import SubgraphProvider, _open_for_reading, canonical
from graphdb.schema import Entity, EntityType, KnowledgeGraph, StudyNode, SubgraphSpec
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
    store, _ = _open_for_reading(StoreConfig(kind=StoreKind.EMBEDDED, path=path))
    queue.put(store.stats().nodes["Entity"])
    store.close()


@pytest.mark.slow
def test_two_processes_read_one_store_while_a_third_holds_it(m3kg_store):
    """Training, evaluation and the API each open the graph read-only: they can run together."""
    ctx = mp.get_context("spawn")
    holder, _ = _open_for_reading(StoreConfig(kind=StoreKind.EMBEDDED, path=m3kg_store))
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
    store, content = _open_for_reading(StoreConfig(kind=StoreKind.EMBEDDED, path=tmp_path / "kg"))
    try:
        assert store.stats().nodes["Entity"] == 2418
        assert content == store.content() == GraphContent.of_graph(load_m3kg())
    finally:
        store.close()


def _stale_m3kg() -> KnowledgeGraph:
    """The bundled M3KG as a defective loader once stored it: 52 of its 126 EXPRESSES links missing."""
    kg = load_m3kg()
    return replace(kg, links=kg.links[:74])


def test_an_out_of_date_load_of_the_bundled_m3kg_is_reloaded(tmp_path, caplog):
    """The embedded store is a cache of the bundle: after an update it is rebuilt on open,
    not trained on with the links of an older version."""
    path = tmp_path / "kg"
    with EmbeddedGraphStore(path) as writer:
        writer.upsert(_stale_m3kg())
    with caplog.at_level(logging.WARNING, logger="graphdb.provider"):
        store, content = _open_for_reading(StoreConfig(kind=StoreKind.EMBEDDED, path=path))
    try:
        assert content == store.content() == GraphContent.of_graph(load_m3kg())
        assert store.stats().edges["EXPRESSES"][0] == 126
    finally:
        store.close()
    assert "out-of-date load of the bundled M3KG (EXPRESSES links 126 vs 74: today's vs stored): reloading it" \
        in caplog.text


def test_an_out_of_date_store_with_studies_is_left_as_it_is_with_the_command_to_reload(tmp_path, caplog):
    """Studies attached to a store are the user's data: nothing is deleted in passing."""
    path = tmp_path / "kg"
    with EmbeddedGraphStore(path) as writer:
        writer.upsert(_stale_m3kg())
        writer.attach_studies(KnowledgeGraph(studies=[StudyNode("s1", "train", "iu_xray")]))
    with caplog.at_level(logging.WARNING, logger="graphdb.provider"):
        store, content = _open_for_reading(StoreConfig(kind=StoreKind.EMBEDDED, path=path))
    try:
        assert content.links == 74 and store.stats().nodes["Study"] == 1
    finally:
        store.close()
    assert "r2genkg kg load-m3kg --replace" in caplog.text and "reloading" not in caplog.text


def test_a_graph_of_ones_own_is_not_compared_with_the_bundle(tmp_path, caplog):
    path = tmp_path / "kg"
    own = KnowledgeGraph(entities=[Entity("effusion", "effusion", EntityType.DISORDER, ("effusion",), 3)])
    with EmbeddedGraphStore(path) as writer:
        writer.upsert(own)
    with caplog.at_level(logging.WARNING, logger="graphdb.provider"):
        store, content = _open_for_reading(StoreConfig(kind=StoreKind.EMBEDDED, path=path))
    store.close()
    assert content == GraphContent.of_graph(own) and content.entities == 1 and caplog.text == ""


def test_the_bundle_is_parsed_once_per_process_however_often_a_store_is_opened(tmp_path, monkeypatch):
    """Every open compares the store with the bundle; the pipeline opens it three times."""
    from graphdb import m3kg, provider

    path = tmp_path / "kg"
    with EmbeddedGraphStore(path) as writer:
        writer.upsert(load_m3kg())
    parses = []
    monkeypatch.setattr(m3kg, "load_m3kg", lambda: parses.append(1) or load_m3kg())
    provider.bundled_content.cache_clear()
    m3kg.bundled_m3kg.cache_clear()
    try:
        for _ in range(3):
            store, content = _open_for_reading(StoreConfig(kind=StoreKind.EMBEDDED, path=path))
            store.close()
            assert content == GraphContent.of_graph(load_m3kg())
    finally:
        provider.bundled_content.cache_clear()
        m3kg.bundled_m3kg.cache_clear()
    assert len(parses) == 1
