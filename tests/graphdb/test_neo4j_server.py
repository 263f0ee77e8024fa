"""The real Neo4j 5.26 Community server of scripts/neo4j.sh: Bolt with auth, HTTP, the Neo4j
Browser rendered by headless Chromium, and data that survives a stop/start of the script.

Needs the server (`scripts/neo4j.sh start`; CI starts it). Read-only against that server; the
persistence test starts its own second instance on other ports in a temporary home (and checks
that each server's home proves only that server: graphdb.dev_server).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError

from graphdb.dev_server import SERVER_ID_FILE, DevServer, NotOurServer, connect_owned

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "neo4j.sh"
HOST = os.environ.get("R2GENKG_NEO4J_HOST", "127.0.0.1")
HTTP = f"http://{HOST}:{os.environ.get('R2GENKG_NEO4J_HTTP_PORT', '7474')}"

pytestmark = pytest.mark.neo4j


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET on the local server."""
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8")


def test_bolt_login_and_server_identity(neo4j_settings):
    s = neo4j_settings
    with GraphDatabase.driver(s.uri, auth=(s.user, s.password)) as driver:
        records, _, _ = driver.execute_query("RETURN 1 AS one", database_=s.database)
        assert records[0]["one"] == 1
        assert driver.get_server_info().agent.startswith("Neo4j/5.26.")
        records, _, _ = driver.execute_query(
            "CALL dbms.components() YIELD name, versions, edition RETURN *",
            database_=s.database)
        kernel = records[0]
        assert kernel["name"] == "Neo4j Kernel"
        assert kernel["versions"][0].startswith("5.26.")
        assert kernel["edition"] == "community"


def test_wrong_password_is_refused(neo4j_settings):
    s = neo4j_settings
    wrong = (s.user, s.password + "-wrong")
    with GraphDatabase.driver(s.uri, auth=wrong) as driver, pytest.raises(AuthError):
        driver.verify_connectivity()


def test_http_discovery_and_browser_index(neo4j_settings):
    status, ctype, body = _get(HTTP + "/")
    assert status == 200
    discovery = json.loads(body)
    assert discovery["neo4j_version"].startswith("5.26.")
    assert discovery["neo4j_edition"] == "community"

    status, ctype, body = _get(HTTP + "/browser/")
    assert status == 200 and ctype.startswith("text/html")
    assert "<title>Neo4j Browser</title>" in body
    assert '<div id="mount">' in body  # the React app mounts here; the static page has no form


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (CI installs the Debian package `chromium`)")
    return path


def _headless(chromium: str, profile: Path, *args: str) -> str:
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
           "--hide-scrollbars", "--window-size=1280,800", "--virtual-time-budget=15000",
           *args, HTTP + "/browser/"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_browser_app_renders_in_headless_chromium(neo4j_settings, tmp_path: Path):
    chromium = _chromium()
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom")
    # Only the running JS app produces the connect form, and it fills the Bolt address in from
    # the server's discovery document, so this proves the app loaded and talked to the server.
    assert 'data-testid="connect"' in dom
    assert 'data-testid="password"' in dom
    bolt_hostport = neo4j_settings.uri.split("://", 1)[1]
    assert 'data-testid="boltaddress" id="url-input"' in dom
    assert f'value="{bolt_hostport}"' in dom

    png = tmp_path / "browser.png"
    _headless(chromium, tmp_path / "profile", f"--screenshot={png}")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000

    from PIL import Image

    with Image.open(png) as im:
        assert im.size == (1280, 800)
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # a rendered UI, not a blank page


def _script(env: dict[str, str], command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), command], check=False, env=env, capture_output=True,
                          text=True, timeout=400)


@pytest.mark.slow
def test_data_persists_across_script_stop_start(neo4j_settings, tmp_path: Path):
    """A second server (own home, ports 17687/17474) so the shared one is never disturbed."""
    env = {**os.environ, "R2GENKG_NEO4J_HOME": str(tmp_path / "home"),
           "R2GENKG_NEO4J_BOLT_PORT": "17687", "R2GENKG_NEO4J_HTTP_PORT": "17474",
           "R2GENKG_NEO4J_HEAP": "512m", "R2GENKG_NEO4J_PAGECACHE": "64m",
           "NEO4J_PASSWORD": "persist-test-pw"}
    uri, auth, token = f"bolt://{HOST}:17687", ("neo4j", "persist-test-pw"), uuid.uuid4().hex
    try:
        started = _script(env, "start")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "http://127.0.0.1:17474/browser/" in started.stdout
        again = _script(env, "start")  # idempotent
        assert again.returncode == 0 and "already running" in again.stdout
        assert _script(env, "status").returncode == 0
        with GraphDatabase.driver(uri, auth=auth) as driver:
            driver.execute_query("CREATE (:Probe {token: $t})", t=token)
        server_id = (tmp_path / "home" / SERVER_ID_FILE).read_text()
        assert server_id != (neo4j_settings.home / SERVER_ID_FILE).read_text()  # each store its own id
        second = DevServer(uri, *auth, "neo4j", home=neo4j_settings.home)
        with pytest.raises(NotOurServer):  # the shared server's home does not prove this one
            connect_owned(second)

        stopped = _script(env, "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "SIGKILL" not in stopped.stdout  # a clean shutdown
        assert _script(env, "status").returncode == 3
        assert not (tmp_path / "home" / SERVER_ID_FILE).exists()

        restarted = _script(env, "start")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        with GraphDatabase.driver(uri, auth=auth) as driver:
            records, _, _ = driver.execute_query(
                "MATCH (p:Probe {token: $t}) RETURN count(p) AS n", t=token)
        assert records[0]["n"] == 1
        assert (tmp_path / "home" / SERVER_ID_FILE).read_text() == server_id  # the store's id, not the start's
        connect_owned(replace(second, home=tmp_path / "home")).close()
    finally:
        _script(env, "stop")
