"""`r2genkg kg …` through Typer's CliRunner on the embedded store in a temp dir."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from graphdb.store import DEFAULT_STORE_PATH, StoreConfig
from r2genkg.cli import app


@pytest.fixture(scope="module")
def small_annotation(tmp_path_factory, iu_annotation) -> Path:
    data = json.loads(iu_annotation.read_text())
    path = tmp_path_factory.mktemp("ann") / "annotation.json"
    path.write_text(json.dumps({"train": data["train"][:40], "val": data["val"][:10], "test": []}))
    return path


def kg(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["kg", *map(str, args)])
    return result.exit_code, result.output


@pytest.mark.slow
def test_load_build_stats_subgraphs_resume(tmp_path: Path, small_annotation: Path):
    store = tmp_path / "kg"
    code, out = kg("load-m3kg", "--store-path", store)
    assert code == 0, out
    assert "MODIFY 22,397, LOCATED_AT 13,080, SUGGESTIVE_OF 1,947" in out
    code, out = kg("load-m3kg", "--store-path", store)            # idempotent
    assert code == 0 and "Entity 2,418" in out

    code, out = kg("build", "--annotation", small_annotation, "--split", "train", "--studies-only", "--store-path", store)
    assert code == 0, out
    assert "shared entities:" in out and "Study 40" in out and "MODIFY 22,397" in out

    out_file = tmp_path / "subgraphs.jsonl"
    code, out = kg("subgraphs", "--annotation", small_annotation, "--split", "train", "--seeds", "both",
                   "--out", out_file, "--store-path", store)
    assert code == 0, out
    assert "40 studies in" in out and "(40 new" in out
    with out_file.open("rb+") as f:                     # a crash mid-line: the torn line is redone
        f.truncate(f.seek(0, 2) - 10)
    code, out = kg("subgraphs", "--annotation", small_annotation, "--seeds", "both", "--out", out_file,
                   "--store-path", store)
    assert code == 0, out
    assert "50 studies in" in out and "(11 new" in out        # resumed: only val and the torn one are new
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(lines) == 50 and len({line["id"] for line in lines}) == 50
    first = lines[0]
    assert set(first) == {"id", "seeds", "nodes", "edges"} and first["nodes"] and first["edges"]
    assert set(first["nodes"][0]) == {"id", "name", "type", "count", "level"}
    assert set(first["edges"][0]) == {"head", "type", "tail", "count"}

    code, out = kg("stats", "--store-path", store)
    assert code == 0 and "Study 40" in out and "MENTIONS" in out


def test_bad_options_get_one_line_errors(tmp_path: Path, small_annotation: Path):
    code, out = kg("stats", "--store", "sqlite", "--store-path", tmp_path / "kg")
    assert code == 2 and "'sqlite' is not one of" in out
    code, out = kg("subgraphs", "--budgets", "16,48", "--store-path", tmp_path / "kg", "--annotation", small_annotation)
    assert code == 2 and "level_budgets must be 3 positive ints" in out
    code, out = kg("subgraphs", "--store-path", tmp_path / "empty", "--annotation", small_annotation,
                   "--out", tmp_path / "c.jsonl")
    assert code == 2 and "kg load-m3kg" in out
    code, out = kg("build", "--extractor", "llm", "--store-path", tmp_path / "kg")
    assert code == 2 and "--llm-base-url and --llm-model" in out
    code, out = kg("stats", "--store", "neo4j", "--neo4j-uri", "bolt://127.0.0.1:1")
    assert code == 2 and "cannot reach Neo4j" in out


def test_stats_without_a_store_says_how_to_build_it_and_creates_nothing(tmp_path: Path):
    code, out = kg("stats", "--store-path", tmp_path / "kg")
    assert code == 2 and out.count("\n") == 1, out
    assert f"no embedded graph at {tmp_path / 'kg'}: build it with `r2genkg kg load-m3kg`" in out
    assert not (tmp_path / "kg").exists()


def test_stats_reads_the_store_the_pipeline_builds_from_any_directory(monkeypatch, tmp_path: Path, m3kg_config):
    """The pipeline, training, checkpoints and `kg` share one default store, under the project home."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    shutil.copytree(m3kg_config.path, home / DEFAULT_STORE_PATH)
    elsewhere.mkdir()
    monkeypatch.setenv("R2GENKG_HOME", str(home))
    monkeypatch.delenv("R2GENKG_STORE_PATH")
    monkeypatch.chdir(elsewhere)
    code, out = kg("stats")
    assert code == 0 and "Entity 2,418" in out, out
    assert StoreConfig.from_env().path == home / DEFAULT_STORE_PATH
    assert list(elsewhere.iterdir()) == []


def test_every_kg_command_has_help():
    for command in ("load-m3kg", "build", "stats", "subgraphs", "features"):
        code, out = kg(command, "--help")
        assert code == 0 and "--store" in out


def test_subgraphs_refuses_a_file_that_is_not_its_own(tmp_path: Path, small_annotation: Path, m3kg_store: Path):
    out_file = tmp_path / "notes.jsonl"
    out_file.write_text('{"name": "x"}\n')
    code, out = kg("subgraphs", "--annotation", small_annotation, "--out", out_file, "--store-path", m3kg_store)
    assert code == 2 and "notes.jsonl:1 is not a subgraph line" in out


@pytest.mark.slow
def test_global_subgraph_and_features(tmp_path: Path):
    from graphdb.pipeline import GLOBAL_ID, read_subgraphs

    store = tmp_path / "kg"
    assert kg("load-m3kg", "--store-path", store)[0] == 0
    code, out = kg("subgraphs", "--global-scales", "101,206,319,400,558", "--store-path", store,
                   "--out", tmp_path / "g.jsonl")
    assert code == 0 and "1 studies in" in out, out
    (g,) = read_subgraphs(tmp_path / "g.jsonl")
    assert g.study == GLOBAL_ID
    assert [len(g.at_level(i).nodes) for i in range(5)] == [101, 206, 319, 400, 558]

    code, out = kg("features", "--store-path", store, "--features-cache", tmp_path / "f")
    assert code == 0, out
    assert "2,432 nodes × 384" in out and len(list((tmp_path / "f").glob("*.npy"))) == 1
    code, out = kg("features", "--store-path", store, "--features-model", tmp_path / "no-model")
    assert code == 2 and "does not exist" in out
