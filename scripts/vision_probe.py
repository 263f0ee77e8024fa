"""Which vision backbone, and which classifier loss, learns the phantoms within a CPU budget?
A classifier-only probe.

What: the iu_phantom vision encoder + disease Q-Former + its 14-way head, trained with the
classifier loss only for --steps steps on the phantom train split, then per observation on val:
AUROC, and F1 of label 1 at the F1-optimal threshold (generator.decisions.fit_thresholds, fit on
val itself: the best a threshold can do, the same for every loss) and at 0.5. Run it once per
backbone or per --imbalance policy to compare (docs/results.md). --json writes the last evaluation.
Needs: phantoms under outputs/phantoms/iu_128 (any iu_phantom train run renders them).
Run:   .venv/bin/python scripts/vision_probe.py --backbone swin --steps 600
       .venv/bin/python scripts/vision_probe.py --backbone resnet --steps 300
       .venv/bin/python scripts/vision_probe.py --imbalance pos_weight --steps 650 --json outputs/probe/pos_weight.json
       .venv/bin/python scripts/vision_probe.py --steps 650 --set model.qformer.uncertain_policy=soft
       .venv/bin/python scripts/vision_probe.py --steps 975 --every 325 --test --set model.qformer.spatial_head=false
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cxr.datasets import load_split
from cxr.observations import FIVE_OBSERVATIONS, OBSERVATIONS, POSITIVE
from encoders.qformer import DiseaseQFormer, Imbalance
from encoders.vision import SwinEncoder
from generator.decisions import fit_thresholds
from training.config import load_experiment
from training.data import StudyDataset, make_loader
from training.metrics.auroc import auroc_per_observation

BACKBONES = {
    "resnet": [],   # configs/iu_phantom.yaml as shipped
    "swin": ["model.vision.model_name=swin_tiny_patch4_window7_224",
             "model.vision.model_kwargs={embed_dim: 32, depths: [1, 1, 2], num_heads: [1, 2, 4], window_size: 4}"],
}


def _micro_f1(decided: np.ndarray, truth: np.ndarray) -> float:
    tp = int((decided & truth).sum())
    return 2 * tp / max(int(decided.sum()) + int(truth.sum()), 1)


def probabilities(vision: SwinEncoder, qformer: DiseaseQFormer, data: StudyDataset) -> np.ndarray:
    """(N, 14) classifier probabilities, in eval mode."""
    vision.eval()
    qformer.eval()
    probs = []
    with torch.no_grad():
        for batch in make_loader(data, 64, shuffle=False):
            v = vision(batch.images, batch.view_mask)
            probs.append(torch.sigmoid(qformer(v.tokens, v.mask).logits))
    vision.train()
    qformer.train()
    return torch.cat(probs).numpy()


def evaluate(vision: SwinEncoder, qformer: DiseaseQFormer, val: StudyDataset,
             test: StudyDataset | None = None) -> dict[str, object]:
    p, labels = probabilities(vision, qformer, val), val.labels.numpy()
    auroc = auroc_per_observation(p, labels)
    thresholds = fit_thresholds(p, labels)
    truth = labels == POSITIVE
    fitted = p >= np.array(thresholds.positive)
    five = [OBSERVATIONS.index(o) for o in FIVE_OBSERVATIONS]
    known = [x for x in auroc.values() if x is not None]
    f1s = [f for f in thresholds.f1 if f is not None]
    result: dict[str, object] = {
        "mean_auroc": float(np.mean(known)), "mean_f1_fitted": float(np.mean(f1s)),
        "micro_f1_fitted": _micro_f1(fitted, truth), "micro_f1_at_0.5": _micro_f1(p >= 0.5, truth),
        "CE5_micro_f1_fitted": _micro_f1(fitted[:, five], truth[:, five]),
        "CE5_micro_f1_at_0.5": _micro_f1(p[:, five] >= 0.5, truth[:, five]),
        "auroc": {k: None if x is None else round(x, 3) for k, x in auroc.items()},
        "f1_fitted": {o.value: None if f is None else round(f, 3) for o, f in zip(OBSERVATIONS, thresholds.f1)}}
    if test is not None:   # the val-fit thresholds on the test split: the decisions a checkpoint would make
        pt, test_labels = probabilities(vision, qformer, test), test.labels.numpy()
        test_auroc = auroc_per_observation(pt, test_labels)
        decided, test_truth = pt >= np.array(thresholds.positive), test_labels == POSITIVE
        result |= {"test_mean_auroc": float(np.mean([x for x in test_auroc.values() if x is not None])),
                   "test_decisions_CE5_micro_f1": _micro_f1(decided[:, five], test_truth[:, five]),
                   "test_decisions_CE14_micro_f1": _micro_f1(decided, test_truth)}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=150, help="evaluate every N steps")
    p.add_argument("--imbalance", choices=[i.value for i in Imbalance], default=None,
                   help="classifier loss policy (default: the config's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a config override, e.g. --set model.qformer.spatial_head=false (repeatable)")
    p.add_argument("--json", type=str, default=None, help="write the last evaluation here")
    p.add_argument("--test", action="store_true",
                   help="also score the test split with the val-fit thresholds (the decisions' CE-5)")
    args = p.parse_args()
    overrides = (BACKBONES[args.backbone] + ([f"model.qformer.imbalance={args.imbalance}"] if args.imbalance else [])
                 + args.overrides)
    cfg = load_experiment("configs/iu_phantom.yaml", overrides)
    torch.manual_seed(args.seed)
    cache = "outputs/runs/.image_cache"
    train = StudyDataset(load_split(cfg.data, "train"), cfg.data, cache_dir=cache)
    val = StudyDataset(load_split(cfg.data, "val"), cfg.data, cache_dir=cache)
    test = StudyDataset(load_split(cfg.data, "test"), cfg.data, cache_dir=cache) if args.test else None
    vision = SwinEncoder(cfg.model.vision)
    # the sizes the Q-Former takes from the vision encoder, derived as the full model derives them
    qformer = DiseaseQFormer(cfg.model.derive(vision.out_dim, cfg.model.kg.graph.text_dim,
                                              vision.tokens_per_view).qformer)
    qformer.set_prior(train.labels)
    params = [*vision.parameters(), *qformer.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    print(f"{args.backbone}: {cfg.model.vision.model_name}, {sum(x.numel() for x in vision.parameters()):,} "
          f"parameters, {vision.num_tokens(1)} tokens x {vision.out_dim}; imbalance "
          f"{cfg.model.qformer.imbalance.value}")
    result: dict[str, object] = {}
    step, t0 = 0, time.perf_counter()
    while step < args.steps:
        for batch in make_loader(train, cfg.train.batch_size, seed=args.seed, epoch=step):
            v = vision(batch.images, batch.view_mask)
            loss = qformer(v.tokens, v.mask, batch.labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % args.every == 0 or step == args.steps:
                result = {"step": step, "seconds": round(time.perf_counter() - t0, 1), **evaluate(vision, qformer, val, test)}
                print(f"step {step} ({result['seconds']:.0f} s): val mean AUROC {result['mean_auroc']:.3f}, "
                      f"mean F1 {result['mean_f1_fitted']:.3f} and micro F1 {result['micro_f1_fitted']:.3f} "
                      f"(fitted thresholds), micro F1 {result['micro_f1_at_0.5']:.3f} at 0.5, CE-5 micro F1 "
                      f"{result['CE5_micro_f1_fitted']:.3f} fitted / {result['CE5_micro_f1_at_0.5']:.3f} at 0.5; "
                      + (f"test: mean AUROC {result['test_mean_auroc']:.3f}, decisions' CE-5 micro F1 "
                         f"{result['test_decisions_CE5_micro_f1']:.3f}; " if test is not None else "") +
                      f"AUROC {result['auroc']}", flush=True)
            if step >= args.steps:
                break
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"imbalance": cfg.model.qformer.imbalance.value, "backbone": args.backbone,
                                   "seed": args.seed, "overrides": args.overrides, **result}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
