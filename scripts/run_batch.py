"""Write reports for many studies with a trained checkpoint: one JSONL line per study.

What:  studies → the batched engine (HF or vLLM) → OUTPUT.jsonl (+ OUTPUT.failures.jsonl), resumable.
Input: --input a folder (one study per sub-folder), a CSV manifest (study_id,image_path[,view]),
       an R2Gen annotation.json (+ --split), or a CheXpert Plus CSV (+ --split); without --input,
       the checkpoint's own dataset split (phantoms rendered if its config says so).
Run:   .venv/bin/python scripts/run_batch.py outputs/runs/debug/best --output outputs/batch/debug_test.jsonl --evaluate
Exit:  0 all studies written; 1 some failed (see the failures file); 2 bad arguments or input.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from graphdb.store import StoreConfig
from r2genkg.env import use_process_defaults
from r2genkg.options import one_line_errors, store_options

app = typer.Typer(add_completion=False, help=__doc__, rich_markup_mode=None)


@app.command()
@store_options
def main(
    store: StoreConfig,
    checkpoint: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="A checkpoint folder.")],
    output: Annotated[Path, typer.Option(help="JSONL to append to (ids already there are skipped).")],
    input: Annotated[Path | None, typer.Option("--input", exists=True, help="Folder, manifest CSV, annotation.json or CheXpert Plus CSV.")] = None,
    split: Annotated[str | None, typer.Option(help="Split of an annotation / CheXpert Plus CSV (default: test).")] = None,
    image_root: Annotated[Path | None, typer.Option(help="Where relative image paths start.")] = None,
    engine: Annotated[str, typer.Option(help="hf | vllm | vllm-remote")] = "hf",
    vllm_url: Annotated[str | None, typer.Option(help="vllm-remote: http://host:port/v1")] = None,
    vllm_model: Annotated[str, typer.Option(help="vllm-remote: vllm serve's --served-model-name.")] = "r2genkg-llm",
    vllm_api_key: Annotated[str | None, typer.Option(envvar="R2GENKG_VLLM_API_KEY", help="vllm-remote: the server's --api-key.")] = None,
    vllm_mode: Annotated[str, typer.Option(help="vllm, vllm-remote: embeds (the adapter here, each prompt sent as image_embeds) | inside (the views sent; vLLM's plugin runs the adapter) | prompt-embeds (greedy only). docs/deploy.md.")] = "embeds",
    vllm_model_dir: Annotated[Path | None, typer.Option(help="vllm: the export-llm folder (default CHECKPOINT/llm_export, made if absent).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Studies per engine call.")] = 16,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N studies.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    num_beams: Annotated[int | None, typer.Option(min=1, help="Override the checkpoint's generation.num_beams.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(min=1, help="Override generation.max_new_tokens.")] = None,
    evidence: Annotated[bool, typer.Option(help="--no-evidence leaves out each row's per-sentence evidence, subgraph, attention and check warnings (rows of about 1 kB instead of 45 kB).")] = True,
    evaluate: Annotated[bool, typer.Option(help="Score the output against the input's reference reports.")] = False,
    meteor: Annotated[bool, typer.Option(help="--no-meteor skips METEOR (Java) in --evaluate.")] = True,
    progress: Annotated[bool, typer.Option(help="--no-progress hides the progress bar.")] = True,
) -> None:
    from cxr.records import DataError
    from generator.backends import BackendKind, VLLMMode
    from generator.batch import failures_path, read_studies, run_batch
    from generator.checkpoint import read_run_config
    from generator.engine import Engine, EngineConfig
    from r2genkg.commands.evaluate import print_result
    from training.evaluate import evaluate_records

    console = Console(stderr=True)
    kind = BackendKind(engine)
    records, read_failures = read_studies(checkpoint, input, split, image_root, progress=progress)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise DataError(f"no studies to generate for in {input or 'the checkpoint dataset'}")
    config = EngineConfig(backend=kind, micro_batch=batch_size, device=device, vllm_mode=vllm_mode,
                          vllm_url=vllm_url, vllm_model=vllm_model, vllm_api_key=vllm_api_key,
                          vllm_model_dir=str(vllm_model_dir) if vllm_model_dir else None)
    with Engine.from_checkpoint(checkpoint, config, store) as eng:
        settings = eng.default_settings
        settings = replace(settings, num_beams=num_beams or settings.num_beams,
                           max_new_tokens=max_new_tokens or settings.max_new_tokens, evidence=evidence)
        if kind is not BackendKind.HF and config.vllm_mode is VLLMMode.PROMPT_EMBEDS and settings.num_beams > 1:
            console.print(f"note: vLLM has no beam search on prompt_embeds: greedy instead of "
                          f"num_beams={settings.num_beams} (--vllm-mode embeds or inside run beams)", highlight=False)
            settings = replace(settings, num_beams=1)
        eng.check(settings)   # e.g. vLLM's beam search with a repetition penalty: refused before any work
        console.print(f"{len(records)} studies → {output} with {eng.model_id} ({kind.value}, "
                      f"{eng.device})", highlight=False)
        summary = run_batch(eng, records, output, batch_size, settings, progress, read_failures)
    console.print(f"wrote {summary.written} reports in {summary.seconds:.1f} s "
                  f"({summary.reports_per_second:.1f} reports/s); {summary.skipped_done} already done; "
                  f"{len(summary.failures)} failed", highlight=False)
    if evaluate:
        scored = evaluate_records(output, records, read_run_config(checkpoint).data.clean_style, meteor=meteor)
        if scored is None:
            console.print("--evaluate: the input has no reference reports; nothing scored")
        else:
            print_result(Console(), scored)
            console.print(f"scored {scored.counts['scored']} studies ({scored.counts['missing']} without a report)",
                          highlight=False)
    if summary.failures:
        console.print(f"[yellow]{len(summary.failures)} studies failed; reasons in {failures_path(output)}[/yellow]",
                      highlight=False)
        raise typer.Exit(1)


one_line_errors(app)   # as every r2genkg command: bad input or an unusable store is one line, exit 2

if __name__ == "__main__":
    use_process_defaults()
    sys.exit(app())
