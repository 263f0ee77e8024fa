"""The API against malformed requests sent as raw HTTP (what a fuzzer or a careless client sends):
never a 500, always OpenAI's error object with a status a client can act on, counted in /metrics;
OpenAI's contract for ``model``, ``temperature``, ``stream`` and ``seed``; 404 / 405 as OpenAI
errors; API keys in query strings never reach the access log."""
from __future__ import annotations

import http.client
import json
import logging

import pytest

from generator.server import create_app
from tests.generator.api_client import KEY, Served, data_uri, message, pixels

pytestmark = pytest.mark.slow
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def post(served: Served, body: bytes | str, path: str = "/v1/chat/completions",
         method: str = "POST") -> tuple[int, dict | str, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    try:
        conn.request(method, path, body, HEADERS)
        resp = conn.getresponse()
        raw = resp.read().decode()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw), dict(resp.headers)
    except json.JSONDecodeError:
        return resp.status, raw, dict(resp.headers)


def chat(**fields) -> str:
    body = {"model": "r2genkg", "messages": message(data_uri(pixels(21))), "max_tokens": 8, **fields}
    return json.dumps(body)


def error_of(answer: dict | str) -> dict:
    assert isinstance(answer, dict) and set(answer) == {"error"}, answer
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code"} and "\n" not in error["message"]
    return error


def deep_json(depth: int) -> str:
    return '{"model": "r2genkg", "messages": ' + "[" * depth + "]" * depth + "}"


def with_part(part: dict) -> str:
    return json.dumps({"model": "r2genkg", "messages": [{"role": "user", "content": [part]}]})


MALFORMED = {
    "json nested 100,000 deep": (deep_json(100_000), 400, "nested"),
    "part type is a list": (with_part({"type": ["image_url"], "image_url": {"url": "data:,"}}), 400,
                            "messages.0.content.0.type"),
    "part type is an object": (with_part({"type": {"a": 1}}), 400, "messages.0.content.0.type"),
    "unparsable image url": (with_part({"type": "image_url", "image_url": {"url": "http://[::1/x.png"}}), 400,
                             "not a valid URL"),
    "seed 2**70": (chat(seed=2 ** 70), 400, "seed"),
    "seed 2**70 streaming": (chat(seed=2 ** 70, stream=True), 400, "seed"),
    "seed -1": (chat(seed=-1), 400, "seed"),
    "temperature 2.5": (chat(temperature=2.5), 400, "temperature"),
    "temperature -1": (chat(temperature=-1), 400, "temperature"),
    "temperature Infinity": (chat(temperature=float("inf")), 400, "temperature"),
    "temperature NaN": (chat(temperature=float("nan")), 400, "temperature"),
    "top_p NaN": (chat(top_p=float("nan")), 400, "top_p"),
    "stream as a string": (chat(stream="false"), 400, "stream"),
    "max_tokens 2**70": (chat(max_tokens=2 ** 70), 400, "max_tokens"),
    "messages an object": (json.dumps({"model": "r2genkg", "messages": {"role": "user"}}), 400, "messages"),
    "body a list": ("[1, 2]", 400, "request body"),
    "body a string": ('"hello"', 400, "request body"),
    "body not utf-8": (b'{"model": "\xff\xfe"}', 400, "not JSON"),
    "a lone surrogate in a string": ('{"model": "\\ud800", "messages": []}', 400, ""),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_request_is_a_4xx_naming_the_problem(served, case):
    body, status, needle = MALFORMED[case]
    got, answer, _ = post(served, body)
    assert got == status, answer
    error = error_of(answer)
    assert needle in error["message"] + (error["param"] or "") and error["type"] == "invalid_request_error"
    assert served.get("/health")[0] == 200


def test_an_unknown_model_is_404_model_not_found(served):
    got, answer, _ = post(served, chat(model="gpt-4o"))
    error = error_of(answer)
    assert got == 404 and error["code"] == "model_not_found" and "gpt-4o" in error["message"]
    assert error["param"] == "model"


def test_a_valid_seed_and_temperature_are_still_served(served):
    got, answer, _ = post(served, chat(seed=2 ** 63 - 1, temperature=2.0, top_p=0.9))
    assert got == 200 and answer["choices"][0]["message"]["content"]


def test_not_found_and_method_not_allowed_are_openai_errors(served):
    for method, path, status in (("GET", "/v1/nowhere", 404), ("GET", "/v1/chat/completions", 405),
                                 ("DELETE", "/v1/models", 405), ("GET", "/nowhere", 404)):
        got, answer, headers = post(served, b"", path, method)
        error = error_of(answer)
        assert got == status and error["type"] == "invalid_request_error", (method, path, answer)
        if status == 405:
            assert "allow" in {k.lower() for k in headers}


def test_an_unhandled_error_is_a_counted_500_without_internals(served, monkeypatch):
    from generator import server

    def broken(*args, **kwargs):
        raise KeyError("secret internal detail")

    monkeypatch.setattr(server, "read_settings", broken)
    before = served.metrics().get(("r2genkg_http_responses_total", (("status", "500"),)), 0.0)
    got, answer, _ = post(served, chat())
    error = error_of(answer)
    assert got == 500 and error["type"] == "server_error" and "secret" not in error["message"]
    after = served.metrics().get(("r2genkg_http_responses_total", (("status", "500"),)), 0.0)
    assert after - before == 1


def test_query_strings_on_v1_never_reach_the_access_log(engine):
    from generator.api_schema import ServerConfig
    from generator.server import access_log_filter

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    s = Served(create_app(engine, ServerConfig(api_keys=(KEY,))))
    access, handler = logging.getLogger("uvicorn.access"), Lines()
    level = access.level
    access.addFilter(access_log_filter)
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        s.get("/v1/models?api_key=sk-leaked-123")
        s.get("/health?probe=1")
    finally:
        access.removeFilter(access_log_filter)
        access.removeHandler(handler)
        access.setLevel(level)
        s.stop()
    assert any("/v1/models" in line for line in handler.lines), handler.lines
    assert not any("sk-leaked" in line for line in handler.lines), handler.lines
    assert any("/health?probe=1" in line for line in handler.lines), handler.lines   # only /v1 is cut


def test_views_beyond_max_views_are_refused_not_dropped(served, engine):
    assert engine.max_views == 2
    got, answer, _ = post(served, json.dumps({"model": "r2genkg", "messages": message(
        *(data_uri(pixels(30 + i)) for i in range(3)))}))
    error = error_of(answer)
    assert got == 400 and "at most 2 views" in error["message"] and error["code"] == "too_many_images"


def test_the_response_says_what_happened_to_each_view(served):
    import numpy as np

    flat = np.full((96, 96), 12, dtype=np.uint8)
    got, answer, _ = post(served, json.dumps({"model": "r2genkg", "max_tokens": 8,
                                              "messages": message(data_uri(pixels(40)), data_uri(flat))}))
    assert got == 200, answer
    views = answer["r2genkg"]["views"]
    assert [(v["view"], v["used"], v["reason"]) for v in views] == [("image 0", True, None), ("image 1", True, None)]
    assert views[0]["warnings"] == [] and "nearly flat" in views[1]["warnings"][0]


def test_decoded_bytes_are_bounded_per_request(engine):
    """Two 16-bit 300×300 PNGs decode to 180,000 bytes each: under a 300,000-byte request limit the
    second is refused (413) from its header; one alone is served."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from generator.api_schema import ServerConfig

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 4096, (300, 300), dtype=np.uint16)).save(buf, "PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    s = Served(create_app(engine, ServerConfig(api_keys=(KEY,), max_decoded_bytes=300_000)))
    try:
        got, answer, _ = post(s, json.dumps({"model": "r2genkg", "messages": message(uri, uri)}))
        error = error_of(answer)
        assert got == 413 and error["code"] == "image_too_large", answer
        assert "image 1: decodes to 180,000 bytes (300×300, PNG mode I;16)" in error["message"]
        assert "over the limit of 300,000 decoded bytes per request" in error["message"]
        got, answer, _ = post(s, json.dumps({"model": "r2genkg", "max_tokens": 8, "messages": message(uri)}))
        assert got == 200, answer
    finally:
        s.stop()
