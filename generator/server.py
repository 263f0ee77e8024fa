"""OpenAI-compatible API: POST /v1/chat/completions with chest X-ray images → the report.

Request: OpenAI chat messages; the last user message's ``image_url`` parts are the study's views
(``data:`` URIs of base64 PNG, JPEG or DICOM; remote http(s) URLs only for allowlisted hosts).
Response: ``choices[0].message.content`` is the report; ``r2genkg`` carries the 14 observation
probabilities and the evidence (KG seeds and nodes, retrieved token ids); ``stream: true`` sends
OpenAI chunks as server-sent events. Clients never send tensors or embeddings: a request with
``prompt_embeds`` or any non-text, non-image content is refused (cf. vLLM CVE-2025-62164, where
a client-sent tensor crashed or compromised the server). API keys are on unless disabled.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import secrets
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from cxr.images import ImageTooLargeError, decode_image_bytes
from cxr.records import DataError
from generator.batcher import DynamicBatcher, Job, QueueFullError
from generator.engine import Engine, StudyInput
from generator.model import GenerationResult, positive_observations
from generator.settings import GenerationSettings

log = logging.getLogger(__name__)
DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,(?P<data>.*)$", re.DOTALL)
IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/jpg", "application/dicom", "image/dicom"})
PART_TYPES = frozenset({"text", "image_url"})
FORBIDDEN_FIELDS = ("prompt_embeds", "embeddings", "inputs_embeds", "tensor")


@dataclass
class ServerConfig:
    api_keys: tuple[str, ...] = ()
    auth: bool = True                          # --no-auth turns it off, for local use only
    model_name: str = "r2genkg"
    max_image_bytes: int = 10 * 1024 * 1024    # per image, decoded
    max_pixels: int = 4096 * 4096
    max_images: int = 4
    max_tokens: int = 512
    max_batch: int = 16
    max_wait_ms: float = 5.0
    max_queue: int = 256
    image_url_allowlist: tuple[str, ...] = ()  # hosts whose http(s) image URLs may be fetched
    fetch_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        self.api_keys = tuple(k for k in self.api_keys if k)
        if self.auth and not self.api_keys:
            raise ValueError("API keys are on but none is configured: set R2GENKG_API_KEYS (comma-separated) "
                             "or pass --api-key-file; --no-auth disables auth for local use")
        for name in ("max_image_bytes", "max_pixels", "max_images", "max_tokens", "max_batch", "max_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServerConfig.{name} must be ≥ 1, got {getattr(self, name)}")

    @property
    def max_body_bytes(self) -> int:
        """Base64 images (4/3 of the bytes) plus 1 MiB of JSON."""
        return self.max_images * (self.max_image_bytes * 4 // 3 + 4) + (1 << 20)


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


# ---- request → study --------------------------------------------------------------------------
def _parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "`messages` must be a non-empty list", param="messages")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise APIError(400, "no user message: send the images in a user message", param="messages")
    for m in messages:   # no tensors anywhere, in any message
        content = m.get("content") if isinstance(m, dict) else None
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise APIError(400, f"content part type {kind!r} is not accepted: only text and image_url "
                               "(tensors and embeddings are never accepted)", param="messages")
    content = users[-1].get("content")
    return content if isinstance(content, list) else []


def _image_bytes(url: str, config: ServerConfig, k: int) -> bytes:
    if url.startswith("data:"):
        match = DATA_URI.match(url)
        if match is None:
            raise APIError(400, f"image {k}: malformed data URI (expected data:<mime>;base64,<data>)",
                           param="messages", code="invalid_image")
        mime = (match["mime"] or "").lower()
        if mime and mime not in IMAGE_MIMES:
            raise APIError(400, f"image {k}: media type {mime!r} is not PNG, JPEG or DICOM", param="messages",
                           code="invalid_image")
        payload = match["data"].strip()
        if len(payload) * 3 // 4 > config.max_image_bytes + 3:
            raise _too_large(k, len(payload) * 3 // 4, config)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise APIError(400, f"image {k}: data URI is not valid base64 ({exc})", param="messages",
                           code="invalid_image") from exc
        if len(data) > config.max_image_bytes:
            raise _too_large(k, len(data), config)
        return data
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    if scheme not in {"http", "https"}:
        raise APIError(400, f"image {k}: URL scheme {scheme or '(none)'!r} is not accepted; send a data: URI",
                       param="messages", code="invalid_image")
    if host not in config.image_url_allowlist:
        raise APIError(400, f"image {k}: remote image URLs are refused (host {host!r} is not in the allowlist); "
                       "send the image as a data: URI", param="messages", code="url_not_allowed")
    try:   # allowlisted host only, and no redirects: a redirect could lead anywhere
        with _NO_REDIRECTS.open(url, timeout=config.fetch_timeout_s) as resp:
            data = resp.read(config.max_image_bytes + 1)
    except (OSError, ValueError) as exc:   # URLError, HTTPError (incl. 3xx), timeouts
        raise APIError(400, f"image {k}: could not fetch {url!r}: {exc}", param="messages",
                       code="image_fetch_failed") from exc
    if len(data) > config.max_image_bytes:
        raise _too_large(k, len(data), config)
    return data


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None   # urllib then raises HTTPError for the 3xx


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


def _too_large(k: int, size: int, config: ServerConfig) -> APIError:
    return APIError(413, f"image {k}: {size:,} bytes, over the limit of {config.max_image_bytes:,} bytes",
                    param="messages", code="image_too_large")


def read_study(body: dict[str, Any], config: ServerConfig) -> StudyInput:
    urls = []
    for part in _parts(body):
        if part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise APIError(400, "image_url needs a url string", param="messages")
            urls.append(url)
    if not urls:
        raise APIError(400, "no image: add one image_url part per view of the study", param="messages",
                       code="missing_image")
    if len(urls) > config.max_images:
        raise APIError(400, f"{len(urls)} images, over the limit of {config.max_images} views per study",
                       param="messages", code="too_many_images")
    views = []
    for k, url in enumerate(urls):
        data = _image_bytes(url, config, k)
        try:
            views.append(np.asarray(decode_image_bytes(data, f"image {k}", config.max_pixels)))
        except ImageTooLargeError as exc:
            raise APIError(413, str(exc), param="messages", code="image_too_large") from exc
        except DataError as exc:
            raise APIError(400, str(exc), param="messages", code="invalid_image") from exc
    return StudyInput(f"req-{uuid.uuid4().hex[:12]}", views)


def read_settings(body: dict[str, Any], defaults: GenerationSettings, config: ServerConfig) -> GenerationSettings:
    for name in FORBIDDEN_FIELDS:
        if name in body:
            raise APIError(400, f"`{name}` is not accepted: this API never takes tensors or embeddings from "
                           "clients", param=name)
    if body.get("n", 1) != 1:
        raise APIError(400, "only n=1 is supported", param="n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    settings = defaults
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= config.max_tokens:
            raise APIError(400, f"max_tokens must be an integer in [1, {config.max_tokens}], got {max_tokens!r}",
                           param="max_tokens")
        settings = replace(settings, max_new_tokens=max_tokens)
    temperature, top_p, seed = body.get("temperature"), body.get("top_p"), body.get("seed")
    try:
        if temperature is not None and temperature > 0:   # sampling; beams are for deterministic decoding
            settings = replace(settings, temperature=float(temperature), num_beams=1)
        elif temperature is not None:
            settings = replace(settings, temperature=0.0)
        if top_p is not None:
            settings = replace(settings, top_p=float(top_p))
        if seed is not None:
            settings = replace(settings, seed=int(seed))
    except (TypeError, ValueError) as exc:
        raise APIError(400, f"bad sampling parameter: {exc}", param="temperature") from exc
    return settings


# ---- responses --------------------------------------------------------------------------------
def extension(result: GenerationResult, engine: Engine, seconds: float) -> dict[str, Any]:
    return {"observations": result.probabilities, "positive": [o.value for o in positive_observations(result)],
            "evidence": asdict(result.evidence), "model_id": engine.model_id, "timing_ms": round(seconds * 1000, 1)}


def usage(result: GenerationResult) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


class Metrics:
    def __init__(self) -> None:
        self.responses: dict[int, int] = {}
        self.latency_sum = 0.0
        self.latency_count = 0

    def render(self, batcher: DynamicBatcher) -> str:
        s = batcher.stats
        lines = ["# TYPE r2genkg_http_responses_total counter"]
        lines += [f'r2genkg_http_responses_total{{status="{k}"}} {v}' for k, v in sorted(self.responses.items())]
        lines += ["# TYPE r2genkg_studies_generated_total counter", f"r2genkg_studies_generated_total {s.studies}",
                  "# TYPE r2genkg_tokens_generated_total counter", f"r2genkg_tokens_generated_total {s.tokens}",
                  "# TYPE r2genkg_generation_failures_total counter", f"r2genkg_generation_failures_total {s.failures}",
                  "# TYPE r2genkg_batches_total counter", f"r2genkg_batches_total {s.batches}",
                  "# TYPE r2genkg_batch_size_total counter"]
        lines += [f'r2genkg_batch_size_total{{size="{k}"}} {v}' for k, v in sorted(s.batch_size_counts.items())]
        lines += ["# TYPE r2genkg_queue_depth gauge", f"r2genkg_queue_depth {batcher.depth}",
                  "# TYPE r2genkg_queue_seconds_total counter", f"r2genkg_queue_seconds_total {s.queue_seconds:.6f}",
                  "# TYPE r2genkg_request_seconds summary",
                  f"r2genkg_request_seconds_sum {self.latency_sum:.6f}",
                  f"r2genkg_request_seconds_count {self.latency_count}"]
        return "\n".join(lines) + "\n"


def create_app(engine: Engine, config: ServerConfig) -> FastAPI:
    batcher = DynamicBatcher(engine, config.max_batch, config.max_wait_ms, config.max_queue)
    metrics = Metrics()
    keys = [k.encode() for k in config.api_keys]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="R2GenKG", version="0.1.0", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.batcher, app.state.metrics = batcher, metrics

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
        metrics.responses[response.status_code] = metrics.responses.get(response.status_code, 0) + 1
        if request.url.path == "/v1/chat/completions":
            metrics.latency_sum += time.perf_counter() - t0
            metrics.latency_count += 1
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

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return APIError(400, f"invalid request: {exc.errors()[:3]}").response()

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return APIError(500, f"internal error: {type(exc).__name__}", type_="server_error").response()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": config.model_name, "model_id": engine.model_id,
                "engine": engine.backend.kind.value, "queue_depth": batcher.depth}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(batcher), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": 0,
                                            "owned_by": "r2genkg", "r2genkg_model_id": engine.model_id}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        t0 = time.perf_counter()
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise APIError(400, f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise APIError(400, "request body must be a JSON object")
        settings = read_settings(body, engine.default_settings, config)
        study = await run_in_threadpool(read_study, body, config)   # decoding off the event loop
        loop = asyncio.get_running_loop()
        stream = bool(body.get("stream"))
        job = Job(study, settings, loop.create_future(), asyncio.Queue() if stream else None)
        try:
            batcher.submit(job)
        except QueueFullError as exc:
            raise APIError(503, str(exc), type_="server_error", code="overloaded") from exc
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if stream:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            return StreamingResponse(_sse(job, rid, created, include_usage, t0), media_type="text/event-stream")
        try:
            result = await job.future
        except Exception as exc:
            raise APIError(500, f"generation failed: {type(exc).__name__}: {exc}", type_="server_error") from exc
        return {"id": rid, "object": "chat.completion", "created": created, "model": config.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.report},
                             "finish_reason": result.finish_reason, "logprobs": None}],
                "usage": usage(result), "r2genkg": extension(result, engine, time.perf_counter() - t0)}

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
        yield chunk({}, result.finish_reason, r2genkg=extension(result, engine, time.perf_counter() - t0))
        if include_usage:
            payload = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": config.model_name,
                       "choices": [], "usage": usage(result)}
            yield f"data: {json.dumps(payload)}\n\n"
        yield "data: [DONE]\n\n"

    return app
