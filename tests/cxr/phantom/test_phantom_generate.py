"""Batch generation: exact annotation paths, resume, manifest guard, atomic writes, R2Gen reader, CLI."""
from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cxr.observations import Observation
from cxr.phantom.generate import MANIFEST, ManifestMismatch, generate_phantoms
from cxr.phantom.render import PhantomConfig
from cxr.readers.r2gen import read_r2gen
from cxr.records import DataError, ErrorPolicy
from r2genkg.commands.phantoms import register
from r2genkg.options import one_line_errors

SMALL = PhantomConfig(size=96)


class NullLabeler:
    """Stand-in labeler: every report is normal (generation does not depend on the real labeler)."""

    class _Labels:
        values = dict.fromkeys(Observation)
        mentions: ClassVar[list] = []

    def label(self, report: str):
        return self._Labels()


def _annotation(tmp_path: Path, items: dict) -> Path:
    path = tmp_path / "annotation.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _annotation(tmp_path, {
        "train": [{"id": "S1", "report": "Normal chest.", "image_path": ["S1/0.png", "S1/1.png"], "split": "train"},
                  {"id": "S2", "report": "Small left effusion.", "image_path": ["S2/0.png"], "split": "train"}],
        "test": [{"id": "S3", "report": "Clear.", "image_path": ["S3/0.png", "S3/1.png", "S3/2.png"], "split": "test"}],
    })


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_writes_exactly_the_annotation_paths_and_the_reader_opens_them(tiny, tmp_path):
    out = tmp_path / "images"
    summary = generate_phantoms(tiny, out, SMALL, labeler=NullLabeler(), progress=False)
    assert (summary.studies, summary.written, summary.skipped, summary.images_written) == (3, 3, 0, 6)
    assert _files(out) == sorted(["S1/0.png", "S1/1.png", "S2/0.png", "S3/0.png", "S3/1.png", "S3/2.png", MANIFEST])
    records = read_r2gen(tiny, image_root=out, check_images="decode")
    for rec in records:
        for path in rec.image_paths:
            with Image.open(path) as im:
                assert (im.mode, im.size, im.format) == ("L", (96, 96), "PNG")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["seed"] == 0 and manifest["config"]["size"] == 96 and manifest["version"]


def test_resume_skips_finished_studies_and_overwrite_redoes_them(tiny, tmp_path):
    out = tmp_path / "images"
    generate_phantoms(tiny, out, SMALL, limit=1, labeler=NullLabeler(), progress=False)
    first = (out / "S1/0.png").read_bytes()
    (out / "S3").mkdir(parents=True)
    (out / "S3/0.png").write_bytes(b"partial")  # S3 incomplete: only 1 of 3 views exists
    summary = generate_phantoms(tiny, out, SMALL, labeler=NullLabeler(), progress=False)
    assert (summary.written, summary.skipped) == (2, 1)
    assert (out / "S1/0.png").read_bytes() == first
    assert (out / "S3/0.png").read_bytes() != b"partial"
    again = generate_phantoms(tiny, out, SMALL, overwrite=True, labeler=NullLabeler(), progress=False)
    assert (again.written, again.skipped) == (3, 0)
    assert (out / "S1/0.png").read_bytes() == first  # deterministic
    assert not [p for p in out.rglob("*.tmp")]


def test_resume_with_another_config_is_refused(tiny, tmp_path):
    out = tmp_path / "images"
    generate_phantoms(tiny, out, SMALL, limit=1, labeler=NullLabeler(), progress=False)
    with pytest.raises(ManifestMismatch, match="seed"):
        generate_phantoms(tiny, out, PhantomConfig(size=96, seed=3), labeler=NullLabeler(), progress=False)
    summary = generate_phantoms(tiny, out, PhantomConfig(size=96, seed=3), overwrite=True,
                                labeler=NullLabeler(), progress=False)
    assert summary.written == 3


def test_splits_and_limit(tiny, tmp_path):
    out = tmp_path / "images"
    summary = generate_phantoms(tiny, out, SMALL, splits=["test"], labeler=NullLabeler(), progress=False)
    assert summary.studies == 1 and (out / "S3/2.png").exists() and not (out / "S1").exists()


def test_paths_escaping_the_root_are_refused(tmp_path):
    bad = _annotation(tmp_path, {"train": [{"id": "X", "report": "r", "image_path": ["../evil.png"]}]})
    with pytest.raises(DataError, match=r"id 'X'.*must be relative"):
        generate_phantoms(bad, tmp_path / "out", SMALL, labeler=NullLabeler(), progress=False)


def test_real_iu_reports_with_the_real_labeler(iu_annotation, tmp_path):
    pytest.importorskip("cxr.labeler")
    out = tmp_path / "iu"
    summary = generate_phantoms(iu_annotation, out, SMALL, splits=["val"], limit=5, progress=False)
    assert summary.images_written == 10
    policy = ErrorPolicy.lenient()
    records = read_r2gen(iu_annotation, image_root=out, splits=["val"], check_images="decode", policy=policy)
    assert len(records) == 5 and policy.skipped == 296 - 5  # only the first five have images


@pytest.mark.slow
def test_parallel_workers_give_the_same_bytes(tiny, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    generate_phantoms(tiny, one, SMALL, labeler=NullLabeler(), progress=False)
    generate_phantoms(tiny, two, SMALL, workers=2, labeler=NullLabeler(), progress=False)
    for rel in ("S1/0.png", "S1/1.png", "S2/0.png", "S3/2.png"):
        assert (one / rel).read_bytes() == (two / rel).read_bytes()



class _Bar:
    """Stands in for tqdm: records every update."""

    updates: ClassVar[list[int]] = []

    def __init__(self, *args, **kwargs) -> None:
        type(self).updates = []

    def update(self, n: int = 1) -> None:
        self.updates.append(n)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_progress_advances_one_study_at_a_time(tmp_path, monkeypatch, workers):
    """Issue 13: with worker processes the bar sat at 0 until the end, then jumped to the total."""
    studies = [{"id": f"S{i}", "report": "Clear.", "image_path": [f"S{i}/0.png"]} for i in range(6)]
    annotation = _annotation(tmp_path, {"train": studies})
    out = tmp_path / "out"
    generate_phantoms(annotation, out, SMALL, limit=1, labeler=NullLabeler(), progress=False)   # S0 exists
    monkeypatch.setattr("cxr.phantom.generate.tqdm", _Bar)
    monkeypatch.setattr("cxr.phantom.generate.IN_FLIGHT_PER_WORKER", 1)   # 2 in flight: the queue fills up
    summary = generate_phantoms(annotation, out, SMALL, workers=workers, labeler=NullLabeler())
    assert (summary.written, summary.skipped, summary.images_written) == (5, 1, 5)
    assert _Bar.updates == [1] * 6   # S0 skipped, S1..S5 rendered: one step each


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return one_line_errors(app)


def test_cli_phantoms_and_resume_message(iu_annotation, tmp_path):
    pytest.importorskip("cxr.labeler")
    out = tmp_path / "cli"
    args = ["phantoms", "--annotation", str(iu_annotation), "--out", str(out), "--size", "64",
            "--limit", "2", "--split", "test"]
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, result.output
    assert "2 rendered" in result.output
    images = sorted(out.rglob("*.png"))
    assert len(images) == 4 and np.asarray(Image.open(images[0])).shape == (64, 64)
    result = CliRunner().invoke(_cli(), args)
    assert "2 already present" in result.output
    bad = CliRunner().invoke(_cli(), args[:-4] + ["--seed", "5", "--limit", "2"])
    assert bad.exit_code == 2 and "different setup" in bad.output


def test_cli_help_lists_options():
    result = CliRunner().invoke(_cli(), ["phantoms", "--help"])
    assert result.exit_code == 0
    for option in ("--annotation", "--out", "--size", "--seed", "--limit", "--split", "--workers", "--overwrite"):
        assert option in result.output


@pytest.mark.slow
def test_contact_sheet_has_every_observation(tmp_path):
    pytest.importorskip("cxr.labeler")
    from cxr.labeler import ReportLabeler
    from cxr.phantom.sheet import choose_examples
    from cxr.readers.r2gen import bundled_iu_annotation

    examples = choose_examples(bundled_iu_annotation(), ReportLabeler())
    captions = " ".join(e.caption for e in examples)
    assert all(o.value in captions for o in Observation)
    result = CliRunner().invoke(_cli(), ["phantoms-sheet", "--out", str(tmp_path / "sheet.png")])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "sheet.png") as im:
        assert im.mode == "L" and im.width > 1000
