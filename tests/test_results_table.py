"""scripts/results_table.py: per-variant mean and sample sd over seeds, into docs/results.csv's columns."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(root: Path, variant: str, seed: int, bleu4: float, minutes: float, decided: bool = True) -> Path:
    run = root / variant / f"seed{seed}"
    (run / "best" / "eval_test").mkdir(parents=True)
    metrics = {"nlg": {"BLEU_4": bleu4, "CIDEr": 0.3}, "ce_14": {"micro": {"f1": 0.7}, "macro": {"f1": 0.3}},
               "ce_5": {"micro": {"f1": 0.5}}, "consistency_f1": 0.8, "repeated_pct": 0.0}
    if decided:
        metrics["decisions_ce_5"] = {"micro": {"f1": 0.6}}
    (run / "best" / "eval_test" / "results.json").write_text(json.dumps(
        {"metrics": metrics, "classifier_mean_auroc": 0.9}))
    step = run / "checkpoints" / "checkpoint_1040"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text(json.dumps({"epoch": 8, "seconds": minutes * 60, "stopped": "epochs"}))
    (run / "val_log.csv").write_text("step,epoch,score\n130,1,0.1\n260,2,0.3\n")
    return run


def _table(root: Path) -> dict[str, dict[str, str]]:
    out = root / "results.csv"
    subprocess.run([sys.executable, str(REPO / "scripts" / "results_table.py"), "--runs", str(root), "--csv", str(out)],
                   capture_output=True, text=True, cwd=REPO, check=True)
    return {r["variant"]: r for r in csv.DictReader(out.open())}


def test_mean_and_sd_over_seeds_and_a_single_seed_row(tmp_path):
    _run(tmp_path, "full", 1, 0.10, 10.0)
    _run(tmp_path, "full", 2, 0.14, 12.0)
    _run(tmp_path, "no_kg", 1, 0.12, 9.0)
    (tmp_path / "full" / "seed3").mkdir()            # started, not finished: left out
    out = tmp_path / "results.csv"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "results_table.py"), "--runs", str(tmp_path),
                           "--csv", str(out)], capture_output=True, text=True, cwd=REPO, check=True)
    assert "| full | 2 |" in done.stdout
    rows = {r["variant"]: r for r in csv.DictReader(out.open())}
    assert list(rows) == ["full", "no_kg"]
    full = rows["full"]
    assert full["seeds"] == "2" and float(full["BLEU_4"]) == pytest.approx(0.12)
    assert float(full["BLEU_4_sd"]) == pytest.approx(0.0283, abs=1e-4)     # sample sd of 0.10, 0.14
    assert float(full["train_min"]) == pytest.approx(11.0) and full["selected_epochs"] == "2/2"
    assert rows["no_kg"]["BLEU_4_sd"] == ""                                  # one seed: no sd
    header = next(csv.reader(out.open()))
    assert header[:4] == ["variant", "seeds", "BLEU_4", "BLEU_4_sd"] and "consistency_F1_sd" in header
    assert float(full["decisions_CE5_micro_F1"]) == pytest.approx(0.6)


def test_a_run_scored_before_decisions_ce_5_is_rescored_from_its_predictions(tmp_path, iu_annotation):
    run = _run(tmp_path, "full", 1, 0.10, 10.0, decided=False)
    test = json.loads(iu_annotation.read_text())["test"]
    with (run / "best" / "eval_test" / "predictions.jsonl").open("w") as f:   # every study decided Cardiomegaly
        f.writelines(json.dumps({"id": a["id"], "report": a["report"], "positive": ["Cardiomegaly"]}) + "\n"
                     for a in test)
    # CE-5 of the decisions: the 26 Cardiomegaly references found, 564 false, 42 other CE-5 positives missed
    assert float(_table(tmp_path)["full"]["decisions_CE5_micro_F1"]) == pytest.approx(52 / 658, abs=1e-4)
