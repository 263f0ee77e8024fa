"""The one seeding rule: a ``numpy.random.Generator`` per (study id, seed, purpose), from a stable hash."""
from __future__ import annotations

import hashlib

import numpy as np


def study_rng(study_id: str, seed: int, *purpose: int | str) -> np.random.Generator:
    """sha256 of id, seed and purpose (never Python's salted ``hash``) → an independent stream."""
    key = "\x1f".join([study_id, str(seed), *map(str, purpose)]).encode("utf-8")
    words = np.frombuffer(hashlib.sha256(key).digest(), dtype="<u4")
    return np.random.default_rng(np.random.SeedSequence(words.tolist()))
