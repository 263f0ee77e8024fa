"""generator.engine on a trained debug checkpoint: one contract for every backend (HF here; vLLM
wherever it imports), the batched engine equal to one-study-at-a-time generation, streaming,
seeded sampling, the export that vLLM loads, and the remote backend's wire format."""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from generator.backends import (
    BackendError,
    BackendKind,
    HFBackend,
    RemoteVLLMBackend,
    encode_embeds,
    trim,
)
from generator.engine import Engine, EngineConfig, StudyInput
from generator.settings import GenerationSettings

pytestmark = pytest.mark.slow
GREEDY = GenerationSettings(max_new_tokens=24)
# the decoder's own tokens: coverage (on by default) may rewrite a report after its tokens streamed
PLAIN = GenerationSettings(max_new_tokens=24, cover_decisions=False)
# greedy coverage passes only: a seeded sample is the backend's RNG, which HF and vLLM do not share
NO_SAMPLES = GenerationSettings(max_new_tokens=24, cover_samples=0)


def studies(n: int, seed: int = 0, size: int = 80) -> list[StudyInput]:
    rng = np.random.default_rng(seed)
    return [StudyInput(f"s{i}", [rng.integers(0, 256, (size, size + 8 * i), dtype=np.uint8)
                                 for _ in range(1 + i % 2)]) for i in range(n)]


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path, m3kg_config):
    with Engine.from_checkpoint(tiny_checkpoint, EngineConfig(micro_batch=4, device="cpu"), m3kg_config) as e:
        yield e


def generate_with(engine: Engine, backend, batch: list[StudyInput], settings: GenerationSettings):
    """The engine's results with ``backend`` in place of its own, which is put back afterwards."""
    engine.backend, saved = backend, engine.backend
    try:
        return engine.generate(batch, settings)
    finally:
        engine.backend = saved


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def test_batched_engine_matches_one_study_at_a_time(engine):
    batch = studies(6)
    together = engine.generate(batch, GREEDY)
    alone = [engine.generate([s], GREEDY)[0] for s in batch]
    assert [r.study_id for r in together] == [s.study_id for s in batch]
    assert [r.report for r in together] == [r.report for r in alone]
    for a, b in zip(together, alone):
        assert a.completion_tokens == b.completion_tokens > 0 and a.prompt_tokens == b.prompt_tokens > 0
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
        assert a.evidence.seeds and a.evidence.node_ids


def test_streamed_tokens_rebuild_each_report(engine):
    batch = studies(5, seed=1)
    seen: dict[int, list[int]] = {i: [] for i in range(len(batch))}
    results = engine.generate(batch, PLAIN, on_token=lambda i, t: seen[i].append(t))
    for i, r in enumerate(results):
        assert len(seen[i]) == r.completion_tokens
        assert engine.model.tokenizer.decode(seen[i], skip_special_tokens=True).strip() == r.report


def test_each_studys_decisions_are_announced_before_its_first_token(engine):
    batch = studies(5, seed=1)
    events: list[tuple[str, int]] = []
    decided: dict[int, list[str]] = {}

    def on_decided(i: int, names: list[str]) -> None:
        decided[i] = names
        events.append(("decided", i))

    results = engine.generate(batch, GREEDY, on_token=lambda i, t: events.append(("token", i)),
                              on_decided=on_decided)
    for i, r in enumerate(results):
        assert decided[i] == [n for n in r.positive if n != "No Finding"]
        first_token = next((k for k, e in enumerate(events) if e == ("token", i)), len(events))
        assert events.index(("decided", i)) < first_token


def test_seeded_sampling_repeats_and_differs_from_greedy(engine):
    batch = studies(4, seed=2)
    hot = GenerationSettings(max_new_tokens=24, temperature=1.5, seed=7)
    a, b = engine.generate(batch, hot), engine.generate(batch, hot)
    assert [r.report for r in a] == [r.report for r in b]
    other = engine.generate(batch, GenerationSettings(max_new_tokens=24, temperature=1.5, seed=8))
    assert [r.report for r in a] != [r.report for r in other]


def test_beam_search_runs_and_respects_max_tokens(engine):
    results = engine.generate(studies(3), GenerationSettings(num_beams=3, max_new_tokens=5))
    assert all(r.completion_tokens <= 5 for r in results)
    assert all(r.finish_reason in {"stop", "length"} for r in results)


def test_export_loads_as_plain_hf_model_with_identical_greedy_tokens(engine, tiny_checkpoint, m3kg_config, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from generator.export import export_llm
    from generator.vllm_plugin.manifest import ADAPTER_FILE, MANIFEST_FILE

    out = export_llm(tiny_checkpoint, tmp_path / "export", store=m3kg_config)
    assert (out / ADAPTER_FILE).is_file() and json.loads((out / MANIFEST_FILE).read_text())["hidden_size"] > 0
    llm = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert tok.eos_token_id == engine.model.tokenizer.eos_token_id
    images, masks = zip(*(engine.prepare(s.views) for s in studies(4)))
    embeds, mask, _ = engine.model.prompt_embeds(torch.stack(images), torch.stack(masks), ["a", "b", "c", "d"])
    ours = HFBackend(engine.model.llm, engine.model.tokenizer).generate(embeds, mask, GREEDY)
    exported = HFBackend(llm, tok).generate(embeds, mask, GREEDY)
    assert [c.token_ids for c in ours] == [c.token_ids for c in exported]


def test_min_new_tokens_fixes_the_length(engine):
    results = engine.generate(studies(3), GenerationSettings(max_new_tokens=12, min_new_tokens=12))
    assert [r.completion_tokens for r in results] == [12, 12, 12]
    with pytest.raises(ValueError, match="min_new_tokens"):
        GenerationSettings(max_new_tokens=4, min_new_tokens=5)


def test_trim_cuts_at_eos_and_names_the_finish_reason():
    assert trim([5, 6, 2, 0, 0], eos_id=2, pad_id=0, max_new_tokens=5).token_ids == [5, 6]
    assert trim([5, 6, 2], eos_id=2, pad_id=0, max_new_tokens=3).finish_reason == "stop"
    assert trim([5, 6, 7], eos_id=2, pad_id=0, max_new_tokens=3).finish_reason == "length"


def test_vllm_backend_without_vllm_names_the_package(tiny_checkpoint, m3kg_config):
    if vllm_available():
        pytest.skip("vllm is installed here: tests/generator/test_vllm_plugin.py covers it")
    with pytest.raises(BackendError, match="needs the `vllm` package"):
        Engine.from_checkpoint(tiny_checkpoint, EngineConfig(backend=BackendKind.VLLM, device="cpu",
                                                             vllm_model_dir=str(tiny_checkpoint.parent / "x")),
                               m3kg_config)


class _PromptEmbedsServer(BaseHTTPRequestHandler):
    """A stand-in for `vllm serve EXPORT` in the wire-format test only: it reads the spliced prompt
    exactly as vLLM does (base64 → torch.load(weights_only=True)) from `prompt_embeds` on
    /v1/completions or from an `image_embeds` part on /v1/chat/completions, and decodes with HF."""

    backend: HFBackend
    seen: list[dict]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        chat = self.path.endswith("/chat/completions")
        self.seen.append({k: v for k, v in body.items() if k not in ("prompt_embeds", "messages")}
                         | {"path": self.path, "authorization": self.headers["Authorization"]})
        data = body["messages"][0]["content"][0]["image_embeds"] if chat else body["prompt_embeds"]
        tensor = torch.load(io.BytesIO(base64.b64decode(data)), weights_only=True)
        settings = GenerationSettings(max_new_tokens=body["max_tokens"], num_beams=body.get("n", 1))
        c = self.backend.generate(tensor[None], torch.ones(1, tensor.shape[0], dtype=torch.long), settings)[0]
        _reply(self, 200, _chat(c.token_ids, c.finish_reason) if chat else _completion(c.token_ids, c.finish_reason))

    def log_message(self, *args) -> None:
        pass


def _completion(token_ids: list[int], finish_reason: str, text: str = "") -> dict:
    """vLLM's /v1/completions answer, with `token_ids` as `return_token_ids` adds it."""
    return {"id": "cmpl-0", "object": "text_completion", "created": 0, "model": "llm_export",
            "choices": [{"index": 0, "text": text, "token_ids": token_ids, "finish_reason": finish_reason,
                         "logprobs": None}],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(token_ids), "total_tokens": len(token_ids)}}


def _chat(token_ids: list[int], finish_reason: str) -> dict:
    """vLLM's /v1/chat/completions answer, with `token_ids` as `return_token_ids` adds it."""
    return {"id": "chatcmpl-0", "object": "chat.completion", "created": 0, "model": "llm_export",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "token_ids": token_ids,
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(token_ids), "total_tokens": len(token_ids)}}


def _reply(handler: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict | None = None) -> None:
    data = json.dumps(payload).encode()
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                        **(headers or {})}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


@pytest.mark.parametrize("mode", ["embeds", "prompt-embeds"])
def test_remote_backend_sends_vllm_wire_format_and_matches_hf(engine, mode):
    handler = type("H", (_PromptEmbedsServer,), {"backend": HFBackend(engine.model.llm, engine.model.tokenizer),
                                                  "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = RemoteVLLMBackend(f"http://127.0.0.1:{server.server_port}/v1", "llm_export",
                                   engine.model.tokenizer, api_key="k", concurrency=4, mode=mode)
        batch = studies(6, seed=4)
        settings = [NO_SAMPLES] + ([replace(NO_SAMPLES, num_beams=3)] if mode == "embeds" else [])
        for s in settings:
            assert [r.report for r in generate_with(engine, remote, batch, s)] == \
                [r.report for r in engine.generate(batch, s)]
        first, last = handler.seen[0], handler.seen[-1]
        assert first["model"] == "llm_export" and first["return_token_ids"] is True
        assert first["authorization"] == "Bearer k"
        assert first["temperature"] == 0.0 and first["max_tokens"] == 24
        assert first["stop_token_ids"] == [engine.model.tokenizer.eos_token_id]
        if mode == "embeds":
            assert first["path"] == "/v1/chat/completions" and "use_beam_search" not in first
            assert last["use_beam_search"] is True and last["n"] == 3 and last["length_penalty"] == 1.0
        else:
            assert first["path"] == "/v1/completions" and first["prompt"] == ""   # vLLM: "" + prompt_embeds
            with pytest.raises(BackendError, match="beam search"):
                remote.generate(torch.zeros(1, 3, 4), torch.ones(1, 3), GenerationSettings(num_beams=2))
        remote.close()
    finally:
        server.shutdown()


class _ScriptedServer(BaseHTTPRequestHandler):
    """Answers POSTs from a script of (status, payload) and counts them."""

    script: list[tuple[int, dict]]
    calls: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.calls.append(self.path)
        status, payload = self.script[min(len(self.calls), len(self.script)) - 1]
        _reply(self, status, payload, {"retry-after-ms": "10"})   # the openai client waits 10 ms, not 0.5 s

    def log_message(self, *args) -> None:
        pass


class _Tokenizer:
    eos_token_id = 0

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [len(word) for word in text.split()]


def _scripted(script: list[tuple[int, dict]]):
    handler = type("S", (_ScriptedServer,), {"script": script, "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler.calls


@pytest.mark.parametrize(("script", "calls", "outcome"), [
    ([(503, {"error": {"message": "loading"}}), (200, _completion([7, 8, 0, 5], "stop"))], 2, [7, 8]),
    ([(401, {"error": {"message": "bad key", "type": "Unauthorized"}})], 1, "HTTP 401: bad key"),
    ([(503, {"error": {"message": "still\nloading"}})], 3, "HTTP 503: still loading"),
    ([(200, {**_completion([], "length"), "choices": [{"index": 0, "text": "no ids here", "finish_reason": "length",
                                                        "logprobs": None}]})], 1, [2, 3, 4]),
])
def test_remote_backend_retries_what_may_pass_and_names_the_server(script, calls, outcome):
    """503 is retried (twice by default), 401 is not; errors are one line naming the server; without
    `token_ids` the text is re-tokenised."""
    server, seen = _scripted(script)
    url = f"http://127.0.0.1:{server.server_port}/v1"
    remote = RemoteVLLMBackend(url, "llm_export", _Tokenizer(), concurrency=2,  # type: ignore[arg-type]
                               mode="prompt-embeds")
    one_row = torch.zeros(1, 3, 4), torch.ones(1, 3), GenerationSettings(max_new_tokens=3)
    try:
        if isinstance(outcome, str):
            with pytest.raises(BackendError) as err:
                remote.generate(*one_row)
            assert str(err.value) == f"vLLM server {url}: {outcome}"
        else:
            assert remote.generate(*one_row)[0].token_ids == outcome
        assert seen == ["/v1/completions"] * calls
    finally:
        remote.close()
        server.shutdown()


def test_remote_backend_names_an_unreachable_server():
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    remote = RemoteVLLMBackend(url, "m", _Tokenizer(), max_retries=0)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match=rf"^vLLM server {url} unreachable: APIConnectionError"):
        remote.generate(torch.zeros(1, 3, 4), torch.ones(1, 3), GenerationSettings(max_new_tokens=3))
    remote.close()


def test_encode_embeds_round_trips():
    t = torch.randn(7, 16)
    back = torch.load(io.BytesIO(base64.b64decode(encode_embeds(t))), weights_only=True)
    assert torch.equal(back, t)


def test_step_tap_stops_a_row_at_its_eos():
    from generator.backends import _StepTap

    seen: list[tuple[int, int]] = []
    tap = _StepTap(lambda row, token: seen.append((row, token)), eos_id=2)
    steps = [[], [5, 7], [2, 8], [0, 9]]            # row 0: 5 then eos then padding; row 1: 7 8 9
    for t in range(1, 4):
        ids = torch.tensor([[steps[s][r] for s in range(1, t + 1)] for r in range(2)])
        tap(ids, torch.zeros(2, 4))
    assert seen == [(0, 5), (1, 7), (1, 8), (1, 9)] and tap.sent == {0: 1, 1: 3}
    done = [trim([5, 2, 0, 0], 2, 0, 4), trim([7, 8, 9, 4], 2, 0, 4)]
    # HFBackend then reports what the tap has not: row 0 nothing, row 1 its last token
    assert [c.token_ids[tap.sent[r]:] for r, c in enumerate(done)] == [[], [4]]


def test_export_merges_lora_into_plain_weights_with_identical_greedy_tokens(tmp_path, m3kg_config, tiny_tokenizer):
    """A LoRA checkpoint (adapters perturbed so the merge matters) → export → plain HF model."""
    from transformers import AutoModelForCausalLM

    from generator.checkpoint import build_model, save_model
    from generator.export import export_llm
    from tests.generator.conftest import debug_experiment

    cfg = debug_experiment(tmp_path, "model.llm.training=lora", "model.llm.lora_r=4")
    bundle = build_model(cfg, tiny_tokenizer, m3kg_config)
    try:
        model = bundle.model.eval()
        assert hasattr(model.llm, "get_base_model"), "the LLM should be a peft (LoRA) model"
        with torch.no_grad():
            for name, p in model.llm.named_parameters():
                if "lora_B" in name:   # zero at init: perturb it so merging changes the weights
                    p.normal_(0, 0.5)
        ckpt = save_model(tmp_path / "ckpt", model, cfg, bundle.fingerprint)
        images, masks = torch.randn(3, 2, 1, 64, 64), torch.ones(3, 2, dtype=torch.bool)
        embeds, mask, _ = model.prompt_embeds(images, masks, ["a", "b", "c"])
        ours = HFBackend(model.llm, tiny_tokenizer).generate(embeds, mask, GREEDY)
        base_q = model.llm.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.detach().clone()
    finally:
        bundle.close()
    out = export_llm(ckpt, tmp_path / "export", store=m3kg_config)
    llm = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert not any("lora" in n for n, _ in llm.named_parameters())
    assert not torch.allclose(llm.model.layers[0].self_attn.q_proj.weight, base_q), "LoRA was not merged"
    exported = HFBackend(llm, tiny_tokenizer).generate(embeds, mask, GREEDY)
    assert [c.token_ids for c in ours] == [c.token_ids for c in exported]


@pytest.mark.neo4j
def test_neo4j_store_gives_the_reports_and_evidence_of_the_embedded_one(engine, tiny_checkpoint, m3kg_config,
                                                                         neo4j_settings, monkeypatch):
    """`--store neo4j` (run_batch, serve): the same checkpoint over the real server, M3KG loaded."""
    from graphdb.dev_server import connect_owned
    from graphdb.m3kg import load_m3kg
    from graphdb.store import StoreConfig, StoreKind

    s = neo4j_settings
    with connect_owned(s) as store:
        store.clear()
        store.upsert(load_m3kg())
    monkeypatch.setenv("NEO4J_PASSWORD", s.password)
    batch = studies(6, seed=5)
    embedded = engine.generate(batch, GREEDY)
    store = StoreConfig(kind=StoreKind.NEO4J, uri=s.uri, user=s.user, database=s.database,
                        features_cache=m3kg_config.features_cache)
    with Engine.from_checkpoint(tiny_checkpoint, EngineConfig(device="cpu", micro_batch=4), store) as neo:
        served = neo.generate(batch, GREEDY)
    assert [r.report for r in served] == [r.report for r in embedded]
    assert [r.evidence.node_ids for r in served] == [r.evidence.node_ids for r in embedded]


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_hf_beam_search_rules_over_any_engine_equal_transformers(engine, length_penalty):
    """generator.backends.hf_beam_search (what the vLLM backend runs over vLLM's engine), here over
    the HF model's own next-token log-probabilities: the same reports as transformers' beam search."""
    from generator.backends import hf_beam_search

    batch = studies(6, seed=8)
    images, masks = zip(*(engine.prepare(s.views) for s in batch))
    embeds, mask, _ = engine.model.prompt_embeds(torch.stack(images), torch.stack(masks), [s.study_id for s in batch])
    settings = GenerationSettings(max_new_tokens=16, num_beams=3, length_penalty=length_penalty)
    llm, table = engine.model.llm, engine.model.llm.get_input_embeddings()

    def step(asks, k):
        out = []
        with torch.no_grad():
            for row, tokens in asks:
                inputs = torch.cat([embeds[row], table(torch.tensor(tokens, dtype=torch.long))])[None]
                logp = torch.log_softmax(llm(inputs_embeds=inputs).logits[0, -1].float(), -1)
                top = torch.topk(logp, k)
                out.append(dict(zip(top.indices.tolist(), top.values.tolist())))
        return out

    eos = engine.model.tokenizer.eos_token_id
    ours = [trim(ids, eos, None, 16).token_ids for ids in hf_beam_search(step, len(batch), settings, eos)]
    want = [c.token_ids for c in HFBackend(llm, engine.model.tokenizer).generate(embeds, mask, settings)]
    assert ours == want
