"""`r2genkg pipeline`: the main job end to end on the embedded defaults, each step resumable.

1 phantoms → 2 the M3KG into the embedded store (+ node features) → 3 train → 4 run_batch on the
test phantoms → 5 evaluate (NLG, CE, AUROC) → 6 the table. Rerunning skips finished work.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from graphdb.store import StoreConfig
from r2genkg.options import store_options


class StepClock:
    """Each step's rule on the console and its wall time, for the summary line at the end."""

    def __init__(self, console: Console) -> None:
        self.console, self.times, self._current, self._since = console, {}, None, time.perf_counter()

    def start(self, name: str, rule: str) -> None:
        """End the current step and start ``name`` under the console rule ``rule``."""
        self.stop()
        self._current = name
        self.console.rule(rule)

    def stop(self) -> None:
        """End the current step (if any): its seconds go to the summary."""
        now = time.perf_counter()
        if self._current is not None:
            self.times[self._current] = now - self._since
        self._current, self._since = None, now

    def summary(self) -> str:
        parts = ", ".join(f"{name} {t:.1f} s" for name, t in self.times.items())
        return f"wall time: {sum(self.times.values()):.1f} s ({parts})"


def register(app: typer.Typer) -> None:
    @app.command("pipeline")
    @store_options
    def pipeline_command(
        store: StoreConfig,
        config: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Experiment YAML.")] = Path("configs/debug.yaml"),
        overrides: Annotated[list[str] | None, typer.Argument(help="Dot-list overrides, e.g. train.epochs=5")] = None,
        batch_size: Annotated[int, typer.Option(min=1, help="run_batch studies per engine call.")] = 32,
        meteor: Annotated[bool, typer.Option(help="--no-meteor skips METEOR (Java).")] = True,
    ) -> None:
        """Phantoms → M3KG → train → run_batch on the test split → evaluate → table."""
        from cxr.datasets import prepare_images
        from generator.batch import read_studies, run_batch
        from generator.checkpoint import CheckpointError
        from generator.engine import Engine, EngineConfig
        from graphdb.provider import open_knowledge
        from r2genkg.commands.evaluate import print_result
        from training.config import load_experiment
        from training.evaluate import evaluate_records
        from training.loop import train

        console = Console()
        steps = StepClock(console)
        cfg = load_experiment(config, overrides or [])
        steps.start("phantoms", "1/6 phantoms")
        prepare_images(cfg.data, splits=["train", "val"], progress=True)
        kg = cfg.model.kg
        if kg.mode.value != "none":
            steps.start("M3KG", "2/6 M3KG → graph store, node features")
            knowledge = open_knowledge(store, kg.spec)
            console.print(f"{len(knowledge.provider.table)} nodes, features {knowledge.features.shape}",
                          highlight=False)
            knowledge.close()
        steps.start("train", "3/6 train")
        result = train(cfg, store, resume=True, console=console)
        if result.best is None:
            raise CheckpointError(f"{result.output_dir}: training wrote no best checkpoint (train.validate off?)")
        steps.start("run_batch", "4/6 run_batch on the test split")
        records, failed = read_studies(result.best, None, "test", None)
        output = result.output_dir / "test_reports.jsonl"
        with Engine.from_checkpoint(result.best, EngineConfig(micro_batch=batch_size), store) as engine:
            summary = run_batch(engine, records, output, batch_size, read_failures=failed)
        console.print(f"{summary.written} reports written ({summary.reports_per_second:.1f} reports/s), "
                      f"{summary.skipped_done} already there, {len(summary.failures)} failed → {output}",
                      highlight=False)
        steps.start("evaluate", "5/6 evaluate")
        scored = evaluate_records(output, records, cfg.data.clean_style, meteor=meteor)
        steps.start("results", "6/6 results")
        if scored is None:
            console.print("no reference reports to score against")
        else:
            print_result(console, scored)
        steps.stop()
        console.print(steps.summary(), highlight=False, soft_wrap=True)
        console.print(f"best checkpoint: {result.best}\nserve it:  .venv/bin/r2genkg serve {result.best} --no-auth",
                      highlight=False)
        if summary.failures:
            raise typer.Exit(1)
