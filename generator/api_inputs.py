"""A validated chat request → what the engine takes: the study's views (decoded from data URIs, or
fetched from allowlisted hosts without redirects, within the byte, pixel and decoded-byte limits,
then downsized to the model's input size, so that no full-resolution view is ever queued) with a
note per view, and the decoding settings."""
from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
import urllib.request
import uuid
from dataclasses import replace
from typing import Any

from cxr.images import DecodeLimits, ImageTooLargeError, decode_image_bytes
from cxr.records import DataError
from cxr.views import ViewNote, prepare_view
from generator.api_schema import APIError, ChatCompletionRequest, ImagePart, ServerConfig
from generator.engine import StudyInput
from generator.settings import GenerationSettings

DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,(?P<data>.*)$", re.DOTALL)
IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/jpg", "application/dicom", "image/dicom"})


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
    try:
        parts = urllib.parse.urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    except ValueError as exc:   # e.g. an unclosed IPv6 bracket
        raise APIError(400, f"image {k}: not a valid URL ({exc})", param="messages", code="invalid_image") from None
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


def image_urls(request: ChatCompletionRequest, config: ServerConfig, max_views: int) -> list[str]:
    """The last user message's image URLs: one per view, at most ``max_views`` (the model's) and
    ``config.max_images``; more is a 400, never views silently dropped."""
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
    if len(urls) > max_views:
        raise APIError(400, f"{len(urls)} images, but this model reads at most {max_views} views per study "
                       f"(its max_views): send the {max_views} to use, frontal first", param="messages",
                       code="too_many_images")
    return urls


def read_study(urls: list[str], config: ServerConfig, size: int) -> StudyInput:
    """Decode each view (``image_urls``) within the request's limits and downsize it to ``size`` at
    once: only (size, size) uint8 views leave this function."""
    limits = DecodeLimits(config.max_pixels, config.max_decoded_bytes)
    views, notes = [], []
    for k, url in enumerate(urls):
        data = _image_bytes(url, config, k)
        try:
            image = decode_image_bytes(data, f"image {k}", limits)
        except ImageTooLargeError as exc:
            raise APIError(413, str(exc), param="messages", code="image_too_large") from exc
        except DataError as exc:
            raise APIError(400, str(exc), param="messages", code="invalid_image") from exc
        del data
        view, warnings = prepare_view(image, size)
        views.append(view)
        notes.append(ViewNote(f"image {k}", True, warnings=warnings))
    return StudyInput(f"req-{uuid.uuid4().hex[:12]}", views, notes)


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
    if request.num_beams is not None:
        if request.num_beams > 1 and request.temperature:
            raise APIError(400, f"num_beams={request.num_beams} is for deterministic decoding: leave temperature "
                           f"at 0, not {request.temperature}", param="num_beams")
        settings = replace(settings, num_beams=request.num_beams)
    if request.temperature is not None and request.temperature > 0:   # sampling; beams are for deterministic decoding
        settings = replace(settings, temperature=request.temperature, num_beams=1)
    elif request.temperature is not None:
        settings = replace(settings, temperature=0.0)
    if request.top_p is not None:
        settings = replace(settings, top_p=request.top_p)
    if request.seed is not None:
        settings = replace(settings, seed=request.seed)
    return settings
