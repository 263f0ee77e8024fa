"""`r2genkg train` and `r2genkg test`: train the model from a YAML config; evaluate a checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table


def _fail(console: Console, exc: BaseException) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def auroc_table(aurocs: dict[str, float | None]) -> Table:
    table = Table(title="Classifier AUROC (14 disease queries)")
    table.add_column("observation")
    table.add_column("AUROC", justify="right")
    for name, value in aurocs.items():
        table.add_row(name, "n/a (one class)" if value is None else f"{value:.3f}")
    return table


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_command(
        config: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Experiment YAML (configs/).")],
        overrides: Annotated[list[str] | None, typer.Argument(help="Dot-list overrides, e.g. train.lr=1e-4 model.kg.mode=none")] = None,
        resume: Annotated[bool, typer.Option(help="--no-resume starts over instead of resuming the newest checkpoint.")] = True,
    ) -> None:
        """Train R2GenKG (resumes from the newest checkpoint in train.output_dir)."""
        from cxr.records import DataError
        from training.checkpoint import CheckpointError
        from training.config import load_experiment
        from training.config_io import ConfigError
        from training.loop import TrainingDiverged, train

        console = Console()
        try:
            cfg = load_experiment(config, overrides or [])
            result = train(cfg, resume=resume, console=console)
        except (ConfigError, CheckpointError, DataError, TrainingDiverged, FileNotFoundError, ValueError) as exc:
            raise _fail(console, exc) from exc
        s = result.state
        console.print(f"stopped ({s.stopped}) after {s.epoch} epochs, {s.step} steps, {s.samples} samples in "
                      f"{s.seconds:.0f} s of training ({result.samples_per_second:.1f} samples/s); "
                      f"best epoch {s.best_epoch} score {s.best_score:.4f}; best checkpoint: {result.best}",
                      highlight=False)

    @app.command("test")
    def test_command(
        checkpoint: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A checkpoint folder (e.g. outputs/runs/debug/best).")],
        split: Annotated[str, typer.Option(help="Split to generate and score.")] = "test",
        output: Annotated[Path | None, typer.Option(help="Folder for predictions.jsonl and results.json (default: CHECKPOINT/eval_SPLIT).")] = None,
        overrides: Annotated[list[str] | None, typer.Option("--set", help="Override a config field, e.g. --set generation.num_beams=3")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Generation batch size (default: train.batch_size).")] = None,
        meteor: Annotated[bool, typer.Option(help="--no-meteor skips METEOR (Java).")] = True,
    ) -> None:
        """Evaluate a checkpoint: generate the split's reports, then NLG + CE (14 and 5) + AUROC."""
        from cxr.records import DataError
        from r2genkg.commands.evaluate import print_result
        from training.checkpoint import CheckpointError
        from training.config_io import ConfigError
        from training.evaluate_checkpoint import evaluate_checkpoint
        from training.metrics.meteor import MeteorError

        console = Console()
        try:
            report = evaluate_checkpoint(checkpoint, split, output, overrides or [], batch_size=batch_size, meteor=meteor)
        except (ConfigError, CheckpointError, DataError, MeteorError, FileNotFoundError, ValueError) as exc:
            raise _fail(console, exc) from exc
        print_result(console, report.result)
        console.print(auroc_table(report.auroc))
        mean = report.mean_auroc
        console.print(f"mean AUROC {'n/a' if mean is None else f'{mean:.3f}'}; {report.result.counts['scored']} "
                      f"studies generated at {report.studies_per_second:.1f} studies/s; wrote {report.output_dir}/results.json",
                      highlight=False)
