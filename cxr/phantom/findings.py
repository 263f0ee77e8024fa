"""The visible signature of each CheXpert observation: specs → a ``FindingPlan`` → painted on each view.

``plan_findings(specs, patient, …)`` changes the patient (heart size, mediastinum, diaphragm,
rib fractures) and lists overlays (opacities, fluid, pleural lines, devices) placed in 3-D body
coordinates (x, y, z) so the frontal and lateral views agree. ``apply_plan(canvas, plan)`` paints them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import numpy as np

from cxr.observations import Observation
from cxr.phantom.anatomy import Patient, RibFracture
from cxr.phantom.canvas import LEFT, RIGHT, SIDES, Canvas, View, ramp, smooth_noise
from cxr.phantom.devices import DeviceOverlay
from cxr.phantom.seeding import study_rng
from cxr.phantom.spec import DEVICES, Certainty, Detail, FindingSpec, Laterality, Region, Severity


class Overlay(Protocol):
    def paint(self, c: Canvas) -> None: ...


@dataclass
class FindingPlan:
    patient: Patient
    overlays: list[Overlay] = field(default_factory=list)


class BlobKind(str, Enum):
    SOLID = "solid"      # lobar consolidation: dense, fairly sharp, irregular margin
    PATCHY = "patchy"    # pneumonia: mottled, multifocal
    HAZE = "haze"        # ill-defined opacity, edema
    NODULE = "nodule"    # round, sharp-edged
    BAND = "band"        # plate-like atelectasis, pleural plaque


@dataclass(frozen=True)
class Blob:
    """An opacity at body (x, y, z) with radii (rx, ry, rz); ``angle`` tilts bands (radians)."""

    kind: BlobKind
    side: int
    x: float
    y: float
    z: float
    rx: float
    ry: float
    rz: float
    density: float
    seed: int
    angle: float = 0.0
    in_lung: bool = True            # clip to the aerated lung of ``side``
    fissure_y: float | None = None  # frontal: sharp lower border (minor fissure)
    bronchograms: bool = False

    def paint(self, c: Canvas) -> None:
        cx, rx = (self.x, self.rx) if c.view is View.FRONTAL else (self.z, self.rz)
        reach = max(rx, self.ry) * (1.6 if self.kind in (BlobKind.HAZE, BlobKind.PATCHY) else 1.15)
        win = c.window(cx - reach, cx + reach, self.y - reach, self.y + reach)
        if win is None:
            return
        X, Y = c.X[win] - cx, c.Y[win] - self.y
        if self.angle:
            ca, sa = np.cos(self.angle), np.sin(self.angle)
            X, Y = ca * X + sa * Y, -sa * X + ca * Y
        r2 = (X * (1.0 / rx)) ** 2 + (Y * (1.0 / self.ry)) ** 2
        rng = np.random.default_rng(self.seed)
        if self.kind is BlobKind.SOLID:
            shape = ramp(1.0 - r2 + 0.5 * smooth_noise(rng, r2.shape, 6), 0.3)
            shape *= 0.8 + 0.2 * smooth_noise(rng, r2.shape, 14)
        elif self.kind is BlobKind.PATCHY:
            env = np.exp(-1.4 * r2)
            shape = env * (0.35 + 0.65 * ramp(smooth_noise(rng, r2.shape, 9) + 0.1, 0.5))
        elif self.kind is BlobKind.HAZE:
            shape = np.exp(-1.3 * r2) * (1.0 + 0.25 * smooth_noise(rng, r2.shape, 6))
        elif self.kind is BlobKind.NODULE:
            shape = np.sqrt(ramp(1.0 - r2 + 0.12 * smooth_noise(rng, r2.shape, 4), 0.15))
        else:  # BAND
            shape = ramp(1.0 - r2 + 0.2 * smooth_noise(rng, r2.shape, 4), 0.35)
        if self.bronchograms:
            theta = np.arctan2(Y + 0.25, X * (-1.0 if self.side == LEFT else 1.0))
            lucent = ramp(np.cos(17.0 * theta + 6.0 * np.hypot(X, Y) + rng.uniform(0, 6.3)) - 0.93, 0.05)
            shape = shape * (1.0 - 0.45 * lucent * ramp(1.0 - r2, 0.5))
        if self.fissure_y is not None and c.view is View.FRONTAL:
            shape = shape * ramp(self.fissure_y - c.Y[win], 0.012)
        amount = self.density * shape
        if self.in_lung:
            amount = amount * c.lung[self.side][win]
            c.markings[win] *= 1.0 - np.minimum(shape, 1.0) * 0.3
        c.density[win] += amount


@dataclass(frozen=True)
class Effusion:
    """Dependent fluid: a basal opacity with a meniscus rising laterally (frontal) / posteriorly (lateral)."""

    side: int
    size: float        # 0 … 1
    strength: float
    patient: Patient

    def paint(self, c: Canvas) -> None:
        p, s = self.patient, self.size
        if c.view is View.FRONTAL:
            level = p.cp_y(self.side) - 0.05 - 0.60 * s
            curv = 0.10 + 0.22 * s
            win = c.window(min(0, self.side) * 1.0, max(0, self.side) * 1.0, level - curv - 0.05, 1.0)
            if win is None:
                return
            xs, Y = self.side * c.X[win], c.Y[win]
            lateral = np.clip((xs - 0.2) / (p.lung_half - 0.2), 0.0, 1.0)
            top = level - curv * lateral ** 2
            amount = 0.52
        else:
            level = p.cp_y(self.side) + 0.10 - 0.62 * s
            curv = 0.12 + 0.10 * s
            win = c.window(-1.0, 1.0, level - curv - 0.05, 1.0)
            if win is None:
                return
            Y = c.Y[win]
            top = level - curv * np.clip((c.X[win] + 0.1) / 0.75, 0.0, 1.0) ** 2
            amount = 0.30
        fluid = c.lung[self.side][win] * ramp(Y - top, 0.05)
        c.density[win] += self.strength * amount * fluid * (0.75 + 0.25 * ramp(Y - top, 0.2))
        c.markings[win] *= 1.0 - 0.9 * self.strength * fluid


@dataclass(frozen=True)
class Pneumothorax:
    """Air between lung and chest wall: a thin visceral pleural line, no markings beyond it (frontal)."""

    side: int
    size: float
    strength: float
    patient: Patient

    def paint(self, c: Canvas) -> None:
        p = self.patient
        depth = 0.035 + 0.23 * self.size
        low = p.hilum(self.side)[1] + 0.05 + 0.45 * self.size
        if c.view is View.LATERAL:
            return  # rarely visible on the lateral view
        win = c.window(min(0, self.side) * 1.0, max(0, self.side) * 1.0, p.apex_y - 0.05, low + 0.3)
        if win is None:
            return
        P, lung, Y = c.pleura[self.side][win], c.lung[self.side][win], c.Y[win]
        d = depth * ramp(low - Y, 0.3) * (0.85 + 0.15 * np.clip((Y - p.apex_y) / 0.2, 0.0, 1.0))
        space = lung * ramp(P + d, 0.008) * (d > 0.012)
        line = lung * ramp(0.0055 - np.abs(P + d), 0.003) * ramp(d - 0.012, 0.01)
        c.markings[win] *= 1.0 - self.strength * space
        c.density[win] += self.strength * (0.26 * line - 0.13 * space)


@dataclass(frozen=True)
class PleuralThickening:
    """A band along the inside of the lateral/apical pleura, of irregular thickness."""

    side: int
    y0: float
    y1: float
    thickness: float
    strength: float
    seed: int

    def paint(self, c: Canvas) -> None:
        if c.view is View.LATERAL:
            return
        win = c.window(min(0, self.side) * 1.0, max(0, self.side) * 1.0, self.y0 - 0.05, self.y1 + 0.05)
        if win is None:
            return
        P, Y = c.pleura[self.side][win], c.Y[win]
        rng = np.random.default_rng(self.seed)
        t = self.thickness * (1.0 + 0.6 * smooth_noise(rng, P.shape, 6)) * ramp(Y - self.y0, 0.06) * ramp(self.y1 - Y, 0.06)
        band = c.lung[self.side][win] * ramp(P + t, 0.008)
        c.density[win] += self.strength * 0.42 * band


@dataclass(frozen=True)
class MarkingsGain:
    """Engorged, indistinct vessels (edema): scales the vascular markings."""

    gain: float

    def paint(self, c: Canvas) -> None:
        c.markings *= self.gain


@dataclass(frozen=True)
class KerleyLines:
    """Short horizontal septal lines at the lateral lung bases (frontal)."""

    side: int
    count: int
    strength: float
    seed: int
    patient: Patient

    def paint(self, c: Canvas) -> None:
        if c.view is View.LATERAL:
            return
        rng = np.random.default_rng(self.seed)
        p = self.patient
        for y in rng.uniform(p.dome(self.side) - 0.30, p.cp_y(self.side) - 0.04, self.count):
            edge = float(p.lung_lateral_x(self.side, y)) - 0.012
            length = rng.uniform(0.035, 0.07)
            c.polyline([(self.side * edge, float(y)), (self.side * (edge - length), float(y) + rng.normal(0, 0.004))],
                       0.006, int(70 * self.strength))


# ---- planning --------------------------------------------------------------------------------
SIZE_RANGE = {Severity.SMALL: (0.12, 0.32), Severity.MODERATE: (0.40, 0.60), Severity.LARGE: (0.75, 1.0)}


def _size(spec: FindingSpec, rng: np.random.Generator) -> float:
    """Severity → extent in [0, 1]; unspecified draws anywhere."""
    lo, hi = SIZE_RANGE.get(spec.severity, (0.05, 0.9))
    return float(rng.uniform(lo, hi))


def _sides(spec: FindingSpec, rng: np.random.Generator, p_bilateral: float) -> list[int]:
    if spec.laterality is Laterality.LEFT:
        return [LEFT]
    if spec.laterality is Laterality.RIGHT:
        return [RIGHT]
    if spec.laterality is Laterality.BILATERAL or rng.random() < p_bilateral:
        return [RIGHT, LEFT]
    return [RIGHT if rng.random() < 0.5 else LEFT]


def _region(spec: FindingSpec, rng: np.random.Generator, weights=(0.3, 0.25, 0.45)) -> Region:
    if spec.region is not Region.UNSPECIFIED:
        return spec.region
    return (Region.UPPER, Region.MIDDLE, Region.LOWER)[int(rng.choice(3, p=weights))]


def _place(p: Patient, side: int, region: Region, rng: np.random.Generator, margin: float) -> tuple[float, float, float]:
    """A point (x, y, z) well inside the ``side`` lung in ``region``."""
    hy = p.hilum(side)[1]
    y_range = {Region.UPPER: (p.apex_y + 0.14 + margin * 0.5, hy - 0.10),
               Region.MIDDLE: (hy - 0.05, hy + 0.18),
               Region.LOWER: (hy + 0.15, p.dome(side) - 0.02)}[region]
    y = float(rng.uniform(*y_range))
    inner = p.med_half + 0.12 + (0.12 if region is Region.LOWER and side == LEFT else 0.0)
    outer = float(p.lung_lateral_x(side, y)) - 0.05 - margin * 0.6
    xs = float(rng.uniform(inner, max(inner + 0.01, outer)))
    z_range = {Region.UPPER: (-0.3, 0.45), Region.MIDDLE: (-0.5, -0.1), Region.LOWER: (0.05, 0.55)}[region]
    return side * xs, y, float(rng.uniform(*z_range))


Planner = Callable[[FindingSpec, Patient, np.random.Generator, float], tuple[Patient, list[Overlay]]]


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


def _cardiomegaly(spec, p, rng, strength):
    target = 0.53 + 0.17 * _size(spec, rng)
    ctr = p.ctr + (target - p.ctr) * (1.0 if strength >= 1 else 0.6)
    return dataclasses.replace(p, ctr=float(ctr), heart_y=p.heart_y + 0.03 * (ctr - 0.45) / 0.2), []


def _enlarged_mediastinum(spec, p, rng, strength):
    s = _size(spec, rng)
    gain = 1.0 + (0.6 + 0.7 * s) * (1.0 if strength >= 1 else 0.45)
    over = Blob(BlobKind.HAZE, RIGHT, 0.0, -0.35, -0.35, 0.1, 0.22, 0.16, 0.10 * gain * strength,
                _seed(rng), in_lung=False)
    return dataclasses.replace(p, med_half=p.med_half * gain, knob=p.knob * (0.8 + 0.4 * gain)), [_OnlyIn(View.LATERAL, over)]


@dataclass(frozen=True)
class _OnlyIn:
    """An overlay painted on one view only."""
    view: View
    overlay: Overlay

    def paint(self, c: Canvas) -> None:
        if c.view is self.view:
            self.overlay.paint(c)


def _effusion(spec, p, rng, strength):
    return p, [Effusion(side, _size(spec, rng), strength, p) for side in _sides(spec, rng, 0.35)]


def _pneumothorax(spec, p, rng, strength):
    return p, [Pneumothorax(side, _size(spec, rng), strength, p) for side in _sides(spec, rng, 0.05)]


def _opacities(kind: BlobKind, density: float, radius: tuple[float, float], count: tuple[int, int],
               p_bilateral: float, bronchograms: bool = False) -> Planner:
    def plan(spec, p, rng, strength):
        s = _size(spec, rng)
        overlays: list[Overlay] = []
        sides = _sides(spec, rng, p_bilateral)
        n = count[0] + int(np.rint((count[1] - count[0]) * s * rng.uniform(0.6, 1.0)))
        if Detail.MULTIPLE in spec.details:
            n = max(n, 2)
        for i in range(max(n, len(sides))):
            side = sides[i % len(sides)]
            region = _region(spec, rng)
            r = radius[0] + (radius[1] - radius[0]) * s * rng.uniform(0.7, 1.0)
            x, y, z = _place(p, side, region, rng, r)
            fissure = None
            if kind is BlobKind.SOLID and side == RIGHT and region is Region.UPPER and rng.random() < 0.7:
                fissure = p.hilum(RIGHT)[1] + 0.01
                y = min(y + 0.5 * r, fissure - 0.05)
            overlays.append(Blob(kind, side, x, y, z, r * rng.uniform(0.8, 1.25), r * rng.uniform(0.7, 1.1),
                                 r * rng.uniform(0.9, 1.3), density * strength * rng.uniform(0.85, 1.15), _seed(rng),
                                 angle=float(rng.normal(0, 0.3)), fissure_y=fissure, bronchograms=bronchograms))
        return p, overlays
    return plan


def _lesion(spec, p, rng, strength):
    s = _size(spec, rng)
    calcified = Detail.CALCIFIED in spec.details and Detail.MASS not in spec.details
    if Detail.MASS in spec.details:
        s = max(s, 0.7)
    n = int(rng.integers(2, 5)) if Detail.MULTIPLE in spec.details else 1
    overlays: list[Overlay] = []
    for side in _sides(spec, rng, 0.1 if n == 1 else 0.5) * n:
        if len(overlays) >= n:
            break
        r = (0.014 + 0.02 * s) if calcified else (0.028 + 0.10 * s)
        x, y, z = _place(p, side, _region(spec, rng, (0.4, 0.3, 0.3)), rng, r)
        density = (0.75 if calcified else 0.42) * strength * rng.uniform(0.85, 1.15)
        overlays.append(Blob(BlobKind.NODULE, side, x, y, z, r, r * rng.uniform(0.85, 1.15), r, density, _seed(rng)))
    return p, overlays


def _edema(spec, p, rng, strength):
    s = _size(spec, rng)
    overlays: list[Overlay] = [MarkingsGain(1.0 + 0.8 * strength)]
    for side in SIDES:  # edema is bilateral whatever the words say
        hx, hy = p.hilum(side)
        overlays.append(Blob(BlobKind.HAZE, side, hx + side * 0.14, hy + 0.05, 0.0, 0.26 + 0.14 * s, 0.22 + 0.1 * s,
                             0.35 + 0.1 * s, (0.22 + 0.14 * s) * strength, _seed(rng)))
        overlays.append(KerleyLines(side, int(rng.integers(3, 7) + 4 * s), strength, _seed(rng), p))
    return p, overlays


def _atelectasis(spec, p, rng, strength):
    s = _size(spec, rng)
    sides = _sides(spec, rng, 0.3)
    overlays: list[Overlay] = []
    domes = list(p.dome_y)
    shift = p.med_shift
    for side in sides:
        region = _region(spec, rng, (0.1, 0.2, 0.7))
        for _ in range(1 + int(s > 0.5) + int(rng.random() < 0.3)):
            x, y, z = _place(p, side, region, rng, 0.12)
            length = 0.13 + 0.14 * s
            overlays.append(Blob(BlobKind.BAND, side, x, y, z, length, 0.014 + 0.016 * s, length * 1.2,
                                 0.38 * strength, _seed(rng), angle=float(rng.normal(0, 0.2)) * -side))
        lift = (0.03 + 0.08 * s) * strength
        domes[0 if side == RIGHT else 1] -= lift
        if len(sides) == 1:
            shift += side * 0.03 * s * strength
    return dataclasses.replace(p, dome_y=(domes[0], domes[1]), med_shift=shift), overlays


def _rib_height(p: Patient, rib: float, xs: float) -> float:
    """Inverse of the rib warp in anatomy._frontal_bones: the y of rib ``rib``'s centre at |x| = xs."""
    a, q = 0.9, rib + 0.2
    h = (1.0 / p.rib_spacing - np.sqrt(1.0 / p.rib_spacing ** 2 - 4 * a * q)) / (2 * a)
    return float(h + (-0.16 * xs + 0.62 * xs * xs) + p.apex_y - 0.05 - p.rib_phase)


def _fracture(spec, p, rng, strength):
    s = _size(spec, rng)
    side = _sides(spec, rng, 0.0)[0]
    count = 1 + int(s > 0.6) + int(Detail.MULTIPLE in spec.details)
    rib0 = int(rng.integers(4, 8))
    fractures, overlays = [], []
    for k in range(count):
        lateral = float(p.lung_lateral_x(side, _rib_height(p, rib0 + k, 0.55)))
        x = lateral - float(rng.uniform(0.05, 0.20))  # over aerated lung, where a break shows best
        # gap ≥ ~1.5 px at 128 px so the break survives the model's downsampling
        fractures.append(RibFracture(side, rib0 + k, x, step=(0.3 + 0.25 * s) * strength, gap=0.034))
        if rng.random() < 0.6:  # healing callus: IU fractures are mostly old / healed
            y = _rib_height(p, rib0 + k, x)
            overlays.append(_OnlyIn(View.FRONTAL, Blob(BlobKind.NODULE, side, side * x, y, 0.3, 0.035, 0.028, 0.03,
                                              0.15 * strength, _seed(rng), in_lung=False)))
    return dataclasses.replace(p, fractures=p.fractures + tuple(fractures)), overlays


def _pleural_other(spec, p, rng, strength):
    s = _size(spec, rng)
    overlays: list[Overlay] = []
    plaques = Detail.CALCIFIED in spec.details or rng.random() < 0.35
    for side in _sides(spec, rng, 0.3):
        region = _region(spec, rng, (0.45, 0.2, 0.35))
        if region is Region.UPPER:
            y0, y1 = p.apex_y - 0.05, p.apex_y + 0.22 + 0.15 * s
        else:
            y0, y1 = p.hilum(side)[1] - 0.2, p.cp_y(side)
        overlays.append(PleuralThickening(side, y0, y1, 0.018 + 0.03 * s, strength, _seed(rng)))
        if plaques:
            for _ in range(int(rng.integers(2, 5))):
                y = float(rng.uniform(p.hilum(side)[1] - 0.1, p.dome(side) - 0.02))
                x = side * (float(p.lung_lateral_x(side, y)) - 0.015)
                overlays.append(Blob(BlobKind.BAND, side, x, y, float(rng.uniform(-0.4, 0.5)), 0.014, 0.06, 0.05,
                                     0.55 * strength, _seed(rng), in_lung=False))
    return p, overlays


def _devices(spec, p, rng, strength):
    kinds = [d for d in spec.details if d in DEVICES]
    if not kinds:
        kinds = [DEVICES[int(rng.choice(len(DEVICES), p=(0.1, 0.1, 0.2, 0.22, 0.23, 0.1, 0.05)))]]
    side = LEFT if spec.laterality is Laterality.LEFT else RIGHT if spec.laterality is Laterality.RIGHT else \
        (LEFT if rng.random() < 0.7 else RIGHT)
    return p, [DeviceOverlay(kind, side, strength, _seed(rng), p) for kind in kinds]


def _nothing(spec, p, rng, strength):
    return p, []


PLANNERS: dict[Observation, Planner] = {
    Observation.NO_FINDING: _nothing,
    Observation.ENLARGED_CARDIOMEDIASTINUM: _enlarged_mediastinum,
    Observation.CARDIOMEGALY: _cardiomegaly,
    Observation.LUNG_LESION: _lesion,
    Observation.LUNG_OPACITY: _opacities(BlobKind.HAZE, 0.30, (0.09, 0.22), (1, 2), 0.25),
    Observation.EDEMA: _edema,
    Observation.CONSOLIDATION: _opacities(BlobKind.SOLID, 0.42, (0.13, 0.26), (1, 1), 0.1, bronchograms=True),
    Observation.PNEUMONIA: _opacities(BlobKind.PATCHY, 0.34, (0.13, 0.24), (2, 4), 0.3),
    Observation.ATELECTASIS: _atelectasis,
    Observation.PNEUMOTHORAX: _pneumothorax,
    Observation.PLEURAL_EFFUSION: _effusion,
    Observation.PLEURAL_OTHER: _pleural_other,
    Observation.FRACTURE: _fracture,
    Observation.SUPPORT_DEVICES: _devices,
}


def plan_findings(specs: Sequence[FindingSpec], patient: Patient, study_id: str, seed: int,
                  faint: float) -> FindingPlan:
    """Apply every spec, in column order; each observation draws from its own random stream."""
    plan = FindingPlan(patient)
    for spec in sorted(specs, key=lambda s: list(Observation).index(s.observation)):
        strength = 1.0 if spec.certainty is Certainty.PRESENT else faint
        rng = study_rng(study_id, seed, "finding", spec.observation.value)
        plan.patient, overlays = PLANNERS[spec.observation](spec, plan.patient, rng, strength)
        plan.overlays.extend(overlays)
    # effusions and pneumothoraces read the final diaphragm (atelectasis may have lifted it)
    plan.overlays = [dataclasses.replace(o, patient=plan.patient) if hasattr(o, "patient") else o
                     for o in plan.overlays]
    return plan


def apply_plan(c: Canvas, plan: FindingPlan) -> None:
    for overlay in plan.overlays:
        overlay.paint(c)
