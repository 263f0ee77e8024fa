"""Support devices drawn as radiopaque lines and shapes on a canvas's wires layer (both views).

``DeviceOverlay(kind, side, strength, seed).paint(canvas)``; the same seed places the device
consistently in the frontal and the lateral view.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr.phantom.anatomy import SPINE_Z, STERNUM_Z, Patient
from cxr.phantom.canvas import LEFT, RIGHT, Canvas, View, bezier
from cxr.phantom.spec import Detail

METAL = 255
TUBE = 120


@dataclass(frozen=True)
class DeviceOverlay:
    kind: Detail
    side: int
    strength: float
    seed: int
    patient: Patient

    def paint(self, c: Canvas) -> None:
        rng = np.random.default_rng(self.seed)  # same draws in every view
        painter = (_FRONTAL if c.view is View.FRONTAL else _LATERAL)[self.kind]
        painter(c, self, rng)

    def v(self, value: int) -> int:
        return int(value * self.strength)


# ---- frontal ---------------------------------------------------------------------------------
def _et_frontal(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    x = d.patient.med_shift * 0.5 + rng.normal(0, 0.008)
    tip = -0.30 - rng.uniform(0.0, 0.15)
    c.polyline([(x - 0.02, -1.1), (x, -0.8), (x, tip)], 0.022, d.v(TUBE))
    c.polyline([(x - 0.02, -1.1), (x, -0.8), (x, tip)], 0.007, d.v(220))


def _enteric_frontal(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    dome = d.patient.dome(LEFT)
    end = (rng.uniform(0.25, 0.45), dome + rng.uniform(0.12, 0.25))
    pts = bezier((0.0, -1.1), (0.06, -0.2), (0.02, dome + 0.2), end)
    c.polyline(pts, 0.014, d.v(TUBE + 40))


def _line_frontal(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    s = d.side
    start = (s * rng.uniform(0.55, 0.75), -0.66 + rng.normal(0, 0.03))
    tip = (-0.07 + rng.normal(0, 0.015), -0.14 + rng.normal(0, 0.06))
    pts = bezier(start, (s * 0.2, -0.62), (-0.07, -0.45), tip)
    c.polyline(pts, 0.010, d.v(170))
    if rng.random() < 0.35:  # a port reservoir
        c.ellipse(start[0], start[1], 0.04, 0.035, d.v(METAL))


def _pacemaker_frontal(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    s = d.side
    bx, by = s * rng.uniform(0.50, 0.66), rng.uniform(-0.62, -0.50)
    w, h = rng.uniform(0.07, 0.10), rng.uniform(0.05, 0.07)
    c.polygon([(bx - w, by - h), (bx + w, by - h), (bx + w, by + h), (bx - w, by + h)], d.v(METAL))
    c.ellipse(bx - 0.02 * s, by - h, w * 0.6, 0.02, d.v(200))
    ra = (-0.04 + rng.normal(0, 0.01), 0.02 + rng.normal(0, 0.03))
    rv = (0.20 + rng.normal(0, 0.03), 0.28 + rng.normal(0, 0.03))
    c.polyline(bezier((bx, by), (s * 0.15, -0.52), (-0.08, -0.35), ra), 0.009, d.v(235))
    c.polyline(bezier(ra, (-0.02, 0.15), (0.1, 0.3), rv), 0.009, d.v(235))
    if rng.random() < 0.6:  # a second, atrial lead
        c.polyline(bezier((bx, by), (s * 0.18, -0.5), (-0.05, -0.3), (0.02, -0.05)), 0.009, d.v(235))


def _sternotomy_frontal(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    n = int(rng.integers(5, 8))
    for y in np.linspace(-0.50, 0.12, n) + rng.normal(0, 0.012, n):
        x = d.patient.med_shift + rng.normal(0, 0.012)
        c.ellipse(x, float(y), 0.028, 0.011, d.v(METAL), width=0.008)
        c.polyline([(x, float(y) + 0.008), (x + rng.normal(0, 0.01), float(y) + 0.03)], 0.008, d.v(METAL))


def _clip_sites(d: DeviceOverlay) -> list[tuple[float, float, float]]:
    """(x, y, z) of the places clips go: gallbladder fossa, mediastinum (CABG), axilla."""
    return [(-0.45, d.patient.dome(RIGHT) + 0.18, -0.2), (0.12, -0.05, -0.4), (d.side * 0.7, -0.4, 0.0)]


def _scatter_clips(c: Canvas, d: DeviceOverlay, rng: np.random.Generator, u0: float, y0: float) -> None:
    """3-6 short metal dashes around (u0, y0); u is x on the frontal view, z on the lateral."""
    for _ in range(int(rng.integers(3, 7))):
        u, y, a = u0 + rng.normal(0, 0.05), y0 + rng.normal(0, 0.05), rng.uniform(0, np.pi)
        du, dy = 0.018 * np.cos(a), 0.018 * np.sin(a)
        c.polyline([(u - du, y - dy), (u + du, y + dy)], 0.009, d.v(METAL))


def _clips_frontal(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    x0, y0, _ = _clip_sites(d)[int(rng.integers(0, 3))]
    _scatter_clips(c, d, rng, x0, y0)


def _hardware_frontal(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    y0 = rng.uniform(-0.3, 0.2)
    y1 = y0 + rng.uniform(0.35, 0.6)
    for x in (-0.055, 0.055):
        c.polyline([(x, y0), (x + rng.normal(0, 0.005), y1)], 0.016, d.v(METAL))
    for y in np.linspace(y0 + 0.04, y1 - 0.04, int(rng.integers(3, 6))):
        c.polyline([(-0.09, float(y)), (0.09, float(y))], 0.012, d.v(METAL))


# ---- lateral ---------------------------------------------------------------------------------
def _et_lateral(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    rng.normal(0, 0.008)
    tip = -0.30 - rng.uniform(0.0, 0.15)
    pts = [(-0.14, -1.1), (-0.10, -0.9), (-0.10 + 0.14 * (tip + 1.05) / 0.87, tip)]
    c.polyline(pts, 0.022, d.v(TUBE))
    c.polyline(pts, 0.007, d.v(220))


def _enteric_lateral(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    dome = d.patient.dome(LEFT)
    c.polyline(bezier((0.02, -1.1), (0.30, -0.3), (0.28, dome), (-0.15, dome + 0.18)), 0.014, d.v(TUBE + 40))


def _line_lateral(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    rng.uniform(0.55, 0.75)
    start = (-0.35, -0.70 + rng.normal(0, 0.03))
    c.polyline(bezier(start, (-0.25, -0.55), (-0.20, -0.35), (-0.18, -0.1)), 0.010, d.v(170))


def _pacemaker_lateral(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    by = rng.uniform(-0.62, -0.50)
    bz = STERNUM_Z - 0.08
    c.polygon([(bz - 0.03, by - 0.07), (bz + 0.03, by - 0.07), (bz + 0.03, by + 0.07), (bz - 0.03, by + 0.07)],
              d.v(METAL))
    c.polyline(bezier((bz, by), (-0.2, -0.7), (-0.15, -0.2), (-0.45, 0.30)), 0.009, d.v(235))


def _sternotomy_lateral(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    n = int(rng.integers(5, 8))
    for y in np.linspace(-0.50, 0.12, n) + rng.normal(0, 0.012, n):
        z = STERNUM_Z + 0.02 - 0.06 * (float(y) + 0.2) ** 2
        c.polyline([(z - 0.03, float(y) - 0.01), (z + 0.03, float(y) + 0.01)], 0.010, d.v(METAL))


def _clips_lateral(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    _, y0, z0 = _clip_sites(d)[int(rng.integers(0, 3))]
    _scatter_clips(c, d, rng, z0, y0)


def _hardware_lateral(c: Canvas, d: DeviceOverlay, rng: np.random.Generator) -> None:
    y0 = rng.uniform(-0.3, 0.2)
    y1 = y0 + rng.uniform(0.35, 0.6)
    z = SPINE_Z + 0.2
    c.polyline([(z, y0), (z + 0.02, y1)], 0.016, d.v(METAL))
    for y in np.linspace(y0 + 0.04, y1 - 0.04, int(rng.integers(3, 6))):
        c.polyline([(z, float(y)), (z - 0.16, float(y) + 0.02)], 0.012, d.v(METAL))


_FRONTAL = {
    Detail.ET_TUBE: _et_frontal, Detail.ENTERIC_TUBE: _enteric_frontal, Detail.CENTRAL_LINE: _line_frontal,
    Detail.PACEMAKER: _pacemaker_frontal, Detail.STERNOTOMY: _sternotomy_frontal,
    Detail.CLIPS: _clips_frontal, Detail.HARDWARE: _hardware_frontal,
}
_LATERAL = {
    Detail.ET_TUBE: _et_lateral, Detail.ENTERIC_TUBE: _enteric_lateral, Detail.CENTRAL_LINE: _line_lateral,
    Detail.PACEMAKER: _pacemaker_lateral, Detail.STERNOTOMY: _sternotomy_lateral,
    Detail.CLIPS: _clips_lateral, Detail.HARDWARE: _hardware_lateral,
}
