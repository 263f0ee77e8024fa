"""Report labels → FindingSpec: laterality, severity, region and detail words around each mention."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from cxr.observations import NEGATIVE, POSITIVE, UNCERTAIN, Observation
from cxr.phantom.spec import (
    Certainty,
    Detail,
    FindingSpec,
    Laterality,
    Region,
    Severity,
    specs_from_labels,
    specs_from_report,
)


@dataclass(frozen=True)
class StubMention:
    observation: Observation
    label: float
    phrase: str
    sentence: str
    start: int = 0
    end: int = 0


@dataclass
class StubLabels:
    values: dict
    mentions: list = field(default_factory=list)


class StubLabeler:
    """A tiny stand-in for cxr.labeler.ReportLabeler: phrase table, one sentence per '.', 'no' negates."""

    PHRASES: ClassVar[dict[str, Observation]] = {"effusion": Observation.PLEURAL_EFFUSION, "atelectasis": Observation.ATELECTASIS,
               "pneumothorax": Observation.PNEUMOTHORAX, "cardiomegaly": Observation.CARDIOMEGALY,
               "pacemaker": Observation.SUPPORT_DEVICES, "nodule": Observation.LUNG_LESION}

    def label(self, report: str) -> StubLabels:
        values: dict = dict.fromkeys(Observation)
        mentions = []
        for sentence in [s.strip() for s in report.split(".") if s.strip()]:
            low = sentence.lower()
            for phrase, obs in self.PHRASES.items():
                if phrase in low:
                    label = NEGATIVE if low.startswith("no ") else UNCERTAIN if "possible" in low else POSITIVE
                    mentions.append(StubMention(obs, label, phrase, sentence))
                    if values[obs] is None or label == POSITIVE:
                        values[obs] = label
        return StubLabels(values, mentions)


def _by_obs(specs: list[FindingSpec]) -> dict[Observation, FindingSpec]:
    return {s.observation: s for s in specs}


def test_words_before_each_mention_belong_to_it():
    specs = _by_obs(specs_from_report("Small left effusion and right lower lobe atelectasis.", StubLabeler()))
    eff, atel = specs[Observation.PLEURAL_EFFUSION], specs[Observation.ATELECTASIS]
    assert (eff.laterality, eff.severity) == (Laterality.LEFT, Severity.SMALL)
    assert (atel.laterality, atel.region, atel.severity) == (Laterality.RIGHT, Region.LOWER, Severity.UNSPECIFIED)


@pytest.mark.parametrize("report, laterality, severity", [
    ("Large bilateral effusions.", Laterality.BILATERAL, Severity.LARGE),
    ("Moderate effusion on the right.", Laterality.RIGHT, Severity.MODERATE),
    ("Tiny effusions at both bases.", Laterality.BILATERAL, Severity.SMALL),
    ("Massive left effusion.", Laterality.LEFT, Severity.LARGE),
    ("Effusion. Left effusion is new. Right effusion too.", Laterality.BILATERAL, Severity.UNSPECIFIED),
])
def test_laterality_and_severity_words(report, laterality, severity):
    spec = _by_obs(specs_from_report(report, StubLabeler()))[Observation.PLEURAL_EFFUSION]
    assert (spec.laterality, spec.severity) == (laterality, severity)


def test_uncertain_and_negated():
    specs = _by_obs(specs_from_report("Possible apical pneumothorax. No effusion.", StubLabeler()))
    assert specs[Observation.PNEUMOTHORAX].certainty is Certainty.UNCERTAIN
    assert specs[Observation.PNEUMOTHORAX].region is Region.UPPER
    assert Observation.PLEURAL_EFFUSION not in specs


def test_device_and_lesion_details():
    specs = _by_obs(specs_from_report("Left chest wall pacemaker. Calcified nodule.", StubLabeler()))
    assert Detail.PACEMAKER in specs[Observation.SUPPORT_DEVICES].details
    assert specs[Observation.SUPPORT_DEVICES].laterality is Laterality.LEFT
    assert Detail.CALCIFIED in specs[Observation.LUNG_LESION].details


def test_empty_report_and_nan_are_normal():
    assert specs_from_labels({o: None for o in Observation}, []) == []
    assert specs_from_labels({Observation.EDEMA: float("nan")}, []) == []


def test_bad_observation_type_is_refused():
    with pytest.raises(TypeError, match="Observation"):
        FindingSpec("Edema")  # type: ignore[arg-type]


def test_real_labeler_on_a_real_style_report():
    labeler_mod = pytest.importorskip("cxr.labeler")
    report = ("Heart size is mildly enlarged. There is a small right pleural effusion. "
              "Left lower lobe atelectasis. No pneumothorax.")
    specs = _by_obs(specs_from_report(report, labeler_mod.ReportLabeler()))
    assert specs[Observation.CARDIOMEGALY].severity is Severity.SMALL
    assert specs[Observation.PLEURAL_EFFUSION].laterality is Laterality.RIGHT
    assert specs[Observation.ATELECTASIS].laterality is Laterality.LEFT
    assert specs[Observation.ATELECTASIS].region is Region.LOWER
    assert Observation.PNEUMOTHORAX not in specs
