"""Benchmark: the API under 16 concurrent clients vs the same requests sent one after another.

What: starts `r2genkg serve`'s app in-process (uvicorn on a free loopback port, API keys on, the
HF engine on CPU), then side by side in one run, each for --seconds:
  sequential   one openai client, one request at a time;
  concurrent   16 client threads (dynamic batching groups their requests).
Requests are chat completions with one test phantom as a PNG data URI, the same max_tokens.
Shows each phase as it runs (requests done every 10 s), then requests/s, the ratio
concurrent/sequential (target >= 5x, with 0 errors), p50/p95 latency and errors.
Needs: a checkpoint (the README's main job writes outputs/runs/debug/best).
Also prints the mean batch size (from /metrics); --fill-wait-ms 5 shows the batcher without its
wait for the recent concurrency.
Run:   .venv/bin/python benchmarks/bench_api.py [--checkpoint DIR] [--seconds 60] [--clients 16] [--fill-wait-ms 50]
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import secrets
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import uvicorn
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from cxr.datasets import load_split, prepare_images
from cxr.images import load_image
from generator.api_schema import ServerConfig
from generator.checkpoint import read_run_config
from generator.engine import Engine, EngineConfig
from generator.server import create_app


def png_uri(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def payloads(checkpoint: Path, n: int = 32) -> list[str]:
    """n PNG data URIs: the checkpoint's test phantoms, or synthetic noise when its data is absent."""
    data = read_run_config(checkpoint).data
    data.limit = {"test": n}
    try:
        prepare_images(data, splits=["test"], progress=False)
        uris = [png_uri(np.asarray(load_image(r.image_paths[0]))) for r in load_split(data, "test")]
    except (OSError, ValueError) as exc:   # FileNotFoundError, DataError: no annotation or images here
        print(f"no test images for {checkpoint} ({exc}): using synthetic images")
        uris = []
    rng = np.random.default_rng(0)
    return uris or [png_uri(rng.integers(0, 256, (256, 256), dtype=np.uint8)) for _ in range(n)]


def serve(engine: Engine, key: str, max_batch: int, fill_wait_ms: float) -> tuple[uvicorn.Server, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(engine, ServerConfig(api_keys=(key,), max_batch=max_batch, max_wait_ms=5, fill_wait_ms=fill_wait_ms))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port


def batch_counts(port: int) -> tuple[float, float]:
    """(studies, batches) the server has generated so far, from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        samples = {s.name: s.value for f in text_string_to_metric_families(resp.read().decode()) for s in f.samples}
    return samples["r2genkg_batch_size_sum"], samples["r2genkg_batch_size_count"]


def load(port: int, key: str, uris: list[str], clients: int, seconds: float, max_tokens: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    studies0, batches0 = batch_counts(port)
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def client_loop(c: int) -> None:
        nonlocal errors
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=120)
        i = c
        while time.perf_counter() < stop:
            msg = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uris[i % len(uris)]}}]}]
            t0 = time.perf_counter()
            try:
                client.chat.completions.create(model="r2genkg", messages=msg, max_tokens=max_tokens)
                with lock:
                    latencies.append(time.perf_counter() - t0)
            except openai.OpenAIError:
                with lock:
                    errors += 1
            i += clients

    t0 = time.perf_counter()
    finished = threading.Event()

    def ticker() -> None:   # a line every 10 s: a 2-minute run is not silent
        while not finished.wait(10):
            with lock:
                done, failed = len(latencies), errors
            print(f"  {time.perf_counter() - t0:5.0f} s: {done} requests, {failed} errors", flush=True)

    threading.Thread(target=ticker, daemon=True).start()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    finished.set()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    studies1, batches1 = batch_counts(port)
    return {"requests": len(latencies), "errors": errors, "seconds": wall, "rps": len(latencies) / wall,
            "mean_batch": (studies1 - studies0) / max(1.0, batches1 - batches0),
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p95_ms": float(np.percentile(lat, 95)) if len(lat) else float("nan")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=Path("outputs/runs/debug/best"))
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=40)
    p.add_argument("--fill-wait-ms", type=float, default=ServerConfig.fill_wait_ms,
                   help="the server's fill wait (5 = max_wait: batches do not wait for the recent concurrency)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if not (args.checkpoint / "config.yaml").is_file():
        raise SystemExit(f"{args.checkpoint}: no checkpoint here (no config.yaml); run the README's main job "
                         "first (`r2genkg pipeline`, which writes outputs/runs/debug/best), or pass --checkpoint")
    key = secrets.token_urlsafe(16)
    print(f"loading test images and {args.checkpoint} …", flush=True)
    uris = payloads(args.checkpoint)
    with Engine.from_checkpoint(args.checkpoint, EngineConfig(device="cpu", micro_batch=args.clients)) as engine:
        server, port = serve(engine, key, args.clients, args.fill_wait_ms)
        print("warming up (2 s) …", flush=True)
        load(port, key, uris, 1, 2.0, args.max_tokens)
        rows = {}
        for name, clients in (("sequential (1 client)", 1), (f"concurrent ({args.clients} clients)", args.clients)):
            print(f"{name} for {args.seconds:.0f} s …", flush=True)
            rows[name] = load(port, key, uris, clients, args.seconds, args.max_tokens)
        server.should_exit = True
    base = rows["sequential (1 client)"]["rps"]
    print(f"{engine.model_id}, HF engine on CPU, max_tokens={args.max_tokens}, {args.seconds:.0f} s each, "
          f"fill wait {args.fill_wait_ms:g} ms")
    print(f"{'':24s} {'req/s':>7s} {'x seq':>6s} {'p50 ms':>8s} {'p95 ms':>8s} {'batch':>6s} {'requests':>9s} "
          f"{'errors':>7s}")
    for name, r in rows.items():
        print(f"{name:24s} {r['rps']:7.1f} {r['rps'] / base:6.1f} {r['p50_ms']:8.0f} {r['p95_ms']:8.0f} "
              f"{r['mean_batch']:6.1f} {r['requests']:9d} {r['errors']:7d}")
    if args.json:
        args.json.write_text(json.dumps({"model": engine.model_id, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
