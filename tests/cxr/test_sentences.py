"""Training targets with the sentences that state a finding first, in the diagnosis prompt's order."""
from __future__ import annotations

import numpy as np
import pytest

from cxr.clean import clean_report
from cxr.labeler import label_reports
from cxr.observations import FINDINGS, OBSERVATIONS, POSITIVE, UNCERTAIN, Observation
from cxr.sentences import (
    LabelledReports,
    SentenceOrder,
    findings_first,
    order_reports,
    split_cleaned,
)


def test_finding_sentences_move_first_in_the_prompts_order():
    report = clean_report("The heart is normal in size. There is no pneumothorax. Small left pleural effusion. "
                          "Mild cardiomegaly is present. The lungs are otherwise clear.")
    [out] = findings_first([report])
    # Cardiomegaly comes before Pleural Effusion in FINDINGS (and in the diagnosis prompt)
    assert split_cleaned(out) == ["mild cardiomegaly is present", "small left pleural effusion",
                                  "the heart is normal in size", "there is no pneumothorax",
                                  "the lungs are otherwise clear"]
    # the same sentences, so the same labels
    assert sorted(split_cleaned(out)) == sorted(split_cleaned(report))
    np.testing.assert_array_equal(label_reports([out]), label_reports([report]))


def test_normal_and_negated_sentences_keep_their_order():
    normal = clean_report("The heart is normal. No pleural effusion or pneumothorax. No focal consolidation.")
    assert findings_first([normal]) == [normal]
    # an uncertain finding is a stated one too
    hedged = clean_report("No pneumothorax. Possible right basilar atelectasis.")
    assert split_cleaned(findings_first([hedged])[0])[0] == "possible right basilar atelectasis"


@pytest.mark.parametrize("order", ["report", SentenceOrder.REPORT])
def test_report_order_is_untouched(order):
    reports = [clean_report("Small left pleural effusion. Heart normal."), clean_report("Lungs clear.")]
    assert order_reports(reports, order) == reports
    assert order_reports([], "findings_first") == []


def test_bad_order_is_named():
    with pytest.raises(ValueError, match="sideways"):
        order_reports(["a ."], "sideways")


REPORT = clean_report("Mild cardiomegaly. Small left pleural effusion. No pneumothorax. Lungs otherwise clear.")


def _stated(labels: np.ndarray) -> set[str]:
    return {o.value for o, v in zip(OBSERVATIONS, labels) if v in (POSITIVE, UNCERTAIN) and o in FINDINGS}


def test_without_dropout_a_report_and_its_labels_come_back_whole():
    reports = LabelledReports([REPORT])
    report, labels = reports.sample(0, 0.0, np.random.default_rng(0))
    assert report == REPORT
    assert _stated(labels) == _stated(label_reports([REPORT])[0]) == {"Cardiomegaly", "Pleural Effusion"}


def test_a_dropped_finding_leaves_with_its_sentences_and_its_label():
    reports = LabelledReports([REPORT])
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(200):
        report, labels = reports.sample(0, 0.5, rng)
        seen[report] = labels
        # the labels always describe the text: the labeler on the variant agrees on every finding
        assert _stated(labels) == _stated(label_reports([report])[0])
    assert set(seen) == {REPORT, "mild cardiomegaly . no pneumothorax . lungs otherwise clear .",
                         "small left pleural effusion . no pneumothorax . lungs otherwise clear .",
                         "no pneumothorax . lungs otherwise clear ."}
    normal = seen["no pneumothorax . lungs otherwise clear ."]
    assert normal[OBSERVATIONS.index(Observation.NO_FINDING)] == POSITIVE
    assert normal[OBSERVATIONS.index(Observation.PNEUMOTHORAX)] == 0.0


def test_a_report_made_only_of_findings_is_never_emptied():
    only = clean_report("Cardiomegaly. Pleural effusion.")
    report, labels = LabelledReports([only]).sample(0, 0.999, np.random.default_rng(1))
    assert report == only and _stated(labels) == {"Cardiomegaly", "Pleural Effusion"}
