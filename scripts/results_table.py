"""The docs/results.md table and docs/results.csv, from the per-run records scripts/ablations.sh
commits (nothing is typed by hand).

Two steps:
- ``--record RUN --out docs/ablation_runs/<variant>/seed<N>.json [--set KEY=VALUE ...]``: one
  finished run's figures, from RUN/best/eval_test/results.json (test metrics, consistency, the
  classifier's AUROC, repeated sentences, the CE-5 of the model's own decisions; and, from
  RUN/best/eval_test_uncovered, CE-5 and consistency with the coverage pass off), the newest step
  checkpoint's trainer_state.json (epochs and training seconds) and val_log.csv (the selected
  epoch), plus the run's conditions (``--set``: wall seconds, threads, commit). ablations.sh writes
  one after each run, so the table outlives the run folders (generated data, git-ignored).
- the table: every record under --records, per variant the mean over its seeds with the sample
  standard deviation (``_sd``; empty for one seed), and the two reference rows from
  baselines.json (scripts/reference_baselines.py).
Run:   .venv/bin/python scripts/results_table.py [--records docs/ablation_runs] [--csv docs/results.csv]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path
from typing import Any

from training.loop import COMPLETE, latest_checkpoint

VARIANTS = ("full", "global", "no_kg", "no_disease_tokens", "full_no_diagnosis_prompt")
REFERENCES = (("reference_most_frequent_report", "most_frequent_train_report"),
              ("reference_nearest_by_pixels", "nearest_train_report_by_pixels"))
FIGURES = ("BLEU_4", "CIDEr", "CE14_micro_F1", "CE14_macro_F1", "CE5_micro_F1", "consistency_F1",
           "decisions_CE5_micro_F1", "uncovered_CE5_micro_F1", "uncovered_consistency_F1", "AUROC",
           "repeated_pct", "train_min")
UNCOVERED = "eval_test_uncovered"   # the same checkpoint with generation.cover_decisions=false
COLUMNS = ("variant", "seeds", *(c for f in FIGURES for c in (f, f"{f}_sd")), "epochs", "selected_epochs")


def seed_row(run: Path, evaluation: str = "eval_test", uncovered_eval: str = UNCOVERED) -> dict[str, Any]:
    """One finished run's figures, from its evaluation folders under RUN/best."""
    results = run / "best" / evaluation / "results.json"
    if not results.is_file():
        raise SystemExit(f"{run}: no test results ({results}); run r2genkg test {run}/best first")
    data = json.loads(results.read_text())
    m = data["metrics"]
    newest = latest_checkpoint(run)
    if newest is None:
        raise SystemExit(f"{run}: no step checkpoint with trainer_state.json (a run of an older r2genkg?)")
    state = json.loads((newest / COMPLETE).read_text())
    with (run / "val_log.csv").open() as f:
        val = list(csv.DictReader(f))
    best = max(val, key=lambda r: float(r["score"]))
    uncovered = run / "best" / uncovered_eval / "results.json"
    u = json.loads(uncovered.read_text())["metrics"] if uncovered.is_file() else None
    return {"BLEU_4": m["nlg"]["BLEU_4"], "CIDEr": m["nlg"]["CIDEr"], "CE14_micro_F1": m["ce_14"]["micro"]["f1"],
            "CE14_macro_F1": m["ce_14"]["macro"]["f1"], "CE5_micro_F1": m["ce_5"]["micro"]["f1"],
            "consistency_F1": m.get("consistency_f1"),
            "decisions_CE5_micro_F1": m["decisions_ce_5"]["micro"]["f1"], "AUROC": data["classifier_mean_auroc"],
            "repeated_pct": m.get("repeated_pct"), "train_min": state["seconds"] / 60,
            "epochs": state["epoch"], "selected_epoch": int(best["epoch"]),
            **({} if u is None else {"uncovered_BLEU_4": u["nlg"]["BLEU_4"],
                                     "uncovered_CE5_micro_F1": u["ce_5"]["micro"]["f1"],
                                     "uncovered_consistency_F1": u.get("consistency_f1")})}


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


def _value(text: str) -> Any:
    """A condition's value: JSON where it parses (2 → int, "abc" → str), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def write_record(run: Path, out: Path, conditions: list[str], evaluation: str = "eval_test",
                 uncovered_eval: str = UNCOVERED) -> None:
    row = seed_row(run, evaluation, uncovered_eval)
    for item in conditions:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        row[key] = _value(value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    print(f"wrote {out}")


def read_records(root: Path) -> list[dict[str, Any]]:
    table = []
    for variant in VARIANTS:
        files = sorted((root / variant).glob("seed*.json"), key=lambda f: int(f.stem.removeprefix("seed")))
        if files:
            table.append(aggregate(variant, [json.loads(f.read_text()) for f in files]))
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=Path, default=Path("docs/ablation_runs"))
    p.add_argument("--csv", type=Path, default=Path("docs/results.csv"))
    p.add_argument("--record", type=Path, metavar="RUN", help="write one finished run's record to --out")
    p.add_argument("--out", type=Path, help="the record file (with --record)")
    p.add_argument("--eval", default="eval_test", help="with --record: the evaluation folder under RUN/best "
                   "(another decoding, e.g. eval_test_beam3 from r2genkg test --output)")
    p.add_argument("--uncovered-eval", default=UNCOVERED, help="with --record: the coverage-off evaluation folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a condition of the run; VALUE is read as JSON where it parses, so quote a string that looks like a number")
    args = p.parse_args()
    if args.record is not None:
        if args.out is None:
            p.error("--record needs --out")
        write_record(args.record, args.out, args.set, args.eval, args.uncovered_eval)
        return
    table = read_records(args.records) + reference_rows(args.records / "baselines.json")
    if not table:
        raise SystemExit(f"no run record under {args.records}: run scripts/ablations.sh first")
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
