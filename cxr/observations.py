"""The 14 CheXpert observations and the label values every part of R2GenKG shares.

Order is the CheXpert labeler's column order; it is the order of every (…, 14) tensor.
"""
from __future__ import annotations

from enum import Enum


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
