"""`r2genkg train` and `r2genkg test`: train the model from a YAML config; evaluate a checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from graphdb.store import StoreConfig
from r2genkg.options import fail, store_options


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
        from cxr.records import DataError
        from generator.checkpoint import CheckpointError
        from generator.config_io import ConfigError
        from graphdb.store import GraphStoreError
        from training.config import load_experiment
        from training.loop import TrainingDiverged, train

        console = Console()
        try:
            cfg = load_experiment(config, overrides or [])
            result = train(cfg, store, resume=resume, console=console)
        except (ConfigError, CheckpointError, DataError, GraphStoreError, TrainingDiverged, FileNotFoundError,
                ValueError) as exc:
            raise fail(console, exc) from exc
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
    ) -> None:
        """Evaluate a checkpoint: generate the split's reports, then NLG + CE (14 and 5) + AUROC."""
        from cxr.records import DataError
        from generator.checkpoint import CheckpointError
        from generator.config_io import ConfigError
        from graphdb.store import GraphStoreError
        from r2genkg.commands.evaluate import print_result, thresholds_table
        from training.evaluate_checkpoint import evaluate_checkpoint
        from training.metrics.meteor import MeteorError

        console = Console()
        try:
            report = evaluate_checkpoint(checkpoint, store, split, output, overrides or [], batch_size=batch_size,
                                         meteor=meteor)
        except (ConfigError, CheckpointError, DataError, GraphStoreError, MeteorError, FileNotFoundError,
                ValueError) as exc:
            raise fail(console, exc) from exc
        console.print(thresholds_table(report.thresholds))
        print_result(console, report.result)
        console.print(f"{report.result.counts['scored']} studies generated at {report.studies_per_second:.1f} "
                      f"studies/s; wrote {report.output_dir}/results.json", highlight=False)
