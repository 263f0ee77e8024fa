"""Shared timing for the benchmarks: items/s of the best of a few repeats (best-of filters out
noise from other jobs on a shared machine)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any


def best_rate(fn: Callable[[Any], object], items: Sequence[Any], repeats: int = 3) -> float:
    """Items per second of ``for x in items: fn(x)``, best of ``repeats`` runs."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - t0)
    return len(items) / best
