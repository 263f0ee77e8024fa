"""Score generated reports against references, the one home for it: NLG (BLEU/METEOR/ROUGE-L/
CIDEr) + CE (14 and 5) + the classifier's AUROC when probabilities come with the reports +
``consistency`` when the model's decisions come with them (does the report say what the model
decided?) + the CE of those decisions themselves (what a report that said exactly what the model
decided would score) + the count of reports that repeat a sentence.

Entry points (validation, ``r2genkg test``, ``r2genkg evaluate``, run_batch --evaluate and the
pipeline all end in ``compute_scores``):
* ``compute_scores(preds, refs, style, probabilities=…)`` → ``ReportScores``: parallel lists.
* ``evaluate(predictions.jsonl, annotation.json, split, style)`` → ``EvalResult``: matches
  ``{"id", "report"[, "observations"]}`` lines to the R2Gen annotation's split by id.
* ``evaluate_records(predictions.jsonl, records, style)`` → ``EvalResult``: the same against any
  reader's records (run_batch's input), scoring the studies that have a reference.
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

import numpy as np
from tqdm import tqdm

from cxr.clean import CleanStyle, repeated_sentences
from cxr.labeler import label_reports
from cxr.observations import FINDINGS, FIVE_OBSERVATIONS, OBSERVATIONS, POSITIVE
from cxr.records import DataError, StudyRecord
from generator.check import WarningKind, checker_for
from training.metrics.auroc import auroc_per_observation
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
    auroc: dict[str, float | None] | None = None   # the classifier's, per observation (None: no probabilities)
    # the labeler's positives in each report vs the model's own positive decisions, over the 13
    # findings (None: no decisions given, or clinical off)
    consistency: CEResult | None = None
    repeated: int = 0                              # reports with a sentence written twice or more
    # the model's positive decisions scored against the references like a report's labels: the CE a
    # report that said exactly what the model decided would get (None: no decisions, or clinical off)
    decisions_ce_14: CEResult | None = None
    decisions_ce_5: CEResult | None = None
    # the report check (generator.check) on the text alone: warning kind → reports with one
    warned: dict[str, int] = field(default_factory=dict)
    warned_reports: int = 0                        # reports with any warning

    @property
    def mean_auroc(self) -> float | None:
        known = [v for v in (self.auroc or {}).values() if v is not None]
        return float(np.mean(known)) if known else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_reports": self.n_reports,
            "nlg": self.nlg.to_dict(),
            "ce_14": None if self.ce_14 is None else self.ce_14.to_dict(),
            "ce_5": None if self.ce_5 is None else self.ce_5.to_dict(),
            "classifier_auroc": self.auroc,
            "classifier_mean_auroc": self.mean_auroc,
            "consistency": None if self.consistency is None else self.consistency.to_dict(),
            "consistency_f1": self.consistency_f1,
            "repeated_reports": self.repeated,
            "repeated_pct": self.repeated_pct,
            "decisions_ce_14": None if self.decisions_ce_14 is None else self.decisions_ce_14.to_dict(),
            "decisions_ce_5": None if self.decisions_ce_5 is None else self.decisions_ce_5.to_dict(),
            "warned_reports": self.warned_reports,
            "warned_pct": self.warned_pct,
            "warnings_by_kind": self.warned,
        }

    @property
    def warned_pct(self) -> float:
        return 100.0 * self.warned_reports / self.n_reports if self.n_reports else 0.0

    @property
    def consistency_f1(self) -> float | None:
        """Micro-F1 over the 13 findings between what the reports assert and what the model decided."""
        return None if self.consistency is None else self.consistency.micro.f1

    @property
    def repeated_pct(self) -> float:
        return 100.0 * self.repeated / self.n_reports if self.n_reports else 0.0

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
        if self.mean_auroc is not None:
            out["classifier_mean_auroc"] = self.mean_auroc
        if self.consistency_f1 is not None:
            out["consistency_f1"] = self.consistency_f1
        if self.decisions_ce_14 is not None and self.decisions_ce_5 is not None:
            out["decisions_CE14_macro_f1"] = self.decisions_ce_14.macro.f1
            out["decisions_CE5_micro_f1"] = self.decisions_ce_5.micro.f1
        out["repeated_pct"] = self.repeated_pct
        out["warned_pct"] = self.warned_pct
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
    probabilities: np.ndarray | None = None,
    reference_labels: np.ndarray | None = None,
    decisions: np.ndarray | None = None,
    progress: bool = False,
    check: bool = True,
) -> ReportScores:
    """All metrics of parallel ``preds`` / ``refs`` (raw text; ``style=None``: already cleaned).

    ``probabilities`` (n, 14): the classifier's, scored as AUROC against ``reference_labels``
    (n, 14) or, without them, the labeler's reading of the raw references. ``decisions`` (n, 14)
    bool: the model's positive decisions, scored against the labeler's positives in ``preds``
    (consistency) and, like a report, against the references' labels (``decisions_ce_*``). Pass a
    long-lived ``scorer`` to reuse its METEOR JVM (its own style / meteor settings then apply).
    """
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
        ce_14 = ce_5 = consistency = decided_14 = decided_5 = None
        if clinical:
            steps.set_postfix_str("CheXpert labels")
            texts = (norm_preds, norm_refs) if label_text is LabelText.CLEANED else (preds, refs)
            pred_labels, ref_labels = label_reports(list(texts[0])), label_reports(list(texts[1]))
            ce_14 = ce_metrics(pred_labels, ref_labels, OBSERVATIONS)
            ce_5 = ce_metrics(pred_labels, ref_labels, FIVE_OBSERVATIONS)
            if decisions is not None:
                consistency = consistency_metrics(pred_labels, decisions)
                decided = decision_labels(decisions, pred_labels.shape)
                decided_14 = ce_metrics(decided, ref_labels, OBSERVATIONS)
                decided_5 = ce_metrics(decided, ref_labels, FIVE_OBSERVATIONS)
            steps.update()
    auroc = None
    if probabilities is not None:
        labels = reference_labels if reference_labels is not None else label_reports(list(refs))
        auroc = auroc_per_observation(np.asarray(probabilities), labels)
    repeated = sum(bool(repeated_sentences(p, scorer.style or CleanStyle.IU_XRAY)) for p in preds)
    # the report check on the text alone (no thresholds to judge probabilities by); ``check=False``
    # (the training loop's validation) skips it
    checker = checker_for(None) if check else None
    kinds = [{w.kind.value for w in checker.check(p)} for p in preds] if checker else []
    warned = {k.value: n for k in WarningKind if (n := sum(k.value in found for found in kinds))}
    return ReportScores(len(preds), nlg, ce_14, ce_5, auroc, consistency, repeated, decided_14, decided_5,
                        warned, sum(bool(found) for found in kinds))


def decision_labels(decisions: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The model's positive decisions (n, 14 bool) as labeler-style labels: positive or blank."""
    decisions = np.asarray(decisions, dtype=bool)
    if decisions.shape != tuple(shape):
        raise ValueError(f"decisions {decisions.shape} and report labels {tuple(shape)} differ in shape")
    return np.where(decisions, POSITIVE, np.nan)


def consistency_metrics(report_labels: np.ndarray, decisions: np.ndarray) -> CEResult:
    """The labeler's reading of the reports (n, 14) against the model's positive decisions (n, 14
    bool), over the 13 findings: micro-F1 is ``consistency_f1``, per_class the per-observation view."""
    return ce_metrics(report_labels, decision_labels(decisions, np.shape(report_labels)), FINDINGS)


# --- predictions file ↔ references -------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    report: str
    probabilities: tuple[float, ...] | None   # the classifier's 14, OBSERVATIONS order (if given)
    positive: tuple[bool, ...] | None = None  # the model's decisions, OBSERVATIONS order (if given)


def _positive(item: dict[str, Any], where: str) -> tuple[bool, ...] | None:
    value = item.get("positive")
    if value is None:
        return None
    names = {o.value for o in OBSERVATIONS}
    if not isinstance(value, list) or not all(isinstance(v, str) and v in names for v in value):
        raise DataError(f"{where}: 'positive' must be a list of observation names")
    return tuple(o.value in value for o in OBSERVATIONS)


def _probabilities(item: dict[str, Any], where: str) -> tuple[float, ...] | None:
    value = item.get("observations")
    if value is None:
        return None
    if not isinstance(value, dict) or any(o.value not in value for o in OBSERVATIONS):
        raise DataError(f"{where}: 'observations' must map each of the 14 observations to a probability")
    try:
        return tuple(float(value[o.value]) for o in OBSERVATIONS)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: 'observations' holds a non-number ({exc})") from exc


def read_predictions(path: Path) -> dict[str, Prediction]:
    """``{"id": str, "report": str[, "observations": {name: p}, "positive": [name, …]]}`` per line (blank lines ok),
    in file order: the rows run_batch and ``r2genkg test`` write."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read predictions ({exc})") from exc
    out: dict[str, Prediction] = {}
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
            raise DataError(f"{where}: expected an object with 'id' and 'report', got {type(item).__name__}")
        for key in ("id", "report"):
            if key not in item:
                raise DataError(f"{where}: missing field {key!r}")
            if not isinstance(item[key], str):
                raise DataError(f"{where}: field {key!r} must be a string, got {type(item[key]).__name__}")
        study_id = item["id"]
        if study_id in out:
            duplicates.append(f"{study_id} (lines {first_line[study_id]} and {number})")
            continue
        out[study_id] = Prediction(item["report"], _probabilities(item, where), _positive(item, where))
        first_line[study_id] = number
    if duplicates:
        raise DataError(f"{path}: {len(duplicates)} duplicate id(s): {_list_some(duplicates)}")
    if not out:
        raise DataError(f"{path}: no predictions (empty file)")
    return out


@dataclass(frozen=True)
class EvalResult:
    scores: ReportScores
    settings: dict[str, Any]
    counts: dict[str, int]
    missing_ids: list[str] = field(default_factory=list)

    @property
    def mean_auroc(self) -> float | None:
        return self.scores.mean_auroc

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


def _score(predictions_path: Path, preds: dict[str, Prediction], refs: dict[str, str], missing: list[str],
           style: CleanStyle | str | None, settings: dict[str, Any], counts: dict[str, int],
           **options: Any) -> EvalResult:
    """Score the predictions whose id has a reference (``refs`` order); AUROC when all carry probabilities."""
    ids = [i for i in refs if i in preds]
    if not ids:
        raise DataError(f"{predictions_path}: no prediction has a reference report to score against")
    probs = [preds[i].probabilities for i in ids]
    positive = [preds[i].positive for i in ids]
    scores = compute_scores([preds[i].report for i in ids], [refs[i] for i in ids], style,
                            probabilities=np.array(probs) if all(p is not None for p in probs) else None,
                            decisions=np.array(positive) if all(p is not None for p in positive) else None,
                            **options)
    settings = {"predictions": str(predictions_path), "style": None if style is None else CleanStyle(style).value,
                "meteor": options.get("meteor", True), "clinical": options.get("clinical", True),
                "label_text": LabelText(options.get("label_text", LabelText.CLEANED)).value,
                "ce_positive": "label 1 only (0, -1, blank negative); 0/0 -> 0",
                "tokenization": "R2Gen clean_report, whitespace-joined; no PTBTokenizer", **settings}
    return EvalResult(scores, settings, {**counts, "scored": len(ids), "missing": len(missing)}, missing)


def evaluate(
    predictions: Path,
    references: Path,
    split: str = "test",
    style: CleanStyle | str | None = CleanStyle.IU_XRAY,
    *,
    output: Path | None = None,
    allow_missing: bool = False,
    **options: Any,
) -> EvalResult:
    """Score a predictions JSONL against one split of an R2Gen annotation; JSON to ``output``.

    Every prediction must belong to the split; every study of the split needs one unless
    ``allow_missing``. ``options`` are ``compute_scores``'s (``meteor``, ``clinical``, ``label_text``).
    """
    from cxr.readers.common import SPLIT_ALIASES, normalise_split
    from cxr.readers.r2gen import read_r2gen

    predictions, references = Path(predictions), Path(references)
    preds = read_predictions(predictions)
    canonical = normalise_split(split)
    if canonical is None:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_ALIASES)}")
    records = read_r2gen(references)
    in_split = {r.study_id: r.report for r in records if r.split == canonical}
    if not in_split:
        present = sorted({r.split for r in records})
        raise DataError(f"{references}: split {canonical!r} is empty or absent; the file has {present}")
    unknown = [i for i in preds if i not in in_split]
    if unknown:
        elsewhere = {r.study_id: r.split for r in records}
        other = [i for i in unknown if i in elsewhere]
        hint = (f"; {len(other)} of them belong to other splits (e.g. {other[0]!r} is in {elsewhere[other[0]]!r})"
                if other else "")
        raise DataError(f"{predictions}: {len(unknown)} id(s) not in split {canonical!r} of {references}: "
                        f"{_list_some(unknown)}{hint}")
    missing = [i for i in in_split if i not in preds]
    if missing and not allow_missing:
        raise DataError(f"{predictions}: no prediction for {len(missing)} of the {len(in_split)} {canonical!r} "
                        f"studies: {_list_some(missing)} (allow_missing / --allow-missing scores the rest)")
    result = _score(predictions, preds, in_split, missing, style,
                    {"references": str(references), "split": canonical},
                    {"predictions": len(preds), "references_in_split": len(in_split)}, **options)
    if output is not None:
        result.write_json(output)
    return result


def evaluate_records(predictions: Path, records: Sequence[StudyRecord],
                     style: CleanStyle | str | None = CleanStyle.IU_XRAY, source: str = "the input's reports",
                     **options: Any) -> EvalResult | None:
    """Score a predictions JSONL against the records' own reports (None when no record has one).

    Records without a prediction (failed studies) are counted as missing, not an error.
    """
    predictions = Path(predictions)
    refs = {r.study_id: r.report for r in records if r.report.strip()}
    if not refs:
        return None
    preds = read_predictions(predictions)
    missing = [i for i in refs if i not in preds]
    return _score(predictions, preds, refs, missing, style, {"references": source},
                  {"predictions": len(preds), "references": len(refs)}, **options)
