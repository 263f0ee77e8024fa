"""The docs/results.md table, from the runs scripts/ablations.sh made (nothing is typed by hand).

Reads, per variant under --runs: <variant>/best/eval_test/results.json (test metrics and
classifier AUROC), the newest step checkpoint's trainer_state.json (epochs, samples and training seconds),
val_log.csv (the best epoch), and baselines.json from scripts/reference_baselines.py if present.
Run:   .venv/bin/python scripts/results_table.py [--runs outputs/runs/ablations]
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from training.loop import COMPLETE, latest_checkpoint

ROWS = [("full", "full model, per-study KG (ours)"), ("global", "full model, global KG (paper mode)"),
        ("no_kg", "no KG"), ("no_disease_tokens", "no disease tokens")]
NLG = ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def row(run: Path) -> dict[str, object] | None:
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
    return {**{k: m["nlg"][k] for k in NLG}, "CE14_micro": m["ce_14"]["micro"]["f1"],
            "CE14_macro": m["ce_14"]["macro"]["f1"], "CE5_micro": m["ce_5"]["micro"]["f1"],
            "AUROC": data["classifier_mean_auroc"], "epochs": state["epoch"], "best_epoch": int(best["epoch"]),
            "minutes": state["seconds"] / 60, "samples_per_s": state["samples"] / state["seconds"],
            "stopped": state["stopped"] or "epochs"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("outputs/runs/ablations"))
    args = p.parse_args()
    head = ["variant", *NLG, "CE-14 micro F1", "CE-14 macro F1", "CE-5 micro F1", "classifier mean AUROC",
            "epochs run (best)", "train min", "samples/s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for key, name in ROWS:
        r = row(args.runs / key)
        if r is None:
            print(f"| {name} | " + " | ".join(["not run"] * (len(head) - 1)) + " |")
            continue
        cells = [_fmt(r[k]) for k in (*NLG, "CE14_micro", "CE14_macro", "CE5_micro", "AUROC")]
        cells += [f"{r['epochs']} ({r['best_epoch']}, {r['stopped']})", f"{r['minutes']:.1f}", f"{r['samples_per_s']:.1f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    baselines = args.runs / "baselines.json"
    if baselines.is_file():
        b = json.loads(baselines.read_text())
        for key, name in (("most_frequent_train_report", "reference: the most frequent train report, always"),
                          ("nearest_train_report_by_pixels", "reference: nearest train report by pixels")):
            f = b[key]
            cells = [_fmt(f.get(k)) for k in NLG] + [_fmt(f["CE14_micro_f1"]), _fmt(f["CE14_macro_f1"]),
                                                     _fmt(f["CE5_micro_f1"]), "–", "–", "–", "–"]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
