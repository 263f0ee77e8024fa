"""cxr.home: the project home is $R2GENKG_HOME, else this checkout; relative paths go under it."""
from __future__ import annotations

from pathlib import Path

from cxr.home import CHECKOUT, in_home, project_home

REPO = Path(__file__).resolve().parents[2]


def test_the_home_is_the_checkout_unless_the_environment_names_one(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("R2GENKG_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert project_home() == CHECKOUT == REPO
    monkeypatch.setenv("R2GENKG_HOME", str(tmp_path / "deploy"))
    assert project_home() == tmp_path / "deploy"


def test_relative_paths_go_under_the_home_absolute_ones_stay(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("R2GENKG_HOME", str(tmp_path))
    assert in_home("outputs/kg/embedded") == tmp_path / "outputs" / "kg" / "embedded"
    assert in_home("/data/iu_xray/images") == Path("/data/iu_xray/images")
