"""OpenAI-compatible API: POST /v1/chat/completions with chest X-ray images → the report.

Request: OpenAI chat messages (generator/api_schema.py validates them; generator/api_inputs.py
turns them into a study and decoding settings); the last user message's ``image_url`` parts are
the study's views. Response: ``choices[0].message.content`` is the report; ``r2genkg`` carries the
14 observation probabilities and the evidence (KG seeds and nodes, retrieved token ids);
``stream: true`` sends OpenAI chunks as server-sent events. API keys are on unless disabled.
``/metrics`` is prometheus_client's exposition of one registry per app.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxr.labeler import label_reports
from cxr.observations import FINDINGS, OBSERVATIONS, UncertainPolicy, positive_mask
from generator.api_inputs import image_urls, read_settings, read_study
from generator.api_schema import APIError, ServerConfig, parse_request
from generator.backends import BackendError
from generator.batcher import DynamicBatcher, Job, QueueFullError
from generator.engine import Engine, StudyInput
from generator.model import GenerationResult

log = logging.getLogger(__name__)


class QueryStringFilter(logging.Filter):
    """Cuts the query string from uvicorn's access-log lines for /v1 paths: a client that sends
    ``?api_key=…`` must not have its key written to the log. uvicorn's access record carries
    (client, method, path with query, HTTP version, status) as its args."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and args[2].startswith("/v1"):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], *args[3:])
        return True


access_log_filter = QueryStringFilter()   # serve adds it to the "uvicorn.access" logger


# ---- responses --------------------------------------------------------------------------------
def extension(result: GenerationResult, study: StudyInput, engine: Engine, seconds: float) -> dict[str, Any]:
    return {"observations": result.probabilities, "states": result.states,
            "positive": result.positive, "coverage": result.coverage, "warnings": result.warnings,
            "sentences": result.sentences, "thresholds": result.thresholds, "attention": result.attention,
            "evidence": asdict(result.evidence), "views": [asdict(n) for n in study.notes],
            "model_id": engine.model_id, "timing_ms": round(seconds * 1000, 1)}


MAX_LABEL_REPORTS = 10_000
MAX_RUN_FILES = 2000


def run_files(root: Path | None) -> list[str]:
    """The *.jsonl files under ``root`` (paths relative to it, sorted), run_batch's failure lists left out."""
    if root is None:
        return []
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jsonl")
                   if p.is_file() and not p.name.endswith(".failures.jsonl"))
    return found[:MAX_RUN_FILES]


def read_run_file(root: Path | None, relative: str) -> bytes:
    """One result file under ``root``: a 404 for anything that is not a *.jsonl inside it."""
    if root is None:
        raise APIError(404, "this server opens no run files (start it with --runs-dir DIR)", code="no_runs_dir")
    root = root.resolve()
    path = (root / relative).resolve()          # symlinks followed: one that leads out is refused too
    if not path.is_relative_to(root) or path.suffix != ".jsonl" or not path.is_file():
        raise APIError(404, f"no result file {relative[:200]!r} under --runs-dir", param="path")
    return path.read_bytes()
UI_DIR = Path(__file__).parent / "ui"
UI_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
            ".css": "text/css; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
# The page may talk to this server only: scripts, styles and requests from here, images from the
# user's own files (blob:/data:), nothing from any CDN.
UI_POLICY = ("default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
             "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def ui_file(name: str) -> Response:
    """One file of the viewer (generator/ui), by bare name; anything else is a 404."""
    path = UI_DIR / name
    if "/" in name or "\\" in name or name.startswith(".") or path.suffix not in UI_TYPES or not path.is_file():
        raise StarletteHTTPException(404, f"no viewer file {name!r}")
    return Response(path.read_bytes(), media_type=UI_TYPES[path.suffix],
                    headers={"Content-Security-Policy": UI_POLICY, "X-Content-Type-Options": "nosniff",
                             "Cache-Control": "no-cache"})


def usage(result: GenerationResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


class HTTPMetrics:
    """Responses by status and chat latency, on the app's registry beside the batcher's metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.responses = Counter("r2genkg_http_responses", "HTTP responses by status code", ["status"],
                                 registry=registry)
        self.latency = Histogram("r2genkg_request_seconds", "POST /v1/chat/completions until the response "
                                 "starts (streams: their first chunk)", registry=registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))


def create_app(engine: Engine, config: ServerConfig) -> FastAPI:
    registry = CollectorRegistry()   # per app: two apps in one process keep their own counts
    batcher = DynamicBatcher(engine, config.max_batch, config.max_wait_ms, config.max_queue, registry,
                             config.fill_wait_ms)
    metrics = HTTPMetrics(registry)
    keys = [k.encode() for k in config.api_keys]
    decodes = asyncio.Semaphore(config.max_decodes)   # bounds the decoded images in memory at once

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="R2GenKG", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.batcher, app.state.registry = batcher, registry

    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0 = time.perf_counter()
        try:
            if request.url.path.startswith("/v1/"):
                _authorise(request)
                if request.method == "POST":
                    length = request.headers.get("content-length")
                    if length is None:
                        raise APIError(411, "Content-Length is required")
                    if not length.isdigit() or int(length) > config.max_body_bytes:
                        raise APIError(413, f"request body of {length} bytes is over the limit of "
                                       f"{config.max_body_bytes:,} bytes", code="body_too_large")
            response = await call_next(request)
        except APIError as exc:
            response = exc.response()
        except Exception as exc:   # answered here, not by an outer handler, so that it is counted
            log.exception("unhandled error")
            response = APIError(500, f"internal error: {type(exc).__name__}", type_="server_error").response()
        metrics.responses.labels(status=str(response.status_code)).inc()
        if request.url.path == "/v1/chat/completions":
            metrics.latency.observe(time.perf_counter() - t0)
        return response

    def _authorise(request: Request) -> None:
        if not config.auth:
            return
        header = request.headers.get("authorization", "")
        token = header[7:].strip().encode() if header.lower().startswith("bearer ") else b""
        if not token or not any(secrets.compare_digest(token, k) for k in keys):
            raise APIError(401, "missing or invalid API key (Authorization: Bearer <key>)",
                           type_="authentication_error", code="invalid_api_key")

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:   # 404, 405, unparsable body
        response = APIError(exc.status_code, str(exc.detail),
                            type_="invalid_request_error" if exc.status_code < 500 else "server_error").response()
        response.headers.update(exc.headers or {})
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_name, "model_id": engine.model_id,
                "engine": engine.backend.kind.value, "queue_depth": batcher.depth}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))   # text 0.0.4 unless asked
        return Response(encode(registry), media_type=content_type)

    # the report viewer: static files of this package, no network beyond this server (docs/viewer.md)
    @app.get("/ui")
    @app.get("/ui/")
    async def viewer() -> Response:
        return ui_file("index.html")

    @app.get("/ui/static/{name}")
    async def viewer_file(name: str) -> Response:
        return ui_file(name)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": 0,
                                            "owned_by": "r2genkg", "r2genkg_model_id": engine.model_id}]}

    @app.get("/v1/r2genkg/runs")
    async def runs() -> dict[str, Any]:
        """The result files the viewer may open: *.jsonl under --runs-dir (failure lists left out)."""
        return {"runs_dir": str(config.runs_dir) if config.runs_dir else None,
                "files": await run_in_threadpool(run_files, config.runs_dir)}

    @app.get("/v1/r2genkg/runs/file")
    async def run_file(path: str) -> Response:
        return Response(await run_in_threadpool(read_run_file, config.runs_dir, path),
                        media_type="application/x-ndjson")

    @app.post("/v1/r2genkg/label")
    async def label(raw: Request) -> dict[str, Any]:
        """The labeler's positive findings of each text: what the viewer compares a report with its reference by."""
        try:
            body = json.loads(await raw.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the body is not JSON: {exc}") from exc
        reports = body.get("reports") if isinstance(body, dict) else None
        if not isinstance(reports, list) or not all(isinstance(r, str) for r in reports):
            raise APIError(400, "expected {\"reports\": [text, …]}", param="reports")
        if len(reports) > MAX_LABEL_REPORTS:
            raise APIError(400, f"{len(reports)} reports; at most {MAX_LABEL_REPORTS} per request", param="reports")
        positive = positive_mask(await run_in_threadpool(label_reports, reports), UncertainPolicy.ZEROS)
        return {"positive": [[o.value for o, yes in zip(OBSERVATIONS, row) if yes and o in FINDINGS]
                             for row in positive]}

    @app.post("/v1/chat/completions")
    async def chat(raw: Request):
        t0 = time.perf_counter()
        request = parse_request(await raw.body())
        if request.model != config.model_name:
            raise APIError(404, f"the model {request.model[:64]!r} does not exist; this server serves "
                           f"{config.model_name!r} (GET /v1/models)", param="model", code="model_not_found")
        settings = read_settings(request, engine.default_settings, config)
        try:
            engine.check(settings)   # what the backend cannot decode (beams on prompt_embeds) is the client's 400
        except BackendError as exc:
            raise APIError(400, str(exc), param="num_beams") from exc
        urls = image_urls(request, config, engine.max_views)   # too many views: refused before waiting
        async with decodes:   # at most config.max_decodes decoding at once, off the event loop
            study = await run_in_threadpool(read_study, urls, config, engine.image_size)
        loop = asyncio.get_running_loop()
        stream = bool(request.stream)
        job = Job(study, settings, loop.create_future(), asyncio.Queue() if stream else None)
        try:
            batcher.submit(job)
        except QueueFullError as exc:
            raise APIError(503, str(exc), type_="server_error", code="overloaded") from exc
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if stream:
            include_usage = request.stream_options is not None and request.stream_options.include_usage
            return StreamingResponse(_sse(job, rid, created, include_usage, t0), media_type="text/event-stream")
        try:
            result = await job.future
        except Exception as exc:
            raise APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type_="server_error") from exc
        return {"id": rid, "object": "chat.completion", "created": created, "model": config.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.report},
                             "finish_reason": result.finish_reason, "logprobs": None}],
                "usage": usage(result), "r2genkg": extension(result, study, engine, time.perf_counter() - t0)}

    async def _sse(job: Job, rid: str, created: int, include_usage: bool, t0: float) -> AsyncIterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            payload = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": config.model_name,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
            return f"data: {json.dumps(payload)}\n\n"

        assert job.deltas is not None
        yield chunk({"role": "assistant", "content": ""})
        waiter = asyncio.ensure_future(asyncio.shield(job.future))
        while True:
            getter = asyncio.ensure_future(job.deltas.get())
            done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                yield chunk({"content": getter.result()})
                continue
            getter.cancel()
            break
        while not job.deltas.empty():
            yield chunk({"content": job.deltas.get_nowait()})
        try:
            result = waiter.result()
        except Exception as exc:  # noqa: BLE001 - the stream has started: report the failure in-band
            err = {"error": {"message": f"generation failed: {type(exc).__name__}", "type": "server_error",
                             "param": None, "code": None}}
            yield f"data: {json.dumps(err)}\n\n"
            return
        yield chunk({}, result.finish_reason, r2genkg=extension(result, job.study, engine, time.perf_counter() - t0))
        if include_usage:
            payload = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": config.model_name,
                       "choices": [], "usage": usage(result)}
            yield f"data: {json.dumps(payload)}\n\n"
        yield "data: [DONE]\n\n"

    return app
