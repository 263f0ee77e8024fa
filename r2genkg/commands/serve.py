"""`r2genkg serve`: the OpenAI-compatible API on a checkpoint; `r2genkg export-llm`: the LLM for vLLM."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from graphdb.store import StoreConfig
from r2genkg.options import store_options

KEYS_ENV = "R2GENKG_API_KEYS"


def read_api_keys(key_file: Path | None) -> tuple[str, ...]:
    """R2GENKG_API_KEYS (comma-separated) plus one key per line of ``key_file``."""
    keys = [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",")]
    if key_file is not None:
        keys += [line.strip() for line in key_file.read_text(encoding="utf-8").splitlines()]
    return tuple(k for k in keys if k and not k.startswith("#"))


def register(app: typer.Typer) -> None:
    @app.command("serve")
    @store_options
    def serve_command(
        store: StoreConfig,
        checkpoint: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A checkpoint folder.")],
        host: Annotated[str, typer.Option(help="Bind address (0.0.0.0 only behind a proxy or in a container).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
        engine: Annotated[str, typer.Option(envvar="R2GENKG_ENGINE", help="hf | vllm | vllm-remote")] = "hf",
        vllm_url: Annotated[str | None, typer.Option(envvar="R2GENKG_VLLM_URL", help="vllm-remote: http://host:8001/v1")] = None,
        vllm_model: Annotated[str, typer.Option(help="vllm-remote: vllm serve's --served-model-name.")] = "r2genkg-llm",
        vllm_api_key: Annotated[str | None, typer.Option(envvar="R2GENKG_VLLM_API_KEY", help="vllm-remote: the vLLM server's --api-key.")] = None,
        vllm_model_dir: Annotated[Path | None, typer.Option(help="vllm: the export-llm folder (made if absent).")] = None,
        vllm_mode: Annotated[str, typer.Option(envvar="R2GENKG_VLLM_MODE", help="vllm, vllm-remote: embeds (the adapter here, each prompt sent as image_embeds) | inside (the views sent; vLLM's plugin runs the adapter) | prompt-embeds (greedy only). docs/deploy.md.")] = "embeds",
        device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
        micro_batch: Annotated[int, typer.Option(min=1, help="Studies per adapter forward.")] = 16,
        max_batch: Annotated[int, typer.Option(min=1, help="Requests batched together.")] = 16,
        max_wait_ms: Annotated[float, typer.Option(min=0, help="How long a lone request waits for others to batch with.")] = 5.0,
        fill_wait_ms: Annotated[float, typer.Option(min=0, help="Longest wait of a batch for as many requests as were in the server at once in the last second.")] = 50.0,
        max_tokens: Annotated[int, typer.Option(min=1, help="Largest max_tokens a request may ask for.")] = 512,
        max_image_mb: Annotated[float, typer.Option(min=0.01, help="Largest image as sent (MiB).")] = 10.0,
        max_decoded_mb: Annotated[float, typer.Option(min=1, help="Most decoded pixel data per request (MiB), bit depth included.")] = 128.0,
        max_decodes: Annotated[int, typer.Option(min=1, help="Requests decoding images at once.")] = 2,
        max_images: Annotated[int, typer.Option(min=1, help="Most images (views) per request.")] = 4,
        image_url_allowlist: Annotated[list[str] | None, typer.Option(help="Hosts whose http(s) image URLs may be fetched.")] = None,
        no_auth: Annotated[bool, typer.Option("--no-auth", help="Turn API keys off (local use only).")] = False,
        api_key_file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="One API key per line.")] = None,
        runs_dir: Annotated[Path | None, typer.Option(exists=True, file_okay=False, help="The viewer (/ui) may open the result JSONLs under this folder (run_batch outputs, r2genkg test's predictions.jsonl).")] = None,
    ) -> None:
        """Serve the OpenAI-compatible API (POST /v1/chat/completions) from CHECKPOINT."""
        console = Console(stderr=True)
        start = time.perf_counter()

        def progress(step: str) -> None:   # start-up takes seconds (imports, graph, model): say what it does
            console.print(f"[{time.perf_counter() - start:5.1f} s] {step}", highlight=False, markup=False, soft_wrap=True)

        progress("loading torch, transformers and the model code")
        import uvicorn

        from generator.api_schema import ServerConfig
        from generator.backends import BackendKind
        from generator.engine import Engine, EngineConfig
        from generator.server import access_log_filter, create_app

        config = ServerConfig(api_keys=read_api_keys(api_key_file), auth=not no_auth, max_tokens=max_tokens,
                              max_image_bytes=int(max_image_mb * 1024 * 1024), max_images=max_images,
                              max_decoded_bytes=int(max_decoded_mb * 1024 * 1024), max_decodes=max_decodes,
                              max_batch=max_batch, max_wait_ms=max_wait_ms, fill_wait_ms=fill_wait_ms,
                              image_url_allowlist=tuple(h.lower() for h in image_url_allowlist or ()),
                              runs_dir=runs_dir.resolve() if runs_dir else None)
        engine_config = EngineConfig(backend=BackendKind(engine), micro_batch=micro_batch, device=device,
                                     vllm_mode=vllm_mode, vllm_url=vllm_url, vllm_model=vllm_model, vllm_api_key=vllm_api_key,
                                     vllm_model_dir=str(vllm_model_dir) if vllm_model_dir else None)
        eng = Engine.from_checkpoint(checkpoint, engine_config, store, progress)
        if no_auth:
            console.print("[yellow]warning: API keys are off (--no-auth): anyone who reaches the port can use it"
                          "[/yellow]", highlight=False)
        progress(f"serving {eng.model_id} ({eng.backend.kind.value}, {eng.device}) on http://{host}:{port}/v1 "
                 f"(API keys {'off' if no_auth else 'on'})")
        try:
            server = uvicorn.Server(uvicorn.Config(create_app(eng, config), host=host, port=port, log_level="info"))
            # after uvicorn's Config has set up its loggers: no query strings on /v1 in the access log
            logging.getLogger("uvicorn.access").addFilter(access_log_filter)
            server.run()
        finally:
            eng.close()

    @app.command("export-llm")
    @store_options
    def export_llm_command(
        store: StoreConfig,
        checkpoint: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A checkpoint folder.")],
        out_dir: Annotated[Path, typer.Argument(help="Where to write the folder vLLM serves.")],
    ) -> None:
        """Write the folder vLLM serves with the R2GenKG plugin: the LLM (LoRA merged), its tokenizer, the adapter."""
        from generator.export import export_llm

        out = export_llm(checkpoint, out_dir, store=store)
        Console().print(
            f"wrote {out}\n"
            f"adapter inside vLLM (views in, text out):  vllm serve {out} --served-model-name r2genkg --port 8001\n"
            f"adapter here, vLLM decodes (probabilities, evidence, beams):\n"
            f"  vllm serve {out} --served-model-name r2genkg-llm --enable-mm-embeds "
            f"--limit-mm-per-prompt '{{\"image\": 0}}' --port 8001\n"
            f"  r2genkg serve {checkpoint} --engine vllm-remote --vllm-url http://127.0.0.1:8001/v1\n"
            "(docs/deploy.md: which to use when)", highlight=False)
