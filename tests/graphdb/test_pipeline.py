"""graphdb.pipeline: labeler seeds are the positive-or-uncertain observations (U-Ones), and a
subgraph survives its JSONL line exactly."""
from __future__ import annotations

import json

from cxr.observations import Observation as O
from graphdb.pipeline import label_observations, subgraph_from_record, subgraph_record
from graphdb.schema import Subgraph, SubgraphEdge, SubgraphNode


def test_label_seeds_are_positive_or_uncertain():
    seeds = label_observations(["There is a large left pleural effusion.",
                                "No pneumothorax. Possible mild cardiomegaly.",
                                "No pneumothorax or effusion."])
    assert O.PLEURAL_EFFUSION in seeds[0]
    assert O.CARDIOMEGALY in seeds[1] and O.PNEUMOTHORAX not in seeds[1]      # uncertain counts, negative not
    assert O.PNEUMOTHORAX not in seeds[2] and O.PLEURAL_EFFUSION not in seeds[2]


def test_a_subgraph_survives_its_jsonl_line():
    weird = 'o\'brien "sign": ünïcødé 🫁'
    nodes = (SubgraphNode("Observation", "Pleural Effusion", "Pleural Effusion", "observation", 0, 0),
             SubgraphNode("Entity", "C0013687", "effusion", "disorder", 100, 0),
             SubgraphNode("Entity", weird, weird, "concept", 5, 2))
    edges = (SubgraphEdge("Entity:C0013687", "EXPRESSES", "Observation:Pleural Effusion", 1),
             SubgraphEdge(f"Entity:{weird}", "MODIFY", "Entity:C0013687", 2))
    graph = Subgraph("CXR1_1_IM-0001", ("Pleural Effusion", "C0013687"), nodes, edges)
    line = json.dumps(subgraph_record(graph), ensure_ascii=False)
    assert line.startswith('{"id": "CXR1_1_IM-0001"')
    assert subgraph_from_record(json.loads(line)) == graph
