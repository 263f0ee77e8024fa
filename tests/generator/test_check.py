"""generator.check: each warning kind on hand-written reports, the qualifiers and sides that keep it
quiet, the disagreement margin fit, and the bundled M3KG's relations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxr.observations import OBSERVATIONS, Observation
from generator.check import MIN_SUPPORT, KnownRelations, ReportChecker, WarningKind
from generator.decisions import NEVER, Thresholds, fit_disagreement_margin
from graphdb.schema import EntityType, Relation

EFFUSION, PLEURAL = "C0013687", "C0032225"   # M3KG's keys for "effusion" and "pleural"


@pytest.fixture(scope="module")
def checker() -> ReportChecker:
    return ReportChecker()


def kinds(checker: ReportChecker, report: str, probabilities=None) -> list[str]:
    return [w.kind.value for w in checker.check(report, probabilities)]


def test_a_clean_report_and_an_empty_one_get_no_warning(checker):
    assert checker.check("The heart is normal in size. The lungs are clear. No pleural effusion.") == []
    assert checker.check("") == []
    assert checker.check("   ") == []


def test_a_finding_denied_then_affirmed_is_a_contradiction_on_the_later_sentence(checker):
    found = checker.check("No pleural effusion. The heart is normal. Small right pleural effusion.")
    assert [w.kind for w in found] == [WarningKind.CONTRADICTION]
    assert found[0].sentence == "Small right pleural effusion."
    assert "pleural effusion" in found[0].detail and "sentence 1" in found[0].detail
    assert "\n" not in found[0].detail


@pytest.mark.parametrize("report", [
    "Small right pleural effusion. No left pleural effusion.",            # different sides
    "Small pleural effusion. No large pleural effusion.",                 # a degree denied
    "Scarring in the left lung base. The lungs are otherwise clear.",     # the rest denied
    "Right lower lobe opacity. Otherwise, the lungs are clear.",
    "Possible small pleural effusion. No pneumothorax.",                  # uncertain is not affirmed
])
def test_denials_that_leave_room_are_not_contradictions(checker, report):
    assert "contradiction" not in kinds(checker, report)


def test_a_qualified_denial_contradicts_the_same_kind(checker):
    assert kinds(checker, "No focal consolidation. Focal consolidation in the right lower lobe.") == ["contradiction"]


def test_one_finding_on_both_sides_in_two_sentences_is_a_laterality_warning(checker):
    found = checker.check("Small right pleural effusion. The heart is normal. Small left pleural effusion.")
    assert [w.kind for w in found] == [WarningKind.LATERALITY]
    assert found[0].sentence == "Small left pleural effusion."
    assert "bilateral" in found[0].detail


@pytest.mark.parametrize("report", [
    "Bilateral pleural effusions. Small right pleural effusion. Small left pleural effusion.",
    "Left lower lobe airspace disease. Nodular opacity in the right midlung.",   # two lesions
    "Small right pleural effusion and small left pleural effusion.",             # one sentence
])
def test_sides_that_do_not_conflict_get_no_laterality_warning(checker, report):
    assert "laterality" not in kinds(checker, report)


def test_repeated_sentences_are_flagged_each_time_after_the_first(checker):
    found = checker.check("The lungs are clear. No pneumothorax. The lungs are clear. the lungs are clear .")
    assert [w.kind for w in found] == [WarningKind.REPETITION] * 2
    assert all("sentence 1" in w.detail for w in found)


def test_an_invented_relation_between_well_known_ends_is_unsupported(checker):
    known = checker.relations
    assert (EFFUSION, Relation.LOCATED_AT, PLEURAL) in known.triples
    assert kinds(checker, "Small left pleural effusion.") == []
    # a well-known disorder and a well-known location M3KG never relates, found from the graph itself
    disorder = next(k for k, t in sorted(known.types.items()) if t is EntityType.DISORDER
                    and known.as_head.get((k, Relation.LOCATED_AT), 0) >= MIN_SUPPORT and known.names[k] == "pneumothorax")
    place = next(k for k, t in sorted(known.types.items()) if t is EntityType.ANATOMY
                 and known.as_tail.get((k, Relation.LOCATED_AT), 0) >= MIN_SUPPORT and known.names[k] == "spine")
    assert (disorder, Relation.LOCATED_AT, place) not in known.triples
    found = checker.check("There is pneumothorax in the spine.")
    assert [w.kind for w in found] == [WarningKind.UNSUPPORTED_RELATION]
    assert found[0].detail.startswith("pneumothorax —located_at→ spine")


def test_a_relation_held_only_the_other_way_round_says_so():
    relations = KnownRelations(
        triples=frozenset({(PLEURAL, Relation.LOCATED_AT, EFFUSION)}),
        types={EFFUSION: EntityType.DISORDER, PLEURAL: EntityType.ANATOMY},
        names={EFFUSION: "effusion", PLEURAL: "pleural"},
        as_head={(EFFUSION, Relation.LOCATED_AT): MIN_SUPPORT}, as_tail={(PLEURAL, Relation.LOCATED_AT): MIN_SUPPORT})
    found = ReportChecker(relations).check("Small pleural effusion.")
    assert [w.kind for w in found] == [WarningKind.UNSUPPORTED_RELATION]
    assert "other way round" in found[0].detail
    rare = KnownRelations(relations.triples, relations.types, relations.names,
                          {(EFFUSION, Relation.LOCATED_AT): MIN_SUPPORT - 1}, relations.as_tail)
    assert ReportChecker(rare).check("Small pleural effusion.") == []


def _thresholds(margin: float | None) -> Thresholds:
    positive = [0.5] * len(OBSERVATIONS)
    positive[OBSERVATIONS.index(Observation.EDEMA)] = NEVER
    return Thresholds(tuple(positive), margin=margin)


def _probabilities(**values: float) -> list[float]:
    p = [0.1] * len(OBSERVATIONS)
    for name, v in values.items():
        p[OBSERVATIONS.index(Observation[name.upper()])] = v
    return p


def test_disagreement_with_the_image_needs_a_far_gap_either_way():
    checker = ReportChecker(thresholds=_thresholds(margin=2.0))    # far: beyond 2 logits of the cut (0.5)
    far_below, near = 1 / (1 + math.exp(2.5)), 1 / (1 + math.exp(1.5))
    found = checker.check("The heart is enlarged.", _probabilities(cardiomegaly=far_below))
    assert [w.kind for w in found] == [WarningKind.DISAGREES_WITH_IMAGE]
    assert "asserts cardiomegaly" in found[0].detail and "0.500" in found[0].detail
    assert checker.check("The heart is enlarged.", _probabilities(cardiomegaly=near)) == []
    found = checker.check("No pleural effusion.", _probabilities(pleural_effusion=0.99))
    assert [w.detail.split(",")[0] for w in found] == ["denies pleural effusion"]
    # a denial of a kind or of one side leaves room for what the classifier sees
    assert checker.check("No large pleural effusion.", _probabilities(pleural_effusion=0.99)) == []
    assert checker.check("No left pleural effusion.", _probabilities(pleural_effusion=0.99)) == []
    # never decided (cut above 1): nothing to be far from
    assert checker.check("There is pulmonary edema.", _probabilities(edema=0.0001)) == []


def test_without_a_margin_or_probabilities_there_is_no_image_check():
    report, p = "The heart is enlarged.", _probabilities(cardiomegaly=0.0001)
    assert ReportChecker(thresholds=_thresholds(margin=None)).check(report, p) == []
    assert ReportChecker(thresholds=_thresholds(margin=2.0)).check(report) == []
    with pytest.raises(ValueError, match="14 probabilities"):
        ReportChecker(thresholds=_thresholds(margin=2.0)).check(report, [0.5] * 3)


def test_the_margin_is_the_quantile_of_the_references_own_gaps():
    n = len(OBSERVATIONS)
    j = OBSERVATIONS.index(Observation.CARDIOMEGALY)
    probabilities = np.full((200, n), 0.5)
    labels = np.full((200, n), np.nan)
    gaps = np.linspace(-3.0, 3.0, 200)                    # logit(p) - logit(0.5)
    probabilities[:, j] = 1 / (1 + np.exp(-gaps))
    labels[:100, j] = 1.0                                 # affirmed below the cut: minus the gap (> 0)
    labels[100:, j] = 0.0                                 # denied above the cut: the gap (> 0)
    cut = [0.5] * n
    expected = np.quantile(np.concatenate([-gaps[:100], gaps[100:]]), 0.99)
    assert expected > 2.9
    assert fit_disagreement_margin(probabilities, labels, cut, rate=0.01) == pytest.approx(expected)
    assert fit_disagreement_margin(probabilities, np.full((200, n), np.nan), cut) is None
    # every reference statement on its own side of the cut (denied below, affirmed above): 0, never negative
    agreeing = labels.copy()
    agreeing[:100, j], agreeing[100:, j] = 0.0, 1.0       # gaps[:100] < 0 denied, gaps[100:] > 0 affirmed
    assert fit_disagreement_margin(probabilities, agreeing, cut) == 0.0


def test_thresholds_keep_the_margin_and_read_files_written_before_it():
    t = _thresholds(margin=1.25)
    assert Thresholds.from_dict(t.to_dict()).margin == 1.25
    old = t.to_dict()
    del old["disagreement_margin"]
    assert Thresholds.from_dict(old).margin is None
