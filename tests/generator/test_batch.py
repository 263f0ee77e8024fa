"""scripts/run_batch.py + generator/batch.py on a trained debug checkpoint: every input kind
(study folders, CSV manifest, R2Gen annotation, CheXpert Plus CSV), failures kept apart with
reasons and a non-zero exit, --evaluate, and crash safety: kill -9 mid-run, then a rerun leaves
no duplicate and no missing line; a torn last line is cut."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generator.batch import done_ids, failures_path
from generator.check import checker_for
from generator.decisions import read_thresholds
from graphdb.store import DEFAULT_FEATURES_CACHE, DEFAULT_STORE_PATH

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_batch.py"


@pytest.fixture(autouse=True)
def _checkpoint_graph(monkeypatch, m3kg_config):
    """The script reads the graph the tiny checkpoint was trained on (through the environment)."""
    monkeypatch.setenv("R2GENKG_STORE_PATH", str(m3kg_config.path))
    monkeypatch.setenv("R2GENKG_FEATURES_CACHE", str(m3kg_config.features_cache))


def run_script(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args), "--no-progress", "--device", "cpu"],
                          check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def png(path: Path, seed: int, size: int = 72) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)).save(path)
    return path


def test_study_folders_with_a_corrupt_study(tiny_checkpoint, tmp_path):
    root = tmp_path / "studies"
    for i in range(5):
        png(root / f"st{i}" / "a_frontal.png", i)
        if i % 2:
            png(root / f"st{i}" / "b_lateral.png", 10 + i)
    (root / "broken").mkdir()
    (root / "broken" / "view.png").write_bytes(b"this is not a png")
    out = tmp_path / "out.jsonl"
    proc = run_script(tiny_checkpoint, "--input", root, "--output", out, "--batch-size", "2")
    assert proc.returncode == 1, proc.stderr
    rows = lines(out)
    assert sorted(r["id"] for r in rows) == [f"st{i}" for i in range(5)]
    row = rows[0]
    assert row["report"] and len(row["observations"]) == 14 and row["kg"]["seeds"] and row["kg"]["nodes"]
    assert row["model"].startswith("debug@") and row["engine"] == "hf"
    assert row["timing"]["seconds_per_study"] > 0 and row["tokens"]["completion"] > 0
    assert set(row["labels"].values()) <= {"positive", "negative", "uncertain"}
    checker = checker_for(read_thresholds(tiny_checkpoint))   # the report check, on the row's own figures
    for r in rows:
        assert r["warnings"] == [w.to_dict() for w in checker.check(r["report"], list(r["observations"].values()))]
    failed = lines(failures_path(out))
    assert [f["id"] for f in failed] == ["broken"] and failed[0]["stage"] == "image"
    assert "broken" in failed[0]["reason"] and "PNG, JPEG or DICOM" in failed[0]["reason"]
    assert "1 studies failed" in proc.stderr


def test_manifest_annotation_and_evaluate(tiny_checkpoint, tmp_path):
    manifest = tmp_path / "manifest.csv"
    rows = ["study_id,image_path,view"]
    for i in range(3):
        rows += [f"m{i},img/m{i}_pa.png,PA", f"m{i},img/m{i}_lat.png,LATERAL"]
        png(tmp_path / "img" / f"m{i}_pa.png", i)
        png(tmp_path / "img" / f"m{i}_lat.png", i + 5)
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "m.jsonl"
    proc = run_script(tiny_checkpoint, "--input", manifest, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in lines(out)] == ["m0", "m1", "m2"]
    full = lines(out)[0]
    assert full["sentences"] and full["kg"]["graph"]["nodes"] and full["attention"]["maps"]
    lean = tmp_path / "lean.jsonl"
    proc = run_script(tiny_checkpoint, "--input", manifest, "--output", lean, "--no-evidence")
    assert proc.returncode == 0, proc.stderr
    row = lines(lean)[0]
    assert row["report"] == full["report"] and row["kg"]["nodes"] == full["kg"]["nodes"]
    assert row["sentences"] == [] and row["warnings"] == [] and row["kg"]["graph"] is None and row["attention"] is None

    # the bundled IU annotation's test split, over the phantoms the tiny run rendered (first 4)
    from generator.checkpoint import read_run_config

    data = read_run_config(tiny_checkpoint).data
    out = tmp_path / "iu.jsonl"
    proc = run_script(tiny_checkpoint, "--input", data.annotation_path, "--split", "test",
                      "--image-root", data.image_root, "--limit", 4, "--output", out, "--evaluate", "--no-meteor")
    assert proc.returncode == 0, proc.stderr
    assert len(lines(out)) == 4
    assert "BLEU_4" in proc.stdout and "F1 micro" in proc.stdout


def test_chexpert_plus_csv(tiny_checkpoint, tmp_path):
    from tests.cxr.test_readers import write_chexpert

    csv_path = write_chexpert(tmp_path, malformed=True)
    for i, rel in enumerate(["train/patient00001/study1/view2_lateral.jpg", "train/patient00001/study1/view1_frontal.jpg",
                             "train/patient00002/study2/view1_frontal.jpg"]):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((64, 64), 40 * i, dtype=np.uint8)).save(tmp_path / rel)
    out = tmp_path / "cp.jsonl"
    proc = run_script(tiny_checkpoint, "--input", csv_path, "--split", "train", "--output", out)
    # the malformed row 5 is a read failure: reported, and the exit code says so
    assert proc.returncode == 1, proc.stderr
    assert sorted(r["id"] for r in lines(out)) == ["patient00001/study1", "patient00002/study2"]
    assert any(f["stage"] == "read" and "row 5" in f["reason"] for f in lines(failures_path(out)))


def test_kill_9_mid_run_then_rerun_leaves_no_duplicate_or_missing_line(tiny_checkpoint, tmp_path):
    root = tmp_path / "many"
    for i in range(40):
        png(root / f"k{i:02d}" / "v.png", i, size=64)
    out = tmp_path / "k.jsonl"
    cmd = [sys.executable, str(SCRIPT), str(tiny_checkpoint), "--input", str(root), "--output", str(out),
           "--batch-size", "1", "--no-progress", "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not out.exists() or len(out.read_bytes().splitlines()) < 5):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(done_ids(out))
    assert 5 <= written < 40, f"kill landed after {written} lines: not mid-run"
    rerun = run_script(tiny_checkpoint, "--input", root, "--output", out, "--batch-size", "4")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{written} already done" in rerun.stderr
    ids = [r["id"] for r in lines(out)]
    assert len(ids) == len(set(ids)) == 40


def test_torn_last_line_is_cut_and_redone(tiny_checkpoint, tmp_path):
    root = tmp_path / "t"
    for i in range(3):
        png(root / f"t{i}" / "v.png", i)
    out = tmp_path / "t.jsonl"
    assert run_script(tiny_checkpoint, "--input", root, "--output", out).returncode == 0
    kept = out.read_text().splitlines()
    out.write_text("\n".join(kept[:2]) + "\n" + kept[2][:25])      # a write torn by power loss
    proc = run_script(tiny_checkpoint, "--input", root, "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert "2 already done" in proc.stderr
    assert sorted(r["id"] for r in lines(out)) == ["t0", "t1", "t2"]


def test_bad_inputs_exit_2_and_keep_the_output(tiny_checkpoint, tmp_path):
    foreign = tmp_path / "notes.jsonl"
    foreign.write_text('{"hello": 1}\n')
    root = tmp_path / "s"
    png(root / "a" / "v.png", 0)
    proc = run_script(tiny_checkpoint, "--input", root, "--output", foreign)
    assert proc.returncode == 2 and "not a run_batch result" in proc.stderr
    assert foreign.read_text() == '{"hello": 1}\n'
    proc = run_script(tmp_path, "--output", tmp_path / "x.jsonl")
    assert proc.returncode == 2 and "not a checkpoint" in proc.stderr
    proc = run_script(tiny_checkpoint, "--input", root, "--output", tmp_path / "y.jsonl", "--engine", "tpu")
    assert proc.returncode == 2 and "tpu" in proc.stderr


def test_every_line_says_which_views_were_used_and_which_skipped(tiny_checkpoint, tmp_path):
    """An unreadable view, a view past max_views (2) and a nearly flat view are in the study's line;
    an empty study folder is in the failures file with its id (it was "id": null)."""
    root = tmp_path / "studies"
    png(root / "mixed" / "a.png", 1)
    (root / "mixed" / "b.png").write_bytes(b"truncated, not a png")
    png(root / "mixed" / "c.png", 2)
    png(root / "mixed" / "d.png", 3)
    Image.fromarray(np.full((64, 64), 9, dtype=np.uint8)).save((root / "flat").mkdir(parents=True) or
                                                               root / "flat" / "a.png")
    (root / "empty").mkdir()
    out = tmp_path / "out.jsonl"
    proc = run_script(tiny_checkpoint, "--input", root, "--output", out)
    assert proc.returncode == 1, proc.stderr
    rows = {r["id"]: r for r in lines(out)}
    views = rows["mixed"]["views"]
    assert [(Path(v["view"]).name, v["used"]) for v in views] == [("a.png", True), ("b.png", False),
                                                                 ("c.png", True), ("d.png", False)]
    assert "unrecognised image format" in views[1]["reason"] and "max_views=2" in views[3]["reason"]
    assert all(not v["warnings"] for v in views)
    flat = rows["flat"]["views"][0]
    assert flat["used"] and "nearly flat" in flat["warnings"][0]
    failed = lines(failures_path(out))
    assert [(f["id"], f["stage"]) for f in failed] == [("empty", "read")] and "no image files" in failed[0]["reason"]


def test_from_another_directory_the_checkpoint_finds_the_same_store(tiny_checkpoint, m3kg_config, tmp_path,
                                                                    monkeypatch):
    """The default store and feature cache are under the project home, not the current directory:
    run_batch started in a new folder reads the graph the pipeline built, rebuilding nothing there."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    shutil.copytree(m3kg_config.path, home / DEFAULT_STORE_PATH)
    shutil.copytree(m3kg_config.features_cache, home / DEFAULT_FEATURES_CACHE)
    cached = sorted(p.name for p in (home / DEFAULT_FEATURES_CACHE).iterdir())
    elsewhere.mkdir()
    png(tmp_path / "in" / "a" / "v.png", 0)
    monkeypatch.delenv("R2GENKG_STORE_PATH")
    monkeypatch.delenv("R2GENKG_FEATURES_CACHE")
    env = {**os.environ, "R2GENKG_HOME": str(home)}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tiny_checkpoint), "--input", str(tmp_path / "in"),
                           "--output", str(tmp_path / "out.jsonl"), "--no-progress", "--device", "cpu"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "loading graph" not in proc.stderr                     # the M3KG was not loaded again
    assert list(elsewhere.iterdir()) == []                        # no ./outputs/kg made in passing
    assert sorted(p.name for p in (home / DEFAULT_FEATURES_CACHE).iterdir()) == cached
    assert [r["id"] for r in lines(tmp_path / "out.jsonl")] == ["a"]
