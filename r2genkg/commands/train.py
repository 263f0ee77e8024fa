"""`r2genkg train`, `test` and `calibrate`: train the model from a YAML config; evaluate a checkpoint;
refit its decision thresholds on a labelled split."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from graphdb.store import StoreConfig
from r2genkg.options import store_options


def register(app: typer.Typer) -> None:
    @app.command("train")
    @store_options
    def train_command(
        store: StoreConfig,
        config: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Experiment YAML (configs/).")],
        overrides: Annotated[list[str] | None, typer.Argument(help="Dot-list overrides, e.g. train.lr=1e-4 model.kg.mode=none")] = None,
        resume: Annotated[bool, typer.Option(help="--no-resume starts over instead of resuming the newest checkpoint.")] = True,
    ) -> None:
        """Train R2GenKG (resumes from the newest checkpoint in train.output_dir)."""
        from training.config import load_experiment
        from training.loop import train

        console = Console()
        cfg = load_experiment(config, overrides or [])
        result = train(cfg, store, resume=resume, console=console)
        s = result.state
        console.print(f"stopped ({s.stopped}) after {s.epoch} epochs, {s.step} steps, {s.samples} samples in "
                      f"{s.seconds:.0f} s of training ({result.samples_per_second:.1f} samples/s); "
                      f"best epoch {s.best_epoch} score {s.best_score:.4f}; best checkpoint: {result.best}",
                      highlight=False)

    @app.command("test")
    @store_options
    def test_command(
        store: StoreConfig,
        checkpoint: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A checkpoint folder (e.g. outputs/runs/debug/best).")],
        split: Annotated[str, typer.Option(help="Split to generate and score.")] = "test",
        output: Annotated[Path | None, typer.Option(help="Folder for predictions.jsonl and results.json (default: CHECKPOINT/eval_SPLIT).")] = None,
        overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a config field, e.g. --set generation.num_beams=3")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Generation batch size (default: train.batch_size).")] = None,
        meteor: Annotated[bool, typer.Option(help="--no-meteor skips METEOR (Java).")] = True,
        full: Annotated[bool, typer.Option("--full", help="Score every study of the split, not the first data.limit.SPLIT of the checkpoint's config.")] = False,
    ) -> None:
        """Evaluate a checkpoint: generate the split's reports, then NLG + CE (14 and 5) + AUROC."""
        from r2genkg.commands.evaluate import print_result, thresholds_table
        from training.evaluate_checkpoint import SplitScope, evaluate_checkpoint

        console = Console()

        def say_scope(scope: SplitScope) -> None:
            if scope.cut:
                console.print(f"scoring {scope.studies} of {scope.total} {scope.split} studies (data.limit."
                              f"{scope.split}={scope.limit} from the checkpoint's config); --full for all",
                              highlight=False, soft_wrap=True)

        report = evaluate_checkpoint(checkpoint, store, split, output, overrides or [], batch_size=batch_size,
                                     meteor=meteor, full=full, on_scope=say_scope)
        console.print(thresholds_table(report.thresholds))
        print_result(console, report.result)
        console.print(f"{report.result.counts['scored']} studies generated at {report.studies_per_second:.1f} "
                      f"studies/s; wrote {report.output_dir}/results.json", highlight=False)

    @app.command("calibrate")
    @store_options
    def calibrate_command(
        store: StoreConfig,
        checkpoint: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A checkpoint folder (e.g. outputs/runs/debug/best).")],
        split: Annotated[str, typer.Option(help="Labelled split to fit on (never the one you report).")] = "val",
        min_f1: Annotated[float | None, typer.Option(help="Never decide an observation whose best F1 on the split is below this (default: the checkpoint's train.thresholds).")] = None,
        min_positives: Annotated[int | None, typer.Option(help="Fewer positives than this on the split: keep the 0.5 cut (default: the checkpoint's).")] = None,
        overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a config field, e.g. --set data.annotation_path=site/annotation.json")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Classifier batch size (default: train.batch_size).")] = None,
    ) -> None:
        """Refit a checkpoint's per-observation decision thresholds on a labelled split, without
        retraining; the previous ones are kept as thresholds.prev.json."""
        from r2genkg.commands.evaluate import thresholds_table
        from training.calibrate import calibrate_checkpoint

        console = Console()
        rules = [f"train.thresholds.{k}={v}" for k, v in (("min_f1", min_f1), ("min_positives", min_positives))
                 if v is not None]
        done = calibrate_checkpoint(checkpoint, store, split, [*(overrides or []), *rules], batch_size=batch_size)
        console.print(thresholds_table(done.thresholds))
        changed = sum(old != new for old, new in zip(done.previous.positive, done.thresholds.positive))
        kept = f"; the previous ones are in {done.kept}" if done.kept else ""
        console.print(f"wrote {done.path} ({changed} positive thresholds changed; min F1 {done.rules.min_f1}, "
                      f"min positives {done.rules.min_positives}){kept}", highlight=False)
