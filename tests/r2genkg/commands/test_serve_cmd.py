"""`r2genkg serve` refuses to start with auth on and no key, and serves with a key from the
environment (a real process on a free port, called with the openai client), saying what it loads
and without torch's FutureWarning about torch.jit.script (issue 13); `r2genkg
export-llm` writes the folder vLLM loads, and names a folder that is not a checkpoint."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import openai
import pytest
from typer.testing import CliRunner

from r2genkg.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _checkpoint_graph(monkeypatch, m3kg_config):
    """Commands and processes read the graph the tiny checkpoint was trained on (environment)."""
    monkeypatch.setenv("R2GENKG_STORE_PATH", str(m3kg_config.path))
    monkeypatch.setenv("R2GENKG_FEATURES_CACHE", str(m3kg_config.features_cache))


def test_serve_without_keys_exits_2_naming_the_fix(tiny_checkpoint, monkeypatch):
    monkeypatch.delenv("R2GENKG_API_KEYS", raising=False)
    result = CliRunner().invoke(app, ["serve", str(tiny_checkpoint), "--device", "cpu"])
    assert result.exit_code == 2
    assert "R2GENKG_API_KEYS" in result.output and "--no-auth" in result.output


def test_serve_process_answers_with_a_key_from_the_environment(tiny_checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "R2GENKG_API_KEYS": "k1,k2"}
    proc = subprocess.Popen([sys.executable, "-m", "r2genkg", "serve", str(tiny_checkpoint), "--port", str(port),
                             "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k2", max_retries=0, timeout=10)
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                assert client.models.list().data[0].id == "r2genkg"
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.5)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k3", max_retries=0).models.list()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    output = proc.stdout.read()
    for step in ("loading torch", "reading the checkpoint", "opening the graph store", "loading the weights",
                 f"on http://127.0.0.1:{port}/v1 (API keys on)"):
        assert step in output, output[-3000:]
    assert "FutureWarning" not in output, output[-3000:]


def test_export_llm(tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(app, ["export-llm", str(tiny_checkpoint), str(tmp_path / "llm")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "llm" / "config.json").is_file() and (tmp_path / "llm" / "tokenizer.json").is_file()
    assert "--enable-mm-embeds" in result.output and "vllm serve" in result.output
    bad = CliRunner().invoke(app, ["export-llm", str(tmp_path), str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not a checkpoint" in bad.output
