"""Benchmark: the API server's memory under concurrent uploads that are small on the wire and huge decoded.

What: starts `r2genkg serve` as its own process (API keys on, HF engine on CPU), sends one small
request to warm it up, then N requests at once, each one 16-bit 4096×4096 PNG (about 33 KB: 12-bit
values in smooth bands, as a PACS export of a mostly uniform image compresses), and samples the
server's RSS every 10 ms from /proc. Side by side in one run, one fresh server each:
  bounded      the default --max-decodes (2 requests decode at once);
  unbounded    --max-decodes N (every request decodes at once: what a 40-thread pool allowed).
Prints, per row: the server's RSS before, its peak during the burst, the growth, and the answers
by status (target for the default: growth <= 1 GB with every request answered 200).
Needs: a checkpoint (the README's main job writes outputs/runs/debug/best); Linux (/proc).
Run:   .venv/bin/python benchmarks/bench_api_memory.py [--checkpoint DIR] [--requests 12]
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIDE = 4096


def wide_png() -> bytes:
    """A 16-bit 4096×4096 PNG of 12-bit values in smooth horizontal bands: tens of KB on the wire,
    32 MiB of 16-bit pixels decoded."""
    rows = (np.arange(SIDE) * 4095 // (SIDE - 1)).astype(np.uint16)
    pixels = np.repeat(rows[:, None], SIDE, axis=1)
    pixels[SIDE // 4: SIDE // 2, SIDE // 4: SIDE // 2] = 3000   # a block, so that it is not one gradient
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, checkpoint: Path, key: str, max_decodes: int) -> None:
        self.port = free_port()
        env = {**os.environ, "R2GENKG_API_KEYS": key, "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "r2genkg", "serve", str(checkpoint), "--port", str(self.port),
               "--device", "cpu", "--max-decodes", str(max_decodes)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited ({self.proc.returncode}): "
                                 f"{self.proc.stderr.read().decode()[-2000:] if self.proc.stderr else ''}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("the server did not answer /health within 180 s") from None
                time.sleep(0.25)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def post(port: int, key: str, png: bytes, max_tokens: int) -> int:
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    body = json.dumps({"model": "r2genkg", "max_tokens": max_tokens, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}]}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body, method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def burst(checkpoint: Path, max_decodes: int, requests: int, png: bytes, max_tokens: int) -> dict:
    key = secrets.token_urlsafe(16)
    server = ServerProcess(checkpoint, key, max_decodes)
    try:
        small = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)).save(small, "PNG")
        assert post(server.port, key, small.getvalue(), max_tokens) == 200, "the warm-up request failed"
        before = rss_bytes(server.proc.pid)
        peak, done = before, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss_bytes(server.proc.pid))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(requests) as pool:
            statuses = list(pool.map(lambda _: post(server.port, key, png, max_tokens), range(requests)))
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    finally:
        server.stop()
    counts = {str(s): statuses.count(s) for s in sorted(set(statuses))}
    return {"max_decodes": max_decodes, "rss_before_mb": before / 2**20, "rss_peak_mb": peak / 2**20,
            "growth_mb": (peak - before) / 2**20, "statuses": counts, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=REPO / "outputs/runs/debug/best")
    p.add_argument("--requests", type=int, default=12)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if not (args.checkpoint / "config.yaml").is_file():
        raise SystemExit(f"{args.checkpoint}: no checkpoint here (no config.yaml); run the README's main job "
                         "first, or pass --checkpoint")
    png = wide_png()
    print(f"payload: a 16-bit {SIDE}×{SIDE} PNG of {len(png):,} bytes ({SIDE * SIDE * 2 / 2**20:.0f} MiB decoded); "
          f"{args.requests} requests at once", flush=True)
    rows = {}
    for name, decodes in (("bounded (default)", 2), ("unbounded", args.requests)):
        print(f"{name}: starting a server with --max-decodes {decodes} …", flush=True)
        rows[name] = burst(args.checkpoint.resolve(), decodes, args.requests, png, args.max_tokens)
        print(f"{name}: done in {rows[name]['seconds']:.1f} s", flush=True)
    print(f"{'':18s} {'decodes':>7s} {'RSS before MB':>13s} {'peak MB':>8s} {'growth MB':>9s} {'s':>6s}  answers")
    for name, r in rows.items():
        print(f"{name:18s} {r['max_decodes']:7d} {r['rss_before_mb']:13.0f} {r['rss_peak_mb']:8.0f} "
              f"{r['growth_mb']:9.0f} {r['seconds']:6.1f}  {r['statuses']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
