"""scripts/results_table.py: per-variant mean and sample sd over seeds, into docs/results.csv's columns."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(root: Path, variant: str, seed: int, bleu4: float, minutes: float) -> Path:
    run = root / variant / f"seed{seed}"
    (run / "best" / "eval_test").mkdir(parents=True)
    metrics = {"nlg": {"BLEU_4": bleu4, "CIDEr": 0.3}, "ce_14": {"micro": {"f1": 0.7}, "macro": {"f1": 0.3}},
               "ce_5": {"micro": {"f1": 0.5}}, "consistency_f1": 0.8, "repeated_pct": 0.0,
               "decisions_ce_5": {"micro": {"f1": 0.6}}}
    (run / "best" / "eval_test" / "results.json").write_text(json.dumps(
        {"metrics": metrics, "classifier_mean_auroc": 0.9}))
    step = run / "checkpoints" / "checkpoint_1040"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text(json.dumps({"epoch": 8, "seconds": minutes * 60, "stopped": "epochs"}))
    (run / "val_log.csv").write_text("step,epoch,score\n130,1,0.1\n260,2,0.3\n")
    if seed == 1:          # the decoder alone (coverage off), scored beside the default
        (run / "best" / "eval_test_uncovered").mkdir()
        uncovered = {**metrics, "ce_5": {"micro": {"f1": 0.4}}, "consistency_f1": 0.7}
        (run / "best" / "eval_test_uncovered" / "results.json").write_text(json.dumps({"metrics": uncovered}))
    return run


SCRIPT = [sys.executable, str(REPO / "scripts" / "results_table.py")]


def _record(runs: Path, records: Path, variant: str, seed: int, *args: str) -> Path:
    out = records / variant / f"seed{seed}.json"
    subprocess.run([*SCRIPT, "--record", str(runs / variant / f"seed{seed}"), "--out", str(out), *args],
                   capture_output=True, text=True, cwd=REPO, check=True)
    return out


def test_a_record_keeps_the_figures_and_conditions_and_the_table_needs_only_records(tmp_path):
    runs, records = tmp_path / "runs", tmp_path / "records"
    _run(runs, "full", 1, 0.10, 10.0)
    _run(runs, "full", 2, 0.14, 12.0)
    _run(runs, "no_kg", 1, 0.12, 9.0)
    (runs / "full" / "seed3").mkdir()                 # started, not finished: no record
    first = _record(runs, records, "full", 1, "--set", "threads=2", "--set", "commit=abc1234",
                    "--set", 'started="1234567"')
    _record(runs, records, "full", 2)
    _record(runs, records, "no_kg", 1)
    kept = json.loads(first.read_text())
    assert kept["threads"] == 2 and kept["commit"] == "abc1234" and kept["BLEU_4"] == pytest.approx(0.10)
    assert kept["started"] == "1234567"                # a quoted value stays a string
    assert kept["epochs"] == 8 and kept["selected_epoch"] == 2
    shutil.rmtree(runs)                               # run folders are generated data: the records suffice
    out = tmp_path / "results.csv"
    done = subprocess.run([*SCRIPT, "--records", str(records), "--csv", str(out)],
                          capture_output=True, text=True, cwd=REPO, check=True)
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
    # coverage off: only seed 1 was scored that way, so the mean is its figure
    assert float(full["uncovered_consistency_F1"]) == pytest.approx(0.7)
    assert float(full["uncovered_CE5_micro_F1"]) == pytest.approx(0.4) and full["uncovered_CE5_micro_F1_sd"] == ""


def test_an_unfinished_run_and_a_bad_condition_are_one_line_errors(tmp_path):
    (tmp_path / "full" / "seed1").mkdir(parents=True)
    done = subprocess.run([*SCRIPT, "--record", str(tmp_path / "full" / "seed1"), "--out", str(tmp_path / "r.json")],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode != 0 and "no test results" in done.stderr and "Traceback" not in done.stderr
    _run(tmp_path, "full", 2, 0.1, 1.0)
    done = subprocess.run([*SCRIPT, "--record", str(tmp_path / "full" / "seed2"), "--out", str(tmp_path / "r.json"),
                           "--set", "threads"], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode != 0 and "KEY=VALUE" in done.stderr and not (tmp_path / "r.json").exists()


def test_a_record_of_another_decoding_reads_its_own_evaluation_folder(tmp_path):
    """--eval: scripts/decode_eval.sh records e.g. beam 3 from best/eval_test_beam3, not the default."""
    runs, records = tmp_path / "runs", tmp_path / "records"
    run = _run(runs, "full", 1, 0.10, 10.0)
    shutil.copytree(run / "best" / "eval_test", run / "best" / "eval_test_beam3")
    beam = json.loads((run / "best" / "eval_test_beam3" / "results.json").read_text())
    beam["metrics"]["nlg"]["BLEU_4"] = 0.13
    (run / "best" / "eval_test_beam3" / "results.json").write_text(json.dumps(beam))
    kept = json.loads(_record(runs, records, "full", 1, "--eval", "eval_test_beam3",
                              "--uncovered-eval", "eval_test_beam3_uncovered").read_text())
    assert kept["BLEU_4"] == pytest.approx(0.13) and "uncovered_CE5_micro_F1" not in kept
