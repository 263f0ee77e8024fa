"""training.evaluate, does the report say what the model decided: consistency (the labeler's
positives in each generated report vs the model's positive decisions, 13 findings, No Finding
left out), the count of reports that repeat a sentence (cxr.clean.repeated_sentences), and the
"positive" list of a predictions JSONL carried through to the scores."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cxr.clean import CleanStyle, repeated_sentences
from cxr.labeler import label_reports
from cxr.observations import FINDINGS, OBSERVATIONS
from cxr.records import DataError, StudyRecord
from training.evaluate import (
    compute_scores,
    consistency_metrics,
    evaluate_records,
    read_predictions,
)

IDX = {o.value: j for j, o in enumerate(OBSERVATIONS)}
PREDS = [
    "the heart is enlarged. cardiomegaly. small left pleural effusion.",   # Cardiomegaly, Pleural Effusion
    "no acute cardiopulmonary abnormality.",                               # No Finding
    "there is pulmonary edema. cardiomegaly is present.",                   # Cardiomegaly, Edema
    "possible pneumonia.",                                                 # Pneumonia uncertain (-1)
]
REFS = [
    "the heart is normal in size. the lungs are clear.",
    "no acute cardiopulmonary abnormality.",
    "cardiomegaly. there is pulmonary edema.",
    "right lower lobe consolidation concerning for pneumonia.",
]


def decisions_of(*rows: list[str]) -> np.ndarray:
    out = np.zeros((len(rows), 14), dtype=bool)
    for i, names in enumerate(rows):
        out[i, [IDX[n] for n in names]] = True
    return out


DECISIONS = decisions_of(
    ["Cardiomegaly", "Edema"],             # Cardiomegaly agrees; Edema decided, not written; Effusion written, not decided
    ["No Finding"],                        # No Finding is not scored
    ["Cardiomegaly", "Edema"],             # both agree
    ["Pneumonia"],                         # an uncertain mention is not a positive one
)


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---- consistency_metrics ------------------------------------------------------------------------
def test_the_labeler_reads_the_reports_as_expected():
    labels = label_reports(PREDS)
    assert labels[0, IDX["Cardiomegaly"]] == 1 and labels[0, IDX["Pleural Effusion"]] == 1
    assert labels[1, IDX["No Finding"]] == 1
    assert labels[2, IDX["Edema"]] == 1 and labels[3, IDX["Pneumonia"]] == -1


def test_consistency_counts_agreement_over_the_13_findings():
    ce = consistency_metrics(label_reports(PREDS), DECISIONS)
    assert ce.observations == tuple(o.value for o in FINDINGS) and len(ce.observations) == 13
    assert "No Finding" not in ce.observations and ce.n_reports == 4
    per = {c.observation: c for c in ce.per_class}
    # tp: both; fp: the report says it, the model did not decide it; fn: decided, not written
    assert (per["Cardiomegaly"].tp, per["Cardiomegaly"].fp, per["Cardiomegaly"].fn) == (2, 0, 0)
    assert (per["Edema"].tp, per["Edema"].fp, per["Edema"].fn) == (1, 0, 1)
    assert (per["Pleural Effusion"].tp, per["Pleural Effusion"].fp, per["Pleural Effusion"].fn) == (0, 1, 0)
    assert (per["Pneumonia"].tp, per["Pneumonia"].fp, per["Pneumonia"].fn) == (0, 0, 1)
    # micro over findings: tp 3, fp 1, fn 2
    assert ce.micro.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert ce.micro.precision == pytest.approx(3 / 4) and ce.micro.recall == pytest.approx(3 / 5)


def test_no_finding_does_not_count():
    labels = label_reports(PREDS)
    other = DECISIONS.copy()
    other[:, IDX["No Finding"]] = ~other[:, IDX["No Finding"]]
    assert consistency_metrics(labels, other) == consistency_metrics(labels, DECISIONS)


def test_a_model_that_writes_what_it_decides_scores_one():
    labels = label_reports(PREDS)
    agree = labels == 1
    ce = consistency_metrics(labels, agree)
    assert ce.micro.f1 == 1.0
    assert consistency_metrics(labels, np.zeros((4, 14), dtype=bool)).micro.f1 == 0.0


def test_decisions_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"decisions \(3, 14\) and report labels \(4, 14\) differ in shape"):
        consistency_metrics(label_reports(PREDS), DECISIONS[:3])


# ---- compute_scores -----------------------------------------------------------------------------
def test_compute_scores_fills_consistency_when_decisions_come():
    scores = compute_scores(PREDS, REFS, meteor=False, decisions=DECISIONS)
    want = consistency_metrics(label_reports(PREDS), DECISIONS)
    assert scores.consistency == want
    assert scores.consistency_f1 == want.micro.f1
    flat = scores.flat()
    assert flat["consistency_f1"] == pytest.approx(6 / 9)
    data = scores.to_dict()
    assert data["consistency_f1"] == pytest.approx(6 / 9) and data["consistency"]["observations"] == list(want.observations)
    # the decisions are scored against the generated reports, not the references
    assert scores.ce_14 is not None and scores.consistency != consistency_metrics(label_reports(REFS), DECISIONS)


def test_compute_scores_without_decisions_or_clinical_has_no_consistency():
    plain = compute_scores(PREDS, REFS, meteor=False)
    assert plain.consistency is None and plain.consistency_f1 is None
    assert "consistency_f1" not in plain.flat() and plain.to_dict()["consistency"] is None
    no_ce = compute_scores(PREDS, REFS, meteor=False, clinical=False, decisions=DECISIONS)
    assert no_ce.consistency is None and "consistency_f1" not in no_ce.flat()


def test_repeated_reports_are_counted():
    preds = [
        "the lungs are clear. the lungs are clear.",
        "The heart is normal. No effusion. the heart, is normal.",
        "the heart is normal. the lungs are clear.",
        "no acute disease.",
    ]
    scores = compute_scores(preds, REFS, meteor=False, clinical=False)
    assert scores.repeated == 2 and scores.n_reports == 4
    assert scores.repeated_pct == pytest.approx(50.0)
    assert scores.flat()["repeated_pct"] == pytest.approx(50.0)
    data = scores.to_dict()
    assert data["repeated_reports"] == 2 and data["repeated_pct"] == pytest.approx(50.0)
    none = compute_scores(preds[2:], REFS[2:], meteor=False, clinical=False)
    assert none.repeated == 0 and none.flat()["repeated_pct"] == 0.0
    # already-cleaned text (style None) is read the same way
    cleaned = compute_scores(["the lungs are clear . the lungs are clear ."], ["x ."], None, meteor=False,
                             clinical=False)
    assert cleaned.repeated == 1 and cleaned.repeated_pct == 100.0


# ---- repeated_sentences -------------------------------------------------------------------------
@pytest.mark.parametrize("text, repeated", [
    ("the lungs are clear. the lungs are clear.", ["the lungs are clear"]),
    ("The lungs are clear. THE LUNGS ARE CLEAR.", ["the lungs are clear"]),             # case
    ("the lungs, are clear. the lungs are clear!. heart normal.", ["the lungs are clear"]),  # punctuation
    ("the lungs are  clear. the lungs are clear.", ["the lungs are clear"]),           # spacing
    ("1. No effusion. 2. No effusion.", ["no effusion"]),                              # R2Gen's list markers
    ("a. b. a. b. a.", ["a", "b"]),                                                    # each once, in order
    ("b. a. a. b.", ["a", "b"]),
    ("the lungs are clear. the heart is normal.", []),
    ("the lungs are clear.", []),
    ("", []),
    (". . lungs.", []),                                                                 # empty sentences are no repeat
])
def test_repeated_sentences(text, repeated):
    assert repeated_sentences(text) == repeated


def test_repeated_sentences_follow_the_style():
    # IU does not split at a newline; MIMIC turns it into a space first
    text = "the lungs are clear.\nthe lungs are clear."
    assert repeated_sentences(text, CleanStyle.IU_XRAY) == []
    assert repeated_sentences("the lungs are clear. the lungs are clear.", "mimic_cxr") == ["the lungs are clear"]


# ---- predictions JSONL ---------------------------------------------------------------------------
def test_read_predictions_reads_positive(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"id": "a", "report": "x", "positive": ["Edema", "Cardiomegaly"]},
        {"id": "b", "report": "y", "positive": []},
        {"id": "c", "report": "z"},
        {"id": "d", "report": "w", "positive": None},
    ])
    preds = read_predictions(path)
    a = preds["a"].positive
    assert len(a) == 14 and [o.value for o, keep in zip(OBSERVATIONS, a) if keep] == ["Cardiomegaly", "Edema"]
    assert preds["b"].positive == (False,) * 14
    assert preds["c"].positive is None and preds["d"].positive is None


@pytest.mark.parametrize("positive", [["Edema", "Heart Attack"], "Edema", [1], {"Edema": True}, ["edema"]])
def test_unknown_positive_names_the_line(tmp_path, positive):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "report": "x"},
                                             {"id": "b", "report": "y", "positive": positive}])
    with pytest.raises(DataError, match=r"p.jsonl: line 2: 'positive' must be a list of observation names"):
        read_predictions(path)


def _rows(decisions: np.ndarray | None) -> list[dict]:
    rows = []
    for i, report in enumerate(PREDS):
        row = {"id": f"s{i}", "report": report}
        if decisions is not None:
            row["positive"] = [o.value for o, keep in zip(OBSERVATIONS, decisions[i]) if keep]
        rows.append(row)
    return rows


def test_evaluate_records_passes_the_decisions_through(tmp_path):
    records = [StudyRecord(f"s{i}", (), ref) for i, ref in enumerate(REFS)]
    result = evaluate_records(write_jsonl(tmp_path / "p.jsonl", _rows(DECISIONS)), records, meteor=False)
    assert result.counts["scored"] == 4
    assert result.scores.consistency == consistency_metrics(label_reports(PREDS), DECISIONS)
    assert result.to_dict()["metrics"]["consistency_f1"] == pytest.approx(6 / 9)
    # one row without "positive": no consistency at all (not a partial one)
    rows = _rows(DECISIONS)
    del rows[2]["positive"]
    result = evaluate_records(write_jsonl(tmp_path / "q.jsonl", rows), records, meteor=False)
    assert result.scores.consistency is None and result.scores.ce_14 is not None
    # rows outside the references do not count: only the matched ones need "positive"
    rows = _rows(DECISIONS)[:3] + [{"id": "extra", "report": "no acute disease."}]
    partial = [StudyRecord(f"s{i}", (), ref) for i, ref in enumerate(REFS[:3])]
    result = evaluate_records(write_jsonl(tmp_path / "r.jsonl", rows), partial, meteor=False)
    assert result.scores.consistency == consistency_metrics(label_reports(PREDS[:3]), DECISIONS[:3])


def test_the_decisions_are_also_scored_against_the_references_like_a_report():
    scores = compute_scores(PREDS, REFS, meteor=False, decisions=DECISIONS)
    # CE-5 of the decisions: Cardiomegaly + Edema right in study 3, both wrong in study 1 (a normal
    # reference), the reference's Consolidation in study 4 not decided → P 2/4, R 2/3
    ce5 = scores.decisions_ce_5
    assert ce5 is not None and ce5.micro.precision == pytest.approx(0.5) and ce5.micro.recall == pytest.approx(2 / 3)
    assert scores.flat()["decisions_CE5_micro_f1"] == pytest.approx(4 / 7)
    assert scores.to_dict()["decisions_ce_5"]["micro"]["f1"] == pytest.approx(4 / 7)
    # not the reports' CE: study 1's report wrote an effusion that was not decided
    assert scores.decisions_ce_14 is not None and scores.decisions_ce_14 != scores.ce_14
    plain = compute_scores(PREDS, REFS, meteor=False)
    assert plain.decisions_ce_5 is None and "decisions_CE5_micro_f1" not in plain.flat()
