"""vLLM vs HF parity on a checkpoint's real prompt embeddings, across two Python environments.

What: `dump` (the project venv) exports the checkpoint's LLM and saves, for N test studies, the
spliced prompt embeddings and the HF greedy tokens of our engine. `check` (any venv with vllm,
e.g. one where vllm's own torch pin installs) runs vllm.LLM(enable_prompt_embeds=True) greedy on
the same embeddings and compares token ids. It imports only torch and vllm, never this package.
Needs: a checkpoint; for `check`, vllm >= 0.11 (a CUDA GPU, or a CPU build of vllm).
Run:   .venv/bin/python scripts/vllm_parity.py dump outputs/runs/debug/best /tmp/parity
       /path/to/vllm-venv/bin/python scripts/vllm_parity.py check /tmp/parity
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

DUMP_FILE = "parity.pt"


def dump(checkpoint: Path, out: Path, studies: int, max_new_tokens: int) -> None:
    import numpy as np

    from cxr.datasets import load_split, prepare_images
    from cxr.images import load_image
    from generator.backends import HFBackend
    from generator.checkpoint import read_run_config
    from generator.engine import Engine, EngineConfig, StudyInput
    from generator.export import export_llm
    from generator.settings import GenerationSettings

    out.mkdir(parents=True, exist_ok=True)
    export_llm(checkpoint, out / "llm")
    data = read_run_config(checkpoint).data
    data.limit = {"test": studies}
    prepare_images(data, splits=["test"], progress=False)
    batch = [StudyInput(r.study_id, [np.asarray(load_image(p)) for p in r.image_paths[:data.max_views]])
             for r in load_split(data, "test")]
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    with Engine.from_checkpoint(checkpoint, EngineConfig(device="cpu")) as engine:
        images, masks = zip(*(engine.prepare(s.views) for s in batch))
        embeds, mask, _ = engine.model.prompt_embeds(torch.stack(images), torch.stack(masks),
                                                     [s.study_id for s in batch])
        hf = HFBackend(engine.model.llm, engine.model.tokenizer).generate(embeds, mask, settings)
        eos = engine.model.tokenizer.eos_token_id
    torch.save({"embeds": [e[m.bool()].contiguous() for e, m in zip(embeds, mask)],
                "hf_tokens": [c.token_ids for c in hf], "eos": eos, "max_new_tokens": max_new_tokens,
                "ids": [s.study_id for s in batch]}, out / DUMP_FILE)
    print(f"wrote {out / DUMP_FILE}: {len(batch)} studies, prompt {tuple(embeds.shape[1:])}, export {out / 'llm'}")


def check(directory: Path) -> int:
    import vllm

    saved = torch.load(directory / DUMP_FILE, weights_only=True)
    llm = vllm.LLM(model=str(directory / "llm"), enable_prompt_embeds=True, dtype="float32", seed=0)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=saved["max_new_tokens"], stop_token_ids=[saved["eos"]])
    outputs = llm.generate([{"prompt_embeds": e} for e in saved["embeds"]], params, use_tqdm=False)
    ours = [[t for t in o.outputs[0].token_ids if t != saved["eos"]] for o in outputs]
    same = [a == b for a, b in zip(ours, saved["hf_tokens"])]
    for sid, ok, a, b in zip(saved["ids"], same, ours, saved["hf_tokens"]):
        print(f"{sid}: {'identical' if ok else 'DIFFERENT'} ({len(a)} vLLM tokens, {len(b)} HF tokens)")
    print(json.dumps({"vllm": vllm.__version__, "torch": torch.__version__, "studies": len(same),
                      "identical": sum(same)}))
    return 0 if all(same) else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    d = sub.add_parser("dump")
    d.add_argument("checkpoint", type=Path)
    d.add_argument("out", type=Path)
    d.add_argument("--studies", type=int, default=16)
    d.add_argument("--max-new-tokens", type=int, default=40)
    c = sub.add_parser("check")
    c.add_argument("directory", type=Path)
    args = p.parse_args()
    if args.step == "dump":
        dump(args.checkpoint, args.out, args.studies, args.max_new_tokens)
    else:
        sys.exit(check(args.directory))


if __name__ == "__main__":
    main()
