"""What a phantom study shows: report labels → one ``FindingSpec`` per positive/uncertain observation.

``specs_from_report(report, labeler)`` labels the report, then reads laterality, severity, region
and detail words (device kinds, "calcified", "mass", …) from the words around each mention.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from cxr.observations import POSITIVE, UNCERTAIN, Observation


class Certainty(str, Enum):
    PRESENT = "present"        # labeler said positive → full-strength signature
    UNCERTAIN = "uncertain"    # labeler said uncertain → faint signature


class Laterality(str, Enum):
    LEFT = "left"              # the patient's left: the image RIGHT on a PA frontal
    RIGHT = "right"
    BILATERAL = "bilateral"
    UNSPECIFIED = "unspecified"


class Severity(str, Enum):
    SMALL = "small"
    MODERATE = "moderate"
    LARGE = "large"
    UNSPECIFIED = "unspecified"


class Region(str, Enum):
    UPPER = "upper"            # upper lobe / apex
    MIDDLE = "middle"          # middle lobe / lingula / perihilar
    LOWER = "lower"            # lower lobe / base
    UNSPECIFIED = "unspecified"


class Detail(str, Enum):
    """Sub-kinds some signatures pick from when the report names them."""

    ET_TUBE = "et_tube"
    ENTERIC_TUBE = "enteric_tube"
    CENTRAL_LINE = "central_line"
    PACEMAKER = "pacemaker"
    STERNOTOMY = "sternotomy"
    CLIPS = "clips"
    HARDWARE = "hardware"
    CALCIFIED = "calcified"
    MASS = "mass"
    MULTIPLE = "multiple"


DEVICES: tuple[Detail, ...] = (
    Detail.ET_TUBE, Detail.ENTERIC_TUBE, Detail.CENTRAL_LINE, Detail.PACEMAKER,
    Detail.STERNOTOMY, Detail.CLIPS, Detail.HARDWARE,
)


@dataclass(frozen=True)
class FindingSpec:
    """One observation to draw. Hand-made specs drive the renderer in tests."""

    observation: Observation
    certainty: Certainty = Certainty.PRESENT
    laterality: Laterality = Laterality.UNSPECIFIED
    severity: Severity = Severity.UNSPECIFIED
    region: Region = Region.UNSPECIFIED
    details: tuple[Detail, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.observation, Observation):
            raise TypeError(f"FindingSpec.observation must be an Observation, got {self.observation!r}")


class Labeler(Protocol):
    """What ``specs_from_report`` needs: ``cxr.labeler.ReportLabeler`` satisfies it."""

    def label(self, report: str) -> Any: ...


# ---- named word patterns, read from the words around each mention --------------------------
LEFT_WORDS = re.compile(r"\bleft\b", re.IGNORECASE)
RIGHT_WORDS = re.compile(r"\bright\b", re.IGNORECASE)
BILATERAL_WORDS = re.compile(r"\b(bilateral(ly)?|both|bibasilar|bibasal|biapical)\b", re.IGNORECASE)

SMALL_WORDS = re.compile(r"\b(small|tiny|trace|minimal(ly)?|mild(ly)?|minor|slight(ly)?|subtle)\b", re.IGNORECASE)
MODERATE_WORDS = re.compile(r"\bmoderate(ly)?\b", re.IGNORECASE)
LARGE_WORDS = re.compile(r"\b(large|massive|severe(ly)?|extensive|marked(ly)?)\b", re.IGNORECASE)

UPPER_WORDS = re.compile(r"\b(upper (lobe|lung|zone)s?|ap(ex|ices|ical))\b", re.IGNORECASE)
MIDDLE_WORDS = re.compile(r"\b(middle (lobe|lung|zone)|lingula(r)?|perihilar|midlung|mid lung)\b", re.IGNORECASE)
LOWER_WORDS = re.compile(r"\b(lower (lobe|lung|zone)s?|bases?|basal|basilar|bibasilar|bibasal)\b", re.IGNORECASE)

DETAIL_WORDS: dict[Detail, re.Pattern[str]] = {
    Detail.ET_TUBE: re.compile(r"\b(endotracheal|et tube|ett|tracheostomy)\b", re.IGNORECASE),
    Detail.ENTERIC_TUBE: re.compile(r"\b(nasogastric|orogastric|ng|og|enteric|feeding tube|dobhoff|gastric tube)\b", re.IGNORECASE),
    Detail.CENTRAL_LINE: re.compile(r"\b(central|picc|catheter|line|lines|port|mediport|swan|jugular|subclavian|venous)\b", re.IGNORECASE),
    Detail.PACEMAKER: re.compile(r"\b(pacemaker|pacer|aicd|icd|defibrillator|leads?|generator)\b", re.IGNORECASE),
    Detail.STERNOTOMY: re.compile(r"\b(sternotomy|sternal wires?|cabg|bypass|wires)\b", re.IGNORECASE),
    Detail.CLIPS: re.compile(r"\b(clips?|staples?|surgical|cholecystectomy|stents?|coils?)\b", re.IGNORECASE),
    Detail.HARDWARE: re.compile(r"\b(hardware|plate|screws?|rods?|fixation|fusion|arthroplasty|prosthe\w*)\b", re.IGNORECASE),
    Detail.CALCIFIED: re.compile(r"\b(calcifi\w*|granulom\w*|plaques?)\b", re.IGNORECASE),
    Detail.MASS: re.compile(r"\b(mass|masses|tumou?r|carcinoma|neoplasm)\b", re.IGNORECASE),
    Detail.MULTIPLE: re.compile(r"\b(multiple|several|numerous|nodules|masses|opacities|multifocal|scattered)\b", re.IGNORECASE),
}


@dataclass(frozen=True)
class _Context:
    """Words that modify one mention: first those before it (back to the previous mention), else after."""

    before: str
    after: str


def _mention_contexts(mentions: list[Any]) -> list[_Context]:
    """Split each mention's sentence at the other mentions of the same sentence."""
    spans: list[tuple[str, int, int]] = []
    for m in mentions:
        sentence = str(getattr(m, "sentence", "") or "")
        phrase = str(getattr(m, "phrase", "") or "")
        at = sentence.lower().find(phrase.lower()) if phrase else -1
        spans.append((sentence, at, at + len(phrase)) if at >= 0 else (sentence, -1, -1))
    contexts = []
    for i, (sentence, start, end) in enumerate(spans):
        if start < 0:
            contexts.append(_Context(before=sentence, after=""))
            continue
        others = [(s, e) for j, (sent, s, e) in enumerate(spans) if j != i and sent == sentence and s >= 0]
        prev_end = max([e for s, e in others if e <= start], default=0)
        next_start = min([s for s, e in others if s >= end], default=len(sentence))
        contexts.append(_Context(before=sentence[prev_end:end], after=sentence[end:next_start]))
    return contexts


def _read_laterality(text: str) -> Laterality | None:
    if BILATERAL_WORDS.search(text):
        return Laterality.BILATERAL
    left, right = bool(LEFT_WORDS.search(text)), bool(RIGHT_WORDS.search(text))
    if left and right:
        return Laterality.BILATERAL
    return Laterality.LEFT if left else Laterality.RIGHT if right else None


def _read_severity(text: str) -> Severity | None:
    for pattern, severity in ((LARGE_WORDS, Severity.LARGE), (MODERATE_WORDS, Severity.MODERATE),
                              (SMALL_WORDS, Severity.SMALL)):
        if pattern.search(text):
            return severity
    return None


def _read_region(text: str) -> Region | None:
    for pattern, region in ((UPPER_WORDS, Region.UPPER), (MIDDLE_WORDS, Region.MIDDLE),
                            (LOWER_WORDS, Region.LOWER)):
        if pattern.search(text):
            return region
    return None


def _first(context: _Context, reader) -> Any:
    """Prefer a modifier before the mention ("small left effusion"), else after ("effusion on the left")."""
    found = reader(context.before)
    return found if found is not None else reader(context.after)


def _merge_laterality(a: Laterality | None, b: Laterality | None) -> Laterality | None:
    if a is None or a == b:
        return b
    if b is None:
        return a
    return Laterality.BILATERAL


def specs_from_labels(values: dict[Observation, float | None], mentions: Iterable[Any]) -> list[FindingSpec]:
    """Build specs from labeler output: ``values`` decides which observations, ``mentions`` the modifiers."""
    mentions = list(mentions)
    contexts = _mention_contexts(mentions)
    specs: list[FindingSpec] = []
    for obs in Observation:
        value = values.get(obs)
        if value is None or math.isnan(value):  # None or NaN: not mentioned
            continue
        if value == POSITIVE:
            certainty = Certainty.PRESENT
        elif value == UNCERTAIN:
            certainty = Certainty.UNCERTAIN
        else:
            continue
        laterality: Laterality | None = None
        severity: Severity | None = None
        region: Region | None = None
        details: list[Detail] = []
        for mention, context in zip(mentions, contexts):
            if getattr(mention, "observation", None) != obs:
                continue
            label = getattr(mention, "label", None)
            if label is not None and label not in (POSITIVE, UNCERTAIN):
                continue  # a negated mention says nothing about how the finding looks
            laterality = _merge_laterality(laterality, _first(context, _read_laterality))
            severity = severity or _first(context, _read_severity)
            region = region or _first(context, _read_region)
            words = context.before + " " + context.after
            details += [d for d, pattern in DETAIL_WORDS.items() if pattern.search(words) and d not in details]
        specs.append(FindingSpec(
            observation=obs,
            certainty=certainty,
            laterality=laterality or Laterality.UNSPECIFIED,
            severity=severity or Severity.UNSPECIFIED,
            region=region or Region.UNSPECIFIED,
            details=tuple(details),
        ))
    return specs


def specs_from_report(report: str, labeler: Labeler) -> list[FindingSpec]:
    """Label ``report`` and turn the labels into specs (an empty list renders a normal study)."""
    labels = labeler.label(report)
    return specs_from_labels(labels.values, labels.mentions)
