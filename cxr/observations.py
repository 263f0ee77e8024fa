"""The 14 CheXpert observations and the label values every part of R2GenKG shares.

Order is the CheXpert labeler's column order; it is the order of every (…, 14) tensor.
"""
from __future__ import annotations

from enum import Enum
from typing import Any


class Observation(str, Enum):
    NO_FINDING = "No Finding"
    ENLARGED_CARDIOMEDIASTINUM = "Enlarged Cardiomediastinum"
    CARDIOMEGALY = "Cardiomegaly"
    LUNG_LESION = "Lung Lesion"
    LUNG_OPACITY = "Lung Opacity"
    EDEMA = "Edema"
    CONSOLIDATION = "Consolidation"
    PNEUMONIA = "Pneumonia"
    ATELECTASIS = "Atelectasis"
    PNEUMOTHORAX = "Pneumothorax"
    PLEURAL_EFFUSION = "Pleural Effusion"
    PLEURAL_OTHER = "Pleural Other"
    FRACTURE = "Fracture"
    SUPPORT_DEVICES = "Support Devices"

    @property
    def slug(self) -> str:
        """File-name form used by the CheXpert phrase lists, e.g. ``pleural_effusion``."""
        return self.value.lower().replace(" ", "_")

    @classmethod
    def from_name(cls, name: str) -> Observation:
        """Accept the column name ("Pleural Effusion"), the slug or the enum name."""
        key = name.strip().lower().replace("_", " ")
        for obs in cls:
            if obs.value.lower() == key:
                return obs
        raise ValueError(f"unknown CheXpert observation {name!r}; expected one of {[o.value for o in cls]}")


OBSERVATIONS: tuple[Observation, ...] = tuple(Observation)
"""All 14, in column order."""

FINDINGS: tuple[Observation, ...] = OBSERVATIONS[1:]
"""The 13 findings: every observation but No Finding (which says that none of them is present)."""

FIVE_OBSERVATIONS: tuple[Observation, ...] = (
    Observation.ATELECTASIS,
    Observation.CARDIOMEGALY,
    Observation.CONSOLIDATION,
    Observation.EDEMA,
    Observation.PLEURAL_EFFUSION,
)
"""The 5-observation subset newer papers report CE metrics on."""

# Label values, as the CheXpert labeler writes them. "Not mentioned" is blank (None / NaN).
POSITIVE = 1.0
NEGATIVE = 0.0
UNCERTAIN = -1.0


class UncertainPolicy(str, Enum):
    """How an uncertain (-1) label is read where a yes / no is needed (CheXpert's U-policies)."""

    ONES = "ones"      # U-Ones: uncertain counts as positive (the default)
    ZEROS = "zeros"    # U-Zeros: uncertain counts as negative
    IGNORE = "ignore"  # U-Ignore: uncertain is left out of the loss; never positive
    SOFT = "soft"      # a half target (0.5) in a loss, between absent and present, so the classifier
                       # can keep "uncertain" apart from "positive"; never positive in a yes / no reading


def positive_mask(labels: Any, uncertain: UncertainPolicy | str = UncertainPolicy.ONES) -> Any:
    """Labels (…, 14) in {1, 0, -1, NaN} (numpy or torch) → bool mask of the positive entries.

    The one reading of "positive observations from labels": KG seeds, classifier targets, AUROC
    and the CE metrics all call this. Blank (NaN, not mentioned) is never positive.
    """
    positive = labels == POSITIVE
    if UncertainPolicy(uncertain) is UncertainPolicy.ONES:
        positive = positive | (labels == UNCERTAIN)
    return positive


def positive_sets(labels: Any, uncertain: UncertainPolicy | str = UncertainPolicy.ONES) -> list[tuple[Observation, ...]]:
    """Labels (n, 14) → each row's positive observations, in column order."""
    return [tuple(o for o, keep in zip(OBSERVATIONS, row) if keep)
            for row in positive_mask(labels, uncertain).tolist()]


class State(str, Enum):
    """A decided state of one observation, the words the diagnosis prompt carries.

    The labeler has four values (1, -1, 0, blank). From an image, "negative" and "not mentioned"
    are the same fact, the finding is absent, and the CE metrics score them alike, so both are
    ``NEGATIVE`` here. Codes (``STATES`` index) are what (…, 14) state tensors hold.
    """

    NEGATIVE = "negative"
    UNCERTAIN = "uncertain"
    POSITIVE = "positive"


STATES: tuple[State, ...] = tuple(State)


def label_states(labels: Any) -> Any:
    """Labels (…, 14) in {1, 0, -1, NaN} (numpy or torch) → state codes (…, 14): the reference states."""
    positive, uncertain = labels == POSITIVE, labels == UNCERTAIN
    return positive * STATES.index(State.POSITIVE) + uncertain * STATES.index(State.UNCERTAIN)
