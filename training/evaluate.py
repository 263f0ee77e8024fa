"""Score generated reports against references: NLG (BLEU/METEOR/ROUGE-L/CIDEr) + CE (14 and 5).

Two entry points:
* ``score_reports(preds, refs, style)`` → dict: parallel lists of strings, for training code.
* ``evaluate(predictions.jsonl, annotation.json, split, style)`` → ``EvalResult``: matches
  ``{"id", "report"}`` lines to the R2Gen annotation's split by id, scores them, writes JSON.
Conventions live in ``training.metrics.nlg`` (R2Gen cleaning, no PTBTokenizer) and
``training.metrics.clinical`` (label 1 positive, everything else negative; 0/0 → 0).
By default CE labels the cleaned text both sides (R2Gen scores decoded, cleaned text);
``LabelText.RAW`` labels the texts as written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cxr.clean import CleanStyle
from cxr.observations import FIVE_OBSERVATIONS, OBSERVATIONS
from cxr.records import DataError
from training.metrics.clinical import CEResult, ce_metrics
from training.metrics.nlg import NLGScorer, NLGScores, normalize_report

MAX_LISTED = 5  # ids quoted in an error message


class LabelText(str, Enum):
    CLEANED = "cleaned"  # label the R2Gen-normalised text (what the NLG metrics see)
    RAW = "raw"  # label the text as written


@dataclass(frozen=True)
class ReportScores:
    """All metrics of one set of report pairs; CE parts are None when skipped."""

    n_reports: int
    nlg: NLGScores
    ce_14: CEResult | None
    ce_5: CEResult | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_reports": self.n_reports,
            "nlg": self.nlg.to_dict(),
            "ce_14": None if self.ce_14 is None else self.ce_14.to_dict(),
            "ce_5": None if self.ce_5 is None else self.ce_5.to_dict(),
        }

    def flat(self) -> dict[str, float]:
        """One level of ``name → value`` for loggers: ``BLEU_4``, ``CE14_micro_f1``, …"""
        out = {k: v for k, v in self.nlg.to_dict().items() if v is not None}
        for tag, ce in (("CE14", self.ce_14), ("CE5", self.ce_5)):
            if ce is None:
                continue
            for avg in ("micro", "macro"):
                prf = getattr(ce, avg)
                for metric in ("precision", "recall", "f1"):
                    out[f"{tag}_{avg}_{metric}"] = getattr(prf, metric)
        return out


def _list_some(items: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:MAX_LISTED])
    return shown + (f" … ({len(items)} in all)" if len(items) > MAX_LISTED else "")


def compute_scores(
    preds: Sequence[str],
    refs: Sequence[str],
    style: CleanStyle | str | None = CleanStyle.IU_XRAY,
    *,
    meteor: bool = True,
    clinical: bool = True,
    label_text: LabelText | str = LabelText.CLEANED,
    scorer: NLGScorer | None = None,
    progress: bool = False,
) -> ReportScores:
    """Typed form of ``score_reports``; pass a long-lived ``scorer`` to reuse its METEOR JVM
    (its own style / meteor settings then apply)."""
    if len(preds) != len(refs):
        raise ValueError(
            f"{len(preds)} predictions but {len(refs)} references: lists must be parallel"
        )
    if not preds:
        raise ValueError("nothing to score: no reports")
    label_text = LabelText(label_text)
    steps = tqdm(total=3 if clinical else 2, desc="evaluate", unit="step", disable=not progress)
    with steps:
        steps.set_postfix_str("cleaning")
        own = scorer is None
        scorer = scorer or NLGScorer(style, meteor=meteor)
        norm_preds = [normalize_report(p, scorer.style) for p in preds]
        norm_refs = [normalize_report(r, scorer.style) for r in refs]
        steps.update()
        steps.set_postfix_str("BLEU, METEOR, ROUGE-L, CIDEr")
        try:
            nlg = scorer.score_normalized(norm_preds, norm_refs)
        finally:
            if own:
                scorer.close()
        steps.update()
        ce_14 = ce_5 = None
        if clinical:
            from cxr.labeler import label_reports

            steps.set_postfix_str("CheXpert labels")
            texts = (norm_preds, norm_refs) if label_text is LabelText.CLEANED else (preds, refs)
            pred_labels, ref_labels = label_reports(list(texts[0])), label_reports(list(texts[1]))
            ce_14 = ce_metrics(pred_labels, ref_labels, OBSERVATIONS)
            ce_5 = ce_metrics(pred_labels, ref_labels, FIVE_OBSERVATIONS)
            steps.update()
    return ReportScores(len(preds), nlg, ce_14, ce_5)


def score_reports(
    preds: Sequence[str],
    refs: Sequence[str],
    style: CleanStyle | str | None = CleanStyle.IU_XRAY,
    **options: Any,
) -> dict[str, Any]:
    """All metrics of parallel ``preds`` / ``refs`` (raw text; ``style=None``: already cleaned).

    ``{"n_reports", "nlg": {"BLEU_1", …, "CIDEr"}, "ce_14": {...}, "ce_5": {...}}``;
    ``options`` are ``compute_scores``'s (``meteor``, ``clinical``, ``label_text``, ``scorer``).
    """
    return compute_scores(preds, refs, style, **options).to_dict()


# --- predictions file ↔ annotation -------------------------------------------------------------
def read_predictions(path: Path) -> dict[str, str]:
    """``{"id": str, "report": str}`` per line (blank lines ok) → ``{id: report}``, file order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read predictions ({exc})") from exc
    reports: dict[str, str] = {}
    first_line: dict[str, int] = {}
    duplicates: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
        if not isinstance(item, dict):
            raise DataError(
                f"{where}: expected an object with 'id' and 'report', got {type(item).__name__}"
            )
        for key in ("id", "report"):
            if key not in item:
                raise DataError(f"{where}: missing field {key!r}")
            if not isinstance(item[key], str):
                raise DataError(
                    f"{where}: field {key!r} must be a string, got {type(item[key]).__name__}"
                )
        study_id = item["id"]
        if study_id in reports:
            duplicates.append(f"{study_id} (lines {first_line[study_id]} and {number})")
            continue
        reports[study_id] = item["report"]
        first_line[study_id] = number
    if duplicates:
        raise DataError(f"{path}: {len(duplicates)} duplicate id(s): {_list_some(duplicates)}")
    if not reports:
        raise DataError(f"{path}: no predictions (empty file)")
    return reports


@dataclass(frozen=True)
class MatchedReports:
    ids: list[str]
    preds: list[str]
    refs: list[str]
    missing: list[str]  # ids of the split without a prediction (only with allow_missing)
    n_references: int


def match_predictions(
    predictions: dict[str, str],
    predictions_path: Path,
    annotation: Path,
    split: str,
    allow_missing: bool = False,
) -> MatchedReports:
    """Pair predictions with the ``split``'s references by id, in annotation order."""
    from cxr.readers.common import SPLIT_ALIASES, normalise_split
    from cxr.readers.r2gen import read_r2gen

    canonical = normalise_split(split)
    if canonical is None:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_ALIASES)}")
    split = canonical
    records = read_r2gen(Path(annotation))
    in_split = {r.study_id: r.report for r in records if r.split == split}
    if not in_split:
        present = sorted({r.split for r in records})
        raise DataError(f"{annotation}: split {split!r} is empty or absent; the file has {present}")
    unknown = [i for i in predictions if i not in in_split]
    if unknown:
        elsewhere = {r.study_id: r.split for r in records}
        other = [i for i in unknown if i in elsewhere]
        hint = (
            f"; {len(other)} of them belong to other splits"
            f" (e.g. {other[0]!r} is in {elsewhere[other[0]]!r})"
            if other
            else ""
        )
        raise DataError(
            f"{predictions_path}: {len(unknown)} id(s) not in split {split!r} of {annotation}: "
            f"{_list_some(unknown)}{hint}"
        )
    missing = [i for i in in_split if i not in predictions]
    if missing and not allow_missing:
        raise DataError(
            f"{predictions_path}: no prediction for {len(missing)} of the {len(in_split)} "
            f"{split!r} studies: "
            f"{_list_some(missing)} (allow_missing / --allow-missing scores the rest)"
        )
    ids = [i for i in in_split if i in predictions]
    return MatchedReports(
        ids, [predictions[i] for i in ids], [in_split[i] for i in ids], missing, len(in_split)
    )


@dataclass(frozen=True)
class EvalResult:
    scores: ReportScores
    settings: dict[str, Any]
    counts: dict[str, int]
    missing_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "counts": self.counts,
            "missing_ids": self.missing_ids,
            "metrics": self.scores.to_dict(),
        }

    def write_json(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def evaluate(
    predictions: Path,
    references: Path,
    split: str = "test",
    style: CleanStyle | str | None = CleanStyle.IU_XRAY,
    *,
    output: Path | None = None,
    meteor: bool = True,
    clinical: bool = True,
    label_text: LabelText | str = LabelText.CLEANED,
    allow_missing: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Score a predictions JSONL against one split of an R2Gen annotation; JSON to ``output``."""
    predictions, references = Path(predictions), Path(references)
    preds_by_id = read_predictions(predictions)
    matched = match_predictions(preds_by_id, predictions, references, split, allow_missing)
    scores = compute_scores(
        matched.preds,
        matched.refs,
        style,
        meteor=meteor,
        clinical=clinical,
        label_text=label_text,
        progress=progress,
    )
    settings = {
        "predictions": str(predictions),
        "references": str(references),
        "split": split,
        "style": None if style is None else CleanStyle(style).value,
        "meteor": meteor,
        "clinical": clinical,
        "label_text": LabelText(label_text).value,
        "ce_positive": "label 1 only (0, -1, blank negative); 0/0 -> 0",
        "tokenization": "R2Gen clean_report, whitespace-joined; no PTBTokenizer",
    }
    counts = {
        "predictions": len(preds_by_id),
        "references_in_split": matched.n_references,
        "scored": len(matched.ids),
        "missing": len(matched.missing),
    }
    result = EvalResult(scores, settings, counts, matched.missing)
    if output is not None:
        result.write_json(output)
    return result
