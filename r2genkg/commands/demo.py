"""`r2genkg demo`: the data pipeline end to end on the embedded defaults (bundled IU reports)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Annotated[Path, typer.Option(help="Output folder (phantoms, predictions, results).")] = Path("outputs/demo"),
        annotation: Annotated[Path | None, typer.Option(help="R2Gen annotation.json; default: bundled IU X-ray.")] = None,
        train_studies: Annotated[int, typer.Option(help="Train studies to draw and retrieve from.")] = 300,
        test_studies: Annotated[int, typer.Option(help="Test studies to draw and score.")] = 60,
        image_size: Annotated[int, typer.Option(help="Phantom image side in pixels.")] = 256,
        seed: Annotated[int, typer.Option(help="Sampling and phantom seed.")] = 0,
        workers: Annotated[int, typer.Option(help="Phantom worker processes.")] = 1,
        meteor: Annotated[bool, typer.Option(help="--no-meteor skips METEOR (Java, ~10 s start).")] = True,
        store: Annotated[str, typer.Option(help="Graph store: embedded (under OUT/kg) or neo4j.")] = "embedded",
        neo4j_uri: Annotated[str, typer.Option(help="Neo4j Bolt URI (password: $NEO4J_PASSWORD).")] = "bolt://127.0.0.1:7687",
    ) -> None:
        """Read the IU reports, label them, draw phantom X-rays for a sample, read them back, and
        score a nearest-neighbour retrieval baseline with NLG + clinical-efficacy metrics. On the way,
        load the M3KG into the graph store and write per-study subgraphs for the sample (JSONL)."""
        from graphdb.store import StoreConfig, StoreKind
        from r2genkg.commands.evaluate import print_result
        from r2genkg.demo import DemoConfig, run_demo

        console = Console()
        config = DemoConfig(out=out, annotation=annotation, train_studies=train_studies,
                            test_studies=test_studies, image_size=image_size, seed=seed,
                            workers=workers, meteor=meteor,
                            store=None if store == "embedded" else StoreConfig(kind=StoreKind(store), uri=neo4j_uri))
        result = run_demo(config, console)
        print_result(console, result)
        console.print(f"wrote {out / 'results.json'}", highlight=False)
