"""LLMExtractor against a local OpenAI-compatible server that replays recorded answers.

``tests/data/llm_replay/*.json``: a real IU report, and the responses the server gives to its
1st, 2nd, … request (the last one repeats): GPT-4o-style answers, a 500-then-success, a cut-off
(invalid JSON) answer, a schema violation, an unknown relation, a 401, a 503 that never ends and
an answer slower than the client's timeout. The ``openai`` client does the retries; its waits are
recorded, not slept.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cxr.records import DataError, ErrorPolicy, StudyRecord
from graphdb.extract import Extractor
from graphdb.llm_extract import (
    LLMConfig,
    LLMConfigError,
    LLMExtractor,
    LLMOutputError,
    parse_output,
)
from graphdb.schema import Certainty, EntityType, Relation

REPLAY = Path(__file__).resolve().parents[1] / "data" / "llm_replay"
HAPPY = ["01_normal_hernia", "02_clear_lungs", "03_retry_emphysema", "04_cabg_granulomatous",
         "05_granulomatous_fenced"]


@dataclass
class ReplayServer:
    fixtures: dict[str, dict[str, Any]]                 # name → fixture
    url: str = ""
    calls: Counter[str] = field(default_factory=Counter)
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)

    def record(self, name: str) -> StudyRecord:
        fx = self.fixtures[name]
        sid = fx["study_id"]
        return StudyRecord(sid, (Path(f"{sid}/0.png"), Path(f"{sid}/1.png")), fx["report"], split="train",
                           dataset="iu_xray")

    def records(self, names: list[str]) -> list[StudyRecord]:
        return [self.record(n) for n in names]


@pytest.fixture()
def server() -> Iterator[ReplayServer]:
    fixtures = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(REPLAY.glob("*.json"))}
    by_report = {fx["report"]: name for name, fx in fixtures.items()}
    state = ReplayServer(fixtures)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            name = by_report.get(body["messages"][-1]["content"])
            with lock:
                state.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                index = state.calls[name]
                state.calls[name] += 1
            if name is None:
                reply: dict[str, Any] = {"status": 400, "body": {"error": {"message": "no recording"}}}
            else:
                responses = fixtures[name]["responses"]
                reply = responses[min(index, len(responses) - 1)]
            threading.Event().wait(reply.get("delay_s", 0))   # not time.sleep: the tests record that
            payload = json.dumps(reply["body"]).encode()
            self.send_response(reply["status"])
            for key, value in reply.get("headers", {}).items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's backoff waits, recorded instead of slept (a 503 asks for 7 s)."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    return waits


def _extractor(server: ReplayServer, tmp_path: Path | None = None, policy: ErrorPolicy | None = None,
               **options: Any) -> LLMExtractor:
    config = LLMConfig(base_url=server.url, model="gpt-4o-2024-08-06", api_key_env="R2GENKG_TEST_KEY",
                       cache_dir=tmp_path, **options)
    return LLMExtractor(config, policy=policy)


# ---- the happy path, retry, cache, concurrency -------------------------------------------------

def test_extract_five_reports(server: ReplayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              sleeps: list[float]) -> None:
    monkeypatch.setenv("R2GENKG_TEST_KEY", "sk-test-123")
    x = _extractor(server, tmp_path, max_workers=3)
    assert isinstance(x, Extractor)
    kg = x.extract(server.records(HAPPY))
    kg.validate()

    # the request: endpoint, auth, JSON mode, the report as the user message
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == "Bearer sk-test-123"
    assert body["model"] == "gpt-4o-2024-08-06" and body["response_format"] == {"type": "json_object"}
    assert body["messages"][0]["role"] == "system" and "suggestive_of" in body["messages"][0]["content"]

    # 03 answered 500 once: the client retried once, after its first backoff (no Retry-After)
    assert server.calls["03_retry_emphysema"] == 2
    assert (x.stats.requests, x.stats.retries, x.stats.cache_hits, x.stats.skipped) == (6, 1, 0, 0)
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 1.0

    assert [s.id for s in kg.studies] == sorted(server.fixtures[n]["study_id"] for n in HAPPY)
    assert {i.view for s in kg.studies for i in s.images} == {"frontal", "lateral"}
    entities = {e.key: e for e in kg.entities}
    assert entities["C0013687"].aliases == ("effusion",)                  # dictionary keys, as the rules
    assert entities["cabg markers"].type is EntityType.DEVICES            # unknown text: LLM's type
    mentions = {(m.study, m.entity): m.certainty for m in kg.mentions}
    assert mentions[("CXR2364_IM-0927", "C0013990")] is Certainty.UNCERTAIN   # emphysema
    assert mentions[("CXR2384_IM-0942", "C0013687")] is Certainty.ABSENT      # effusion
    triples = {(t.head, t.relation, t.tail): t.count for t in kg.triples}
    assert triples[("C0013687", Relation.LOCATED_AT, "C0032225")] == 2       # 01 and 04
    assert triples[("C0020449", Relation.SUGGESTIVE_OF, "C0013990")] == 1    # hyperexpansion → emphysema
    assert ("cardiomediastinal", Relation.LOCATED_AT, "silhouette") in triples   # "located at" spelling


def test_second_run_is_served_from_the_cache(server: ReplayServer, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("R2GENKG_TEST_KEY", raising=False)
    first = _extractor(server, tmp_path).extract(server.records(HAPPY))
    assert server.requests[0][1]["authorization"] == "Bearer EMPTY"     # no key set: a placeholder
    sent = len(server.requests)
    again = _extractor(server, tmp_path)
    assert again.extract(server.records(HAPPY)) == first
    assert len(server.requests) == sent                                    # zero new requests
    assert (again.stats.requests, again.stats.cache_hits) == (0, 5)
    assert len(list(tmp_path.glob("*.json"))) == 5


def test_cache_key_depends_on_model_prompt_and_report() -> None:
    base = LLMConfig()
    key = base.cache_key("No effusion.")
    assert key == LLMConfig().cache_key("No effusion.") and len(key) == 64
    assert key != base.cache_key("No effusion")
    assert key != LLMConfig(model="gpt-4o-mini").cache_key("No effusion.")
    assert key != LLMConfig(prompt_version="v2").cache_key("No effusion.")
    assert key != LLMConfig(system_prompt="other").cache_key("No effusion.")


def test_identical_reports_are_asked_once(server: ReplayServer) -> None:
    twin = StudyRecord("twin", (Path("t/0.png"),), server.fixtures["02_clear_lungs"]["report"], dataset="x")
    kg = _extractor(server).extract([*server.records(["02_clear_lungs"]), twin])
    assert server.calls["02_clear_lungs"] == 1
    assert {m.study for m in kg.mentions} == {"CXR2926_IM-1328", "twin"}


def test_worker_count_does_not_change_the_graph(server: ReplayServer) -> None:
    records = server.records(HAPPY)
    assert _extractor(server, max_workers=1).extract(records) == _extractor(server, max_workers=4).extract(records)


# ---- bad output, strict and lenient ---------------------------------------------------------

@pytest.mark.parametrize(("name", "message"), [
    ("06_invalid_json", r"study 'CXR826_IM-2355': model output is not valid JSON \(line 1"),
    ("07_schema_violation", r"\$\.entities\[1\]\.certainty: Input should be 'present', .* \(got 'maybe'\)"),
    ("08_unknown_relation", r"\$\.relations\[0\]\.relation: unknown relation type 'causes'"),
])
def test_bad_output_strict_raises(server: ReplayServer, tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        _extractor(server, tmp_path).extract(server.records(["01_normal_hernia", name]))
    assert not any("mediastinum" in p.read_text() for p in tmp_path.glob("*.json"))   # bad output not cached


def test_bad_output_lenient_skips_and_counts(server: ReplayServer) -> None:
    policy = ErrorPolicy.lenient()
    x = _extractor(server, policy=policy)
    kg = x.extract(server.records(["01_normal_hernia", "06_invalid_json", "07_schema_violation",
                                   "08_unknown_relation", "10_overloaded"]), )
    kg.validate()
    assert [s.id for s in kg.studies] == ["CXR2384_IM-0942"]
    assert policy.skipped == x.stats.skipped == 4
    assert "CXR2871_IM-1277" in policy.summary() and "gave up after 5 attempts" in policy.summary()


def test_retries_honour_retry_after_and_run_out(server: ReplayServer, sleeps: list[float]) -> None:
    x = _extractor(server, max_retries=2)
    with pytest.raises(DataError, match="gave up after 3 attempts, last: HTTP 503: .*overloaded"):
        x.extract(server.records(["10_overloaded"]))
    assert server.calls["10_overloaded"] == 3 and x.stats.retries == 2
    assert sleeps == [7.0, 7.0]                                             # the server's Retry-After


def test_timeout_is_retried(server: ReplayServer) -> None:
    x = _extractor(server, timeout_s=0.3)
    kg = x.extract(server.records(["11_slow_then_ok"]))
    assert server.calls["11_slow_then_ok"] == 2 and x.stats.retries == 1
    assert ("C0024117", "CXR1921_IM-0598") in {(m.entity, m.study) for m in kg.mentions}   # COPD


def test_unauthorized_is_never_retried_or_skipped(server: ReplayServer) -> None:
    x = _extractor(server, policy=ErrorPolicy.lenient())
    with pytest.raises(LLMConfigError, match=r"HTTP 401 \(check base_url, model and \$R2GENKG_TEST_KEY\)"):
        x.extract(server.records(["09_unauthorized"]))
    assert server.calls["09_unauthorized"] == 1


def test_refused_connection_is_retried_then_reported() -> None:
    config = LLMConfig(base_url="http://127.0.0.1:9", max_retries=1, timeout_s=2.0)
    x = LLMExtractor(config)
    with pytest.raises(DataError, match="gave up after 2 attempts"):
        x.output_of("No effusion.")
    assert x.stats.retries == 1


# ---- schema and parsing ---------------------------------------------------------------------

GOOD = {"entities": [{"text": "effusion", "type": "disorder", "certainty": "absent"}],
        "relations": [{"head": "effusion", "relation": "located_at", "tail": "pleural"}]}


@pytest.mark.parametrize(("doc", "message"), [
    ([], r"^\$: Input should be a valid dictionary"),
    ({"entities": []}, r"^\$\.relations: Field required$"),
    ({"entities": {}, "relations": []}, r"^\$\.entities: Input should be a valid list"),
    ({"entities": [{"text": "x", "type": "disorder"}], "relations": []}, r"^\$\.entities\[0\]\.certainty: Field required"),
    ({"entities": [{"text": " ", "type": "disorder", "certainty": "absent"}], "relations": []}, r"^\$\.entities\[0\]\.text: empty string"),
    ({"entities": [{"text": "x", "type": "organ", "certainty": "absent"}], "relations": []}, r"^\$\.entities\[0\]\.type: Input should be 'anatomy'.*\(got 'organ'\)"),
    ({"entities": [], "relations": [{"head": 3, "relation": "modify", "tail": "x"}]}, r"^\$\.relations\[0\]\.head: Input should be a valid string \(got 3\)"),
    ({"entities": [], "relations": [{"head": "x", "relation": 3, "tail": "y"}]}, r"^\$\.relations\[0\]\.relation: Input should be 'modify'"),
])
def test_schema_violations_name_the_field(doc: Any, message: str) -> None:
    with pytest.raises(LLMOutputError, match=message):
        parse_output(json.dumps(doc))


def test_parse_output() -> None:
    assert parse_output(json.dumps(GOOD)).model_dump(mode="json") == GOOD
    assert parse_output("```json\n" + json.dumps(GOOD) + "\n```").model_dump(mode="json") == GOOD
    spelled = {**GOOD, "relations": [{"head": "effusion", "relation": "Located At", "tail": "pleural"}]}
    assert parse_output(json.dumps(spelled)).relations[0].relation is Relation.LOCATED_AT
    with pytest.raises(LLMOutputError, match="not valid JSON"):
        parse_output("Sure! Here are the entities:")


def test_relation_ends_must_be_known(server: ReplayServer, tmp_path: Path) -> None:
    x = _extractor(server, tmp_path)
    doc = {"entities": [], "relations": [{"head": "zzqx", "relation": "modify", "tail": "effusion"}]}
    path = tmp_path / f"{x.config.cache_key('r')}.json"
    path.write_text(json.dumps({"content": json.dumps(doc)}))
    with pytest.raises(LLMOutputError, match=r"\$\.relations\[0\]\.head: 'zzqx' is neither"):
        x.read("r")


def test_unicode_texts_and_ids_survive(server: ReplayServer, tmp_path: Path) -> None:
    x = _extractor(server, tmp_path)
    report = 'Opacité "naïve" \\ ø.'
    doc = {"entities": [{"text": 'Opacité "naïve" \\', "type": "disorder", "certainty": "present"},
                        {"text": "ø", "type": "anatomy", "certainty": "present"}],
           "relations": [{"head": 'opacité "naïve" \\', "relation": "located_at", "tail": "Ø"}]}
    (tmp_path / f"{x.config.cache_key(report)}.json").write_text(json.dumps({"content": json.dumps(doc)}))
    kg = x.extract([StudyRecord('id "q" \\ é', (Path("a.png"),), report, dataset="other")])
    kg.validate()
    assert [e.key for e in kg.entities] == ['opacité "naïve" \\', "ø"]
    assert kg.triples[0].head == 'opacité "naïve" \\' and kg.studies[0].id == 'id "q" \\ é'
    assert not server.requests


@pytest.mark.parametrize(("options", "field_name"), [
    ({"max_workers": 0}, "max_workers"), ({"max_retries": -1}, "max_retries"),
    ({"timeout_s": 0}, "timeout_s"), ({"base_url": "127.0.0.1:8000"}, "base_url"), ({"model": ""}, "model"),
])
def test_config_validation_names_the_field(options: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValueError, match=f"LLMConfig.{field_name}"):
        LLMConfig(**options)


def test_endpoint_with_or_without_v1() -> None:
    assert LLMConfig(base_url="http://h:1").api_base == "http://h:1/v1"
    assert LLMConfig(base_url="http://h:1/v1/").endpoint == "http://h:1/v1/chat/completions"
