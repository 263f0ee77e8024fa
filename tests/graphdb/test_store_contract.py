"""One contract, both stores: the embedded LadybugDB store and the real Neo4j server must hold the
same graph and return identical subgraphs (same nodes, edges, order and counts).

The Neo4j half needs the server from scripts/neo4j.sh (CI starts it); it CLEARS that database.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from cxr.observations import Observation
from graphdb.embedded_store import EmbeddedGraphStore
from graphdb.schema import (
    Certainty,
    Entity,
    EntityType,
    ImageNode,
    KnowledgeGraph,
    ObservationLink,
    Relation,
    StudyMention,
    StudyNode,
    StudySeeds,
    SubgraphEdge,
    SubgraphSpec,
    Triple,
)
from graphdb.store import GraphStore

WEIRD = 'o\'brien "sign" \\ }) MATCH (n) DETACH DELETE n; // ünïcødé 🫁'
PE, LO = Observation.PLEURAL_EFFUSION, Observation.LUNG_OPACITY


def tiny_graph() -> KnowledgeGraph:
    e = [
        Entity("C0013687", "effusion", EntityType.DISORDER, ("effusion", "effusions"), 100),
        Entity("C0032225", "pleural", EntityType.ANATOMY, ("pleural",), 80),
        Entity("small", "small", EntityType.CONCEPT, (), 50),
        Entity("C0443246", "left", EntityType.CONCEPT, ("left", "left-sided"), 40),
        Entity("C0029053", "opacity", EntityType.DISORDER, ("opacity",), 60),
        Entity("lobe", "lobe", EntityType.ANATOMY, (), 30),
        Entity("C0004144", "atelectasis", EntityType.DISORDER, (), 20),
        Entity("C0032285", "pneumonia", EntityType.DISORDER, (), 10),
        Entity(WEIRD, WEIRD, EntityType.CONCEPT, (WEIRD, "'; DROP"), 5),
    ]
    t = [
        Triple("C0013687", Relation.LOCATED_AT, "C0032225", 36),
        Triple("small", Relation.MODIFY, "C0013687", 14),
        Triple("C0443246", Relation.MODIFY, "C0032225", 11),
        Triple("C0443246", Relation.MODIFY, "C0013687", 7),
        Triple("C0029053", Relation.LOCATED_AT, "lobe", 9),
        Triple("C0029053", Relation.SUGGESTIVE_OF, "C0004144", 4),
        Triple("C0029053", Relation.SUGGESTIVE_OF, "C0032285", 3),
        Triple(WEIRD, Relation.MODIFY, "C0029053", 2),
        Triple("small", Relation.MODIFY, "C0029053", 5),
    ]
    links = [ObservationLink("C0013687", PE), ObservationLink("C0029053", LO),
             ObservationLink("C0004144", Observation.ATELECTASIS), ObservationLink("C0032285", Observation.PNEUMONIA)]
    studies = [StudyNode("s1", "train", "iu_xray", (ImageNode("s1/0.png", "PA"), ImageNode("s1/1.png", "LATERAL"))),
               StudyNode(WEIRD, "test", "iu_xray", (ImageNode(WEIRD + "/0.png", "PA"),))]
    mentions = [StudyMention("s1", "C0013687", Certainty.PRESENT, 2), StudyMention("s1", "small", Certainty.PRESENT, 1),
                StudyMention("s1", "C0004144", Certainty.ABSENT, 1),
                StudyMention(WEIRD, WEIRD, Certainty.UNCERTAIN, 1), StudyMention(WEIRD, "C0029053", Certainty.PRESENT, 1)]
    return KnowledgeGraph(e, t, links, studies, mentions)


@pytest.fixture(params=["embedded", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store(request, tmp_path: Path):
    s = _open(request.param, request, tmp_path)
    yield s
    s.close()


def _open(kind: str, request, tmp_path: Path) -> GraphStore:
    if kind == "embedded":
        return EmbeddedGraphStore(tmp_path / "kg")
    from graphdb.dev_server import connect_owned

    s = connect_owned(request.getfixturevalue("neo4j_settings"))
    s.clear()
    return s


@pytest.fixture
def both(request, tmp_path: Path):
    """(embedded, neo4j) on the same input, for side-by-side equality."""
    a, b = _open("embedded", request, tmp_path), _open("neo4j", request, tmp_path)
    yield a, b
    a.close()
    b.close()


SPEC = SubgraphSpec(level_budgets=(4, 2, 2))


def test_upsert_stats_and_idempotent(store: GraphStore):
    kg = tiny_graph()
    store.upsert(kg)
    first = store.stats()
    assert first.nodes == {"Entity": 9, "Observation": 14, "Study": 2, "Image": 3}
    assert first.edges["MODIFY"] == (5, 14 + 11 + 7 + 2 + 5)
    assert first.edges["LOCATED_AT"] == (2, 45)
    assert first.edges["SUGGESTIVE_OF"] == (2, 7)
    assert first.edges["EXPRESSES"][0] == 4
    assert first.edges["HAS_IMAGE"][0] == 3
    assert first.edges["MENTIONS"] == (5, 6)
    assert first.entity_types == {"anatomy": 2, "concept": 3, "disorder": 4}
    store.upsert(kg)   # re-loading never duplicates
    assert store.stats() == first


def test_counts_are_set_not_added(store: GraphStore):
    kg = tiny_graph()
    store.upsert(kg)
    kg.triples[0] = Triple("C0013687", Relation.LOCATED_AT, "C0032225", 40)
    store.upsert(kg)
    assert store.stats().edges["LOCATED_AT"] == (2, 49)


def test_strings_round_trip_exactly(store: GraphStore):
    store.upsert(tiny_graph())
    ids, names = store.node_table()
    assert f"Entity:{WEIRD}" in ids and WEIRD in names
    assert ids[:14] == [f"Observation:{o.value}" for o in Observation]
    assert ids[14:] == sorted(ids[14:])
    seeds = store.study_seeds([WEIRD, "s1", "missing"])
    assert seeds[0].entities == tuple(sorted(("C0029053", WEIRD)))
    assert seeds[1].entities == ("C0013687", "small")      # absent atelectasis is not a seed
    assert seeds[2].entities == ()


def test_per_study_levels_hand_computed(store: GraphStore):
    store.upsert(tiny_graph())
    (g,) = store.study_subgraphs([StudySeeds("s1", (PE,))], SPEC)
    assert [(n.id, n.level) for n in g.nodes] == [
        ("Observation:Pleural Effusion", 0), ("Entity:C0013687", 0),
        ("Entity:C0032225", 1), ("Entity:small", 1),           # 36 > 14 > 7 (left cut by budget 2)
        ("Entity:C0443246", 2), ("Entity:C0029053", 2),        # via pleural (11), via small (5)
    ]
    assert g.edges == (
        SubgraphEdge("Entity:C0443246", "MODIFY", "Entity:C0013687", 7),
        SubgraphEdge("Entity:C0443246", "MODIFY", "Entity:C0032225", 11),
        SubgraphEdge("Entity:small", "MODIFY", "Entity:C0013687", 14),
        SubgraphEdge("Entity:small", "MODIFY", "Entity:C0029053", 5),
        SubgraphEdge("Entity:C0013687", "LOCATED_AT", "Entity:C0032225", 36),
        SubgraphEdge("Entity:C0013687", "EXPRESSES", "Observation:Pleural Effusion", 1),
    )
    assert [n.id for n in g.at_level(1).nodes][-1] == "Entity:small"
    assert len(g.at_level(0).edges) == 1


def test_entity_seeds_bring_their_observation(store: GraphStore):
    store.upsert(tiny_graph())
    (g,) = store.study_subgraphs([StudySeeds("x", entities=(WEIRD, "C0029053"))], SPEC)
    level0 = [n.id for n in g.nodes if n.level == 0]
    assert level0 == ["Observation:Lung Opacity", "Entity:C0029053", f"Entity:{WEIRD}"]
    assert {n.key for n in g.nodes if n.level == 1} == {"lobe", "small"}   # 9 and 5 beat 4 and 3


def test_batches_dedupe_and_input_order(store: GraphStore):
    store.upsert(tiny_graph())
    seeds = [StudySeeds(f"s{i}", (PE,) if i % 2 else (LO,)) for i in range(7)] + [StudySeeds("empty")]
    one = store.study_subgraphs(seeds, SPEC, batch_size=3)
    plain = store.study_subgraphs(seeds, SPEC, batch_size=1, dedupe=False)
    assert [g.study for g in one] == [s.study for s in seeds]
    assert [(g.nodes, g.edges) for g in one] == [(g.nodes, g.edges) for g in plain]
    assert one[-1].nodes == ()


def test_global_scales_nested(store: GraphStore):
    store.upsert(tiny_graph())
    g = store.global_subgraph(SubgraphSpec(global_scales=(2, 4, 9)))
    assert [n.name for n in g.nodes[:4]] == ["effusion", "pleural", "opacity", "small"]
    assert [len(g.at_level(i).nodes) for i in range(3)] == [2, 4, 9]
    assert g.at_level(0).edges == (SubgraphEdge("Entity:C0013687", "LOCATED_AT", "Entity:C0032225", 36),)


def test_real_m3kg_reopen_and_batching_deterministic(tmp_path: Path, m3kg, iu_seed_sample):
    with EmbeddedGraphStore(tmp_path / "kg") as s:
        s.upsert(m3kg)
        first = s.study_subgraphs(iu_seed_sample, batch_size=64)
    with EmbeddedGraphStore(tmp_path / "kg", read_only=True) as s:
        again = s.study_subgraphs(iu_seed_sample[:40], batch_size=7, dedupe=False)
    assert first[:40] == again
    assert max(len(g.nodes) for g in first) <= sum(SubgraphSpec().level_budgets)


@pytest.mark.neo4j
def test_backends_agree_on_the_real_m3kg(both, m3kg, iu_seed_sample):
    embedded, neo = both
    for s in both:
        s.upsert(m3kg)
    assert embedded.stats() == neo.stats()
    assert embedded.node_table() == neo.node_table()
    assert embedded.global_subgraph() == neo.global_subgraph()
    a = embedded.study_subgraphs(iu_seed_sample, batch_size=64)
    b = neo.study_subgraphs(iu_seed_sample, batch_size=64)
    assert sum(len(g.nodes) for g in a) > 0
    assert a == b


@pytest.fixture(scope="module")
def m3kg() -> KnowledgeGraph:
    from graphdb.m3kg import load_m3kg

    return load_m3kg()


@pytest.fixture(scope="module")
def iu_seed_sample(m3kg: KnowledgeGraph) -> list[StudySeeds]:
    """Seeds as the labeler gives them for 200 real IU reports (positive + uncertain)."""
    import numpy as np

    from cxr.labeler import label_reports
    from cxr.observations import OBSERVATIONS
    from cxr.readers import bundled_iu_annotation, read_r2gen

    records = [r for r in read_r2gen(bundled_iu_annotation()) if r.split == "train"][:200]
    labels = label_reports([r.report for r in records])
    seeds = []
    for rec, row in zip(records, labels):
        obs = tuple(o for o, v in zip(OBSERVATIONS, row) if not np.isnan(v) and v != 0.0)
        seeds.append(StudySeeds(rec.study_id, obs))
    return seeds
