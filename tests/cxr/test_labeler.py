"""The report labeler on real IU X-ray sentences and reports, labelled by hand beforehand.

Every row is copied verbatim from ``cxr/resources/iu_xray/annotation.json`` (checked below).
The expected dict is complete: any observation it leaves out must come back blank.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cxr.labeler import ReportLabeler, Unread, label_reports, split_sentences
from cxr.observations import OBSERVATIONS, Observation

O = Observation
NF, EC, CM, LL, LO = O.NO_FINDING, O.ENLARGED_CARDIOMEDIASTINUM, O.CARDIOMEGALY, O.LUNG_LESION, O.LUNG_OPACITY
ED, CO, PN, AT, PX = O.EDEMA, O.CONSOLIDATION, O.PNEUMONIA, O.ATELECTASIS, O.PNEUMOTHORAX
PE, PO, FR, SD = O.PLEURAL_EFFUSION, O.PLEURAL_OTHER, O.FRACTURE, O.SUPPORT_DEVICES

CASES: list[tuple[str, dict[Observation, float]]] = [
    # --- negation, coordinated negation, post-negation -----------------------------------
    ("No pneumothorax or pleural effusion.", {PX: 0, PE: 0, NF: 1}),
    ("There is no pleural effusion or pneumothorax.", {PX: 0, PE: 0, NF: 1}),
    ("No pleural effusion or pneumothorax is seen.", {PX: 0, PE: 0, NF: 1}),
    ("No pleural effusions or pneumothoraces.", {PX: 0, PE: 0, NF: 1}),
    ("No acute bony abnormality.", {FR: 0, NF: 1}),
    ("The lungs are free of focal airspace disease.", {LO: 0, NF: 1}),
    ("Specifically, no evidence of focal consolidation, pneumothorax, or pleural effusion..",
     {CO: 0, PX: 0, PE: 0, NF: 1}),
    ("No focal alveolar consolidation, no definite pleural effusion seen.", {CO: 0, PE: 0, NF: 1}),
    ("No typical findings of pulmonary edema.", {ED: 0, NF: 1}),
    ("No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses.",
     {PN: 0, PE: 0, ED: 0, PX: 0, LL: 0, NF: 1}),
    ("No focal consolidation, pneumothorax or large pleural effusion.", {CO: 0, PX: 0, PE: 0, NF: 1}),
    ("There is no focal air space opacity to suggest a pneumonia.", {LO: 0, PN: 0, NF: 1}),
    ("There are no airspace opacities to suggest pneumonia.", {LO: 0, PN: 0, NF: 1}),
    ("No overt edema.", {ED: 0, NF: 1}),
    ("No consolidation.", {CO: 0, NF: 1}),
    ("Lungs symmetrically aerated without focal infiltrate or consolidation.", {LO: 0, CO: 0, NF: 1}),
    ("There there is no lobar pneumonia.", {PN: 0, NF: 1}),
    ("No pulmonary nodules or mass lesions identified.", {LL: 0, NF: 1}),
    ("There are no suspicious appearing pulmonary nodules or masses.", {LL: 0, NF: 1}),
    ("The lungs are clear and there are no pleural effusions.", {LO: 0, PE: 0, NF: 1}),
    ("No stable cardiomegaly, without focal consolidation, pneumothorax, or pleural effusion.",
     {CM: 0, CO: 0, PX: 0, PE: 0, NF: 1}),
    ("No pneumothorax is present.", {PX: 0, NF: 1}),
    ("No definite pneumothorax is seen.", {PX: 0, NF: 1}),
    ("Negative for acute displaced rib fracture.", {FR: 0, NF: 1}),
    ("Bony structures are in XXXX alignment without fracture.", {FR: 0, NF: 1}),
    ("No effusion or noncalcified nodules.", {PE: 0, LL: 0, NF: 1}),
    ("No focal consolidation, suspicious pulmonary opacity, pneumothorax or definite pleural effusion.",
     {CO: 0, LO: 0, PX: 0, PE: 0, NF: 1}),
    ("No focal airspace consolidation to suggest pneumonia.", {CO: 0, PN: 0, NF: 1}),
    # --- normal statements ------------------------------------------------------------------
    ("The lungs are clear.", {LO: 0, NF: 1}),
    ("Heart size is normal.", {CM: 0, NF: 1}),
    ("Heart size within normal limits.", {CM: 0, NF: 1}),
    ("The heart is normal in size.", {CM: 0, NF: 1}),
    ("The mediastinum is unremarkable.", {EC: 0, NF: 1}),
    ("Heart and mediastinum normal.", {CM: 0, EC: 0, NF: 1}),
    ("The cardiomediastinal silhouette is normal in size and contour.", {EC: 0, NF: 1}),
    ("Normal heart size and mediastinal contours.", {CM: 0, EC: 0, NF: 1}),
    ("The heart, pulmonary XXXX and mediastinum are within normal limits.", {CM: 0, EC: 0, NF: 1}),
    ("The heart size and pulmonary vascularity appear within normal limits.", {CM: 0, ED: 0, NF: 1}),
    ("The cardiomediastinal contours are stable and normal.", {EC: 0, NF: 1}),
    ("Mediastinal contour and pulmonary vascularity within normal limits.", {EC: 0, ED: 0, NF: 1}),
    ("Otherwise normal mediastinum.", {EC: 0, NF: 1}),
    ("The heart and lungs have XXXX XXXX in the interval.", {NF: 1}),
    # --- uncertainty ------------------------------------------------------------------------
    ("Heart size is upper limits of normal.", {CM: -1}),
    ("The heart size is on the upper limits of normal.", {CM: -1}),
    ("Cardiac silhouette is at the upper limits of normal.", {CM: -1}),
    ("Borderline enlargement of the heart.", {CM: -1}),
    ("There is borderline cardiomegaly.", {CM: -1}),
    ("Heart size borderline enlarged.", {CM: -1}),
    ("The cardiac silhouette size is borderline enlarged.", {CM: -1}),
    ("Cannot exclude early pulmonary edema.", {ED: -1}),
    ("Vague patchy opacity in the right midlung which may represent early pneumonia.", {LO: 1, PN: -1}),
    ("Small right juxtahilar opacity may represent infiltrate.", {LO: 1}),
    ("Questionable small right midlung nodule.", {LL: -1}),
    ("Questionable old left posterior third and fourth rib fractures.", {FR: -1}),
    ("Bibasilar atelectasis versus scarring.", {AT: -1, LO: -1}),
    ("Stable left basilar atelectasis versus scarring.", {AT: -1, LO: -1}),
    ("There is patchy opacity in the left base concerning for atelectasis versus pneumonitis.",
     {LO: 1, AT: -1}),
    ("The left base opacities could represent early pneumonia or areas of atelectasis.",
     {LO: 1, PN: -1, AT: -1}),
    (("Left retrocardiac airspace disease with blunted posterior costophrenic XXXX on lateral view "
     "suggesting small pleural effusion."), {LO: 1, PE: -1}),
    (("There is left hilar enlargement with partial opacification of the left upper lobe suggestive "
     "of hilar mass with obstructive atelectasis."), {LO: 1, LL: -1, AT: -1}),
    ("XXXX right pleural thickening versus XXXX pleural effusion is noted.", {PO: -1, PE: -1}),
    ("Mild blunting left costophrenic recess, possibly mild atelectasis or scarring.", {AT: -1, LO: -1}),
    ("Probable XXXX residual left pneumothorax.", {PX: -1}),
    ("Additional fractures cannot entirely be excluded.", {FR: -1}),
    (("There is a vague right suprahilar density with elevation of the XXXX fissure most XXXX mild "
      "subsegmental atelectasis though superimposed infection cannot be entirely excluded."), {AT: 1, PN: -1}),
    # --- positives, pseudo-negation, resolution ---------------------------------------------
    ("Stable cardiomegaly.", {CM: 1}),
    ("Mild cardiomegaly.", {CM: 1}),
    ("The heart is mildly enlarged.", {CM: 1}),
    ("Unchanged cardiomegaly.", {CM: 1}),
    ("There is mild cardiomegaly, similar to prior exams.", {CM: 1}),
    ("Stable enlarged cardiomediastinal silhouette.", {EC: 1}),
    ("Central vascular congestion.", {ED: 1}),
    ("Consolidation is developing in the left lower lobe.", {CO: 1}),
    ("Right upper lobe airspace disease consistent with pneumonia given patient's history.", {LO: 1, PN: 1}),
    ("Lung volumes are low with central bronchovascular crowding and patchy basilar atelectasis..", {AT: 1}),
    ("There is mild bibasilar focal atelectasis.", {AT: 1}),
    ("There is a 1.0 x 1.1 cm nodule projecting through the left 9th and 10th interspaces on the PA view.",
     {LL: 1}),
    ("There is biapical pleural thickening, unchanged from prior.", {PO: 1}),
    ("Pleural thickening along the inferior left lateral chest.", {PO: 1}),
    ("A calcified pleural plaque in the right subpulmonic area has not XXXX since the abdomen CT.", {PO: 1}),
    ("There is XXXX biapical scarring.", {LO: 1}),
    ("Small bilateral pleural effusions are present, which are XXXX.", {PE: 1}),
    ("Small right pneumothorax.", {PX: 1}),
    ("There is a healed left clavicle fracture.", {FR: 1}),
    ("Old right clavicular fracture is again noted.", {FR: 1}),
    (("There is platelike atelectasis in the right midlung along with bibasilar airspace disease, "
     "either atelectasis or infiltrate."), {AT: 1, LO: 1}),
    ("There is XXXX left basilar opacity.", {LO: 1}),
    (("There are scattered bilateral XXXX opacities, most notably in the right middle lobe, XXXX XXXX "
     "of subsegmental atelectasis."), {LO: 1, AT: 1}),
    ("No change hiatus hernia.", {}),
    ("The left apical pneumothorax has resolved.", {PX: 0, NF: 1}),
    ("Previously seen left pleural effusion has resolved.", {PE: 0, NF: 1}),
    ("The previously visualized bilateral pneumothoraces have resolved.", {PX: 0, NF: 1}),
    ("Previously present left base airspace disease has cleared.", {LO: 0, NF: 1}),
    ("Resolved interstitial edema.", {ED: 0, NF: 1}),
    (("Consolidation, atelectasis, and costophrenic XXXX blunting in the left lower lobe have cleared "
     "in the interval."), {CO: 0, AT: 0, NF: 1}),
    (("Interval resolution of previously described right midlung opacity suggesting resolved "
     "inflammatory/infectious process."), {LO: 0, PN: 0, NF: 1}),
    ("There are no XXXX of pleural effusion.", {PE: 0, NF: 1}),
    # --- unmentions, granulomas, other findings ---------------------------------------------
    ("There may be a pericardial effusion.", {}),
    ("There is an 8 mm calcified nodule in the left midlung.", {}),
    ("No change in the small calcified granuloma in the right upper lobe.", {}),
    ("Calcified granuloma is noted.", {}),
    ("Large calcified granuloma in the right lower lobe is unchanged.", {}),
    ("The lungs appear hyperexpanded suggesting emphysema.", {}),
    ("No evidence of active tuberculosis.", {NF: 1}),
    # --- support devices ----------------------------------------------------------------------
    ("Central venous catheter tip in the right atrium.", {SD: 1, NF: 1}),
    ("A right-sided Mediport catheter is noted.", {SD: 1, NF: 1}),
    ("Left PICC line and NG tube remain in XXXX.", {SD: 1, NF: 1}),
    ("The right internal jugular catheter has been removed.", {SD: 0, NF: 1}),
    ("Removal of 2 left-sided chest tubes.", {SD: 0, NF: 1}),
]

REPORTS: list[tuple[str, dict[Observation, float]]] = [
    ("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
     {CM: 0, EC: 0, LO: 0, NF: 1}),
    (("Mediastinal contours are normal. Heart size is upper limits of normal. Lungs are clear. There is "
     "no pneumothorax or large pleural effusion. No bony abnormality."),
     {EC: 0, CM: -1, LO: 0, PX: 0, PE: 0, FR: 0}),
    (("The cardiac silhouette is borderline enlarged. Pulmonary vasculature is normal in caliber. Nipple "
     "shadows and dense breast tissue overlie the lung bases. The lungs are grossly clear of focal "
     "airspace disease, pneumothorax, or pleural effusion. There are no acute bony findings."),
     {CM: -1, ED: 0, LO: 0, PX: 0, PE: 0, FR: 0}),
    (("The heart is normal in size and contour. There is no mediastinal widening. The lungs are "
     "hyperexpanded. No focal airspace disease. No large pleural effusion or pneumothorax. Exaggerated "
     "kyphosis."), {CM: 0, EC: 0, LO: 0, PE: 0, PX: 0}),
    (("The cardiomediastinal silhouette is normal in size and contour. No focal consolidation, "
     "pneumothorax or large pleural effusion. Calcified granuloma, right base. Normal XXXX."),
     {EC: 0, CO: 0, PX: 0, PE: 0}),
    (("Normal cardiomediastinal contours. Right lower lung patchy opacities. Small right pneumothorax. "
     "Small right pleural effusion."), {EC: 0, LO: 1, PX: 1, PE: 1}),
    (("Interval removal of left-sided chest tube. Small residual left apical pneumothorax has increased "
     "slightly in size the prior exam, now measuring approximately 0.9 cm from the thoracic apex. Stable "
     "cardiomediastinal silhouette. No focal airspace consolidation. No pleural effusion."),
     {SD: 0, PX: 1, CO: 0, PE: 0}),
    (("Persistent cardiomegaly. No abnormal airspace consolidation. Resolved interstitial edema. No "
     "pneumothorax or pleural effusion."), {CM: 1, CO: 0, ED: 0, PX: 0, PE: 0}),
    (("Diffuse, right greater than left, interstitial opacities. Central vascular congestion. No "
     "pneumothorax or focal consolidation. No pleural effusion. Heart size normal."),
     {LO: 1, ED: 1, PX: 0, CO: 0, PE: 0, CM: 0}),
    (("Consolidation is developing in the left lower lobe. A patchy infiltrate is also present in the "
     "right lower lobe. Heart size is normal."), {CO: 1, LO: 1, CM: 0}),
    (("The lungs are clear, and without focal airspace opacity. The cardiomediastinal silhouette is "
     "stable from prior exam. There is no pneumothorax or large pleural effusion. Mediastinal surgical "
     "clips are again noted."), {LO: 0, PX: 0, PE: 0, SD: 1, NF: 1}),
]


# Hand-written (not IU): a denied exclusion or a denied "unlikely" is a hedge, never a negation,
# and an uncertain finding leaves No Finding blank.
HEDGES: list[tuple[str, dict[Observation, float]]] = [
    ("Pneumothorax is not excluded.", {PX: -1}),
    ("It is not unlikely that there is a small left effusion.", {PE: -1}),
    ("Effusion is not unlikely.", {PE: -1}),
    ("Pneumothorax cannot be excluded.", {PX: -1}),
    ("Pneumothorax cannot be completely excluded.", {PX: -1}),
    ("A small pneumothorax is not ruled out.", {PX: -1}),
    ("Pneumonia can't be ruled out.", {PN: -1}),
    ("Cannot completely exclude pneumothorax.", {PX: -1}),
    ("Does not exclude a small effusion.", {PE: -1}),
    # "unlikely" alone negates, within its clause; "ruled out" alone still negates
    ("Pneumothorax is unlikely.", {PX: 0, NF: 1}),
    ("Small left effusion, pneumonia is unlikely.", {PE: 1, PN: 0}),
    ("Pneumothorax has been ruled out.", {PX: 0, NF: 1}),
]


@pytest.fixture(scope="module")
def labeler() -> ReportLabeler:
    return ReportLabeler()


@pytest.fixture(scope="module")
def corpus(iu_annotation) -> list[str]:
    data = json.loads(iu_annotation.read_text())
    return [item["report"] for split in data.values() for item in split]


def _check(labeler: ReportLabeler, text: str, expected: dict[Observation, float]) -> None:
    got = labeler.label(text).values
    assert set(got) == set(OBSERVATIONS)
    want = {o: expected.get(o) for o in OBSERVATIONS}
    diff = {o.value: (want[o], got[o]) for o in OBSERVATIONS if want[o] != got[o]}
    assert not diff, f"{text!r}: (expected, got) {diff}"


def test_table_is_real_and_covers_everything(corpus):
    text = "\n".join(corpus)
    assert len(CASES) >= 80
    missing = [s for s, _ in CASES + REPORTS if s not in text]
    assert not missing, f"not verbatim IU text: {missing}"
    for value in (1, 0, -1):
        covered = {o for _, exp in CASES + REPORTS for o, v in exp.items() if v == value}
        assert covered >= set(OBSERVATIONS) - {NF} - ({PN, PO} if value == 0 else set()) - (
            {NF, SD, EC, CO} if value == -1 else set()), value   # no real IU sentence hedges these


@pytest.mark.parametrize("sentence,expected", CASES, ids=[s[:50] for s, _ in CASES])
def test_sentence(labeler, sentence, expected):
    _check(labeler, sentence, expected)


@pytest.mark.parametrize("sentence,expected", HEDGES, ids=[s for s, _ in HEDGES])
def test_denied_exclusion_and_double_negation_are_uncertain(labeler, sentence, expected):
    _check(labeler, sentence, expected)


@pytest.mark.parametrize("report,expected", REPORTS, ids=[r[:40] for r, _ in REPORTS])
def test_whole_report_aggregation(labeler, report, expected):
    _check(labeler, report, expected)


def test_mentions_point_into_the_report(labeler):
    report = REPORTS[5][0]
    result = labeler.label(report)
    assert result.mentions
    for m in result.mentions:
        assert report[m.start:m.end] == m.phrase
        assert m.sentence in report and m.phrase in m.sentence
    px = [m for m in result.mentions if m.observation is PX]
    assert px[0].sentence == "Small right pneumothorax." and px[0].label == 1.0


def test_positive_beats_uncertain_beats_negative(labeler):
    assert labeler.label("No pleural effusion. Possible small effusion.").values[PE] == -1.0
    assert labeler.label("Possible small effusion. Small left pleural effusion.").values[PE] == 1.0


def test_split_sentences_keeps_offsets():
    report = "Heart size 3.5 cm. Lungs clear.There is no effusion?\n\nImpression: normal"
    sents = split_sentences(report)
    assert [s.text for s in sents] == ["Heart size 3.5 cm.", "Lungs clear.", "There is no effusion?",
                                       "Impression: normal"]
    assert all(report[s.start:s.end] == s.text for s in sents)


def test_label_reports_shape_and_nan():
    arr = label_reports(["No pneumothorax.", "", "Mild cardiomegaly."])
    assert arr.shape == (3, 14) and arr.dtype == np.float64
    px, cm, nf = (OBSERVATIONS.index(o) for o in (PX, CM, NF))
    assert arr[0, px] == 0.0 and arr[0, nf] == 1.0 and math.isnan(arr[0, cm])
    assert arr[2, cm] == 1.0 and math.isnan(arr[2, nf])
    assert np.isnan(arr[1]).all()   # an empty report says nothing: no No Finding either
    assert label_reports([]).shape == (0, 14)


@pytest.mark.parametrize("report", ["", "   ", "\n\n", "--", "2."])
def test_empty_report_is_all_blank_not_no_finding(labeler, report):
    result = labeler.label(report)
    assert result.unread is Unread.EMPTY
    assert all(v is None for v in result.values.values()), result.values


def test_english_report_that_mentions_nothing_still_gets_no_finding(labeler):
    """CheXpert's convention holds for text we can read: only unreadable text is all blank."""
    result = labeler.label("No acute cardiopulmonary abnormality.")
    assert result.unread is None and result.values[NF] == 1.0


@pytest.mark.parametrize("report", [
    "Kein Pneumothorax. Kleiner Pleuraerguss links.",
    "Herz normal gross. Keine Infiltrate. Kein Pleuraerguss. Kein Pneumothorax.",
    "Pas d'épanchement pleural. Pas de pneumothorax. Silhouette cardiaque normale.",
    "Sin derrame pleural ni neumotórax. Silueta cardíaca normal.",
])
def test_non_english_report_is_all_blank(labeler, report):
    """"Pneumothorax" is a whole word in German too: a shared word must not label a foreign report."""
    result = labeler.label(report)
    assert result.unread is Unread.NOT_ENGLISH
    assert all(v is None for v in result.values.values()), result.values


def test_label_reports_warns_once_about_non_english_reports(caplog):
    arr = label_reports(["Kein Pneumothorax. Kleiner Pleuraerguss links.", "Small right pneumothorax."])
    assert np.isnan(arr[0]).all() and arr[1, OBSERVATIONS.index(PX)] == 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["1 of 2 reports are not English text: their labels are left blank"]


def test_held_out_iu_reports_read_as_english(iu_annotation):
    """With a vocabulary of the train split only, every val / test report still reads as English:
    the threshold leaves room for words the vocabulary has never seen."""
    from cxr.labeler.language import build_vocabulary, unread_reason
    from cxr.labeler.phrases import tokenize

    data = json.loads(iu_annotation.read_text())
    vocabulary = build_vocabulary(item["report"] for item in data["train"])
    held_out = [item["report"] for split in ("val", "test") for item in data[split]]
    unread = [r for r in held_out if unread_reason([t.text for t in tokenize(r)], vocabulary) is not None]
    assert len(held_out) == 886 and not unread, unread[:3]


@pytest.mark.parametrize("text,obs", [("There is left arm lymphedema.", ED), ("History of myxedema.", ED)])
def test_mentions_start_at_a_word_boundary(labeler, text, obs):
    """CheXpert matches raw substrings ("edema" inside "lymphedema"); we match from word starts."""
    result = labeler.label(text)
    assert result.unread is None and result.values[obs] is None


def test_as_array_matches_values(labeler):
    result = labeler.label(REPORTS[1][0])
    arr = result.as_array()
    for i, obs in enumerate(OBSERVATIONS):
        v = result.values[obs]
        assert (math.isnan(arr[i]) and v is None) or arr[i] == v


def test_phrase_matcher_modes_and_longest_match():
    """CheXpert words (prefix / plural) vs exact words (graphdb's dictionary and cue phrases)."""
    from cxr.labeler.phrases import Phrase, PhraseMatcher

    entries = [("effusion", "E"), ("pleural effusion", "PE"), ("left", "L"), (Phrase(("left", "lower", "lobe"), True), "LLL")]
    words = ["left", "lower", "lobe", "leftward", "pleural", "effusions", "effusion"]
    chexpert, exact = PhraseMatcher(entries), PhraseMatcher(entries, exact_words=True)
    assert [(m.payload, m.first) for m in chexpert.find_longest(words)] == [("LLL", 0), ("L", 3), ("PE", 4), ("E", 6)]
    assert [(m.payload, m.first) for m in exact.find_longest(words)] == [("LLL", 0), ("E", 6)]
    assert len(chexpert.find_all(words)) == 6                   # every overlapping match
    assert exact.longest_at(words, 0).last == 3 and exact.longest_at(words, 4) is None
    assert exact.longest_at(words, 7) is None                  # past the end


def test_phrase_matcher_prefers_the_more_specific_of_equally_long_phrases():
    """"not excluded" (a hedge) must win over the prefix "not exclude" whatever the listing order."""
    from cxr.labeler.phrases import PhraseMatcher

    for entries in ([("not exclude", "prefix"), ("not excluded", "exact")],
                    [("not excluded", "exact"), ("not exclude", "prefix")]):
        assert [m.payload for m in PhraseMatcher(entries).find_longest(["not", "excluded"])] == ["exact"]
