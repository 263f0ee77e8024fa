"""The report viewer at /ui, in a real browser: Debian's chromium, headless, driven by Playwright.

Covers: the page loads with no request beyond this server; a phantom study uploaded through the
page streams a report and draws the subgraph with readable entity names; the batch view filters
by observation, warning and disagreement with the reference; a wrong key gets a clear message.
Each test saves a screenshot to a temp folder and checks it is not blank.

The screenshots of docs/viewer.md are these tests' own, on a trained checkpoint instead of the tiny one:
    R2GENKG_VIEWER_CHECKPOINT=outputs/runs/check_s1/best R2GENKG_SCREENSHOTS=docs/viewer \
        ./scripts/test tests/generator/test_viewer.py -m slow
(the checkpoint is served with the default graph store, as `r2genkg serve` would).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.observations import Observation
from cxr.phantom.generate import encode_png
from cxr.phantom.render import PhantomConfig, render_study
from cxr.phantom.spec import FindingSpec
from tests.generator.api_client import KEY

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.sync_api")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (CI installs the Debian package `chromium`)")
    return path


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    (root / "batch").mkdir()
    (root / "batch" / "out.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    return root.resolve()


@pytest.fixture(scope="module")
def site(request, runs_dir):
    """The API with the viewer: on R2GENKG_VIEWER_CHECKPOINT when set (screenshots for the docs),
    else on the session's tiny checkpoint; its --runs-dir holds one batch of results."""
    from generator.api_schema import ServerConfig
    from generator.engine import Engine, EngineConfig
    from generator.server import create_app
    from graphdb.store import StoreConfig
    from tests.generator.api_client import Served

    checkpoint = os.environ.get("R2GENKG_VIEWER_CHECKPOINT")
    if checkpoint:
        engine = Engine.from_checkpoint(Path(checkpoint), EngineConfig(device="cpu"), StoreConfig())
    else:
        engine = request.getfixturevalue("engine")
    s = Served(create_app(engine, ServerConfig(api_keys=(KEY,), runs_dir=runs_dir)))
    yield s
    s.stop()
    if checkpoint:
        engine.close()


@pytest.fixture
def page(browser, site):
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.requests = []
    page.on("request", lambda r: page.requests.append(r.url))
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    context.close()


def _shot(page, folder: Path, name: str) -> Path:
    """A full-page screenshot that must not be blank: many distinct gray levels, not one colour."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    assert pixels.std() > 10 and len(np.unique(pixels)) > 20, f"{path} looks blank"
    if os.environ.get("R2GENKG_SCREENSHOTS"):
        keep = Path(os.environ["R2GENKG_SCREENSHOTS"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, keep / path.name)
    return path


def _use_key(page, key: str) -> None:
    page.fill("#key", key)
    page.click("#save-key")
    page.wait_for_selector("#key-status:has-text('key set')")


def _phantom_views(folder: Path) -> list[Path]:
    specs = [FindingSpec(Observation.CARDIOMEGALY), FindingSpec(Observation.PLEURAL_EFFUSION)]
    paths = []
    for i, view in enumerate(render_study(specs, "viewer-test", PhantomConfig(size=128), n_views=2)):
        path = folder / f"view{i}.png"
        path.write_bytes(encode_png(view))
        paths.append(path)
    return paths


def test_the_page_loads_from_this_server_only(page, site, tmp_path):
    status, html = site.get("/ui")
    assert status == 200 and "R2GenKG report viewer" in html
    page.goto(site.url + "/ui")
    assert page.title() == "R2GenKG report viewer"
    assert page.inner_text("#key-status") == "no key yet"
    assert all(u.startswith(site.url) for u in page.requests), page.requests
    assert site.get("/ui/static/viewer.js")[0] == 200
    assert site.get("/ui/static/..%2Fserver.py")[0] == 404 and site.get("/ui/static/nothing.js")[0] == 404
    assert page.errors == []
    _shot(page, tmp_path, "load")


def test_a_phantom_study_gets_a_report_and_a_named_subgraph(page, site, tmp_path):
    page.goto(site.url + "/ui")
    _use_key(page, KEY)
    page.set_input_files("#views", [str(p) for p in _phantom_views(tmp_path)])
    page.click("#generate")
    page.wait_for_selector(".report-card .sentence", timeout=120_000)
    streamed = page.inner_text("#stream")
    assert streamed.strip(), "no report text streamed"
    sentences = page.locator(".report-card .sentence")
    assert sentences.count() >= 1
    # the subgraph: nodes carry entity names, never bare UMLS ids
    names = page.eval_on_selector_all("svg.graph circle", "cs => cs.map(c => c.dataset.name)")
    assert names and any(re.search(r"[a-z]{3,}", n) for n in names)
    assert not any(re.fullmatch(r"C\d{7}", n) for n in names)
    labels = page.eval_on_selector_all("svg.graph text", "ts => ts.map(t => t.textContent)")
    assert set(labels) == set(names)
    # 14 probability bars, the heat maps over both views
    assert page.locator(".bars .bar").count() == 14
    assert page.locator(".views canvas").count() == 2
    # hovering a sentence lists its triples and examples
    sentences.first.hover()
    assert page.locator(".triples li").count() >= 1 and page.locator(".examples li").count() >= 1
    assert all(u.startswith((site.url, "data:", "blob:")) for u in page.requests)
    assert page.errors == []
    _shot(page, tmp_path, "study")


def _rows() -> list[dict]:
    def row(i: int, positive: list[str], warnings: list[str], report: str) -> dict:
        return {"id": f"st{i}", "report": report, "positive": positive,
                "observations": {o.value: 0.9 if o.value in positive else 0.05 for o in Observation},
                "states": {o.value: "positive" if o.value in positive else "negative" for o in Observation},
                "thresholds": {o.value: 0.5 for o in Observation},
                "warnings": [{"kind": k, "sentence": report.split(". ")[0], "detail": f"a {k}"} for k in warnings],
                "sentences": [{"text": report, "start": 0, "end": len(report), "observations": [],
                               "triples": [], "examples": []}],
                "kg": {"seeds": [], "nodes": [], "graph": {"nodes": [
                    {"id": "Entity:C0013687", "name": "effusion", "type": "disorder", "level": 1}], "edges": []}}}
    return [row(0, ["Cardiomegaly"], [], "The heart is enlarged. No pleural effusion."),
            row(1, ["Pleural Effusion"], ["contradiction"], "No pleural effusion. Small right pleural effusion."),
            row(2, ["No Finding"], [], "The lungs are clear."),
            row(3, ["Cardiomegaly", "Pleural Effusion"], ["repetition"], "The heart is enlarged. The heart is enlarged.")]


def test_the_batch_view_filters_by_observation_warning_and_reference(page, site, tmp_path):
    results = tmp_path / "out.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    references = tmp_path / "annotation.json"
    references.write_text(json.dumps({"test": [
        {"id": "st0", "report": "Cardiomegaly. No effusion.", "image_path": []},
        {"id": "st1", "report": "The lungs are clear.", "image_path": []},
        {"id": "st2", "report": "The lungs are clear.", "image_path": []},
        {"id": "st3", "report": "Cardiomegaly.", "image_path": []}]}))
    page.goto(site.url + "/ui")
    _use_key(page, KEY)
    page.click("button[data-tab=batch]")
    page.set_input_files("#jsonl", str(results))
    page.wait_for_selector("#batch-count:has-text('4 of 4')")
    assert page.locator("#batch-list li").count() == 4
    page.select_option("#filter-observation", "Cardiomegaly")
    page.wait_for_selector("#batch-count:has-text('2 of 4')")
    assert page.eval_on_selector_all("#batch-list li", "ls => ls.map(l => l.dataset.id)") == ["st0", "st3"]
    page.select_option("#filter-warning", "repetition")
    page.wait_for_selector("#batch-count:has-text('1 of 4')")
    page.select_option("#filter-observation", "")
    page.select_option("#filter-warning", "")
    # the references, labelled by the server's labeler: only st1 differs (an effusion written, none
    # in its reference)
    page.set_input_files("#references", str(references))
    page.select_option("#filter-reference", "disagrees")
    page.wait_for_selector("#batch-count:has-text('1 of 4')")
    assert page.eval_on_selector_all("#batch-list li", "ls => ls.map(l => l.dataset.id)") == ["st1"]
    page.click("#batch-list li")
    page.wait_for_selector("#batch-panel .report-card .warning")
    assert "contradiction" in page.inner_text("#batch-panel .report-card")
    assert page.errors == []
    _shot(page, tmp_path, "batch")


def test_the_batch_view_opens_a_run_on_the_server(page, site, tmp_path):
    page.goto(site.url + "/ui")
    _use_key(page, KEY)
    page.click("button[data-tab=batch]")
    page.wait_for_selector("#server-runs option[value='batch/out.jsonl']", state="attached")
    page.select_option("#server-runs", "batch/out.jsonl")
    page.wait_for_selector("#batch-count:has-text('4 of 4')")
    page.select_option("#filter-warning", "contradiction")
    page.wait_for_selector("#batch-count:has-text('1 of 4')")
    page.click("#batch-list li")
    page.wait_for_selector("#batch-panel svg.graph circle[data-name=effusion]", state="attached")
    assert page.errors == []
    _shot(page, tmp_path, "server_run")


def test_a_wrong_key_gets_a_clear_message(page, site, tmp_path):
    page.goto(site.url + "/ui")
    _use_key(page, "not-the-key")
    page.set_input_files("#views", [str(p) for p in _phantom_views(tmp_path)][:1])
    page.click("#generate")
    page.wait_for_selector("#message:has-text('401')")
    assert "refused the API key" in page.inner_text("#message")
    assert page.inner_text("#stream") == ""
    _shot(page, tmp_path, "wrong_key")
