"""Which vision backbone learns the phantoms within a CPU budget? Classifier-only probe.

What: the iu_phantom vision encoder + disease Q-Former + its 14-way head, trained with BCE only
for --steps steps on the phantom train split, then val AUROC per observation. Run it once per
backbone to compare: the from-scratch Swin of the first iu_phantom draft against the narrow
timm ResNet the config now uses (docs/results.md).
Needs: phantoms under outputs/phantoms/iu_128 (any iu_phantom train run renders them).
Run:   .venv/bin/python scripts/vision_probe.py --backbone swin --steps 600
       .venv/bin/python scripts/vision_probe.py --backbone resnet --steps 300
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from cxr.datasets import load_split
from encoders.qformer import DiseaseQFormer
from encoders.vision import SwinEncoder
from training.config import load_experiment
from training.data import StudyDataset, make_loader
from training.metrics.auroc import auroc_per_observation

BACKBONES = {
    "resnet": [],   # configs/iu_phantom.yaml as shipped
    "swin": ["model.vision.model_name=swin_tiny_patch4_window7_224",
             "model.vision.model_kwargs={embed_dim: 32, depths: [1, 1, 2], num_heads: [1, 2, 4], window_size: 4}"],
}


def evaluate(vision: SwinEncoder, qformer: DiseaseQFormer, val: StudyDataset) -> dict[str, float | None]:
    vision.eval()
    qformer.eval()
    probs = []
    with torch.no_grad():
        for batch in make_loader(val, 64, shuffle=False):
            v = vision(batch.images, batch.view_mask)
            probs.append(torch.sigmoid(qformer(v.tokens, v.mask).logits))
    vision.train()
    qformer.train()
    return auroc_per_observation(torch.cat(probs).numpy(), val.labels.numpy())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", choices=sorted(BACKBONES), default="resnet")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--every", type=int, default=150, help="evaluate every N steps")
    args = p.parse_args()
    cfg = load_experiment("configs/iu_phantom.yaml", BACKBONES[args.backbone])
    torch.manual_seed(0)
    cache = "outputs/runs/.image_cache"
    train = StudyDataset(load_split(cfg.data, "train"), cfg.data, cache_dir=cache)
    val = StudyDataset(load_split(cfg.data, "val"), cfg.data, cache_dir=cache)
    vision = SwinEncoder(cfg.model.vision)
    qformer = DiseaseQFormer(replace(cfg.model.qformer, encoder_hidden_size=vision.out_dim))
    params = [*vision.parameters(), *qformer.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    print(f"{args.backbone}: {cfg.model.vision.model_name}, {sum(x.numel() for x in vision.parameters()):,} "
          f"parameters, {vision.num_tokens(1)} tokens x {vision.out_dim}")
    step, t0 = 0, time.perf_counter()
    while step < args.steps:
        for batch in make_loader(train, cfg.train.batch_size, seed=0, epoch=step):
            v = vision(batch.images, batch.view_mask)
            loss = qformer(v.tokens, v.mask, batch.labels).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % args.every == 0 or step == args.steps:
                auc = evaluate(vision, qformer, val)
                known = [x for x in auc.values() if x is not None]
                shown = {k: round(x, 3) for k, x in auc.items() if x is not None}
                print(f"step {step} ({time.perf_counter() - t0:.0f} s): val mean AUROC {np.mean(known):.3f} {shown}",
                      flush=True)
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
