"""SubgraphCache: exact round trips (get == tensorize, get_subgraph == the Subgraph written),
resume without duplicates, crash leftovers, and errors that say what is wrong."""
from __future__ import annotations

import pickle
import random
import shutil

import numpy as np
import pytest
import torch

from graphdb.cache import SubgraphCache, SubgraphCacheError, SubgraphCacheWriter
from graphdb.schema import (
    EDGE_TYPES,
    Entity,
    EntityType,
    KnowledgeGraph,
    Subgraph,
    SubgraphEdge,
    SubgraphNode,
    SubgraphSpec,
)
from graphdb.tensorize import NodeTable, tensorize

# keys and study ids with quotes, colons, unicode and JSON-hostile characters
KEYS = ["C0000001", "o'brien \"sign\"", "lésion: ü/ß", "a\\b\n", "ключ", "x" * 60]
META = {"mode": "study", "spec": SubgraphSpec()}


@pytest.fixture(scope="module")
def table() -> NodeTable:
    kg = KnowledgeGraph(entities=[Entity(k, f"name of {k}", EntityType.CONCEPT, count=i)
                                  for i, k in enumerate(KEYS)])
    return NodeTable.from_graph(kg)


def make_subgraph(study: str, rng: random.Random, table: NodeTable) -> Subgraph:
    ids = rng.sample(table.ids, rng.randint(0, 9))
    nodes = []
    for node_id in ids:
        label, key = node_id.split(":", 1)
        name = table.names[table.index(node_id)] if rng.random() < 0.8 else f"other «{key}»"
        nodes.append(SubgraphNode(label, key, name, rng.choice(["anatomy", "disorder", "observation"]),
                                  rng.randint(0, 10**6), rng.randint(0, 2)))
    edges = tuple(SubgraphEdge(rng.choice(ids), rng.choice(EDGE_TYPES), rng.choice(ids), rng.randint(1, 99))
                  for _ in range(rng.randint(0, 12) if ids else 0))
    return Subgraph(study, tuple(rng.sample(ids, min(2, len(ids)))), tuple(nodes), edges)


@pytest.fixture(scope="module")
def subgraphs(table) -> list[Subgraph]:
    rng = random.Random(3)
    studies = [f"study-{i}" for i in range(17)] + ['p10/s5"0\'1', "étude ü", "a:b", "日本"]
    return [make_subgraph(s, rng, table) for s in studies]


def write(root, table, subgraphs, chunk_size=4) -> None:
    with SubgraphCacheWriter(root, table, META, chunk_size=chunk_size) as writer:
        writer.add(subgraphs)


def assert_same(a, b) -> None:
    assert set(a.keys()) == set(b.keys()) and a.num_nodes == b.num_nodes
    for key, value in a:
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key


def test_round_trip_equals_tensorize(tmp_path, table, subgraphs):
    write(tmp_path / "c", table, subgraphs)
    cache = SubgraphCache.open(tmp_path / "c", table)
    assert len(cache) == len(subgraphs)
    assert cache.study_ids == tuple(sg.study for sg in subgraphs)
    assert cache.meta == {"mode": "study", "spec": {"level_budgets": [16, 48, 96],
                                                    "global_scales": [101, 206, 319, 400, 558]}}
    for sg in subgraphs:
        assert sg.study in cache
        assert_same(cache.get(sg.study), tensorize(sg, table))
        for level in (0, 1, 2):
            assert_same(cache.get(sg.study, level=level), tensorize(sg, table, level=level))
        assert cache.get_subgraph(sg.study) == sg       # names, types, seeds included


def test_get_copies(tmp_path, table, subgraphs):
    write(tmp_path / "c", table, subgraphs)
    cache = SubgraphCache.open(tmp_path / "c", table)
    study = next(sg.study for sg in subgraphs if sg.edges)
    data = cache.get(study)
    data.node_index += 1000          # the caller owns its tensors; the cache is unchanged
    data.edge_index.zero_()
    assert_same(cache.get(study), tensorize(next(sg for sg in subgraphs if sg.study == study), table))


def test_pickles_as_a_reference(tmp_path, table, subgraphs):
    write(tmp_path / "c", table, subgraphs)
    cache = SubgraphCache.open(tmp_path / "c", table)
    blob = pickle.dumps(cache)
    assert len(blob) < 5_000          # the folder and the node table, not the arrays
    again = pickle.loads(blob)
    assert again.study_ids == cache.study_ids
    assert_same(again.get(subgraphs[0].study), cache.get(subgraphs[0].study))


def test_missing_study_is_named(tmp_path, table, subgraphs):
    write(tmp_path / "c", table, subgraphs[:3])
    cache = SubgraphCache.open(tmp_path / "c", table)
    assert "nope" not in cache
    for read in (cache.get, cache.get_subgraph, cache.arrays):
        with pytest.raises(KeyError, match="study 'nope' is not in the subgraph cache"):
            read("nope")


def test_resume_skips_written_studies(tmp_path, table, subgraphs):
    root = tmp_path / "c"
    half = len(subgraphs) // 2
    write(root, table, subgraphs[:half], chunk_size=3)
    with SubgraphCacheWriter(root, table, META, chunk_size=3) as writer:
        assert len(writer) == half and subgraphs[0].study in writer
        assert writer.add(subgraphs) == len(subgraphs) - half
        assert writer.add(subgraphs) == 0                   # again: nothing new
    with SubgraphCacheWriter(root, table, META) as writer:   # and once more after closing
        assert writer.add(subgraphs + subgraphs) == 0
    cache = SubgraphCache.open(root, table)
    assert sorted(cache.study_ids) == sorted(sg.study for sg in subgraphs)
    for sg in subgraphs:
        assert cache.get_subgraph(sg.study) == sg


def test_duplicates_within_one_add_keep_the_first(tmp_path, table, subgraphs):
    twin = Subgraph(subgraphs[0].study, (), (), ())
    with SubgraphCacheWriter(tmp_path / "c", table, META) as writer:
        assert writer.add([subgraphs[0], twin, subgraphs[1]]) == 2
    cache = SubgraphCache.open(tmp_path / "c", table)
    assert len(cache) == 2 and cache.get_subgraph(subgraphs[0].study) == subgraphs[0]


def test_crash_leaves_complete_chunks_and_resumes(tmp_path, table, subgraphs):
    root = tmp_path / "c"
    writer = SubgraphCacheWriter(root, table, META, chunk_size=4)
    writer.add(subgraphs[:10])           # chunks 00000, 00001 committed; 2 studies only buffered
    writer._lock.close()                 # the process dies: no close(), no flush
    cache = SubgraphCache.open(root, table)
    assert cache.study_ids == tuple(sg.study for sg in subgraphs[:8])
    # leftovers of a crash: a renamed chunk the manifest never listed, and a half-written temp chunk
    shutil.copytree(root / "chunks" / "00000", root / "chunks" / "00002")
    (root / "chunks" / ".00003.tmp-99999").mkdir()
    (root / "chunks" / ".00003.tmp-99999" / "node_id.npy").write_bytes(b"half")
    assert len(SubgraphCache.open(root, table)) == 8   # readers only see committed chunks
    write(root, table, subgraphs, chunk_size=4)
    cache = SubgraphCache.open(root, table)
    assert sorted(cache.study_ids) == sorted(sg.study for sg in subgraphs)
    assert all(cache.get_subgraph(sg.study) == sg for sg in subgraphs)
    assert not list((root / "chunks").glob(".*"))


def test_fingerprint_mismatch_refused(tmp_path, table, subgraphs):
    write(tmp_path / "c", table, subgraphs[:2])
    changed = NodeTable(table.ids, (*table.names[:-1], "renamed"))
    with pytest.raises(SubgraphCacheError, match=r"built for node table .* the graph changed\. Rebuild"):
        SubgraphCache.open(tmp_path / "c", changed)
    with pytest.raises(SubgraphCacheError, match="the graph changed"):
        SubgraphCacheWriter(tmp_path / "c", changed, META)


def test_meta_mismatch_refused(tmp_path, table, subgraphs):
    write(tmp_path / "c", table, subgraphs[:2])
    with pytest.raises(SubgraphCacheError, match="was built with meta"):
        SubgraphCacheWriter(tmp_path / "c", table, {"mode": "global"})


def test_second_writer_refused(tmp_path, table):
    with (SubgraphCacheWriter(tmp_path / "c", table, META),
          pytest.raises(SubgraphCacheError, match="being written by another writer")):
        SubgraphCacheWriter(tmp_path / "c", table, META)
    SubgraphCacheWriter(tmp_path / "c", table, META).close()   # free again after close


@pytest.mark.parametrize(("damage", "message"), [
    (lambda c: (c / "chunks" / "00001" / "edge_head.npy").unlink(), "chunk 00001: edge_head.npy is missing"),
    (lambda c: shutil.rmtree(c / "chunks" / "00001"), "chunk 00001 is missing"),
    (lambda c: _truncate(c / "chunks" / "00000" / "node_logcount.npy"), "chunk 00000: node_logcount.npy is unreadable"),
    (lambda c: np.save(c / "chunks" / "00000" / "node_id.npy", np.zeros(3, np.int32)),
     r"node_id.npy has shape \(3,\), expected"),
    (lambda c: (c / "chunks" / "00001" / "studies.json").write_text("{"), "studies.json is unreadable"),
    (lambda c: (c / "manifest.json").write_text("{oops"), "manifest.json is not valid JSON"),
])
def test_damage_is_reported(tmp_path, table, subgraphs, damage, message):
    root = tmp_path / "c"
    write(root, table, subgraphs, chunk_size=8)
    damage(root)
    with pytest.raises(SubgraphCacheError, match=message) as err:
        SubgraphCache.open(root, table)
    assert "Delete" in str(err.value) and str(root) in str(err.value)
    with pytest.raises(SubgraphCacheError, match=message):   # the writer will not resume on it either
        SubgraphCacheWriter(root, table, META)


def _truncate(path) -> None:
    path.write_bytes(path.read_bytes()[:-4])


def test_not_a_cache(tmp_path, table):
    with pytest.raises(SubgraphCacheError, match="no subgraph cache at"):
        SubgraphCache.open(tmp_path / "nowhere", table)
    (tmp_path / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(SubgraphCacheError, match="is not a subgraph cache manifest"):
        SubgraphCache.open(tmp_path, table)


def test_writer_rejects_bad_input(tmp_path, table, subgraphs):
    with SubgraphCacheWriter(tmp_path / "c", table, META) as writer:
        with pytest.raises(ValueError, match="needs a study id"):
            writer.add([Subgraph(None, (), (), ())])
        stranger = SubgraphNode("Entity", "C9", "x", "concept", 1, 0)
        with pytest.raises(KeyError, match="'Entity:C9' is not in the node table"):
            writer.add([Subgraph("bad", (), (stranger,), ())])
        assert "bad" not in writer
        writer.add(subgraphs[:1])
    assert SubgraphCache.open(tmp_path / "c", table).study_ids == (subgraphs[0].study,)
