"""The API's request contract: ``ServerConfig`` (limits), ``APIError`` (OpenAI's error object) and
the pydantic request models, which refuse unknown fields and content parts other than text /
image_url (``extra="forbid"``), so a client never sends tensors or embeddings (cf. vLLM
CVE-2025-62164). ``parse_request`` reads a raw body into the request; every way it can be
malformed is a one-line 400 naming the field (``validation_error`` for pydantic's errors).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)


@dataclass
class ServerConfig:
    api_keys: tuple[str, ...] = ()
    auth: bool = True                          # --no-auth turns it off, for local use only
    model_name: str = "r2genkg"
    max_image_bytes: int = 10 * 1024 * 1024    # per image, as sent (after base64)
    max_pixels: int = 4096 * 4096              # per image, from its header
    max_decoded_bytes: int = 128 * 1024 * 1024  # per request, over its images: pixels × bit depth × samples
    max_decodes: int = 2                       # requests decoding at once (the rest wait, their bodies only)
    max_images: int = 4                        # per request; the model's max_views is the other bound
    max_tokens: int = 512
    max_batch: int = 16
    max_wait_ms: float = 5.0                   # a batch's wait for more when recent concurrency is 1
    fill_wait_ms: float = 50.0                 # … and its longest wait for the recent concurrency (batcher)
    max_queue: int = 256
    image_url_allowlist: tuple[str, ...] = ()  # hosts whose http(s) image URLs may be fetched
    fetch_timeout_s: float = 10.0
    runs_dir: Path | None = None               # the viewer may open the result JSONLs under it (--runs-dir)

    def __post_init__(self) -> None:
        self.api_keys = tuple(k for k in self.api_keys if k)
        if self.auth and not self.api_keys:
            raise ValueError("API keys are on but none is configured: set R2GENKG_API_KEYS (comma-separated) "
                             "or pass --api-key-file; --no-auth disables auth for local use")
        for name in ("max_image_bytes", "max_pixels", "max_decoded_bytes", "max_decodes", "max_images",
                     "max_tokens", "max_batch", "max_queue"):
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


MAX_SEED = 2 ** 63 - 1

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


MAX_BEAMS = 8


class ChatCompletionRequest(BaseModel):
    """The part of OpenAI's chat request this server uses. The openai client sends ``model`` and
    ``messages`` (plus ``stream`` when streaming) and nothing else unless asked."""

    model_config = _BODY
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=2 ** 31)   # the real upper bound is ServerConfig.max_tokens
    max_completion_tokens: int | None = Field(None, ge=1, le=2 ** 31)   # OpenAI's newer name; wins over max_tokens
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)   # 0 → the checkpoint's decoding
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)        # torch.manual_seed's range, as vLLM's
    n: int | None = None
    # an r2genkg field (the openai client sends it in extra_body): the beam width, 1 = greedy
    num_beams: int | None = Field(None, ge=1, le=MAX_BEAMS)
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


def parse_request(body: bytes) -> ChatCompletionRequest:
    """The raw body → the validated request, or an ``APIError`` 400 naming the problem.

    Parsed here rather than by FastAPI so that every way a body can be malformed (bytes that are not
    UTF-8, JSON nested past the parser's recursion limit, a list where an object belongs) is a 400,
    never an unhandled exception."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise APIError(400, "request body is not JSON this server reads: nested too deeply",
                       code="json_invalid") from None
    except UnicodeDecodeError as exc:
        raise APIError(400, f"request body is not JSON: not UTF-8 text (byte {exc.start})",
                       code="json_invalid") from None
    except json.JSONDecodeError as exc:
        raise APIError(400, f"request body is not JSON: {exc.msg} (at character {exc.pos})",
                       code="json_invalid") from None
    if not isinstance(data, dict):
        raise APIError(400, f"request body: expected a JSON object, got {type(data).__name__}",
                       code="json_invalid")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, data) from None
    except RecursionError:   # a body the JSON parser took but validation recursed too deep into
        raise APIError(400, "request body: nested too deeply", code="json_invalid") from None


def validation_error(exc: ValidationError, body: Any) -> APIError:
    """The first of pydantic's errors about ``body`` as one line naming the field, in OpenAI's error
    object (``parse_request`` has already answered bodies that are not a JSON object)."""
    errors = exc.errors()
    err = errors[0]
    kind, ctx = err["type"], err.get("ctx") or {}
    path = _field_path(list(err["loc"]), body, missing=kind == "missing")
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
