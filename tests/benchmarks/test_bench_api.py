"""benchmarks/bench_api.py and bench_api_memory.py as a user runs them (issue 13: bench_api said
nothing for two minutes): each phase is announced before it runs, and the tables come out."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def run(script: str, *args: object, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, f"benchmarks/{script}", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture
def env(m3kg_config) -> dict[str, str]:
    """The tiny checkpoint's graph, through the environment (as run_batch's tests do)."""
    return {**os.environ, "PYTHONPATH": str(REPO), "R2GENKG_STORE_PATH": str(m3kg_config.path),
            "R2GENKG_FEATURES_CACHE": str(m3kg_config.features_cache)}


def test_bench_api_announces_each_phase_then_the_table(tiny_checkpoint, env):
    proc = run("bench_api.py", "--checkpoint", tiny_checkpoint, "--seconds", 2, "--clients", 4, "--max-tokens", 8,
               env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    phases = ["loading test images", "warming up", "sequential (1 client) for 2 s", "concurrent (4 clients) for 2 s"]
    positions = [out.find(p) for p in phases]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), out
    table = out[out.index("req/s"):]
    assert "sequential (1 client)" in table and "concurrent (4 clients)" in table and "batch" in out


def test_bench_api_memory_serves_every_request_within_the_bound(tiny_checkpoint, env):
    """Two requests of a 16-bit 4096² PNG against a real `r2genkg serve` process; both answered."""
    proc = run("bench_api_memory.py", "--checkpoint", tiny_checkpoint, "--requests", 2, "--max-tokens", 4, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("bounded (default) ", "unbounded "))]
    assert len(rows) == 2 and all("{'200': 2}" in row for row in rows), proc.stdout
