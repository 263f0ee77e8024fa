"""Neo4jGraphStore on a mocked driver (no server): the calls it makes, batching, schema, clear,
close, and how driver errors become one-line GraphStoreErrors. The same store against the real
server: test_store_contract.py and test_store_faults.py (marked neo4j)."""
from __future__ import annotations

import logging
import re
from unittest.mock import MagicMock

import neo4j
import pytest
from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable

from cxr.observations import OBSERVATIONS
from graphdb import cypher
from graphdb.neo4j_store import DATABASE_NOT_FOUND, Neo4jGraphStore
from graphdb.schema import Entity, EntityType, KnowledgeGraph, Relation, Triple
from graphdb.store import GraphStoreError

URI = "bolt://db.example:7687"


def server_error(code: str, message: str) -> Neo4jError:
    """The error the driver raises for a server FAILURE message (its class follows the code)."""
    return Neo4jError._hydrate_neo4j(code=code, message=message)


SYNTAX = server_error("Neo.ClientError.Statement.SyntaxError",
                      "Invalid input 'RETURN': expected ')' (line 1, column 10)\n\"MATCH (n RETURN n\"\n          ^")
CONSTRAINT = server_error("Neo.ClientError.Schema.ConstraintValidationFailed", "Node(1) already exists")


class FakeDriver:
    """A MagicMock(spec=neo4j.Driver) whose sessions run managed writes on one mock transaction."""

    def __init__(self) -> None:
        self.driver = MagicMock(spec=neo4j.Driver)
        self.session = MagicMock(spec=neo4j.Session)
        self.tx = MagicMock(spec=neo4j.ManagedTransaction)
        self.driver.session.return_value.__enter__.return_value = self.session
        self.session.execute_write.side_effect = lambda work: work(self.tx)
        self.driver.execute_query.return_value = ([], None, None)

    def written(self) -> list[tuple[str, int]]:
        """(query, rows in the batch) of every managed write, in order."""
        return [(c.args[0], len(c.kwargs["rows"])) for c in self.tx.run.call_args_list]

    def ran(self) -> list[str]:
        """Queries run in auto-commit sessions (schema, clear)."""
        return [c.args[0] for c in self.session.run.call_args_list]


@pytest.fixture
def fake() -> FakeDriver:
    return FakeDriver()


def tiny_graph() -> KnowledgeGraph:
    entities = [Entity("a", "a", EntityType.DISORDER, (), 3), Entity("b", "b", EntityType.ANATOMY, (), 2),
                Entity("c", "c", EntityType.CONCEPT, (), 1)]
    triples = [Triple("a", Relation.LOCATED_AT, "b", 5), Triple("c", Relation.MODIFY, "a", 4),
               Triple("c", Relation.MODIFY, "b", 1)]
    return KnowledgeGraph(entities, triples, [], [], [])


def test_reads_go_to_the_named_database_as_reads(fake: FakeDriver):
    fake.driver.execute_query.return_value = ([neo4j.Record(zip(["k", "n"], ["a", 1]))], None, None)
    store = Neo4jGraphStore(fake.driver, database="kg")
    assert store.run("MATCH (e) RETURN e.k, e.n", {"x": 1}) == [("a", 1)]
    fake.driver.execute_query.assert_called_once_with("MATCH (e) RETURN e.k, e.n", parameters_={"x": 1},
                                                      database_="kg", routing_="r")


def test_upsert_writes_batches_after_the_schema_once(fake: FakeDriver):
    store = Neo4jGraphStore(fake.driver)
    report = store.upsert(tiny_graph(), batch_size=2)
    assert report.written["entities"] == 3 and report.written["modify"] == 2
    assert fake.ran() == list(cypher.NEO4J.schema)
    fake.driver.session.assert_called_with(database="neo4j")
    written = fake.written()
    assert written[:2] == [(cypher.UPSERT_ENTITIES, 2), (cypher.UPSERT_ENTITIES, 1)]
    assert written[2:4] == [(cypher.UPSERT_OBSERVATIONS, 2)] * 2 and len(OBSERVATIONS) == 14
    assert (cypher.CREATE_TRIPLES[Relation.MODIFY], 2) in written          # nothing existed: all created
    assert (cypher.CREATE_TRIPLES[Relation.LOCATED_AT], 1) in written
    assert all(n <= 2 for _, n in written)
    store.upsert(tiny_graph(), batch_size=2)
    assert fake.ran() == list(cypher.NEO4J.schema)                          # schema ran once


def test_existing_relationships_are_not_created_again(fake: FakeDriver):
    def existing(query: str, **_: object) -> tuple[list, None, None]:
        rows = [("c", "a", 4), ("c", "b", 9)] if query == cypher.EXISTING_TRIPLES[Relation.MODIFY] else []
        return [neo4j.Record(zip("htc", r)) for r in rows], None, None

    fake.driver.execute_query.side_effect = existing
    Neo4jGraphStore(fake.driver).upsert(tiny_graph())
    written = fake.written()
    assert (cypher.CREATE_TRIPLES[Relation.MODIFY], 2) not in written
    assert (cypher.UPDATE_TRIPLE_COUNTS[Relation.MODIFY], 1) in written    # c→b: 9 → 1


def test_empty_write_sends_nothing(fake: FakeDriver):
    Neo4jGraphStore(fake.driver).write(cypher.UPSERT_ENTITIES, [])
    fake.driver.session.assert_not_called()


def test_clear_runs_the_dialects_delete_in_an_auto_commit_session(fake: FakeDriver):
    Neo4jGraphStore(fake.driver, "kg").clear()
    assert fake.ran() == [cypher.NEO4J.delete_all]
    fake.driver.session.assert_called_once_with(database="kg")


def test_close_closes_the_driver_once_and_later_use_says_so(fake: FakeDriver):
    with Neo4jGraphStore(fake.driver) as store:
        pass
    store.close()
    fake.driver.close.assert_called_once()
    with pytest.raises(GraphStoreError, match="closed"):
        store.run("RETURN 1")


def test_connect_checks_the_server_and_the_database(fake: FakeDriver, monkeypatch):
    make = MagicMock(return_value=fake.driver)
    monkeypatch.setattr(neo4j.GraphDatabase, "driver", make)
    store = Neo4jGraphStore.connect(URI, "reader", "pw", "kg", connect_timeout_s=2)
    assert store.database == "kg" and store.uri == URI
    assert make.call_args.args == (URI,) and make.call_args.kwargs["auth"] == ("reader", "pw")
    fake.driver.verify_connectivity.assert_called_once()
    fake.driver.execute_query.assert_called_once_with("RETURN 1", database_="kg")


@pytest.mark.parametrize("where, error, message", [
    ("verify", AuthError("The client is unauthorized"),
     r"Neo4j at \S+ rejected user 'reader': wrong password\. Set NEO4J_PASSWORD"),
    ("verify", ServiceUnavailable("Couldn't connect\nFailed to establish connection"),
     r"cannot reach Neo4j at \S+: is the server running\? Start it with `scripts/neo4j.sh start`"),
    ("verify", OSError("Connection refused"), r"cannot reach Neo4j"),
    ("query", server_error(DATABASE_NOT_FOUND, "Database does not exist. Database name: 'm3kg'."),
     r"has no database 'm3kg'; .*--neo4j-database neo4j"),
])
def test_connect_errors_are_one_line_and_close_the_driver(fake: FakeDriver, monkeypatch, where, error, message):
    monkeypatch.setattr(neo4j.GraphDatabase, "driver", MagicMock(return_value=fake.driver))
    (fake.driver.verify_connectivity if where == "verify" else fake.driver.execute_query).side_effect = error
    with pytest.raises(GraphStoreError, match=message) as caught:
        Neo4jGraphStore.connect(URI, "reader", "pw", "m3kg")
    assert "\n" not in str(caught.value)
    fake.driver.close.assert_called_once()


def test_a_bad_uri_is_named():
    with pytest.raises(GraphStoreError, match=r"bad Neo4j URI 'foo://x': URI scheme 'foo' is not supported"):
        Neo4jGraphStore.connect("foo://x")


@pytest.mark.parametrize("doing, fail", [
    ("query", lambda f: setattr(f.driver.execute_query, "side_effect", SYNTAX)),
    ("write", lambda f: setattr(f.session.execute_write, "side_effect", CONSTRAINT)),
    ("schema setup", lambda f: setattr(f.session.run, "side_effect", SYNTAX)),
    ("clear", lambda f: setattr(f.session.run, "side_effect", CONSTRAINT)),
])
def test_a_failed_statement_is_one_line_with_its_code(fake: FakeDriver, doing, fail):
    fail(fake)
    store = Neo4jGraphStore(fake.driver, uri=URI)
    act = {"query": lambda: store.run("MATCH (n RETURN n"),
           "write": lambda: store.write(cypher.UPSERT_ENTITIES, [{"key": "a"}]),
           "schema setup": store.init_schema, "clear": store.clear}[doing]
    with pytest.raises(GraphStoreError, match=rf"^Neo4j {doing} failed \(Neo\.ClientError\.") as caught:
        act()
    assert "\n" not in str(caught.value)
    assert caught.value.__cause__ is None                        # no driver traceback attached


def test_a_lost_server_mid_session_says_start_it(fake: FakeDriver):
    fake.driver.execute_query.side_effect = ServiceUnavailable("routing table")
    with pytest.raises(GraphStoreError, match=f"cannot reach Neo4j at {URI}"):
        Neo4jGraphStore(fake.driver, uri=URI).run("RETURN 1")



@pytest.mark.parametrize("uri, bolt", [("http://127.0.0.1:7474", "bolt://127.0.0.1:7687"),
                                       ("https://db.example:7473/db", "bolt://db.example:7687"),
                                       ("http://[::1]:8080", "bolt://[::1]:<its Bolt port>")])
def test_an_http_uri_is_refused_before_any_network_call(monkeypatch, recwarn, uri, bolt):
    """The driver would try Neo4j's HTTP Query API (a preview: a PreviewWarning, then urllib3's
    retry warnings for seconds); the store speaks Bolt and says which URI to use."""
    monkeypatch.setattr(neo4j.GraphDatabase, "driver", MagicMock(side_effect=AssertionError("no driver")))
    with pytest.raises(GraphStoreError, match=rf"^{re.escape(uri)} is Neo4j's HTTP address .* use {re.escape(bolt)} "):
        Neo4jGraphStore.connect(uri, "neo4j", "whatever-pw")
    assert not recwarn.list


def test_a_failed_connect_is_one_error_not_the_drivers_log_too(caplog):
    """neo4j:// to a closed port: the driver logs "Unable to retrieve routing information" at
    ERROR before it raises; only the GraphStoreError may speak."""
    with caplog.at_level(logging.DEBUG), pytest.raises(GraphStoreError, match="cannot reach Neo4j at neo4j://"):
        Neo4jGraphStore.connect("neo4j://127.0.0.1:1", "neo4j", "whatever-pw", connect_timeout_s=2)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("neo4j") and r.levelno >= logging.WARNING] == []
