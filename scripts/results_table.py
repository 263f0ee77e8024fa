"""The docs/results.md table and docs/results.csv, from the runs scripts/ablations.sh made (nothing is
typed by hand).

Reads, per variant and seed under --runs (<variant>/seed<N>/): best/eval_test/results.json (test
metrics, consistency, classifier AUROC, repeated sentences, the CE-5 of the model's own decisions;
runs scored before that figure existed are rescored from their predictions.jsonl against the
bundled IU annotation, which every iu_phantom run uses), the newest step checkpoint's
trainer_state.json (epochs and training seconds) and val_log.csv (the selected epoch); and
baselines.json from scripts/reference_baselines.py for the two reference rows. Every figure is the
mean over the seeds that finished, with its sample standard deviation (``_sd``; empty for one seed).
Run:   .venv/bin/python scripts/results_table.py [--runs outputs/runs/ablations] [--csv docs/results.csv]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any

from cxr.readers.r2gen import bundled_iu_annotation
from training.evaluate import evaluate
from training.loop import COMPLETE, latest_checkpoint

VARIANTS = ("full", "global", "no_kg", "no_disease_tokens", "full_no_diagnosis_prompt")
REFERENCES = (("reference_most_frequent_report", "most_frequent_train_report"),
              ("reference_nearest_by_pixels", "nearest_train_report_by_pixels"))
FIGURES = ("BLEU_4", "CIDEr", "CE14_micro_F1", "CE14_macro_F1", "CE5_micro_F1", "consistency_F1",
           "decisions_CE5_micro_F1", "AUROC", "repeated_pct", "train_min")
COLUMNS = ("variant", "seeds", *(c for f in FIGURES for c in (f, f"{f}_sd")), "epochs", "selected_epochs")


def seed_row(run: Path) -> dict[str, Any] | None:
    """One finished run's figures, or None while it has no test results."""
    results = run / "best" / "eval_test" / "results.json"
    if not results.is_file():
        return None
    data = json.loads(results.read_text())
    m = data["metrics"]
    newest = latest_checkpoint(run)
    if newest is None:
        raise SystemExit(f"{run}: no step checkpoint with trainer_state.json (a run of an older r2genkg?)")
    state = json.loads((newest / COMPLETE).read_text())
    with (run / "val_log.csv").open() as f:
        val = list(csv.DictReader(f))
    best = max(val, key=lambda r: float(r["score"]))
    decided = m.get("decisions_ce_5")
    if decided is None:   # scored before decisions_ce_5 existed: the same scoring, from the predictions
        scores = evaluate(results.parent / "predictions.jsonl", bundled_iu_annotation(), "test", meteor=False).scores
        decided = None if scores.decisions_ce_5 is None else scores.decisions_ce_5.to_dict()
    return {"BLEU_4": m["nlg"]["BLEU_4"], "CIDEr": m["nlg"]["CIDEr"], "CE14_micro_F1": m["ce_14"]["micro"]["f1"],
            "CE14_macro_F1": m["ce_14"]["macro"]["f1"], "CE5_micro_F1": m["ce_5"]["micro"]["f1"],
            "consistency_F1": m.get("consistency_f1"),
            "decisions_CE5_micro_F1": None if decided is None else decided["micro"]["f1"], "AUROC": data["classifier_mean_auroc"],
            "repeated_pct": m.get("repeated_pct"), "train_min": state["seconds"] / 60,
            "epochs": state["epoch"], "selected_epoch": int(best["epoch"])}


def aggregate(variant: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"variant": variant, "seeds": len(rows)}
    for f in FIGURES:
        values = [r[f] for r in rows if r.get(f) is not None]
        out[f] = statistics.fmean(values) if values else None
        out[f"{f}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    out["epochs"] = "/".join(str(r["epochs"]) for r in rows)
    out["selected_epochs"] = "/".join(str(r["selected_epoch"]) for r in rows)
    return out


def reference_rows(baselines: Path) -> list[dict[str, Any]]:
    if not baselines.is_file():
        return []
    b = json.loads(baselines.read_text())
    rows = []
    for name, key in REFERENCES:
        f = b[key]
        rows.append({"variant": name, "seeds": "", "BLEU_4": f["BLEU_4"], "CIDEr": f["CIDEr"],
                     "CE14_micro_F1": f["CE14_micro_f1"], "CE14_macro_F1": f["CE14_macro_f1"],
                     "CE5_micro_F1": f["CE5_micro_f1"], "repeated_pct": f.get("repeated_pct")})
    return rows


def _cell(row: dict[str, Any], figure: str) -> str:
    mean, sd = row.get(figure), row.get(f"{figure}_sd")
    if mean is None:
        return "–"
    digits = 1 if figure in ("repeated_pct", "train_min") else 3
    return f"{mean:.{digits}f}" + ("" if sd is None else f" ± {sd:.{digits}f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("outputs/runs/ablations"))
    p.add_argument("--csv", type=Path, default=Path("docs/results.csv"))
    args = p.parse_args()
    table: list[dict[str, Any]] = []
    for variant in VARIANTS:
        seeds = sorted((args.runs / variant).glob("seed*"), key=lambda d: int(d.name.removeprefix("seed")))
        rows = [r for r in map(seed_row, seeds) if r is not None]
        if rows:
            table.append(aggregate(variant, rows))
    table += reference_rows(args.runs / "baselines.json")
    if not table:
        raise SystemExit(f"no finished run under {args.runs}: run scripts/ablations.sh first")
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in table:
            writer.writerow({k: ("" if row.get(k) is None else (round(row[k], 4) if isinstance(row[k], float)
                                                                 else row[k])) for k in COLUMNS})
    print("| variant | seeds | " + " | ".join(FIGURES) + " | epochs (selected) |")
    print("|" + "---|" * (len(FIGURES) + 3))
    for row in table:
        epochs = f"{row['epochs']} ({row['selected_epochs']})" if "epochs" in row else "–"
        print(f"| {row['variant']} | {row['seeds'] or '–'} | " + " | ".join(_cell(row, f) for f in FIGURES)
              + f" | {epochs} |")
    print(f"\nwrote {args.csv}")


if __name__ == "__main__":
    main()
