"""evaluate(): predictions JSONL ↔ R2Gen annotation matching, clear errors, JSON = Python API."""

from __future__ import annotations

import json

import pytest

from cxr.clean import CleanStyle
from cxr.records import DataError
from training.evaluate import (
    LabelText,
    compute_scores,
    evaluate,
    evaluate_records,
    read_predictions,
)


@pytest.fixture(scope="module")
def iu_test(iu_annotation):
    return json.loads(iu_annotation.read_text())["test"]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def shifted_predictions(items):
    """Each study "predicted" by the next study's real report: different, but same domain."""
    return [{"id": a["id"], "report": b["report"]} for a, b in zip(items, items[1:] + items[:1])]


# --- reading predictions ----------------------------------------------------------------------
def test_read_predictions_keeps_order_and_skips_blank_lines(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [{"id": "b", "report": "x"}, "", {"id": "a", "report": "y", "extra": 1}],
    )
    assert [(k, v.report) for k, v in read_predictions(path).items()] == [("b", "x"), ("a", "y")]


def test_probabilities_are_read_and_checked(tmp_path):
    from cxr.observations import OBSERVATIONS

    probs = {o.value: i / 20 for i, o in enumerate(OBSERVATIONS)}
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "report": "x", "observations": probs}])
    assert read_predictions(path)["a"].probabilities == tuple(i / 20 for i in range(14))
    bad = write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "report": "x", "observations": {"Edema": 0.1}}])
    with pytest.raises(DataError, match=r"q.jsonl: line 1: 'observations' must map each of the 14"):
        read_predictions(bad)


def test_evaluate_records_scores_auroc_against_the_references(tmp_path):
    """The classifier ranks a study with cardiomegaly above one without: AUROC 1 for Cardiomegaly;
    records without a prediction count as missing."""
    from cxr.observations import OBSERVATIONS
    from cxr.records import StudyRecord

    refs = {"a": "The heart is enlarged. Cardiomegaly.", "b": "The heart is normal. No cardiomegaly.",
            "c": "Mild cardiomegaly.", "d": "No acute disease."}
    records = [StudyRecord(i, (), text) for i, text in refs.items()] + [StudyRecord("e", (), "")]
    rows = []
    for i, p in (("a", 0.9), ("b", 0.2), ("c", 0.7)):
        probs = {o.value: 0.5 for o in OBSERVATIONS} | {"Cardiomegaly": p}
        rows.append({"id": i, "report": refs[i], "observations": probs})
    result = evaluate_records(write_jsonl(tmp_path / "p.jsonl", rows), records, meteor=False)
    assert result.counts["scored"] == 3 and result.missing_ids == ["d"]
    assert result.scores.auroc["Cardiomegaly"] == 1.0
    assert result.scores.auroc["Edema"] is None   # no positive among the references
    rows[0]["observations"]["Cardiomegaly"] = 0.1    # now ranked below a negative
    result = evaluate_records(write_jsonl(tmp_path / "p.jsonl", rows), records, meteor=False)
    assert result.scores.auroc["Cardiomegaly"] == 0.5
    assert evaluate_records(tmp_path / "p.jsonl", [StudyRecord("z", (), "")]) is None


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"id": "a", "report": "x"}, '{"id": "b", "report": '],
            r"p.jsonl: line 2: malformed JSON",
        ),
        ([{"id": "a", "report": "x"}, "", {"report": "y"}], r"line 3: missing field 'id'"),
        ([{"id": "a"}], r"line 1: missing field 'report'"),
        ([{"id": 7, "report": "x"}], r"line 1: field 'id' must be a string, got int"),
        ([["a", "x"]], r"line 1: expected an object"),
        ([""], r"no predictions"),
    ],
)
def test_malformed_predictions_name_the_line(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        read_predictions(write_jsonl(tmp_path / "p.jsonl", rows))


def test_duplicate_ids_are_listed(tmp_path):
    rows = [
        {"id": "a", "report": "x"},
        {"id": "b", "report": "x"},
        {"id": "a", "report": "y"},
        {"id": "b", "report": "z"},
    ]
    with pytest.raises(
        DataError, match=r"2 duplicate id\(s\): 'a \(lines 1 and 3\)', 'b \(lines 2 and 4\)'"
    ):
        read_predictions(write_jsonl(tmp_path / "p.jsonl", rows))


# --- matching ---------------------------------------------------------------------------------
def test_ids_outside_the_split_are_refused(tmp_path, iu_annotation, iu_test):
    train_id = json.loads(iu_annotation.read_text())["train"][0]["id"]
    rows = shifted_predictions(iu_test) + [
        {"id": train_id, "report": "x"},
        {"id": "nope", "report": "x"},
    ]
    with pytest.raises(
        DataError,
        match=r"2 id\(s\) not in split 'test'.*'nope'.*1 of them belong to other splits.*'train'",
    ):
        evaluate(write_jsonl(tmp_path / "p.jsonl", rows), iu_annotation, "test", meteor=False)


def test_missing_predictions_are_refused_unless_allowed(tmp_path, iu_annotation, iu_test):
    path = write_jsonl(tmp_path / "p.jsonl", shifted_predictions(iu_test)[:-7])
    with pytest.raises(
        DataError, match=r"no prediction for 7 of the 590 'test' studies: .*\(7 in all\)"
    ):
        evaluate(path, iu_annotation, "test", meteor=False)
    result = evaluate(path, iu_annotation, "test", meteor=False, clinical=False, allow_missing=True)
    assert result.counts == {
        "predictions": 583,
        "references_in_split": 590,
        "scored": 583,
        "missing": 7,
    }
    assert result.missing_ids == [item["id"] for item in iu_test[-7:]]


def test_unknown_or_absent_split_is_refused(tmp_path, iu_annotation, iu_test):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "report": "x"}])
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        evaluate(path, iu_annotation, "dev", meteor=False)
    only_test = tmp_path / "ann.json"
    only_test.write_text(json.dumps({"test": iu_test[:3]}))
    with pytest.raises(
        DataError, match=r"ann.json: split 'val' is empty or absent; the file has \['test'\]"
    ):
        evaluate(path, only_test, "validation", meteor=False)


# --- scoring ------------------------------------------------------------------------------------
def test_json_equals_python_api(tmp_path, iu_annotation, iu_test):
    rows = shifted_predictions(iu_test)
    out = tmp_path / "sub" / "results.json"
    result = evaluate(
        write_jsonl(tmp_path / "p.jsonl", rows),
        iu_annotation,
        "test",
        CleanStyle.IU_XRAY,
        output=out,
        meteor=False,
    )
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result.to_dict()))
    # the same pairs, in annotation order, through the list API
    api = compute_scores(
        [r["report"] for r in rows],
        [t["report"] for t in iu_test],
        CleanStyle.IU_XRAY,
        meteor=False,
    )
    assert written["metrics"] == json.loads(json.dumps(api.to_dict()))
    assert written["counts"] == {
        "predictions": 590,
        "references_in_split": 590,
        "scored": 590,
        "missing": 0,
    }
    assert written["settings"]["style"] == "iu_xray" and written["settings"]["split"] == "test"
    nlg = written["metrics"]["nlg"]
    assert nlg["METEOR"] is None and 0.1 < nlg["BLEU_1"] < 0.9 and 0 < nlg["BLEU_4"] < nlg["BLEU_1"]
    ce14 = written["metrics"]["ce_14"]
    assert (
        len(ce14["per_class"]) == 14
        and written["metrics"]["ce_5"]["observations"][0] == "Atelectasis"
    )
    assert sum(c["support"] for c in ce14["per_class"]) > 300  # real positives in the references
    assert 0 < ce14["micro"]["f1"] < 1


def test_order_of_predictions_does_not_matter(tmp_path, iu_annotation, iu_test):
    rows = shifted_predictions(iu_test[:40])
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"test": iu_test[:40]}))
    a = evaluate(write_jsonl(tmp_path / "a.jsonl", rows), ann, meteor=False)
    b = evaluate(write_jsonl(tmp_path / "b.jsonl", rows[::-1]), ann, meteor=False)
    assert a.scores == b.scores


def test_flat_summary_and_label_text(iu_test):
    preds = [t["report"] for t in iu_test[1:31]]
    refs = [t["report"] for t in iu_test[:30]]
    cleaned = compute_scores(preds, refs, CleanStyle.IU_XRAY, meteor=False)
    raw = compute_scores(preds, refs, CleanStyle.IU_XRAY, meteor=False, label_text=LabelText.RAW)
    assert raw.nlg == cleaned.nlg  # label_text only changes what the labeler reads
    flat = cleaned.flat()
    assert "METEOR" not in flat and flat["BLEU_4"] == cleaned.nlg.bleu_4
    assert flat["CE5_macro_f1"] == cleaned.ce_5.macro.f1 and len(flat) == 6 + 2 * 2 * 3 + 2  # + repeated_pct, warned_pct
    assert compute_scores(preds, refs, meteor=False, clinical=False).ce_14 is None
    with pytest.raises(ValueError, match="parallel"):
        compute_scores(preds, refs[:-1], meteor=False)


def test_every_evaluation_counts_the_reports_the_check_warns_about(iu_test):
    refs = [t["report"] for t in iu_test[:4]]
    preds = ["No pleural effusion. Small right pleural effusion.", "The lungs are clear. The lungs are clear.",
             "The heart is normal in size.", "No pneumothorax. No pleural effusion."]
    scores = compute_scores(preds, refs, CleanStyle.IU_XRAY, meteor=False)
    assert scores.warned == {"contradiction": 1, "repetition": 1} and scores.warned_reports == 2
    assert scores.to_dict()["warned_pct"] == 50.0 and scores.flat()["warned_pct"] == 50.0
