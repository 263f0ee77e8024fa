"""Faults: a load killed halfway and rerun, unreachable / misconfigured servers, bad input files.
Each error is one line that says what to do."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cxr.records import DataError
from graphdb.embedded_store import EmbeddedGraphStore
from graphdb.m3kg import M3KGFiles, load_m3kg
from graphdb.store import GraphStoreError

REPO = Path(__file__).resolve().parents[2]

# Loads the M3KG in batches of 2,000 and prints after each committed relationship batch, so the
# parent can kill it with SIGKILL in the middle of the relationship load.
_LOADER = """
import sys
from graphdb.m3kg import load_m3kg
from graphdb.embedded_store import EmbeddedGraphStore
kind, where = sys.argv[1], sys.argv[2]
if kind == "embedded":
    store = EmbeddedGraphStore(where)
else:
    from graphdb.neo4j_store import Neo4jGraphStore
    uri, user, password, db = where.split("|")
    store = Neo4jGraphStore.connect(uri, user, password, db)
create = store.create
def noisy(query, rows):
    create(query, rows)
    print("batch", flush=True)
store.create = noisy
store.upsert(load_m3kg(), batch_size=2000)
print("done", flush=True)
"""


def _kill_after(kind: str, where: str, batches: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _LOADER, kind, where], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    seen = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        seen += line.startswith("batch")
        if seen >= batches:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the loader finished before it could be killed"


@pytest.mark.slow
def test_embedded_load_killed_halfway_then_rerun(tmp_path: Path):
    where = tmp_path / "kg"
    _kill_after("embedded", str(where), batches=6)
    kg = load_m3kg()
    with EmbeddedGraphStore(where) as store:
        partial = store.stats().edges["MODIFY"][0]
        assert 0 < partial < 22_397
        store.upsert(kg)
        stats = store.stats()
    assert stats.nodes["Entity"] == 2_418
    assert {k: v[0] for k, v in stats.edges.items() if k in ("MODIFY", "LOCATED_AT", "SUGGESTIVE_OF")} == {
        "MODIFY": 22_397, "LOCATED_AT": 13_080, "SUGGESTIVE_OF": 1_947}


@pytest.mark.neo4j
@pytest.mark.slow
def test_neo4j_load_killed_halfway_then_rerun(neo4j_settings):
    from graphdb.dev_server import connect_owned

    cfg = neo4j_settings
    with connect_owned(cfg) as store:
        store.clear()
        _kill_after("neo4j", f"{cfg.uri}|{cfg.user}|{cfg.password}|{cfg.database}", batches=6)
        partial = store.stats().edges["MODIFY"][0]
        assert 0 < partial < 22_397
        store.upsert(load_m3kg())
        edges = store.stats().edges
    assert (edges["MODIFY"][0], edges["LOCATED_AT"][0], edges["SUGGESTIVE_OF"][0]) == (22_397, 13_080, 1_947)


def test_server_down_says_start_it():
    from graphdb.neo4j_store import Neo4jGraphStore

    with pytest.raises(GraphStoreError, match=r"cannot reach Neo4j at bolt://127.0.0.1:1: .*scripts/neo4j.sh start"):
        Neo4jGraphStore.connect("bolt://127.0.0.1:1", "neo4j", "whatever-pw", "neo4j", connect_timeout_s=2)


@pytest.mark.neo4j
def test_wrong_password_says_set_it(neo4j_settings):
    from graphdb.neo4j_store import Neo4jGraphStore

    with pytest.raises(GraphStoreError, match=r"wrong password\. Set NEO4J_PASSWORD"):
        Neo4jGraphStore.connect(neo4j_settings.uri, neo4j_settings.user, "not-the-password", "neo4j")


@pytest.mark.neo4j
def test_wrong_database_names_it(neo4j_settings):
    from graphdb.neo4j_store import Neo4jGraphStore

    cfg = neo4j_settings
    with pytest.raises(GraphStoreError, match=r"no database 'm3kg'.*--neo4j-database neo4j"):
        Neo4jGraphStore.connect(cfg.uri, cfg.user, cfg.password, "m3kg")


def test_unknown_relation_type_names_the_line(tmp_path: Path):
    bundled = M3KGFiles.bundled()
    lines = bundled.relations.read_text(encoding="utf-8").splitlines()[:5]
    lines.insert(3, "C0013687,C0032225,effusion,pleural,causes,3")
    (tmp_path / "kg_relations.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "res_dict_aliases.json").write_text(bundled.aliases.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(DataError, match=r"kg_relations.csv:4: unknown relation type 'causes'.*Fix or drop the row"):
        load_m3kg(M3KGFiles.in_dir(tmp_path))


@pytest.mark.parametrize("bad, message", [
    ("source_index,target_index,source_entity,target_entity,type\n", r"missing columns \['count'\]"),
    ("source_index,target_index,source_entity,target_entity,type,count\na,b,a,b,modify,many\n",
     r":2: count 'many' is not an integer"),
    ("source_index,target_index,source_entity,target_entity,type,count\n,b,a,b,modify,1\n", r":2: empty source_index"),
])
def test_malformed_relation_rows(tmp_path: Path, bad: str, message: str):
    (tmp_path / "kg_relations.csv").write_text(bad, encoding="utf-8")
    (tmp_path / "res_dict_aliases.json").write_text('{"a": "concept"}', encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_m3kg(M3KGFiles.in_dir(tmp_path))


def test_missing_m3kg_files(tmp_path: Path):
    with pytest.raises(DataError, match="alias dictionary not found"):
        load_m3kg(M3KGFiles.in_dir(tmp_path))


def test_embedded_path_errors(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(GraphStoreError, match="is a file; pass a directory"):
        EmbeddedGraphStore(tmp_path / "file")
    with pytest.raises(GraphStoreError, match="kg load-m3kg"):
        EmbeddedGraphStore(tmp_path / "empty", read_only=True)
