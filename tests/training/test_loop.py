"""training.loop end to end on the debug config: exact resume, NaN stop keeping the last good
checkpoint, a checkpoint/config mismatch that names the field, unreadable images skipped and
counted, and checkpoint evaluation (NLG + CE + AUROC + evidence)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from generator.checkpoint import CheckpointError
from tests.generator.conftest import debug_experiment
from training.loop import TrainingDiverged, latest_checkpoint, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory, m3kg_config):
    """Phantoms and node features made once for the module (both are resumable caches)."""
    root = tmp_path_factory.mktemp("loop")
    return root, m3kg_config


def experiment(shared, run: str, *overrides: str):
    root, _ = shared
    cfg = debug_experiment(root, "train.validate=false", "train.log_every=1", "train.epochs=3",
                           "data.limit={train: 24, val: 4, test: 6}", *overrides)
    cfg.train.output_dir = str(root / run)
    return cfg


def losses(run_dir: Path) -> dict[int, float]:
    with (run_dir / "train_log.csv").open() as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def test_resume_matches_an_uninterrupted_run(shared):
    straight = train(experiment(shared, "straight", "train.max_steps=5"), shared[1], resume=False, progress=False)
    train(experiment(shared, "resumed", "train.max_steps=2"), shared[1], resume=False, progress=False)
    resumed = train(experiment(shared, "resumed", "train.max_steps=5"), shared[1], resume=True, progress=False)
    a, b = losses(straight.output_dir), losses(resumed.output_dir)
    assert sorted(b) == [1, 2, 3, 4, 5]
    for step in (3, 4, 5):   # step 3 is the first after the restart; 4 crosses an epoch boundary
        assert b[step] == pytest.approx(a[step], rel=1e-5, abs=1e-6), (step, a, b)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(shared, monkeypatch):
    from generator.model import R2GenKG

    real = R2GenKG.forward
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(R2GenKG, "forward", poisoned)
    cfg = experiment(shared, "nan", "train.save_every=1")
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 1, step 3.*Last good checkpoint: .*checkpoint_2"):
        train(cfg, shared[1], resume=False, progress=False)
    assert latest_checkpoint(Path(cfg.train.output_dir)).name == "checkpoint_2"


def test_resume_with_a_different_model_names_the_field(shared):
    train(experiment(shared, "mismatch", "train.max_steps=1"), shared[1], resume=False, progress=False)
    with pytest.raises(CheckpointError, match=r"model\.llm\.hidden_size: 64 != 32"):
        train(experiment(shared, "mismatch", "model.llm.hidden_size=32", "model.llm.num_heads=2"), shared[1],
              resume=True, progress=False)


def test_unreadable_images_are_skipped_and_counted(shared):
    root, _ = shared
    cfg = experiment(shared, "corrupt", "train.max_steps=3")
    from cxr.datasets import load_split, prepare_images

    prepare_images(cfg.data, progress=False)
    record = load_split(cfg.data, "train")[0]
    saved = {p: (Path(cfg.data.image_root) / p).read_bytes() for p in record.image_paths}
    try:
        for p in record.image_paths:
            (Path(cfg.data.image_root) / p).write_bytes(b"not a png")
        cfg.train.output_dir = str(root / "corrupt")
        (root / ".image_cache").exists() and __import__("shutil").rmtree(root / ".image_cache")
        result = train(cfg, shared[1], resume=False, progress=False)
    finally:
        for p, data in saved.items():
            (Path(cfg.data.image_root) / p).write_bytes(data)
        __import__("shutil").rmtree(root / ".image_cache", ignore_errors=True)
    assert result.state.step == 3
    assert result.skipped_studies == 1


def test_evaluate_checkpoint_writes_metrics_auroc_and_evidence(shared):
    from cxr.datasets import load_split
    from training.evaluate_checkpoint import evaluate_checkpoint

    cfg = experiment(shared, "evaluated", "train.epochs=1")
    result = train(cfg, shared[1], resume=False, progress=False)
    assert result.best is not None and (result.best / "bank").is_dir()
    report = evaluate_checkpoint(result.best, shared[1], "test", meteor=False, progress=False)
    payload = json.loads((report.output_dir / "results.json").read_text())
    assert payload["counts"]["scored"] == 6
    assert set(payload["classifier_auroc"]) >= {"No Finding", "Cardiomegaly"}
    rows = [json.loads(line) for line in (report.output_dir / "predictions.jsonl").open()]
    assert len(rows) == 6 and len(rows[0]["observations"]) == 14
    # the scores are those of the written predictions, recomputed independently
    from training.evaluate import compute_scores

    refs = {r.study_id: r.report for r in load_split(cfg.data, "test")}
    again = compute_scores([r["report"] for r in rows], [refs[r["id"]] for r in rows], meteor=False)
    assert payload["metrics"]["ce_14"]["micro"]["f1"] == pytest.approx(again.ce_14.micro.f1)
    assert payload["metrics"]["nlg"]["BLEU_4"] == pytest.approx(again.nlg.bleu_4)
    ev = rows[0]["evidence"]
    assert ev["seeds"] and ev["node_ids"] and isinstance(ev["retrieved"], dict)
    assert all(set(r["coverage"]) == {"covered", "added"} for r in rows)
    # the bank keeps the train reports its tokens came from, for the evidence's quotes
    from retrieval.index import TokenIndex

    bank = TokenIndex.load(result.best / "bank")
    train_reports = {r.study_id: r.report for r in load_split(cfg.data, "train")}
    assert bank.reports and bank.reports == {s: train_reports[s] for s in set(bank.meta.study_ids.tolist())}
    assert all(isinstance(r["sentences"], list) and "".join(s["text"] for s in r["sentences"]).replace(" ", "")
               == r["report"].replace(" ", "") for r in rows)
    assert ev["graph"] is not None and {n["id"] for n in ev["graph"]["nodes"]} == set(ev["node_ids"])
    saved = torch.load(result.best / "model.pt", weights_only=True)
    assert set(saved) and all(torch.isfinite(v.float()).all() for v in saved.values())


def test_checkpoints_of_an_older_version_are_kept_and_named(shared):
    cfg = experiment(shared, "old_layout")
    old = Path(cfg.train.output_dir) / "checkpoints" / "step-0000002"
    old.mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"older r2genkg \(step-0000002.*--no-resume"):
        train(cfg, shared[1], resume=True, progress=False)
    assert old.is_dir()   # nothing already written is lost


def test_resuming_over_another_graph_fails_loudly(shared):
    import yaml

    train(experiment(shared, "other_graph", "train.max_steps=1"), shared[1], resume=False, progress=False)
    cfg = experiment(shared, "other_graph", "train.max_steps=2")
    knowledge = latest_checkpoint(Path(cfg.train.output_dir)) / "knowledge.json"
    data = yaml.safe_load(knowledge.read_text())
    knowledge.write_text(yaml.safe_dump({**data, "node_table": "0123456789abcdef"}))
    with pytest.raises(CheckpointError, match="trained on another knowledge graph: node table"):
        train(cfg, shared[1], resume=True, progress=False)


def test_validation_fits_thresholds_that_the_best_checkpoint_keeps(shared):
    from generator.decisions import read_thresholds

    cfg = experiment(shared, "thresholds", "train.validate=true", "train.epochs=1", "model.diagnosis_prompt=true",
                     "data.limit={train: 24, val: 12, test: 6}")
    result = train(cfg, shared[1], resume=False, progress=False)
    saved = read_thresholds(result.best)
    assert saved.fit_on == "val (12 studies)"
    with (result.output_dir / "val_log.csv").open() as f:
        row = next(csv.DictReader(f))
    assert {"consistency_f1", "repeated_pct", "CE5_micro_f1"} <= set(row)


def test_decoder_warm_up_runs_once_and_a_resume_does_not_repeat_it(shared, monkeypatch):
    from training import loop

    calls = []
    original = loop.Trainer._warm_decoder

    def counted(self, model, train_ds):
        calls.append(len(train_ds))
        before = {n: p.detach().clone() for n, p in model.llm.named_parameters()}
        original(self, model, train_ds)
        assert any(not torch.equal(before[n], p) for n, p in model.llm.named_parameters())  # it trained

    monkeypatch.setattr(loop.Trainer, "_warm_decoder", counted)
    overrides = ("model.diagnosis_prompt=true", "train.decoder_warmup_epochs=2")
    first = train(experiment(shared, "warm", "train.max_steps=2", *overrides), shared[1], resume=False, progress=False)
    assert calls == [24] and first.state.warmed_up
    again = train(experiment(shared, "warm", "train.max_steps=4", *overrides), shared[1], resume=True, progress=False)
    assert calls == [24] and again.state.step == 4


def test_each_epoch_ends_with_the_whole_runs_elapsed_time_and_eta(shared):
    """Issue 13: the per-epoch bars gave no overall ETA."""
    from rich.console import Console

    console = Console(record=True, width=200)
    cfg = experiment(shared, "eta", "train.epochs=2", "train.decoder_warmup_epochs=0",
                     "data.limit={train: 8, val: 4, test: 6}")
    train(cfg, shared[1], resume=False, progress=False, console=console)
    lines = [line for line in console.export_text().splitlines() if line.startswith("run: ")]
    assert len(lines) == 2, console.export_text()
    assert lines[0].startswith("run: epoch 1/2 done, ") and lines[0].endswith("to go (1 epoch left)")
    assert lines[1].startswith("run: epoch 2/2 done, ") and "to go" not in lines[1]
