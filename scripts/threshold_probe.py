"""Would another rule for the decision thresholds give better decisions? A probe on trained runs.

What: for each RUN (its best checkpoint), the classifier's probabilities on the val and test
splits (cached as RUN/best/classifier_probs.npz), then the decisions' CE-5 micro F1 on test
(docs/results.csv's decisions_CE5_micro_F1) with thresholds fit on val by:
  f1_optimal   the shipped rule (generator.decisions.fit_thresholds, F1-optimal against label 1);
  bootstrap    per CE-5 observation the median of the F1-optimal cuts of --resamples bootstrap
               resamples of val: a steadier cut where val has few positives;
  rate         per CE-5 observation the cut that decides as many val studies as val has positives;
and, as a ceiling and not a result, test_oracle: the F1-optimal cut on the test split itself,
what no rule fit on val can beat. Only the CE-5 cuts change; the rest stay the shipped ones.
Run:   .venv/bin/python scripts/threshold_probe.py outputs/runs/ablations/full/seed1 [RUN ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cxr.observations import FIVE_OBSERVATIONS, OBSERVATIONS, POSITIVE
from generator.checkpoint import load_bundle
from generator.decisions import best_f1_threshold, fit_thresholds
from graphdb.store import StoreConfig
from training.calibrate import classifier_outputs
from training.evaluate_checkpoint import checkpoint_split
from training.metrics.clinical import ce_metrics

FIVE = [OBSERVATIONS.index(o) for o in FIVE_OBSERVATIONS]
CACHE = "classifier_probs.npz"


def split_outputs(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split → (probabilities (n, 14), labels (n, 14)) for val and test, computed once per run."""
    cache = run / "best" / CACHE
    if cache.is_file():
        z = np.load(cache)
        return {s: (z[f"{s}_p"], z[f"{s}_y"]) for s in ("val", "test")}
    splits = {split: checkpoint_split(run / "best", split, None, False) for split in ("val", "test")}
    config = splits["val"][0]
    with load_bundle(run / "best", StoreConfig(), config) as bundle, torch.no_grad():
        model = bundle.model.eval()
        out = {split: classifier_outputs(model, dataset, 64, "cpu") for split, (_, dataset, _) in splits.items()}
    np.savez(cache, **{f"{s}_{k}": v for s, (p, y) in out.items() for k, v in (("p", p), ("y", y))})
    return out


def _ce5_micro_f1(probabilities: np.ndarray, cuts: np.ndarray, labels: np.ndarray) -> float:
    """The decisions ``probabilities ≥ cuts`` scored like docs/results.csv's decisions_CE5_micro_F1."""
    decided = np.where(probabilities >= cuts, POSITIVE, np.nan)
    return ce_metrics(decided, labels, FIVE_OBSERVATIONS).micro.f1


def rule_cuts(p: np.ndarray, truth: np.ndarray, shipped: np.ndarray, rule: str, resamples: int,
              seed: int = 0) -> np.ndarray:
    """The (14,) cuts of ``rule`` fit on (p, truth); observations the shipped fit left at a default
    (too few positives, or never decided) keep their shipped cut."""
    cuts = shipped.copy()
    rng = np.random.default_rng(seed)
    for j in FIVE:
        fitted, f1 = best_f1_threshold(p[:, j], truth[:, j])
        if f1 is None:
            continue
        if rule == "bootstrap":
            draws = [best_f1_threshold(p[i, j], truth[i, j]) for i in
                     (rng.integers(0, len(p), len(p)) for _ in range(resamples))]
            cuts[j] = float(np.median([t for t, f in draws if f is not None]))
        elif rule == "rate":
            k = int(truth[:, j].sum())
            cuts[j] = float(np.sort(p[:, j])[::-1][k - 1])
        elif rule == "oracle":
            cuts[j] = fitted
    return cuts


def probe(run: Path, resamples: int) -> dict[str, float]:
    outputs = split_outputs(run)
    (pv, yv), (pt, yt) = outputs["val"], outputs["test"]
    shipped = np.array(fit_thresholds(pv, yv).positive)
    result = {"f1_optimal": _ce5_micro_f1(pt, shipped, yt)}
    for rule in ("bootstrap", "rate"):
        result[rule] = _ce5_micro_f1(pt, rule_cuts(pv, yv == POSITIVE, shipped, rule, resamples), yt)
    oracle = rule_cuts(pt, yt == POSITIVE, shipped, "oracle", resamples)
    result["test_oracle"] = _ce5_micro_f1(pt, oracle, yt)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--resamples", type=int, default=200)
    args = p.parse_args()
    torch.set_num_threads(2)
    rows = []
    for run in args.runs:
        if not (run / "best").is_dir():
            raise SystemExit(f"{run}: no best checkpoint (run folder of r2genkg train)")
        rows.append(probe(run, args.resamples))
        print(f"{run}: decisions' CE-5 on test by rule: "
              + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()), flush=True)
    if len(rows) > 1:
        print("mean: " + ", ".join(f"{k} {np.mean([r[k] for r in rows]):.3f}" for k in rows[0]))


if __name__ == "__main__":
    main()
