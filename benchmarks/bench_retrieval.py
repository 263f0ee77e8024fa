"""Benchmark: disease-token retrieval, queries/s of ``retrieve_for_batch`` (training mode).

What: one batch of 8 studies × 14 disease queries, k=16, own study excluded, against
(a) a paper-sized exact bank: 14 × 500 = 7,000 tokens of dim 1024, kind "flat";
(b) a large bank: 500,000 tokens of dim 256 (≈ 35.7k per observation), kind "ivf".
Random clustered vectors; prints build time and queries/s (best of 5).
Needs: nothing but the repo. Run: ``.venv/bin/python benchmarks/bench_retrieval.py``
"""
from __future__ import annotations

import time

import numpy as np
import torch
from timing import best_rate

from retrieval.index import IndexConfig, IndexKind, TokenIndex, TokenMeta
from retrieval.tokens import retrieve_for_batch

BATCH, K = 8, 16


def make_bank(n: int, dim: int, config: IndexConfig, seed: int = 0) -> TokenIndex:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    x = centres[rng.integers(0, 256, n)] + 0.5 * rng.standard_normal((n, dim), np.float32)
    n_studies = max(1, n // 6)
    meta = TokenMeta(np.char.add("s", rng.integers(0, n_studies, n).astype(str)),
                     np.arange(n) % 14, np.zeros(n), rng.integers(0, 144, n), rng.random(n))
    index = TokenIndex(config)
    index.add(x, meta)
    t0 = time.perf_counter()
    index.search(x[:1], 1)  # builds (and for ivf trains) the 14 sub-indexes
    print(f"  built {n:,} × {dim} {config.kind.value} in {time.perf_counter() - t0:.1f}s")
    return index


def bench(name: str, index: TokenIndex) -> None:
    studies = [str(s) for s in index.meta.study_ids[:BATCH]]
    q = torch.randn(BATCH, 14, index.dim)
    rate = best_rate(lambda _: retrieve_for_batch(index, q, studies, K, training=True),
                     range(20), repeats=5)
    print(f"{name}: {rate * BATCH * 14:,.0f} queries/s ({rate:,.1f} batches/s of {BATCH}×14, k={K})")


def main() -> None:
    print(f"faiss threads: default; torch threads: {torch.get_num_threads()}")
    bench("flat 7k × 1024", make_bank(7_000, 1024, IndexConfig(dim=1024)))
    bench("ivf 500k × 256", make_bank(500_000, 256, IndexConfig(
        dim=256, kind=IndexKind.IVF, nlist=256, nprobe=16)))


if __name__ == "__main__":
    main()
