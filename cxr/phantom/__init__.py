"""Phantom chest X-rays from real reports: report → labels → ``FindingSpec`` list → frontal + lateral PNGs.

``specs_from_report`` (spec.py) reads what to draw; ``render_study`` (render.py) draws it;
``generate_phantoms`` (generate.py) writes a whole R2Gen annotation's images; sheet.py the contact sheet.
"""
from cxr.phantom.render import PHANTOM_VERSION, PhantomConfig, render_study
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

__all__ = [
                              "PHANTOM_VERSION",
                              "Certainty",
                              "Detail",
                              "FindingSpec",
                              "Laterality",
                              "PhantomConfig",
                              "Region",
                              "Severity",
                              "render_study",
                              "specs_from_labels",
                              "specs_from_report",
]
