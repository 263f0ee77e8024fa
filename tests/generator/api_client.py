"""The API as a client sees it, for the server tests: uvicorn on a free loopback port in a thread,
the official ``openai`` client, raw GETs, /metrics parsed by prometheus_client, and request builders."""
from __future__ import annotations

import base64
import io
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import uvicorn
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

KEY = "test-key-0123456789"
LIMITS = {"max_image_bytes": 64 * 1024, "max_pixels": 512 * 512, "max_images": 3, "max_tokens": 48}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """/metrics parsed by prometheus_client: (sample name, sorted labels) → value."""
        status, text = self.get("/metrics")
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def pixels(seed: int, size: int = 96) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def data_uri(array: np.ndarray, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def message(*urls: str, text: str = "Write the findings and impression.") -> list[dict]:
    parts = [{"type": "text", "text": text}] + [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": parts}]


def ask(client: openai.OpenAI, *urls: str, **kwargs):
    return client.chat.completions.create(model="r2genkg", messages=message(*urls), **kwargs)
