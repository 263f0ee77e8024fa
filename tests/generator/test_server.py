"""The OpenAI-compatible API, served by uvicorn on a free loopback port and called with the
official `openai` client: reports from PNG / JPEG / DICOM views, streaming, the r2genkg extension,
auth, every input limit, pydantic's refusals as OpenAI errors naming the field (tensors, unknown
fields, bad parts), remote URLs, /metrics read with prometheus_client's parser, and 16 concurrent
requests batched."""
from __future__ import annotations

import asyncio
import base64
import http.client
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import openai
import pytest

from generator.api_schema import ServerConfig
from generator.batcher import DynamicBatcher, Job, QueueFullError
from generator.engine import StudyInput
from generator.server import create_app
from generator.settings import GenerationSettings
from tests.generator.api_client import KEY, ask, data_uri, message, pixels

pytestmark = pytest.mark.slow


def test_report_equals_the_engine_on_the_same_pixels(served, engine):
    view = pixels(1)
    resp = ask(served.client(), data_uri(view), max_tokens=24, temperature=0)
    same = replace(engine.default_settings, max_new_tokens=24, temperature=0.0)   # what the server derives
    direct = engine.generate([StudyInput("x", [view])], same)[0]
    assert resp.choices[0].message.content == direct.report and direct.report
    assert resp.choices[0].finish_reason in {"stop", "length"}
    assert resp.usage.completion_tokens == direct.completion_tokens
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    ext = resp.model_extra["r2genkg"]
    assert len(ext["observations"]) == 14 and ext["observations"] == pytest.approx(direct.probabilities, abs=1e-5)
    assert ext["evidence"]["seeds"] and ext["model_id"] == engine.model_id
    assert ext["warnings"] == direct.warnings and isinstance(ext["warnings"], list)


def test_two_views_jpeg_and_dicom(served, tmp_path):
    from tests.cxr.test_images import write_dicom

    two = ask(served.client(), data_uri(pixels(2)), data_uri(pixels(3), "JPEG"), max_tokens=16)
    assert two.choices[0].message.content
    dcm = write_dicom(tmp_path / "v.dcm", pixels(4, 80).astype(np.uint16) * 16, 12)
    uri = "data:application/dicom;base64," + base64.b64encode(dcm.read_bytes()).decode()
    assert ask(served.client(), uri, max_tokens=16).choices[0].message.content


def test_num_beams_is_the_beam_width_and_refuses_sampling(served, engine):
    view = pixels(11)
    resp = ask(served.client(), data_uri(view), max_tokens=24, extra_body={"num_beams": 3})
    beam3 = replace(engine.default_settings, max_new_tokens=24, num_beams=3)
    assert resp.choices[0].message.content == engine.generate([StudyInput("x", [view])], beam3)[0].report
    with pytest.raises(openai.BadRequestError) as err:
        ask(served.client(), data_uri(view), max_tokens=8, temperature=0.7, extra_body={"num_beams": 3})
    assert err.value.body["param"] == "num_beams" and "deterministic" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        ask(served.client(), data_uri(view), max_tokens=8, extra_body={"num_beams": 9})


def test_streaming_equals_the_whole_response(served):
    uri = data_uri(pixels(5))
    whole = ask(served.client(), uri, max_tokens=32).choices[0].message.content
    chunks = list(ask(served.client(), uri, max_tokens=32, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    # sentence by sentence (repeated sentences are dropped, so a sentence goes out once it is known
    # to be new): at least one content chunk, each but the last ending a sentence
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert pieces and all(p.rstrip().endswith(".") for p in pieces[:-1])
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and "r2genkg" in finals[0].model_extra
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_auth_is_required(served):
    with pytest.raises(openai.AuthenticationError) as err:
        ask(served.client("wrong-key"), data_uri(pixels(6)))
    assert err.value.status_code == 401 and "API key" in err.value.message
    req = urllib.request.Request(f"{served.url}/v1/models")
    with pytest.raises(urllib.error.HTTPError) as no_key:
        urllib.request.urlopen(req, timeout=10)
    assert no_key.value.code == 401
    assert json.loads(no_key.value.read())["error"]["code"] == "invalid_api_key"
    assert served.client().models.list().data[0].id == "r2genkg"


@pytest.mark.parametrize(("urls", "kwargs", "status", "needle"), [
    (lambda: [data_uri(np.random.default_rng(0).integers(0, 256, (400, 400), dtype=np.uint8))], {}, 413,
     "over the limit of 65,536 bytes"),
    (lambda: [data_uri(np.zeros((600, 600), np.uint8))], {}, 413, "over the limit of 262,144"),
    (lambda: ["data:image/png;base64," + base64.b64encode(b"GIF89a not a png at all").decode()], {}, 400,
     "PNG, JPEG or DICOM"),
    (lambda: ["data:image/png;base64,@@@not-base64@@@"], {}, 400, "base64"),
    (lambda: ["data:image/png,rawdata"], {}, 400, "malformed data URI"),
    (lambda: ["http://198.51.100.7/cxr.png"], {}, 400, "remote image URLs are refused"),
    (lambda: ["file:///etc/passwd"], {}, 400, "not accepted"),
    (lambda: [data_uri(pixels(7))] * 4, {}, 400, "over the limit of 3 views"),
    (list, {}, 400, "no image"),
    (lambda: [data_uri(pixels(8))], {"max_tokens": 4096}, 400, "max_tokens"),
    (lambda: [data_uri(pixels(9))], {"n": 2}, 400, "n=1"),
    (lambda: [data_uri(pixels(10))], {"extra_body": {"prompt_embeds": "AAAA"}}, 400, "never takes tensors"),
    (lambda: [data_uri(pixels(10))], {"frequency_penalty": 0.5}, 400, "frequency_penalty: unknown field"),
    (lambda: [data_uri(pixels(10))], {"max_tokens": 0}, 400, "max_tokens: Input should be greater than"),
    (lambda: [data_uri(pixels(10))], {"temperature": "0.5"}, 400, "temperature: Input should be a valid number"),
])
def test_bad_requests_get_openai_errors_and_the_server_lives(served, urls, kwargs, status, needle):
    with pytest.raises(openai.APIStatusError) as err:
        ask(served.client(), *urls(), **kwargs)
    assert err.value.status_code == status
    body = err.value.response.json()["error"]
    assert needle in body["message"] and body["type"]
    assert served.get("/health")[0] == 200


def test_embeds_as_a_content_part_are_refused(served):
    msgs = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri(pixels(11))}},
                                         {"type": "prompt_embeds", "prompt_embeds": "AAAA"}]}]
    with pytest.raises(openai.BadRequestError, match="never accepted") as err:
        served.client().chat.completions.create(model="r2genkg", messages=msgs)
    error = err.value.response.json()["error"]
    assert error["param"] == "messages.0.content.1.type" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages.0.content.1.type: 'prompt_embeds' is not accepted")
    assert "\n" not in error["message"] and "AAAA" not in error["message"]   # one line, no input echoed


@pytest.mark.parametrize(("part", "param"), [
    ({"type": "image_url", "image_url": {"url": 5}}, "messages.0.content.0.image_url.url"),
    ({"type": "image_url", "image_url": {"url": "data:,", "tensor": "AAAA"}}, "messages.0.content.0.image_url.tensor"),
    ({"type": "text"}, "messages.0.content.0.text"),
    ({"text": "no type"}, "messages.0.content.0.type"),
])
def test_a_bad_part_is_named_by_its_path(served, part, param):
    with pytest.raises(openai.BadRequestError) as err:
        served.client().chat.completions.create(model="r2genkg", messages=[{"role": "user", "content": [part]}])
    assert err.value.response.json()["error"]["param"] == param


def test_a_body_that_is_not_json_is_an_openai_error(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        conn.request("POST", "/v1/chat/completions", b'{"model": ', {"Authorization": f"Bearer {KEY}",
                                                                    "Content-Type": "application/json"})
        resp = conn.getresponse()
        error = json.loads(resp.read())["error"]
    finally:
        conn.close()
    assert resp.status == 400 and error["message"].startswith("request body is not JSON")
    assert error["type"] == "invalid_request_error" and error["code"] == "json_invalid"


def test_every_response_is_counted_by_status(served):
    def by_status() -> dict[int, float]:
        m = served.metrics()
        return {s: m.get(("r2genkg_http_responses_total", (("status", str(s)),)), 0.0) for s in (200, 400, 401, 404)}

    before = by_status()
    assert served.get("/v1/models")[0] == 401                       # answered by the guard
    assert served.get("/nowhere")[0] == 404                         # by the HTTPException handler
    with pytest.raises(openai.BadRequestError):                     # by parse_request
        served.client().chat.completions.create(model="r2genkg", messages=[])
    after = by_status()
    assert {s: after[s] - before[s] for s in before} == {200: 1, 400: 1, 401: 1, 404: 1}   # 200: the first scrape


def test_two_apps_in_one_process_keep_their_own_metrics(engine):
    one, two = (create_app(engine, ServerConfig(api_keys=(KEY,))) for _ in range(2))
    assert one.state.registry is not two.state.registry


def test_a_body_over_the_limit_is_refused_before_it_is_read(served):
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:   # announce 100 MB, send almost nothing: the answer must not wait for the rest
        conn.putrequest("POST", "/v1/chat/completions")
        for name, value in (("Authorization", f"Bearer {KEY}"), ("Content-Type", "application/json"),
                            ("Content-Length", str(100 * 1024 * 1024))):
            conn.putheader(name, value)
        conn.endheaders(b"{")
        resp = conn.getresponse()
        error = json.loads(resp.read())["error"]
    finally:
        conn.close()
    assert resp.status == 413 and "over the limit" in error["message"] and error["code"] == "body_too_large"
    assert served.get("/health")[0] == 200


def test_engine_failure_is_a_500_and_the_server_lives(served, engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "generate", broken)
    with pytest.raises(openai.InternalServerError) as err:
        ask(served.client(), data_uri(pixels(12)), max_tokens=8)
    assert err.value.status_code == 500 and "generation failed" in err.value.message
    monkeypatch.undo()
    assert ask(served.client(), data_uri(pixels(12)), max_tokens=8).choices[0].message.content


def test_a_streaming_client_that_hangs_up_does_not_break_the_worker(served):
    body = json.dumps({"model": "r2genkg", "messages": message(data_uri(pixels(13))), "max_tokens": 40,
                       "stream": True})
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {KEY}",
                                                        "Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")   # the role chunk, then hang up
    conn.close()
    assert ask(served.client(), data_uri(pixels(14)), max_tokens=8).choices[0].message.content
    assert served.get("/health")[0] == 200


def test_a_full_queue_refuses_more_work():
    batcher = DynamicBatcher(engine=None, max_batch=1, max_wait_ms=0, max_queue=1)   # type: ignore[arg-type]
    loop = asyncio.new_event_loop()

    def job(name: str) -> Job:
        return Job(StudyInput(name, [np.zeros((8, 8), np.uint8)]), GenerationSettings(), loop.create_future())

    try:
        batcher.submit(job("a"))
        with pytest.raises(QueueFullError, match="1 requests are waiting"):
            batcher.submit(job("b"))
        assert batcher.concurrency.in_flight == 1   # the refused one was never counted
    finally:
        batcher.worker.shutdown()
        loop.close()


def test_sixteen_concurrent_requests_are_batched(served):
    names = ("r2genkg_batches_total", "r2genkg_studies_generated_total", "r2genkg_batch_size_count",
             "r2genkg_batch_size_sum", "r2genkg_request_seconds_count", "r2genkg_tokens_generated_total")
    before = served.metrics()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: ask(served.client(), data_uri(pixels(100 + i)), max_tokens=24),
                                range(16)))
    assert all(r.choices[0].message.content for r in results)
    after = served.metrics()
    batches, studies, sizes, size_sum, requests, tokens = (after[(n, ())] - before[(n, ())] for n in names)
    assert studies == 16 and batches < 16, f"{batches} batches for 16 requests: nothing was batched"
    assert sizes == batches and size_sum == 16 and requests == 16
    assert tokens == sum(r.usage.completion_tokens for r in results)
    assert after[("r2genkg_queue_depth", ())] == 0
    status, health = served.get("/health")
    assert status == 200 and json.loads(health)["status"] == "ok"


def test_config_refuses_auth_without_keys():
    with pytest.raises(ValueError, match="R2GENKG_API_KEYS"):
        ServerConfig(api_keys=())
    assert ServerConfig(api_keys=(), auth=False).auth is False


def _post_json(url: str, body: bytes, key: str | None = KEY) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_viewer_labels_texts_behind_the_key(served):
    url = served.url + "/v1/r2genkg/label"
    status, body = _post_json(url, json.dumps({"reports": ["Cardiomegaly. No effusion.", "The lungs are clear."]}).encode())
    assert status == 200 and body == {"positive": [["Cardiomegaly"], []]}
    assert _post_json(url, b'{"reports": ["x"]}', key=None)[0] == 401
    status, body = _post_json(url, b'{"reports": "not a list"}')
    assert status == 400 and "reports" in body["error"]["message"]
    status, body = _post_json(url, b"not json")
    assert status == 400 and "not JSON" in body["error"]["message"]
    status, body = _post_json(url, json.dumps({"reports": [""] * 10_001}).encode())
    assert status == 400 and "at most 10000" in body["error"]["message"]


def test_the_viewer_page_is_static_and_confined_to_this_server(served):
    import urllib.request

    with urllib.request.urlopen(served.url + "/ui", timeout=10) as resp:
        policy = resp.headers["Content-Security-Policy"]
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    for path in ("/ui/static/viewer.js", "/ui/static/viewer.css"):
        assert served.get(path)[0] == 200
    for path in ("/ui/static/.hidden.js", "/ui/static/%2E%2E%2Fserver.py", "/ui/static/nothing.js",
                 "/ui/static/server.py"):
        assert served.get(path)[0] == 404, path


def test_the_viewer_opens_result_files_under_runs_dir_only(engine, tmp_path):
    from generator.api_schema import ServerConfig
    from generator.server import create_app
    from tests.generator.api_client import Served

    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "out.jsonl").write_text('{"id": "s1", "report": "x"}\n')
    (runs / "a" / "out.failures.jsonl").write_text("{}\n")
    (runs / "notes.txt").write_text("no")
    (tmp_path / "secret.jsonl").write_text('{"id": "secret"}\n')
    s = Served(create_app(engine, ServerConfig(api_keys=(KEY,), runs_dir=runs.resolve())))
    try:
        def get(path: str, key: str | None = KEY) -> tuple[int, str]:
            import urllib.error
            import urllib.request

            request = urllib.request.Request(s.url + path, headers={"Authorization": f"Bearer {key}"} if key else {})
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        status, body = get("/v1/r2genkg/runs")
        assert status == 200 and json.loads(body)["files"] == ["a/out.jsonl"]
        assert get("/v1/r2genkg/runs", key=None)[0] == 401
        assert get("/v1/r2genkg/runs/file?path=a/out.jsonl") == (200, '{"id": "s1", "report": "x"}\n')
        for bad in ("../secret.jsonl", "%2E%2E/secret.jsonl", str(tmp_path / "secret.jsonl"), "notes.txt", "a/none.jsonl"):
            status, body = get(f"/v1/r2genkg/runs/file?path={bad}")
            assert status == 404 and "secret" not in body.split("message")[0], bad
    finally:
        s.stop()


def test_without_runs_dir_the_viewer_opens_no_server_file(served):
    import urllib.error
    import urllib.request

    def get(path: str) -> tuple[int, dict]:
        request = urllib.request.Request(served.url + path, headers={"Authorization": f"Bearer {KEY}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert get("/v1/r2genkg/runs") == (200, {"runs_dir": None, "files": []})
    status, body = get("/v1/r2genkg/runs/file?path=x.jsonl")
    assert status == 404 and "--runs-dir" in body["error"]["message"]
