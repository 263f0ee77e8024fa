"""graphdb.dev_server: tests and benchmarks clear only the Neo4j server of scripts/neo4j.sh, proven
by the DBMS id it writes to <home>/run/server-id. On a mocked driver, then against the real
server: a server whose id is not in the home we read is never cleared, and the conftest fixture
skips it (or fails under R2GENKG_REQUIRE_NEO4J=1) before any test can clear it."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from unittest.mock import MagicMock

import neo4j
import pytest

from graphdb import cypher
from graphdb.dev_server import SERVER_ID_FILE, DevServer, NotOurServer, connect_owned, prove_ours
from graphdb.neo4j_store import Neo4jGraphStore

REPO = Path(__file__).resolve().parents[2]


def store_with_id(dbms_id: str) -> tuple[Neo4jGraphStore, MagicMock]:
    driver = MagicMock(spec=neo4j.Driver)
    driver.execute_query.return_value = ([neo4j.Record({"id": dbms_id})], None, None)
    return Neo4jGraphStore(driver, uri="bolt://127.0.0.1:7687"), driver


def home_with_id(root: Path, dbms_id: str) -> Path:
    (root / SERVER_ID_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / SERVER_ID_FILE).write_text(dbms_id + "\n")
    return root


def test_the_server_whose_id_the_home_holds_is_ours(tmp_path: Path):
    store, driver = store_with_id("E40D7E6F")
    prove_ours(store, home_with_id(tmp_path, "E40D7E6F"))
    assert driver.execute_query.call_args.args[0] == cypher.DBMS_ID


@pytest.mark.parametrize("written", [None, "", "0A1B2C3D"], ids=["no file", "empty file", "another id"])
def test_any_other_server_is_not_ours(tmp_path: Path, written: str | None):
    store, _ = store_with_id("E40D7E6F")
    if written is not None:
        home_with_id(tmp_path, written)
    with pytest.raises(NotOurServer, match=r"Neo4j at bolt://127.0.0.1:7687 .*not touching it"):
        prove_ours(store, tmp_path)


def test_settings_follow_the_scripts_environment(tmp_path: Path):
    server = DevServer.from_env({"R2GENKG_NEO4J_BOLT_PORT": "27687", "R2GENKG_NEO4J_HOME": str(tmp_path)})
    assert (server.uri, server.user, server.password, server.database, server.home) == (
        "bolt://127.0.0.1:27687", "neo4j", "r2genkg-dev", "neo4j", tmp_path)
    assert DevServer.from_env({"NEO4J_URI": "bolt://h:1", "R2GENKG_NEO4J_BOLT_PORT": "27687"}).uri == "bolt://h:1"
    assert DevServer.from_env({}).home == REPO / ".neo4j"


# ---- against the real server ----------------------------------------------------------------

def _probes(server: DevServer, token: str) -> int:
    with neo4j.GraphDatabase.driver(server.uri, auth=(server.user, server.password)) as driver:
        records, _, _ = driver.execute_query("MATCH (p:R2GenKGProbe {token: $t}) RETURN count(p) AS n",
                                             t=token, database_=server.database)
    return records[0]["n"]


@pytest.fixture
def probe(neo4j_settings):
    """A node on the real server that must survive everything a test does to a server not proven ours."""
    token = uuid.uuid4().hex
    with neo4j.GraphDatabase.driver(neo4j_settings.uri, auth=(neo4j_settings.user, neo4j_settings.password)) as d:
        d.execute_query("CREATE (:R2GenKGProbe {token: $t})", t=token, database_=neo4j_settings.database)
    yield token
    with neo4j.GraphDatabase.driver(neo4j_settings.uri, auth=(neo4j_settings.user, neo4j_settings.password)) as d:
        d.execute_query("MATCH (p:R2GenKGProbe {token: $t}) DELETE p", t=token, database_=neo4j_settings.database)


@pytest.mark.neo4j
def test_the_real_server_is_proven_ours_by_the_id_it_wrote(neo4j_settings):
    with connect_owned(neo4j_settings) as store:
        (dbms_id,), = store.run(cypher.DBMS_ID)
    assert (neo4j_settings.home / SERVER_ID_FILE).read_text().strip() == dbms_id
    assert len(dbms_id) >= 32   # a random id, not a name another server could share


@pytest.mark.neo4j
@pytest.mark.parametrize("written", [None, "0A1B2C3D"], ids=["unmarked", "another server's id"])
def test_a_server_not_proven_ours_is_refused_and_keeps_its_data(neo4j_settings, probe, tmp_path: Path,
                                                                written: str | None):
    if written is not None:
        home_with_id(tmp_path, written)
    stranger = DevServer(neo4j_settings.uri, neo4j_settings.user, neo4j_settings.password,
                         neo4j_settings.database, home=tmp_path)
    with pytest.raises(NotOurServer):
        connect_owned(stranger)
    assert _probes(neo4j_settings, probe) == 1


@pytest.mark.neo4j
@pytest.mark.slow
@pytest.mark.parametrize("required", [False, True], ids=["skips", "CI fails"])
def test_the_test_suite_never_clears_a_server_it_cannot_prove_ours(neo4j_settings, probe, tmp_path: Path,
                                                                    required: bool):
    """The README's test command, run by a user whose own Neo4j answers at NEO4J_URI with their
    NEO4J_PASSWORD: seen from a home without our server's id, that is exactly their situation.
    The store contract tests (which clear the database) skip, or fail in CI; the data stays."""
    env = {**os.environ, "R2GENKG_NEO4J_HOME": str(tmp_path), "NEO4J_URI": neo4j_settings.uri,
           "NEO4J_PASSWORD": neo4j_settings.password, "R2GENKG_REQUIRE_NEO4J": "1" if required else "0"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "neo4j",
                           "-rs", "tests/graphdb/test_store_contract.py"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert "not touching it" in out, out[-3000:]
    if required:
        assert proc.returncode == 1 and "R2GENKG_REQUIRE_NEO4J=1 but" in out, out[-3000:]
    else:
        assert proc.returncode == 0 and " skipped" in out and " passed" not in out, out[-3000:]
    assert _probes(neo4j_settings, probe) == 1
