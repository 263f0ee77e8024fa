"""Where a checkpoint's positive decisions go wrong: per observation, against the reference labels.

What: for each RUN (a run folder whose best checkpoint was scored with `r2genkg test`, so that
RUN/best/eval_test/predictions.jsonl exists), per CE-5 observation (or all 14 with --all), the
decisions' true positives, false positives and false negatives against label 1 of the reference
report (the labeler on the real IU report), and what the reference said where a decision was a
false positive: uncertain (-1), negative (0) or not mentioned (blank). Then the decisions' CE-5
micro F1 (docs/results.csv's decisions_CE5_micro_F1). A false positive on an uncertain reference
is a study whose phantom shows the finding faintly (cxr/phantom/render.py: uncertain findings are
drawn at a fraction of full strength), so it says whether the classifier keeps "uncertain" apart.
Run:   .venv/bin/python scripts/decision_errors.py outputs/runs/ablations/full/seed1 [RUN ...] [--all]
"""
from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

from cxr.labeler import label_reports
from cxr.observations import FIVE_OBSERVATIONS, OBSERVATIONS, POSITIVE, UNCERTAIN
from cxr.readers.r2gen import bundled_iu_annotation, read_r2gen
from training.metrics.clinical import ce_metrics


def reference_labels(split: str = "test") -> dict[str, np.ndarray]:
    """Study id → the labeler's (14,) labels of its real IU report."""
    records = read_r2gen(bundled_iu_annotation(), splits=[split])
    labels = label_reports([r.report for r in records])
    return {r.study_id: row for r, row in zip(records, labels)}


def _said(value: float) -> str:
    if math.isnan(value):
        return "blank"
    return "uncertain" if value == UNCERTAIN else "negative"


def decision_errors(run: Path, labels: dict[str, np.ndarray], observations: list) -> tuple[list[dict], float]:
    """Per observation {observation, tp, fp, fn, fp_reference: Counter}, and the micro F1 over them."""
    path = run / "best" / "eval_test" / "predictions.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (score the run first: r2genkg test {run}/best --split test)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ids = [r["id"] for r in rows]
    missing = [i for i in ids if i not in labels]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} ids not in the IU test split, e.g. {missing[0]}")
    reference = np.stack([labels[i] for i in ids])
    decided = np.array([[POSITIVE if o.value in r["positive"] else np.nan for o in OBSERVATIONS] for r in rows])
    scored = ce_metrics(decided, reference, observations)   # the CE convention: label 1 only is positive
    out = []
    for obs, stats in zip(observations, scored.per_class):
        j = OBSERVATIONS.index(obs)
        wrong = (decided[:, j] == POSITIVE) & (reference[:, j] != POSITIVE)
        said = Counter(_said(float(v)) for v in reference[wrong, j])
        out.append({"observation": obs.value, "tp": stats.tp, "fp": stats.fp, "fn": stats.fn, "fp_reference": said})
    return out, scored.micro.f1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with best/eval_test/predictions.jsonl)")
    p.add_argument("--all", action="store_true", help="all 14 observations, not the CE-5")
    args = p.parse_args()
    observations = list(OBSERVATIONS) if args.all else list(FIVE_OBSERVATIONS)
    labels = reference_labels()
    for run in args.runs:
        per, f1 = decision_errors(run, labels, observations)
        print(f"{run}: decisions' micro F1 over {len(observations)} observations {f1:.3f}")
        for row in per:
            said = ", ".join(f"{k} {v}" for k, v in sorted(row["fp_reference"].items())) or "-"
            print(f"  {row['observation']:<27} tp {row['tp']:>3}  fp {row['fp']:>3}  fn {row['fn']:>3}  "
                  f"false positives' references: {said}")


if __name__ == "__main__":
    main()
