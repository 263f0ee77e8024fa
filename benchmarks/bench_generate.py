"""Benchmark: reports/s of the batched engine vs the R2GenGPT way (one study at a time, beam 3).

What: the same checkpoint and studies (test phantoms, decoded once up front so only generation is
timed), side by side in one run:
  naive     one study per call, num_beams=3 (how R2GenGPT's test loop decodes);
  batched   Engine.generate in micro-batches, greedy (the engine's default for serving);
  batched3  Engine.generate in micro-batches, num_beams=3 (separates batching from beam width).
Every report is exactly max_new_tokens long on both sides (min_new_tokens = max_new_tokens), so
the comparison is per generated token; the mean tokens per report is printed to show it.
Needs: a checkpoint (the README's main job writes outputs/runs/debug/best).
Run:   .venv/bin/python benchmarks/bench_generate.py [--checkpoint DIR] [--studies 64] [--batch 32]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from generator.batch import split_studies
from generator.engine import Engine, EngineConfig


def timed(fn) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=Path("outputs/runs/debug/best"))
    p.add_argument("--studies", type=int, default=64)
    p.add_argument("--batch", type=int, default=32, help="engine micro-batch")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()
    if not (args.checkpoint / "config.yaml").is_file():
        raise SystemExit(f"{args.checkpoint}: no checkpoint; run the README's main job first")
    studies = split_studies(args.checkpoint, args.studies)[0]
    with Engine.from_checkpoint(args.checkpoint, EngineConfig(micro_batch=args.batch, device="cpu")) as engine:
        base = engine.default_settings
        tokens = args.max_new_tokens or base.max_new_tokens
        # every report exactly `tokens` long on both sides (eos suppressed until then)
        greedy = replace(base, num_beams=1, max_new_tokens=tokens, min_new_tokens=tokens, temperature=0.0)
        beam3 = replace(greedy, num_beams=3)
        engine.generate(studies[:2], greedy)     # warm-up: first-call allocations, lazy imports
        rows = {
            "naive (1 study/call, beam 3)": timed(lambda: [r for s in studies for r in engine.generate([s], beam3)]),
            f"batched ({args.batch}/call, greedy)": timed(lambda: engine.generate(studies, greedy)),
            f"batched ({args.batch}/call, beam 3)": timed(lambda: engine.generate(studies, beam3)),
        }
    naive_rate = len(studies) / next(iter(rows.values()))[0]
    print(f"{engine.model_id}: {len(studies)} test studies, max_new_tokens={tokens}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'':32s} {'reports/s':>10s} {'tokens/report':>14s} {'x naive':>8s}")
    figures = {}
    for name, (seconds, results) in rows.items():
        rate = len(studies) / seconds
        mean_tokens = float(np.mean([r.completion_tokens for r in results]))
        figures[name] = {"reports_per_s": rate, "mean_tokens": mean_tokens, "ratio": rate / naive_rate}
        print(f"{name:32s} {rate:10.1f} {mean_tokens:14.1f} {rate / naive_rate:8.1f}")
    if args.json:
        args.json.write_text(json.dumps({"model": engine.model_id, "studies": len(studies), "rows": figures}, indent=2))


if __name__ == "__main__":
    main()
