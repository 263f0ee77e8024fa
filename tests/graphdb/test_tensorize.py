"""NodeTable and tensorize on a 4-node hand-made graph: every tensor checked exactly, plus a
plain-Python reference implementation checked against the fast one on random subgraphs."""
from __future__ import annotations

import math
import random

import pytest
import torch

from cxr.observations import OBSERVATIONS, Observation
from graphdb.schema import (
    EDGE_TYPES,
    Entity,
    EntityType,
    KnowledgeGraph,
    Subgraph,
    SubgraphEdge,
    SubgraphNode,
)
from graphdb.tensorize import (
    NUM_RELATIONS,
    NodeTable,
    SubgraphData,
    _new_data,
    collate,
    tensorize,
)


def small_kg() -> KnowledgeGraph:
    # keys deliberately out of order: the table sorts them
    return KnowledgeGraph(entities=[
        Entity("C4", "small", EntityType.CONCEPT, count=1),
        Entity("C2", "pleural", EntityType.ANATOMY, count=7),
        Entity("C1", "effusion", EntityType.DISORDER, count=10),
        Entity("C3", "left", EntityType.CONCEPT, count=3),
    ])


def obs_node(obs: Observation, count: int, level: int) -> SubgraphNode:
    return SubgraphNode("Observation", obs.value, obs.value, "observation", count, level)


def ent_node(key: str, name: str, type_: str, count: int, level: int) -> SubgraphNode:
    return SubgraphNode("Entity", key, name, type_, count, level)


def four_node_subgraph() -> Subgraph:
    """Pleural Effusion ← effusion → pleural; left → effusion. Levels 0, 0, 1, 2."""
    nodes = (obs_node(Observation.PLEURAL_EFFUSION, 4, 0), ent_node("C1", "effusion", "disorder", 10, 0),
             ent_node("C2", "pleural", "anatomy", 7, 1), ent_node("C3", "left", "concept", 0, 2))
    edges = (SubgraphEdge("Entity:C3", "MODIFY", "Entity:C1", 1),
             SubgraphEdge("Entity:C1", "LOCATED_AT", "Entity:C2", 3),
             SubgraphEdge("Entity:C1", "EXPRESSES", "Observation:Pleural Effusion", 5))
    return Subgraph("s1", ("Entity:C1",), nodes, edges)


def log1p(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).log1p()


def test_node_table_order_and_lookup():
    table = NodeTable.from_graph(small_kg())
    assert len(table) == 18
    assert table.ids[:14] == tuple(f"Observation:{o.value}" for o in OBSERVATIONS)
    assert table.names[:14] == tuple(o.value for o in OBSERVATIONS)
    assert table.ids[14:] == ("Entity:C1", "Entity:C2", "Entity:C3", "Entity:C4")
    assert table.names[14:] == ("effusion", "pleural", "left", "small")
    assert table.index("Observation:Pleural Effusion") == OBSERVATIONS.index(Observation.PLEURAL_EFFUSION) == 10
    assert table.index("Entity:C3") == 16 and "Entity:C3" in table and "Entity:C9" not in table
    with pytest.raises(KeyError, match=r"'Entity:C9' is not in the node table \(18 nodes"):
        table.index("Entity:C9")


def test_from_nodes_canonical_order_equals_from_graph():
    table = NodeTable.from_graph(small_kg())
    # a store returning its nodes shuffled, and lacking an Observation node nothing links to
    pairs = [(i, n) for i, n in zip(table.ids, table.names, strict=True) if i != "Observation:Fracture"]
    random.Random(0).shuffle(pairs)
    again = NodeTable.from_nodes([i for i, _ in pairs], [n for _, n in pairs])
    assert again == table and again.ids == table.ids and again.fingerprint == table.fingerprint


def test_fingerprint_tracks_ids_and_names():
    table = NodeTable.from_graph(small_kg())
    renamed = NodeTable(table.ids, (*table.names[:-1], "tiny"))
    assert renamed.fingerprint != table.fingerprint
    assert NodeTable(table.ids, table.names).fingerprint == table.fingerprint
    assert len(table.fingerprint) == 64


def test_node_table_errors():
    with pytest.raises(ValueError, match="duplicate node ids"):
        NodeTable(["Entity:a", "Entity:a"], ["a", "a"])
    with pytest.raises(ValueError, match="2 ids but 1 names"):
        NodeTable(["Entity:a", "Entity:b"], ["a"])
    with pytest.raises(ValueError, match="expected 'Entity:<key>'"):
        NodeTable.from_nodes(["Study:s1"], ["s1"])
    with pytest.raises(ValueError, match="unknown observation"):
        NodeTable.from_nodes(["Observation:Flu"], ["Flu"])


def test_tensorize_four_nodes_every_tensor():
    table = NodeTable.from_graph(small_kg())
    data = tensorize(four_node_subgraph(), table)
    assert isinstance(data, SubgraphData)
    assert NUM_RELATIONS == 2 * len(EDGE_TYPES) == 8
    assert data.num_nodes == 4 and data.num_edges == 6
    assert torch.equal(data.node_index, torch.tensor([10, 14, 15, 16]))
    assert torch.equal(data.level, torch.tensor([0, 0, 1, 2]))
    assert torch.equal(data.x_count, log1p([4, 10, 7, 0]))
    # forward edges in subgraph order, then the same edges reversed
    assert torch.equal(data.edge_index, torch.tensor([[3, 1, 1, 1, 2, 0],
                                                      [1, 2, 0, 3, 1, 1]]))
    assert torch.equal(data.edge_type, torch.tensor([0, 1, 3, 4, 5, 7]))   # MODIFY, LOCATED_AT, EXPRESSES
    assert torch.equal(data.edge_count, log1p([1, 3, 5, 1, 3, 5]))
    assert data.node_index.dtype == data.level.dtype == data.edge_index.dtype == data.edge_type.dtype == torch.long
    assert data.x_count.dtype == data.edge_count.dtype == torch.float32
    assert set(data.keys()) == {"node_index", "level", "x_count", "edge_index", "edge_type", "edge_count",
                                "num_nodes"}


@pytest.mark.parametrize(("level", "nodes", "edge_index", "edge_type"), [
    (0, [10, 14], [[1, 0], [0, 1]], [3, 7]),
    (1, [10, 14, 15], [[1, 1, 2, 0], [2, 0, 1, 1]], [1, 3, 5, 7]),
    (2, [10, 14, 15, 16], [[3, 1, 1, 1, 2, 0], [1, 2, 0, 3, 1, 1]], [0, 1, 3, 4, 5, 7]),
])
def test_tensorize_level(level, nodes, edge_index, edge_type):
    table, sg = NodeTable.from_graph(small_kg()), four_node_subgraph()
    data = tensorize(sg, table, level=level)
    assert torch.equal(data.node_index, torch.tensor(nodes))
    assert torch.equal(data.edge_index, torch.tensor(edge_index))
    assert torch.equal(data.edge_type, torch.tensor(edge_type))
    assert_same(data, tensorize(sg.at_level(level), table))


def test_collate_keeps_global_ids_and_offsets_edges():
    table = NodeTable.from_graph(small_kg())
    one = tensorize(four_node_subgraph(), table)
    two = tensorize(four_node_subgraph(), table, level=0)
    batch = collate([one, two])
    assert batch.num_graphs == 2 and batch.num_nodes == 6
    assert torch.equal(batch.node_index, torch.tensor([10, 14, 15, 16, 10, 14]))   # not offset
    assert torch.equal(batch.edge_index[:, 6:], torch.tensor([[5, 4], [4, 5]]))       # offset by 4
    assert torch.equal(batch.batch, torch.tensor([0, 0, 0, 0, 1, 1]))
    assert torch.equal(batch.edge_type, torch.tensor([0, 1, 3, 4, 5, 7, 3, 7]))
    with pytest.raises(ValueError, match="no graphs"):
        collate([])


def test_fast_constructor_equals_public_one():
    attrs = {"node_index": torch.tensor([3, 1]), "edge_index": torch.tensor([[0], [1]]), "num_nodes": 2}
    fast, public = _new_data(**attrs), SubgraphData(**attrs)
    assert type(fast) is type(public) and set(fast.keys()) == set(public.keys()) and fast.num_nodes == public.num_nodes
    assert fast.num_edges == public.num_edges == 1
    assert all(torch.equal(fast[k], public[k]) for k in ("node_index", "edge_index"))
    assert collate([fast, fast]).node_index.tolist() == [3, 1, 3, 1]


def test_tensorize_errors_name_the_problem():
    table, sg = NodeTable.from_graph(small_kg()), four_node_subgraph()
    stranger = ent_node("C99", "x", "concept", 1, 0)
    with pytest.raises(KeyError, match="'Entity:C99' is not in the node table"):
        tensorize(Subgraph("s", (), (*sg.nodes, stranger), ()), table)
    dangling = SubgraphEdge("Entity:C1", "MODIFY", "Entity:C4", 1)
    with pytest.raises(KeyError, match="ends at 'Entity:C4', which is not a node of the subgraph"):
        tensorize(Subgraph("s", (), sg.nodes, (dangling,)), table)
    with pytest.raises(ValueError, match="edge type 'MENTIONS'"):
        tensorize(Subgraph("s", (), sg.nodes, (SubgraphEdge("Entity:C1", "MENTIONS", "Entity:C2", 1),)), table)
    with pytest.raises(ValueError, match="appears twice"):
        tensorize(Subgraph("s", (), (*sg.nodes, sg.nodes[0]), ()), table)
    with pytest.raises(ValueError, match="node count -1"):
        tensorize(Subgraph("s", (), (ent_node("C1", "e", "disorder", -1, 0),), ()), table)


def test_empty_subgraph():
    data = tensorize(Subgraph("s", (), (), ()), NodeTable.from_graph(small_kg()))
    assert data.num_nodes == 0 and data.edge_index.shape == (2, 0) and data.edge_type.shape == (0,)


# ---- a second, plain implementation checked against the fast one ----------------------------

def reference_tensorize(sg: Subgraph, table: NodeTable) -> dict[str, torch.Tensor]:
    local = {n.id: i for i, n in enumerate(sg.nodes)}
    fwd = [(local[e.head], local[e.tail], EDGE_TYPES.index(e.type), e.count) for e in sg.edges]
    both = fwd + [(t, h, r + len(EDGE_TYPES), c) for h, t, r, c in fwd]
    return {
        "node_index": torch.tensor([table.index(n.id) for n in sg.nodes], dtype=torch.long),
        "level": torch.tensor([n.level for n in sg.nodes], dtype=torch.long),
        "x_count": torch.tensor([math.log1p(n.count) for n in sg.nodes], dtype=torch.float32),
        "edge_index": torch.tensor([[h for h, *_ in both], [t for _, t, *_ in both]], dtype=torch.long).view(2, -1),
        "edge_type": torch.tensor([r for *_, r, _ in both], dtype=torch.long),
        "edge_count": torch.tensor([math.log1p(c) for *_, c in both], dtype=torch.float32),
    }


def random_subgraph(rng: random.Random, table: NodeTable) -> Subgraph:
    ids = rng.sample(table.ids, rng.randint(1, len(table)))
    nodes = tuple(SubgraphNode(*i.split(":", 1), name="n", type="t", count=rng.randint(0, 10**6),
                               level=rng.randint(0, 2)) for i in ids)
    edges = tuple(SubgraphEdge(rng.choice(ids), rng.choice(EDGE_TYPES), rng.choice(ids), rng.randint(1, 500))
                  for _ in range(rng.randint(0, 30)))
    return Subgraph("r", (), nodes, edges)


def test_matches_reference_on_random_subgraphs():
    table, rng = NodeTable.from_graph(small_kg()), random.Random(7)
    for _ in range(50):
        sg = random_subgraph(rng, table)
        data, ref = tensorize(sg, table), reference_tensorize(sg, table)
        for key, want in ref.items():
            got = data[key]
            assert got.dtype == want.dtype and got.shape == want.shape, key
            if want.is_floating_point():
                torch.testing.assert_close(got, want, rtol=1e-6, atol=0)   # float32 log1p vs math.log1p
            else:
                assert torch.equal(got, want), key


def assert_same(a: SubgraphData, b: SubgraphData) -> None:
    assert set(a.keys()) == set(b.keys()) and a.num_nodes == b.num_nodes
    for key, value in a:   # a PyG Data iterates (name, value) pairs
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key


def test_m3kg_table():
    from graphdb.m3kg import load_m3kg

    table = NodeTable.from_graph(load_m3kg())
    assert len(table) == 14 + 2418
    assert [table.index(f"Observation:{o.value}") for o in OBSERVATIONS] == list(range(14))
    assert list(table.ids[14:]) == sorted(table.ids[14:])
