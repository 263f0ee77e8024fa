"""How to decode: one ``GenerationSettings`` shared by the model, every backend, batch and the API.

``temperature == 0`` is greedy (or beam search with ``num_beams > 1``); ``temperature > 0`` samples,
reproducibly when ``seed`` is set.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GenerationSettings:
    num_beams: int = 1
    max_new_tokens: int = 60
    min_new_tokens: int = 0        # eos is suppressed before this many tokens (benchmarks: fixed length)
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    temperature: float = 0.0       # 0 → deterministic (greedy / beam); > 0 → sampling
    top_p: float = 1.0
    seed: int | None = None        # sampling seed; None → the process RNG
    drop_repeated_sentences: bool = True   # a sentence the decoder writes again is left out of the report
    cover_decisions: bool = True   # a decided finding the report leaves out: one more pass writes it (generator.coverage)
    cover_samples: int = 0         # then up to this many seeded samples per finding still missing (one study per call; slow)
    cover_passes: int = 2          # pass 1: all missing findings; 2: each one still missing, prompted alone
    evidence: bool = True          # the report check and per-sentence evidence of each report (generator.check, .explain)

    def __post_init__(self) -> None:
        if self.num_beams < 1 or self.max_new_tokens < 1:
            raise ValueError(f"GenerationSettings: num_beams={self.num_beams} and "
                             f"max_new_tokens={self.max_new_tokens} must be ≥ 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"GenerationSettings.min_new_tokens={self.min_new_tokens} must be in "
                             f"[0, max_new_tokens={self.max_new_tokens}]")
        if self.repetition_penalty <= 0:
            raise ValueError(f"GenerationSettings.repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.temperature < 0:
            raise ValueError(f"GenerationSettings.temperature must be ≥ 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationSettings.top_p must be in (0, 1], got {self.top_p}")
        if self.cover_samples < 0:
            raise ValueError(f"GenerationSettings.cover_samples must be ≥ 0, got {self.cover_samples}")
        if self.cover_passes < 1:
            raise ValueError(f"GenerationSettings.cover_passes must be ≥ 1, got {self.cover_passes}")
        if self.seed is not None and not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"GenerationSettings.seed must be in [0, 2**63 - 1], got {self.seed}")
        if self.no_repeat_ngram_size < 0:
            raise ValueError(f"GenerationSettings.no_repeat_ngram_size must be ≥ 0, got {self.no_repeat_ngram_size}")

    @property
    def sampling(self) -> bool:
        return self.temperature > 0
