"""Every command fails the same way on bad input or an unusable graph store: one ``error: …``
line on stderr, exit 2, nothing else (no traceback, no driver log, no warnings; serve's start-up
step lines come first). Real processes,
as a user runs them: `r2genkg …` and scripts/run_batch.py, with Neo4j unreachable."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from r2genkg.cli import app
from r2genkg.options import is_one_line

REPO = Path(__file__).resolve().parents[3]
# Nothing listens on port 1; the http URI is refused before any connection.
UNREACHABLE = ["bolt://127.0.0.1:1", "neo4j://127.0.0.1:1", "http://127.0.0.1:1"]


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)


STEP = re.compile(r"^\[\s*\d+\.\d s\] ")   # serve's start-up steps ("[  1.2 s] opening the graph store")


def assert_one_line(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 2 and one ``error:`` line, after nothing but the command's own start-up step lines."""
    lines = [line for line in proc.stderr.strip().splitlines() if not STEP.match(line)]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert all(e in lines[0] for e in expected), lines[0]


def test_every_command_goes_through_the_one_line_path():
    def commands(typer_app):
        yield from (c.callback for c in typer_app.registered_commands)
        for group in typer_app.registered_groups:
            yield from commands(group.typer_instance)

    assert all(getattr(c, "_one_line_errors", False) for c in commands(app))


def test_which_errors_are_one_line():
    from graphdb.store import GraphStoreError

    assert is_one_line(GraphStoreError("x")) and is_one_line(ValueError("x")) and is_one_line(FileNotFoundError("x"))
    assert not is_one_line(KeyError("x")) and not is_one_line(RuntimeError("x"))   # bugs keep their traceback


@pytest.mark.parametrize("uri", UNREACHABLE)
def test_kg_stats_with_neo4j_unreachable(uri):
    assert_one_line(run("-m", "r2genkg", "kg", "stats", "--store", "neo4j", "--neo4j-uri", uri), uri)


@pytest.mark.slow
@pytest.mark.parametrize("uri", UNREACHABLE)
def test_run_batch_and_serve_with_neo4j_unreachable(tiny_checkpoint, tmp_path: Path, uri):
    study = tmp_path / "studies" / "s1"
    study.mkdir(parents=True)
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(study / "0.png")
    neo4j = ["--store", "neo4j", "--neo4j-uri", uri]
    assert_one_line(run("scripts/run_batch.py", tiny_checkpoint, "--input", study.parent, "--output",
                        tmp_path / "out.jsonl", "--no-progress", "--device", "cpu", *neo4j), uri)
    assert not (tmp_path / "out.jsonl").exists()
    assert_one_line(run("-m", "r2genkg", "serve", tiny_checkpoint, "--no-auth", "--device", "cpu", *neo4j), uri)
