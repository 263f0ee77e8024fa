"""`r2genkg kg …`: load the M3KG, build a graph from reports, stats, features, subgraphs as JSONL.

Every command takes the shared store flags (r2genkg.options: ``--store embedded|neo4j``,
``--store-path``, ``--neo4j-*``, ``--features-*``); the embedded store (LadybugDB) needs no server.
The Neo4j password comes from $NEO4J_PASSWORD (dev default of scripts/neo4j.sh), never a flag.
"""
from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cxr.records import DataError
from graphdb.store import StoreConfig, open_store
from r2genkg.options import store_options

DEFAULT_SUBGRAPHS = Path("outputs/kg/subgraphs.jsonl")
DEFAULT_GLOBAL = Path("outputs/kg/subgraph_global.jsonl")


class SeedSource(str, Enum):
    LABELS = "labels"       # the labeler's positive + uncertain observations of the report
    MENTIONS = "mentions"   # the entities the stored report mentions (needs `kg build`)
    BOTH = "both"


class ExtractorKind(str, Enum):
    RULE = "rule"
    LLM = "llm"


def register(app: typer.Typer) -> None:
    kg = typer.Typer(no_args_is_help=True, help="The M3KG knowledge graph: load, build, stats, subgraphs.")
    app.add_typer(kg, name="kg")

    @kg.command("load-m3kg")
    @store_options
    def load_m3kg_cmd(
        store: StoreConfig,
        m3kg_dir: Annotated[Path | None, typer.Option(help="Folder with kg_relations.csv + res_dict_aliases.json; default: bundled M3KG.")] = None,
        replace: Annotated[bool, typer.Option(help="Delete everything in the store first.")] = False,
        batch_size: Annotated[int, typer.Option(help="Rows per UNWIND batch (5k-20k is right for Neo4j).")] = 10_000,
    ) -> None:
        """Load the published M3KG (37,424 triples) into the store. Idempotent: rerunning never duplicates."""
        from graphdb.m3kg import M3KGFiles, load_m3kg

        t0 = time.perf_counter()
        kg_ = load_m3kg(M3KGFiles.in_dir(m3kg_dir) if m3kg_dir else None)
        t1 = time.perf_counter()
        with open_store(store) as s:
            if replace:
                s.clear()
            s.upsert(kg_, batch_size=batch_size, progress=True)
            t2 = time.perf_counter()
            typer.echo(s.stats().format())
        typer.echo(f"parsed M3KG in {t1 - t0:.2f} s; loaded into {store.kind.value} in {t2 - t1:.2f} s")

    @kg.command("build")
    @store_options
    def build_cmd(
        store: StoreConfig,
        annotation: Annotated[Path | None, typer.Option(help="R2Gen annotation.json; default: bundled IU X-ray.")] = None,
        split: Annotated[list[str] | None, typer.Option(help="Split(s) to read (repeatable); default all.")] = None,
        extractor: Annotated[ExtractorKind, typer.Option(help="rule (offline patterns) or llm (OpenAI-compatible endpoint).")] = ExtractorKind.RULE,
        llm_base_url: Annotated[str | None, typer.Option(help="LLM endpoint base URL, e.g. http://127.0.0.1:8000/v1.")] = None,
        llm_model: Annotated[str | None, typer.Option(help="LLM model name.")] = None,
        llm_key_env: Annotated[str, typer.Option(help="Environment variable holding the LLM API key.")] = "OPENAI_API_KEY",
        studies_only: Annotated[bool, typer.Option(help="Only attach the studies and their mentions (keep the store's triples, e.g. M3KG's).")] = False,
        compare: Annotated[bool, typer.Option(help="Print statistics against the published M3KG.")] = True,
        batch_size: Annotated[int, typer.Option(help="Rows per write batch.")] = 10_000,
    ) -> None:
        """Build a graph from a report corpus (entities, triples, studies, mentions) and load it."""
        from cxr.readers import bundled_iu_annotation, read_r2gen
        from graphdb.compare import compare_graphs
        from graphdb.m3kg import load_m3kg

        records = [r for r in read_r2gen(annotation or bundled_iu_annotation())
                   if not split or r.split in split]
        if not records:
            raise DataError(f"no studies in {annotation or 'the bundled IU annotation'} for split(s) {split}")
        t0 = time.perf_counter()
        built = _extractor(extractor, llm_base_url, llm_model, llm_key_env).extract(records, progress=True)
        t1 = time.perf_counter()
        typer.echo(f"extracted {len(records):,} reports in {t1 - t0:.2f} s")
        if compare:
            typer.echo(compare_graphs(built, load_m3kg()).format())
        with open_store(store) as s:
            if studies_only:
                s.attach_studies(built, batch_size=batch_size, progress=True)
            else:
                s.upsert(built, batch_size=batch_size, progress=True)
            typer.echo(s.stats().format())

    @kg.command("stats")
    @store_options
    def stats_cmd(store: StoreConfig) -> None:
        """Node and edge counts of the store."""
        with open_store(store, read_only=True) as s:
            typer.echo(s.stats().format())

    _features_command(kg)

    @kg.command("subgraphs")
    @store_options
    def subgraphs_cmd(
        store: StoreConfig,
        annotation: Annotated[Path | None, typer.Option(help="R2Gen annotation.json; default: bundled IU X-ray.")] = None,
        split: Annotated[list[str] | None, typer.Option(help="Split(s) (repeatable); default all.")] = None,
        seeds: Annotated[SeedSource, typer.Option(help="Where per-study seeds come from.")] = SeedSource.LABELS,
        budgets: Annotated[str, typer.Option(help="Node budgets of levels 0,1,2 (observation, 1-hop, 2-hop).")] = "16,48,96",
        global_scales: Annotated[str | None, typer.Option(help="Paper mode instead: write the one global subgraph with these nested sizes, e.g. 101,206,319,400,558.")] = None,
        out: Annotated[Path | None, typer.Option(help=f"JSONL file, one subgraph a line (resumable); default {DEFAULT_SUBGRAPHS}, or {DEFAULT_GLOBAL} with --global-scales.")] = None,
        batch_size: Annotated[int, typer.Option(help="Studies per round trip.")] = 512,
    ) -> None:
        """Compute per-study 3-level subgraphs and append them to a JSONL file, one study a line
        (a rerun skips the studies already there); with --global-scales, write the paper's one
        global multi-scale subgraph instead."""
        from graphdb.pipeline import write_global_subgraph, write_study_subgraphs

        spec = _spec(budgets, global_scales)
        with open_store(store, read_only=True) as s:
            if global_scales:
                report = write_global_subgraph(s, spec, out or DEFAULT_GLOBAL)
            else:
                report = write_study_subgraphs(s, annotation, split, seeds.value, spec, out or DEFAULT_SUBGRAPHS,
                                               batch_size)
        typer.echo(report)


def _features_command(kg: typer.Typer) -> None:
    @kg.command("features")
    @store_options
    def features_cmd(store: StoreConfig) -> None:
        """Embed every node name of the graph once (node text features for the R-GCN) and cache them
        under --features-cache, with --features-model (default: the bundled all-MiniLM-L6-v2)."""
        from graphdb.features import TextEncoder, node_features
        from graphdb.tensorize import NodeTable

        with open_store(store, read_only=True) as s:
            table = NodeTable.from_nodes(*s.node_table())
        t0 = time.perf_counter()
        text_encoder = TextEncoder(store.features_model)
        features = node_features(table, text_encoder, store.features_cache)
        typer.echo(f"{features.shape[0]:,} nodes × {features.shape[1]} ({text_encoder.id}) in "
                   f"{time.perf_counter() - t0:.1f} s → {store.features_cache}")


def _ints(option: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise DataError(f"{option} must be comma-separated integers, got {text!r}") from None


def _spec(budgets: str, global_scales: str | None = None):
    from graphdb.schema import SubgraphSpec

    if global_scales:
        return SubgraphSpec(level_budgets=_ints("--budgets", budgets), global_scales=_ints("--global-scales", global_scales))
    return SubgraphSpec(level_budgets=_ints("--budgets", budgets))


def _extractor(kind: ExtractorKind, base_url: str | None, model: str | None, key_env: str):
    if kind is ExtractorKind.RULE:
        from graphdb.extract import RuleExtractor

        return RuleExtractor()
    if not base_url or not model:
        raise DataError("--extractor llm needs --llm-base-url and --llm-model")
    from graphdb.llm_extract import LLMConfig, LLMExtractor

    return LLMExtractor(LLMConfig(base_url=base_url, model=model, api_key_env=key_env))
