"""GPU readiness check: the paper-size R2GenKG for a few bf16 training steps and one generation batch.

What: swin-base (224 px, 49 tokens x 1024 per view) + the paper's Q-Former / R-GCN / cross-attention
sizes (configs/iu_xray.yaml) + a ~1.3B Llama-architecture LLM built from config (no weights:
nothing is downloaded), the global M3KG subgraph. Prints samples/s for training and generation
and the peak GPU memory. Images are random tensors: this measures the model, not the data.
Needs: a CUDA GPU and this repo's venv (``./scripts/setup.sh``). About 2-3 minutes on one H200.
Run:   .venv/bin/python scripts/gpu_check.py            (--tiny: the debug sizes, runs on CPU too)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from generator.checkpoint import build_model
from generator.llm import train_tokenizer
from generator.model import GenerationSettings
from graphdb.store import StoreConfig
from training.config import load_experiment

REPO = Path(__file__).resolve().parents[1]

LLM_1B = ["model.llm.hidden_size=2048", "model.llm.num_layers=22", "model.llm.num_heads=16",
          "model.llm.num_kv_heads=4", "model.llm.intermediate_size=5632", "model.llm.vocab_size=4000",
          "model.llm.training=full", "model.llm.dtype=float32"]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="configs/debug.yaml sizes (a CPU smoke test)")
    p.add_argument("--batch", type=int, default=6, help="studies per step (paper: 6)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps (after 1 warm-up)")
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None, help="graph store + features (default: a temp dir)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p.parse_args()


def main() -> None:
    args = parse()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.tiny:
        sys.exit("gpu_check: no CUDA device; use --tiny for a CPU smoke test")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    store = StoreConfig(path=work / "kg", features_cache=work / "features")
    if args.tiny:
        cfg = load_experiment(REPO / "configs" / "debug.yaml", ["model.kg.mode=global"])
    else:
        cfg = load_experiment(REPO / "configs" / "iu_xray.yaml", LLM_1B)
    reports = json.loads((REPO / "cxr/resources/iu_xray/annotation.json").read_text())["train"]
    texts = [r["report"] for r in reports]
    tokenizer = train_tokenizer(texts, cfg.model.llm.vocab_size)
    bundle = build_model(cfg, tokenizer, store)
    model = bundle.model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    llm_params = sum(p.numel() for p in model.llm.parameters())
    size, chans = cfg.model.vision.img_size, cfg.model.vision.in_chans
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 2, chans, size, size, generator=g).to(device)
    view_mask = torch.ones(args.batch, 2, dtype=torch.bool, device=device)
    ids = [f"gpu{i}" for i in range(args.batch)]
    labels = torch.full((args.batch, 14), float("nan"), device=device)
    labels[:, 0] = 1.0
    batch_reports = texts[:args.batch]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> float:
        with autocast:
            out = model(images, view_mask, ids, labels, batch_reports, teacher_forcing=True)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    step()                                   # warm-up: kernels, allocator, graph memo
    sync()
    t0 = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    sync()
    train_s = time.perf_counter() - t0
    settings = GenerationSettings(num_beams=args.beams, max_new_tokens=cfg.model.max_report_tokens,
                                  repetition_penalty=2.0, length_penalty=2.0)
    t0 = time.perf_counter()
    with autocast:
        results = model.generate(images, view_mask, ids, settings)
    sync()
    gen_s = time.perf_counter() - t0
    figures = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "bf16": bf16, "params_total": n_params, "params_llm": llm_params,
        "vision": cfg.model.vision.model_name, "img_size": size, "batch": args.batch,
        "train_steps": args.steps, "train_samples_per_s": args.batch * args.steps / train_s,
        "loss_first_last": [losses[0], losses[-1]],
        "generate_batch_s": gen_s, "generate_samples_per_s": args.batch / gen_s, "beams": args.beams,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "example_report_tokens": len(tokenizer(results[0].report).input_ids),
    }
    bundle.close()
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
