"""generator.explain: per-sentence evidence on a hand-made subgraph, and the graph a reader gets."""

from __future__ import annotations

import pytest

from cxr.observations import OBSERVATIONS, Observation
from generator.decisions import NEVER, Thresholds
from generator.explain import explain, study_graph
from graphdb.schema import Subgraph, SubgraphEdge, SubgraphNode

EFFUSION, PLEURAL, SMALL, HEART = "C0013687", "C0032225", "small", "C0018787"


def _node(key: str, name: str, level: int, label: str = "Entity", kind: str = "disorder") -> SubgraphNode:
    return SubgraphNode(label, key, name, kind, 10, level)


@pytest.fixture
def subgraph() -> Subgraph:
    nodes = (_node("Pleural Effusion", "Pleural Effusion", 0, "Observation", "observation"),
             _node(EFFUSION, "effusion", 1), _node(PLEURAL, "pleural", 1, kind="anatomy"),
             _node(SMALL, "small", 2, kind="concept"), _node(HEART, "heart", 2, kind="anatomy"))
    e = "Entity:"
    edges = (SubgraphEdge(e + EFFUSION, "LOCATED_AT", e + PLEURAL, 36265),
             SubgraphEdge(e + SMALL, "MODIFY", e + EFFUSION, 14048),
             SubgraphEdge(e + EFFUSION, "EXPRESSES", "Observation:Pleural Effusion", 1),
             SubgraphEdge(e + EFFUSION, "LOCATED_AT", e + HEART, 21))
    return Subgraph("s1", ("Observation:Pleural Effusion",), nodes, edges)


def _thresholds() -> Thresholds:
    positive = [0.5] * len(OBSERVATIONS)
    positive[OBSERVATIONS.index(Observation.EDEMA)] = NEVER
    positive[OBSERVATIONS.index(Observation.PLEURAL_EFFUSION)] = 0.3
    return Thresholds(tuple(positive))


PROBS = {o.value: 0.1 for o in OBSERVATIONS} | {"Pleural Effusion": 0.8}


def test_each_sentence_gets_its_observations_triples_and_examples(subgraph):
    report = "The heart is normal in size. Small left pleural effusion. No edema."
    pe = OBSERVATIONS.index(Observation.PLEURAL_EFFUSION)
    sources = ["t1", "t2", "t1", "t3"]                  # the study of each bank token
    reports = {"t1": "Heart normal. There is a small right pleural effusion.", "t2": "Lungs clear."}
    out = explain(report, PROBS, _thresholds(), subgraph, {"Pleural Effusion": [0, 1, 2, 3], "Edema": [3]},
                  sources, reports)
    assert [s.text for s in out] == ["The heart is normal in size.", "Small left pleural effusion.", "No edema."]
    assert report[out[1].start:out[1].end] == out[1].text
    heart, effusion, edema = out
    assert [(o["observation"], o["certainty"]) for o in heart.observations] == [("Cardiomegaly", "negative")]
    assert effusion.observations == [{"observation": "Pleural Effusion", "certainty": "positive",
                                      "phrase": "effusion", "probability": 0.8, "threshold": 0.3}]
    assert _thresholds().positive[pe] == 0.3
    # triples between the sentence's entities and the observation it states, by name with counts;
    # effusion —located_at→ heart is in the subgraph but heart is not in this sentence
    assert sorted(t["text"] for t in effusion.triples) == [
        "effusion —expresses→ Pleural Effusion (1)", "effusion —located_at→ pleural (36,265)",
        "small —modify→ effusion (14,048)"]
    assert not any("Entity:" in t["head"] + t["tail"] for t in effusion.triples)
    # examples: distinct training studies in retrieval order, each quoting its sentence (None unknown)
    assert effusion.examples == [
        {"observation": "Pleural Effusion", "study": "t1", "sentence": "There is a small right pleural effusion."},
        {"observation": "Pleural Effusion", "study": "t2", "sentence": None},
        {"observation": "Pleural Effusion", "study": "t3", "sentence": None}]
    # a denied observation gets no examples; a never-decided one has no threshold
    assert edema.examples == [] and edema.observations[0]["threshold"] is None


def test_without_a_subgraph_or_bank_the_sentences_still_read(subgraph):
    out = explain("Small pleural effusion.", PROBS, _thresholds())
    assert out[0].triples == [] and out[0].examples == [] and out[0].observations
    assert explain("", PROBS, _thresholds()) == []


def test_the_readers_graph_has_names_and_each_nodes_strongest_edges(subgraph):
    graph = study_graph(subgraph)
    assert [n["name"] for n in graph["nodes"]] == ["Pleural Effusion", "effusion", "pleural", "small", "heart"]
    assert graph["edges"][0] == {"head": "Entity:" + EFFUSION, "relation": "located_at",
                                 "tail": "Entity:" + PLEURAL, "count": 36265}
    assert [e["count"] for e in graph["edges"]] == [36265, 14048, 21, 1]
    extra = SubgraphEdge("Entity:" + PLEURAL, "MODIFY", "Entity:" + HEART, 5)
    richer = Subgraph(subgraph.study, subgraph.seeds, subgraph.nodes, subgraph.edges + (extra,))
    # one edge per node: pleural and heart have theirs already when their weak edge comes up
    assert [e["count"] for e in study_graph(richer, per_node=1)["edges"]] == [36265, 14048, 21, 1]
    assert [e["count"] for e in study_graph(richer, per_node=2)["edges"]] == [36265, 14048, 21, 5, 1]
    assert study_graph(None) is None
