"""OpenAI-compatible API: POST /v1/chat/completions with chest X-ray images → the report.

Request: OpenAI chat messages, validated by the pydantic ``ChatCompletionRequest`` (unknown fields
and content parts other than text / image_url are refused with OpenAI's 400 error, so a client
never sends tensors or embeddings, cf. vLLM CVE-2025-62164); the last user message's ``image_url``
parts are the study's views (``data:`` URIs of base64 PNG, JPEG or DICOM; remote http(s) URLs
only for allowlisted hosts). Response: ``choices[0].message.content`` is the report; ``r2genkg``
carries the 14 observation probabilities and the evidence (KG seeds and nodes, retrieved token
ids); ``stream: true`` sends OpenAI chunks as server-sent events. API keys are on unless
disabled. ``/metrics`` is prometheus_client's exposition of one registry per app.
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
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cxr.images import ImageTooLargeError, decode_image_bytes
from cxr.records import DataError
from generator.batcher import DynamicBatcher, Job, QueueFullError
from generator.engine import Engine, StudyInput
from generator.model import GenerationResult, positive_observations
from generator.settings import GenerationSettings

log = logging.getLogger(__name__)
DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,(?P<data>.*)$", re.DOTALL)
IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/jpg", "application/dicom", "image/dicom"})


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


# ---- request body ------------------------------------------------------------------------------
# extra="forbid": a field this server does not use (``prompt_embeds``, ``inputs_embeds``, …) is a
# 400 naming it; strict: no "24" for 24 or true for 1.
_BODY = ConfigDict(extra="forbid", strict=True)


class ImageURL(BaseModel):
    model_config = _BODY
    url: str                                        # data: URI, or http(s) on an allowlisted host
    detail: Literal["auto", "low", "high"] | None = None   # accepted, unused: the model sees every pixel


class TextPart(BaseModel):
    model_config = _BODY
    type: Literal["text"]
    text: str                                       # accepted, unused: the model's prompt is fixed


class ImagePart(BaseModel):
    model_config = _BODY
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


def _content_kind(content: Any) -> str:
    return "string" if isinstance(content, str) else "parts"


# a string or a list of parts; a callable discriminator so that a bad part reports only its own error
Content = Annotated[Annotated[str, Tag("string")] | Annotated[list[ContentPart], Tag("parts")],
                    Discriminator(_content_kind)]


class Message(BaseModel):
    model_config = _BODY
    role: Literal["system", "user", "assistant"]
    content: Content
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = _BODY
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The part of OpenAI's chat request this server uses. The openai client sends ``model`` and
    ``messages`` (plus ``stream`` when streaming) and nothing else unless asked."""

    model_config = _BODY
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)               # the upper bound is ServerConfig.max_tokens
    max_completion_tokens: int | None = Field(None, ge=1)    # OpenAI's newer name; wins over max_tokens
    temperature: float | None = Field(None, ge=0, le=2)      # 0 → the checkpoint's deterministic decoding
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise ValueError("only n=1 is supported")
        return n


def _field_path(loc: Sequence[int | str], body: Any, missing: bool) -> str:
    """pydantic's error location as the client wrote it (``messages.0.content.1.image_url.url``).

    pydantic puts union tags into locations (``content.parts.1.image_url.image_url.url``): a step
    that does not address into the body, or that names a part's own ``type``, is a tag and dropped.
    """
    path: list[str] = []
    node, previous = body, None
    for i, step in enumerate(loc):
        is_tag = isinstance(previous, int) and isinstance(node, dict) and node.get("type") == step
        if isinstance(node, dict) and isinstance(step, str) and step in node and not is_tag:
            path.append(step[:64])   # a client's key: keep the message short
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            path.append(str(step))
            node = node[step]
        elif missing and i == len(loc) - 1:   # the missing field itself
            path.append(str(step))
        previous = step
    return ".".join(path)


def validation_error(exc: RequestValidationError) -> APIError:
    """The first of pydantic's errors as one line naming the field, in OpenAI's error object."""
    errors = exc.errors()
    err = errors[0]
    loc = list(err["loc"])[1:] if err["loc"] and err["loc"][0] == "body" else list(err["loc"])
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "json_invalid":
        return APIError(400, f"request body is not JSON: {ctx.get('error', err['msg'])} (at character "
                        f"{loc[0] if loc else 0})", code=kind)
    path = _field_path(loc, exc.body, missing=kind == "missing")
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        path = ".".join(p for p in (path, str(ctx.get("discriminator", "type")).strip("'")) if p)
    if kind == "extra_forbidden":
        why = ("unknown field, not accepted (this API takes only the chat fields it uses and never takes "
               "tensors or embeddings from clients)")
    elif kind == "union_tag_invalid":
        why = (f"{str(ctx.get('tag'))[:64]!r} is not accepted, only {ctx.get('expected_tags')} (tensors and "
               "embeddings are never accepted)")
    elif kind == "union_tag_not_found":
        why = "field required"
    elif kind == "value_error" and "error" in ctx:
        why = str(ctx["error"])
    else:
        why = err["msg"]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    message = " ".join(f"{path or 'request body'}: {why}{more}".split())   # one line, whatever the keys hold
    return APIError(400, message, param=path or None, code=kind)


# ---- request → study --------------------------------------------------------------------------
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


def read_study(request: ChatCompletionRequest, config: ServerConfig) -> StudyInput:
    users = [m for m in request.messages if m.role == "user"]
    if not users:
        raise APIError(400, "no user message: send the images in a user message", param="messages")
    content = users[-1].content
    urls = [p.image_url.url for p in content if isinstance(p, ImagePart)] if isinstance(content, list) else []
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


def read_settings(request: ChatCompletionRequest, defaults: GenerationSettings,
                  config: ServerConfig) -> GenerationSettings:
    """The request's decoding on top of the checkpoint's; types and ranges were checked by pydantic."""
    settings = defaults
    max_tokens = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    if max_tokens is not None:
        if max_tokens > config.max_tokens:
            raise APIError(400, f"max_tokens must be an integer in [1, {config.max_tokens}], got {max_tokens}",
                           param="max_tokens")
        settings = replace(settings, max_new_tokens=max_tokens)
    if request.temperature is not None and request.temperature > 0:   # sampling; beams are for deterministic decoding
        settings = replace(settings, temperature=request.temperature, num_beams=1)
    elif request.temperature is not None:
        settings = replace(settings, temperature=0.0)
    if request.top_p is not None:
        settings = replace(settings, top_p=request.top_p)
    if request.seed is not None:
        settings = replace(settings, seed=request.seed)
    return settings


# ---- responses --------------------------------------------------------------------------------
def extension(result: GenerationResult, engine: Engine, seconds: float) -> dict[str, Any]:
    return {"observations": result.probabilities, "positive": [o.value for o in positive_observations(result)],
            "evidence": asdict(result.evidence), "model_id": engine.model_id, "timing_ms": round(seconds * 1000, 1)}


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
    batcher = DynamicBatcher(engine, config.max_batch, config.max_wait_ms, config.max_queue, registry)
    metrics = HTTPMetrics(registry)
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

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

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

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": config.model_name, "object": "model", "created": 0,
                                            "owned_by": "r2genkg", "r2genkg_model_id": engine.model_id}]}

    @app.post("/v1/chat/completions")
    async def chat(request: ChatCompletionRequest):   # FastAPI validates; errors → _validation
        t0 = time.perf_counter()
        settings = read_settings(request, engine.default_settings, config)
        study = await run_in_threadpool(read_study, request, config)   # decoding off the event loop
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
