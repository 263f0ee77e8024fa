"""`r2genkg evaluate`: predictions JSONL + R2Gen annotation → NLG and CE tables, and a JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from cxr.clean import CleanStyle
from generator.decisions import Thresholds
from training.evaluate import EvalResult, LabelText


def _fmt(value: float | None, digits: int = 4) -> str:
    return "skipped" if value is None else f"{value:.{digits}f}"


def nlg_table(result: EvalResult) -> Table:
    table = Table(title=f"NLG ({result.counts['scored']} reports)")
    for key in result.scores.nlg.to_dict():
        table.add_column(key, justify="right")
    table.add_row(*(_fmt(v) for v in result.scores.nlg.to_dict().values()))
    return table


def ce_summary_table(result: EvalResult) -> Table:
    title = "Clinical efficacy (label 1 = positive)"
    if result.scores.decisions_ce_14 is not None:
        title += "; 'decisions': the model's positive decisions scored as if a report said exactly them"
    table = Table(title=title)
    table.add_column("observations")
    for col in ("P micro", "R micro", "F1 micro", "P macro", "R macro", "F1 macro"):
        table.add_column(col, justify="right")
    scores = result.scores
    for name, ce in (("all 14", scores.ce_14), ("5", scores.ce_5),
                     ("all 14, decisions", scores.decisions_ce_14), ("5, decisions", scores.decisions_ce_5)):
        if ce is not None:
            table.add_row(
                name,
                *(
                    _fmt(getattr(getattr(ce, a), m))
                    for a in ("micro", "macro")
                    for m in ("precision", "recall", "f1")
                ),
            )
    return table


def per_class_table(result: EvalResult) -> Table:
    table = Table(
        title="Per observation (all 14)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for col in ("observation", "tp", "fp", "fn", "tn", "support", "P", "R", "F1"):
        if col == "observation":
            table.add_column(col, no_wrap=True)
        else:
            table.add_column(col, justify="right")
    assert result.scores.ce_14 is not None
    for c in result.scores.ce_14.per_class:
        table.add_row(
            c.observation,
            *map(str, (c.tp, c.fp, c.fn, c.tn, c.support)),
            *(_fmt(v, 3) for v in (c.precision, c.recall, c.f1)),
        )
    return table


def auroc_table(aurocs: dict[str, float | None], mean: float | None) -> Table:
    table = Table(title=f"Classifier AUROC (14 disease queries), mean {'n/a' if mean is None else f'{mean:.3f}'}")
    table.add_column("observation")
    table.add_column("AUROC", justify="right")
    for name, value in aurocs.items():
        table.add_row(name, "n/a (one class)" if value is None else f"{value:.3f}")
    return table


def consistency_table(result: EvalResult) -> Table:
    """Per finding: the model decided positive (rows of the JSONL's "positive") vs the report says so."""
    ce = result.scores.consistency
    assert ce is not None
    table = Table(title=f"Says what it sees: consistency F1 {ce.micro.f1:.3f} (micro, 13 findings): "
                        "the report's positives (labeler) vs the model's decisions",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("observation", "decided", "in report", "both", "F1"):
        table.add_column(col, justify="left" if col == "observation" else "right", no_wrap=col == "observation")
    for c in ce.per_class:
        table.add_row(c.observation, str(c.tp + c.fn), str(c.tp + c.fp), str(c.tp), _fmt(c.f1, 3))
    return table


def thresholds_table(thresholds: Thresholds) -> Table:
    table = Table(title=f"Decision thresholds (fit on {thresholds.fit_on})", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True)
    for col in ("observation", "positive ≥", "uncertain ≥", "val F1"):
        table.add_column(col, justify="left" if col == "observation" else "right", no_wrap=col == "observation")
    for name, pos, unc, f1 in thresholds.table():
        table.add_row(name, "never" if pos > 1 else f"{pos:.3f}", "–" if unc is None else f"{unc:.3f}",
                      "–" if f1 is None else f"{f1:.3f}")
    return table


def print_result(console: Console, result: EvalResult) -> None:
    """The NLG table, then (when CE was computed) the CE summary and per-class tables, then the
    classifier's AUROC (when the predictions carried probabilities), then consistency (when they
    carried the model's decisions) and the repeated-sentence count."""
    console.print(nlg_table(result))
    if result.scores.ce_14 is not None:
        console.print(ce_summary_table(result))
        console.print(per_class_table(result))
    if result.scores.auroc is not None:
        console.print(auroc_table(result.scores.auroc, result.mean_auroc))
    if result.scores.consistency is not None:
        console.print(consistency_table(result))
    console.print(f"reports with a repeated sentence: {result.scores.repeated} of {result.scores.n_reports} "
                  f"({result.scores.repeated_pct:.1f}%)", highlight=False)
    kinds = ", ".join(f"{k} {n}" for k, n in result.scores.warned.items())
    console.print(f"reports the check warns about: {result.scores.warned_reports} of {result.scores.n_reports} "
                  f"({result.scores.warned_pct:.1f}%){f': {kinds}' if kinds else ''}", highlight=False)


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_command(
        predictions: Annotated[
            Path,
            typer.Option(exists=True, dir_okay=False, help='JSONL, one {"id", "report"} per line.'),
        ],
        references: Annotated[
            Path, typer.Option(exists=True, dir_okay=False, help="R2Gen annotation.json.")
        ],
        split: Annotated[
            str, typer.Option(help="Split of the annotation the predictions cover.")
        ] = "test",
        output: Annotated[Path | None, typer.Option(help="Write all metrics here as JSON.")] = None,
        style: Annotated[
            CleanStyle, typer.Option(help="R2Gen cleaning applied to both sides.")
        ] = CleanStyle.IU_XRAY,
        clean: Annotated[
            bool,
            typer.Option(help="--no-clean: texts are already R2Gen-cleaned; score them verbatim."),
        ] = True,
        meteor: Annotated[
            bool, typer.Option(help="--no-meteor skips METEOR (needs Java, ~10 s to start).")
        ] = True,
        clinical: Annotated[
            bool, typer.Option(help="--no-clinical skips the CheXpert-label CE metrics.")
        ] = True,
        label_text: Annotated[
            LabelText, typer.Option(help="Text the CE labeler reads.")
        ] = LabelText.CLEANED,
        allow_missing: Annotated[
            bool, typer.Option(help="Score the predicted subset when some ids lack a prediction.")
        ] = False,
    ) -> None:
        """Score generated reports: BLEU-1..4, METEOR, ROUGE-L, CIDEr (R2Gen convention) and
        CheXpert-label precision / recall / F1 (micro, macro; 14 and 5 observations)."""
        from training.evaluate import evaluate

        console = Console()
        result = evaluate(
            predictions,
            references,
            split,
            style if clean else None,
            output=output,
            meteor=meteor,
            clinical=clinical,
            label_text=label_text,
            allow_missing=allow_missing,
            progress=True,
        )
        if result.missing_ids:
            console.print(
                f"[yellow]{len(result.missing_ids)} studies of {split!r} have no prediction "
                "and were left out[/yellow]"
            )
        print_result(console, result)
        if output is not None:
            console.print(f"wrote {output}", highlight=False, soft_wrap=True)
