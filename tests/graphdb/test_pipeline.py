"""graphdb.pipeline: labeler seeds are the positive-or-uncertain observations (U-Ones), and a
subgraph survives its JSONL line exactly, and a rerun with other settings is refused."""
from __future__ import annotations

import json

import pytest

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


def test_a_rerun_with_other_settings_is_refused(m3kg_store, iu_annotation, tmp_path):
    from cxr.records import DataError
    from graphdb.embedded_store import EmbeddedGraphStore
    from graphdb.pipeline import write_study_subgraphs
    from graphdb.schema import SubgraphSpec

    data = json.loads(iu_annotation.read_text())
    annotation = tmp_path / "annotation.json"
    annotation.write_text(json.dumps({"train": data["train"][:6]}))
    out = tmp_path / "sub.jsonl"
    with EmbeddedGraphStore(m3kg_store, read_only=True) as store:
        first = write_study_subgraphs(store, annotation, None, "labels", SubgraphSpec((4, 8, 16)), out)
        again = write_study_subgraphs(store, annotation, None, "labels", SubgraphSpec((4, 8, 16)), out)
        assert first.new > 0 and again.new == 0
        before = out.read_bytes()
        with pytest.raises(DataError, match=r"was written with .*level_budgets.*\[4, 8, 16\].*another --out"):
            write_study_subgraphs(store, annotation, None, "labels", SubgraphSpec((8, 16, 32)), out)
        assert out.read_bytes() == before
