"""Is the phantom task learnable? A small CNN probe from pixels to the labeler's 14 labels.

What: draws phantoms for the IU train + test splits (resumable), trains a 4-block CNN on
      both views at 128×128 against the labeler's positive labels of each real report, and
      prints per-observation test AUROC and micro-F1 at 0.5. A sanity check of the data,
      not the R2GenKG model.
Needs: nothing but the bundled IU reports; about 10 minutes on 2 CPU cores.
Run:   .venv/bin/python scripts/phantom_learnability.py [--out data/phantoms/probe] [--epochs 15] [--render-size 256]
       (--render-size: the side the phantoms are drawn at before the probe resizes them to 128)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cxr.images import load_image
from cxr.labeler import label_reports
from cxr.observations import FIVE_OBSERVATIONS, OBSERVATIONS
from cxr.phantom.generate import generate_phantoms
from cxr.phantom.render import PhantomConfig
from cxr.readers.r2gen import bundled_iu_annotation, read_r2gen
from generator.decisions import best_f1_threshold
from training.metrics.auroc import auroc


def load_split(annotation: Path, images: Path, split: str, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 2, side, side) images in [0, 1] and (N, 14) positive-label targets."""
    records = read_r2gen(annotation, image_root=images, splits=[split])
    x = np.stack([
        np.stack([np.asarray(load_image(p).resize((side, side)), np.float32) / 255 for p in r.image_paths[:2]])
        for r in tqdm(records, desc=f"load {split}")
    ])
    y = (label_reports([r.report for r in records]) == 1).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y)


def probe_cnn(n_out: int = len(OBSERVATIONS)) -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(2, 16), *block(16, 32), *block(32, 64), *block(64, 64),
                         nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, n_out))


def train(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = probe_cnn()
    prior = y.mean(0).clamp(min=1e-3)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=((1 - prior) / prior).clamp(max=20))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    for _ in tqdm(range(epochs), desc="train"):
        for batch in torch.randperm(len(x)).split(32):
            opt.zero_grad()
            loss_fn(net(x[batch]), y[batch]).backward()
            opt.step()
    return net.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/phantoms/probe"))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render-size", type=int, default=256, help="side the phantoms are drawn at")
    args = parser.parse_args()
    torch.set_num_threads(2)

    annotation = bundled_iu_annotation()
    generate_phantoms(annotation, args.out, PhantomConfig(size=args.render_size, seed=args.seed),
                      splits=["train", "test"], workers=2)
    x_train, y_train = load_split(annotation, args.out, "train", 128)
    x_test, y_test = load_split(annotation, args.out, "test", 128)
    start = time.perf_counter()
    net = train(x_train, y_train, args.epochs, args.seed)
    with torch.no_grad():
        prob = torch.sigmoid(net(x_test)).numpy()
    y = y_test.numpy()
    print(f"trained {args.epochs} epochs on {len(x_train)} studies in {time.perf_counter() - start:.0f} s")
    for j, obs in enumerate(OBSERVATIONS):
        area = auroc(prob[:, j], y[:, j])
        print(f"{obs.value:28s} test positives {int(y[:, j].sum()):4d}   AUROC {'nan' if area is None else f'{area:.3f}'}")
    pred = prob > 0.5
    for j in (OBSERVATIONS.index(o) for o in FIVE_OBSERVATIONS):
        f1 = best_f1_threshold(prob[:, j], y[:, j] == 1, min_positives=1)[1]
        print(f"{OBSERVATIONS[j].value:28s} best test F1 {'nan' if f1 is None else f'{f1:.3f}'} (a ceiling: the cut is fit on test)")
    tp, fp, fn = (pred & (y == 1)).sum(), (pred & (y == 0)).sum(), (~pred & (y == 1)).sum()
    print(f"micro-F1 (14, threshold 0.5): {2 * tp / (2 * tp + fp + fn):.3f}")


if __name__ == "__main__":
    main()
