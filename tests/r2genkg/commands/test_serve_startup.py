"""`r2genkg serve` says what it does while it starts (issue 13: ~12 s of silence): a line per
loading step, then where it serves and whether API keys are on. The engine and uvicorn are
stand-ins here; test_serve_cmd.py starts the real server."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from r2genkg.cli import app


@pytest.fixture
def started(monkeypatch) -> dict:
    import uvicorn

    import generator.server
    from generator.engine import Engine

    seen: dict = {}

    def from_checkpoint(cls, checkpoint, config, store, progress):
        progress("opening the graph store (stand-in)")
        return SimpleNamespace(model_id="tiny@0123", backend=SimpleNamespace(kind=config.backend), device="cpu",
                               close=lambda: None)

    monkeypatch.setattr(Engine, "from_checkpoint", classmethod(from_checkpoint))
    monkeypatch.setattr(generator.server, "create_app", lambda engine, config: "app")
    class Server:   # uvicorn.Server(config).run(), without binding a port
        def __init__(self, config: uvicorn.Config) -> None:
            self.config = config

        def run(self) -> None:
            seen.update(host=self.config.host, port=self.config.port)

    monkeypatch.setattr(uvicorn, "Server", Server)
    return seen


@pytest.mark.parametrize(("args", "env", "keys"), [(["--no-auth"], {}, "off"),
                                                   ([], {"R2GENKG_API_KEYS": "k1"}, "on")])
def test_serve_prints_each_start_up_step_then_where_it_serves(started, tmp_path, monkeypatch, args, env, keys):
    monkeypatch.delenv("R2GENKG_API_KEYS", raising=False)
    result = CliRunner().invoke(app, ["serve", str(tmp_path), "--port", "8123", *args], env=env)
    assert result.exit_code == 0, result.output
    assert started == {"host": "127.0.0.1", "port": 8123}
    steps = [line.split("] ", 1)[1] for line in result.output.splitlines() if line.startswith("[")]
    assert steps == ["loading torch, transformers and the model code", "opening the graph store (stand-in)",
                     f"serving tiny@0123 (hf, cpu) on http://127.0.0.1:8123/v1 (API keys {keys})"]
