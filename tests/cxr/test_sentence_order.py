"""Training targets with the sentences that state a finding first, in the diagnosis prompt's order."""
from __future__ import annotations

import numpy as np
import pytest

from cxr.clean import clean_report
from cxr.labeler import label_reports
from cxr.sentence_order import SentenceOrder, findings_first, order_reports, split_cleaned


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
