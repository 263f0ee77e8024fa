"""Our extensions to the CheXpert phrase lists, in one place, each with the reason for it.

Phrase syntax is CheXpert's: words are prefixes unless the phrase ends with ``_`` (whole word).
Everything here is matched on normalised tokens (lower case, hyphens split), see ``phrases.py``.
"""
from __future__ import annotations

from cxr.observations import NEGATIVE, POSITIVE, UNCERTAIN, Observation

O = Observation

# ---------------------------------------------------------------------------------------------
# EXTRA_MENTIONS: wording common in IU X-ray / MIMIC-CXR that the CheXpert lists miss. Our matcher
# anchors phrases at word starts (CheXpert matches raw substrings), so compounds such as
# "hydropneumothorax" or "cardiomediastinal" need their own entry.
EXTRA_MENTIONS: dict[Observation, tuple[str, ...]] = {
    O.LUNG_OPACITY: ("reticulonodular", "ground glass", "groundglass", "haziness", "hazy opaci",
                     "airspace process", "air space process", "interstitial prominence",
                     "interstitial changes", "interstitial disease"),
    O.LUNG_LESION: ("noncalcified nodul", "lung lesion", "pulmonary lesion", "cavitary"),
    O.PNEUMONIA: ("bronchopneumonia",),
    O.EDEMA: ("vascular engorgement", "venous engorgement", "venous congestion", "fluid overload", "kerley"),
    O.PNEUMOTHORAX: ("hydropneumothorax",),
    O.PLEURAL_OTHER: ("pleural plaque", "pleural calcification", "pleuroparenchymal scar",
                      "pleural parenchymal scar"),
    O.SUPPORT_DEVICES: ("sternotomy", "sternal wire", "surgical clip", "stent", "port_",
                        "prosthe", "pacer lead",
                        "endotracheal", "enteric", "nasogastric", "clips_"),
    # "other findings": their positive / uncertain mention blocks No Finding, as CheXpert's
    # no_finding list does; these are common IU abnormalities that list lacks.
    O.NO_FINDING: ("spondylosis", "osteophyte", "hyperexpan", "tortuous", "tortuosity", "ectasia",
                   "ectatic", "adenopathy", "lymphadenopathy", "osteopen", "hypoinflat",
                   "low lung volume", "spur_", "spurs_", "pericardial effusion", "dextroscoliosis",
                   "levoscoliosis", "dextrocurvature", "levocurvature", "dextroconvex", "levoconvex",
                   "syndesmophyte"),
}

# EXTRA_UNMENTIONS: mentions that overlap one of these are dropped (CheXpert's rule).
_POSITIONAL = tuple(f"{a}{b}" for a in ("over the", "overlying the", "in the", "behind the")
                    for b in ("", " superior", " left", " right"))
EXTRA_UNMENTIONS: dict[Observation, tuple[str, ...]] = {
    # CheXpert builds these positional unmentions in code ("opacity over the heart").
    O.CARDIOMEGALY: tuple(f"{p} {w}" for p in _POSITIONAL for w in ("heart", "cardiac")) + (
        "heart border", "heart failure", "cardiac border", "cardiac monitor", "cardiac lead",
        "cardiac valve", "cardiac pacer", "cardiac device"),
    O.ENLARGED_CARDIOMEDIASTINUM: tuple(f"{p} {w}" for p in _POSITIONAL for w in ("mediastin",)),
    O.PLEURAL_EFFUSION: ("joint effusion",),
    # old granulomatous disease is not a pneumonia
    O.PNEUMONIA: ("granulomatous infection", "histoplasmosis infection", "prior infection",
                  "old infection", "previous infection", "remote infection"),
    O.LUNG_LESION: ("mass effect",),
    O.SUPPORT_DEVICES: ("tubercul", "tuberos", "platelike", "plate like", "kerley b line", "b line",
                        "septal line", "pleural line", "skin line", "support the diagnosis",
                        "supportive", "marker of"),
}

# ---------------------------------------------------------------------------------------------
# QUALIFIED subjects: "heart size", "mediastinum", "lungs", "osseous structures" say nothing by
# themselves. They become a mention only with a qualifier in their clause ("heart size is
# normal" → Cardiomegaly 0, "heart is mildly enlarged" → 1, "upper limits of normal" → -1).
# CheXpert counts a bare "heart size" as positive; IU's "The heart and lungs have XXXX XXXX in
# the interval" shows why we do not. Keys are qualifier groups, see QUALIFIERS.
QUALIFIED_CHEXPERT: dict[Observation, tuple[str, ...]] = {
    # CheXpert mention phrases that we treat as qualified subjects instead of direct mentions
    O.CARDIOMEGALY: ("the heart", "heart size", "cardiac size", "cardiac shadow", "cardiac contour",
                     "cardiac silhouette"),
    O.ENLARGED_CARDIOMEDIASTINUM: ("_mediastinum", "cardiomediastinum", "contour",
                                   "mediastinal configuration", "mediastinal silhouette",
                                   "pericardial silhouette", "cardiac silhouette and vascularity"),
    O.EDEMA: ("vascular prominence",),
}
QUALIFIED_EXTRA: dict[Observation, tuple[str, ...]] = {
    O.CARDIOMEGALY: ("heart_", "heart silhouette", "heart shadow", "cardiac and mediastinal",
                     "cardiopericardial"),
    O.ENLARGED_CARDIOMEDIASTINUM: ("mediastin", "cardiomediastin", "cardio mediastin"),
    O.EDEMA: ("pulmonary vascul", "vascularity", "vasculature", "pulmonary vessel",
              "vascular marking"),
    O.LUNG_OPACITY: ("lungs_", "lung_", "lung fields"),
    O.FRACTURE: ("bony", "bone_", "bones_", "osseous", "skelet"),
}
QUALIFIER_GROUP: dict[Observation, str] = {
    O.CARDIOMEGALY: "size", O.ENLARGED_CARDIOMEDIASTINUM: "size", O.EDEMA: "vessels",
    O.LUNG_OPACITY: "lungs", O.FRACTURE: "bones",
}

# A qualifier is (label, negated_only). negated_only qualifiers count only when negated:
# "no acute bony abnormality" → Fracture 0, but "bony abnormality" alone says nothing of a fracture.
QUALIFIERS: dict[str, dict[str, tuple[float, bool]]] = {
    "size": {
        **{p: (UNCERTAIN, False) for p in (
            "borderline", "upper limits of normal", "upper limit of normal", "upper limits normal",
            "upper limit normal", "upper normal", "top normal", "top of normal", "high normal",
            "upper range of normal", "upper limits of the normal")},
        **{p: (POSITIVE, False) for p in (
            "enlarg", "large_", "larger_", "increase", "prominen", "widen", "wide_")},
        **{p: (NEGATIVE, False) for p in ("normal", "unremarkable", "small_")},
    },
    "vessels": {
        **{p: (POSITIVE, False) for p in (
            "congest", "engorg", "cephaliz", "indistinct", "increase", "prominen")},
        **{p: (NEGATIVE, False) for p in ("normal", "unremarkable")},
    },
    "lungs": {"clear": (NEGATIVE, False)},
    # a direct mention whose predicate is one of these is denied, not asserted
    "predicate": {p: (NEGATIVE, False) for p in ("normal", "unremarkable", "within limits")},
    "bones": {
        **{p: (NEGATIVE, False) for p in ("intact", "unremarkable", "normal")},
        **{p: (POSITIVE, True) for p in ("abnormalit", "findings", "finding_", "injury", "lesion")},
    },
}
