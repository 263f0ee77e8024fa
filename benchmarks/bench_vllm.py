"""Benchmark: reports/s of HF generate and of vLLM's three paths, on one checkpoint, side by side.

What (the same test studies, decoded up front; every path starts from the views):
  hf             Engine with the HF backend (adapter + generate(inputs_embeds=…)), micro-batches;
  prompt-embeds  Engine: the adapter here, vLLM decodes ``prompt_embeds`` (greedy only);
  embeds         Engine: the adapter here, vLLM decodes the prompt sent as image_embeds;
  inside         vLLM alone: the views go in, the plugin's adapter splices, vLLM decodes (what a
                 ``vllm serve EXPORT`` client gets: text only, no probabilities or evidence).
Greedy reports are exactly max_new_tokens long everywhere (min_new_tokens = max_new_tokens), so
greedy figures compare per token; beam 3 (vLLM cannot fix a beam's length) prints its mean tokens.
No coverage pass and no evidence: the decoder's own work. Each path is warmed up on 8 studies first.
Runs in the vLLM venv (scripts/vllm_cpu_env.sh; on a GPU, any venv with vllm and this project):
  VLLM_CPU_KVCACHE_SPACE=2 PYTHONPATH=. VENV/bin/python benchmarks/bench_vllm.py \\
      --checkpoint outputs/runs/debug/best --studies 128 --json docs/bench_vllm_cpu.json
Heavy imports stay inside main(): vLLM's CPU workers are spawned and re-import this file.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

WARMUP = 8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=Path("outputs/runs/debug/best"))
    p.add_argument("--studies", type=int, default=128)
    p.add_argument("--batch", type=int, default=32, help="adapter micro-batch (and HF generate batch)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--export", type=Path, default=None, help="the export folder (default: a temporary one)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()

    from dataclasses import replace

    import torch

    from generator.backends import BackendKind, VLLMBackend
    from generator.batch import split_studies
    from generator.engine import Engine, EngineConfig
    from generator.export import export_llm
    from generator.vllm_plugin.manifest import MANIFEST_FILE

    studies = split_studies(args.checkpoint, args.studies + WARMUP)[0]
    warm, timed = studies[:WARMUP], studies[WARMUP:]
    export = args.export or Path(tempfile.mkdtemp(prefix="r2genkg-export-")) / "export"
    rows: list[dict] = []

    def record(path: str, decoding: str, seconds: float, tokens: list[int]) -> None:
        row = {"path": path, "decoding": decoding, "studies": len(timed), "seconds": round(seconds, 2),
               "reports_per_s": round(len(timed) / seconds, 2), "mean_tokens": round(sum(tokens) / len(tokens), 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    def config(backend: BackendKind, mode: str = "embeds") -> EngineConfig:
        return EngineConfig(backend=backend, micro_batch=args.batch, device=args.device, vllm_mode=mode,
                            vllm_model_dir=str(export))

    with Engine.from_checkpoint(args.checkpoint, config(BackendKind.HF)) as engine:
        if not (export / MANIFEST_FILE).is_file():
            export_llm(args.checkpoint, export, engine._bundle)
        base = engine.default_settings
        n = base.max_new_tokens
        greedy = replace(base, num_beams=1, min_new_tokens=n, cover_decisions=False, evidence=False)
        beam = replace(greedy, num_beams=3, min_new_tokens=0)
        for name, settings in (("greedy", greedy), ("beam3", beam)):
            engine.generate(warm, settings)
            t0 = time.perf_counter()
            out = engine.generate(timed, settings)
            record("hf", name, time.perf_counter() - t0, [r.completion_tokens for r in out])

    for mode in ("prompt-embeds", "embeds"):
        with Engine.from_checkpoint(args.checkpoint, config(BackendKind.VLLM, mode)) as engine:
            for name, settings in (("greedy", greedy), ("beam3", beam)):
                if mode == "prompt-embeds" and name == "beam3":
                    continue   # refused: vLLM has no beam search on prompt_embeds
                engine.generate(warm, settings)
                t0 = time.perf_counter()
                out = engine.generate(timed, settings)
                record(mode, name, time.perf_counter() - t0, [r.completion_tokens for r in out])

    tokenizer = None
    with Engine.from_checkpoint(args.checkpoint, config(BackendKind.HF)) as engine:
        tokenizer = engine.model.tokenizer
    backend = VLLMBackend(export, tokenizer, "inside", dtype="float32")
    try:
        for name, settings in (("greedy", greedy), ("beam3", beam)):
            backend.generate_views([s.views for s in warm], settings)
            t0 = time.perf_counter()
            out = backend.generate_views([s.views for s in timed], settings)
            record("inside", name, time.perf_counter() - t0, [len(c.token_ids) for c in out])
    finally:
        backend.close()

    result = {"checkpoint": str(args.checkpoint), "device": args.device, "torch": torch.__version__,
              "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "max_new_tokens": n, "batch": args.batch, "rows": rows}
    print(f"{'path':<14} {'decoding':<8} {'reports/s':>10} {'mean tokens':>12}")
    for r in rows:
        print(f"{r['path']:<14} {r['decoding']:<8} {r['reports_per_s']:>10.2f} {r['mean_tokens']:>12.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
