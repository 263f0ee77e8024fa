"""Normal chest anatomy as attenuation layers on a ``Canvas``: one ``Patient`` drawn in both views.

``sample_patient(rng)`` → body habitus, heart, mediastinum, diaphragm, ribs, texture seeds;
``paint_frontal`` / ``paint_lateral`` add body, lungs, heart, mediastinum, trachea and bones.
Findings change a ``Patient`` (``dataclasses.replace``) before painting, or add overlays after.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cxr.phantom.canvas import LEFT, RIGHT, SIDES, Canvas, ramp, smooth_noise

THORAX_HALF = 0.78  # inner rib-cage half width at the costophrenic angles (body units)


@dataclass(frozen=True)
class RibFracture:
    side: int          # RIGHT | LEFT
    rib: int           # posterior rib index counted from the top
    x: float           # |x| where the cortex breaks
    step: float        # displacement of the distal fragment, in rib spacings
    gap: float         # width of the lucent fracture line (body units)


@dataclass(frozen=True)
class Patient:
    soft: float = 1.0            # soft-tissue habitus (thin 0.8 … heavy 1.3)
    apex_y: float = -0.74
    dome_y: tuple[float, float] = (0.30, 0.36)   # (right, left) hemidiaphragm apex heights
    cp_drop: float = 0.19        # costophrenic angle below the dome
    lung_half: float = THORAX_HALF
    ctr: float = 0.45            # cardiothoracic ratio
    heart_y: float = 0.17
    heart_tilt: float = 0.25
    med_half: float = 0.095      # upper mediastinum half width
    med_shift: float = 0.0       # mediastinum vs spine (axial rotation, volume loss)
    knob: float = 1.0            # aortic knob prominence
    breast: float = 0.0          # 0 = none
    bubble: float = 0.6          # gastric air bubble size (0 = none)
    rib_phase: float = 0.0
    rib_spacing: float = 0.108
    vessel_seed: int = 0
    fractures: tuple[RibFracture, ...] = field(default=())

    def dome(self, side: int) -> float:
        return self.dome_y[0] if side == RIGHT else self.dome_y[1]

    def cp_y(self, side: int) -> float:
        return self.dome(side) + self.cp_drop

    def hilum(self, side: int) -> tuple[float, float]:
        """Frontal hilum point (x, y) of ``side``; the left hilum sits higher."""
        return side * (self.med_half + 0.10), (-0.08 if side == LEFT else -0.03)

    def lung_lateral_x(self, side: int, y: np.ndarray | float) -> np.ndarray | float:
        """|x| of the lateral pleura at height ``y`` (frontal): a quarter ellipse from the apex down."""
        xap = self.med_half + 0.2
        t = np.clip((y - self.apex_y) / (self.cp_y(side) - self.apex_y), 0.0, 1.0)
        return xap + (self.lung_half - xap) * np.sqrt(1.0 - (1.0 - t) ** 2)

    def heart_half_width(self) -> float:
        return self.ctr * self.lung_half  # CTR = heart width / inner thoracic width (2·lung_half)


def sample_patient(rng: np.random.Generator) -> Patient:
    """A plausible normal adult: each call a different habitus, heart, mediastinum and inspiration."""
    inspiration = rng.uniform(-1.0, 1.0)
    dome_r = 0.30 + 0.07 * inspiration + rng.normal(0, 0.015)
    return Patient(
        soft=float(rng.uniform(0.8, 1.3)),
        apex_y=float(rng.uniform(-0.78, -0.70)),
        dome_y=(float(dome_r), float(dome_r + rng.uniform(0.03, 0.08))),
        cp_drop=float(rng.uniform(0.16, 0.22)),
        lung_half=float(THORAX_HALF * rng.uniform(0.95, 1.04)),
        ctr=float(rng.uniform(0.39, 0.47)),
        heart_y=float(0.17 + 0.5 * (dome_r - 0.30) + rng.normal(0, 0.015)),
        heart_tilt=float(rng.uniform(0.15, 0.35)),
        med_half=float(rng.uniform(0.085, 0.105)),
        med_shift=float(rng.normal(0, 0.012)),
        knob=float(rng.uniform(0.7, 1.3)),
        breast=float(rng.uniform(0.6, 1.2)) if rng.random() < 0.45 else 0.0,
        bubble=float(rng.uniform(0.5, 1.2)) if rng.random() < 0.7 else 0.0,
        rib_phase=float(rng.uniform(-0.03, 0.03)),
        rib_spacing=float(rng.uniform(0.100, 0.114)),
        vessel_seed=int(rng.integers(0, 2**31 - 1)),
    )


# ---- shared profiles -------------------------------------------------------------------------
def _ellipsoid(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Projected thickness of an ellipsoid, normalised to 1 at the centre: sharp rim, rounded body."""
    r2 = ((X - cx) * (1.0 / rx)) ** 2 + ((Y - cy) * (1.0 / ry)) ** 2
    return np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))


def _capsule(X: np.ndarray, Y: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Distance from each point to the segment a–b."""
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    t = np.clip(((X - ax) * dx + (Y - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(X - ax - t * dx, Y - ay - t * dy)


def _add_segment(c: Canvas, a: tuple[float, float], b: tuple[float, float], half: float, amount: float) -> None:
    win = c.window(min(a[0], b[0]) - half, max(a[0], b[0]) + half, min(a[1], b[1]) - half, max(a[1], b[1]) + half)
    if win is None:
        return
    d = _capsule(c.X[win], c.Y[win], a, b)
    c.density[win] += amount * np.sqrt(np.clip(1.0 - (d / half) ** 2, 0.0, 1.0))


# ---- frontal ---------------------------------------------------------------------------------
def _frontal_body(c: Canvas, p: Patient) -> None:
    X, Y = c.X, c.Y
    ax = np.abs(X)
    half = 0.26 + (0.90 + 0.12 * p.soft - 0.26) * np.clip((Y + 0.98) / 0.3, 0.0, 1.0) ** 0.7
    half = half + 0.35 * np.exp(-(((Y + 0.74) / 0.16) ** 2))  # shoulders
    profile = np.sqrt(np.clip(1.0 - (ax / half) ** 2, 0.0, 1.0))
    c.density += (0.56 + 0.10 * p.soft) * profile ** 0.5 + 0.04 * ramp(half - ax, 0.03)


def _frontal_lungs(c: Canvas, p: Patient) -> None:
    for side in SIDES:
        ya, ycp, ydome = p.apex_y, p.cp_y(side), p.dome(side)
        xmax = p.lung_half
        shift = p.med_shift * side
        xmed = p.med_half + 0.012 - shift
        win = c.window(min(0, side) * (xmax + 0.04), max(0, side) * (xmax + 0.04), ya - 0.03, ycp + 0.03)
        if win is None:
            continue
        xs, Y = side * c.X[win], c.Y[win]
        lat = p.lung_lateral_x(side, Y)
        t = np.clip((Y - ya) / (0.28 * (ycp - ya)), 0.0, 1.0)
        xap = p.med_half + 0.2
        med = xap - (xap - xmed) * np.sqrt(1.0 - (1.0 - t) ** 2)
        xpk = 0.52 * xmax
        lateral_part = np.clip((xs - xpk) / (xmax - xpk), 0.0, None) ** 2 * (ycp - ydome)
        medial_part = np.clip((xpk - xs) / (xpk - xmed), 0.0, None) ** 2 * 0.07
        ydia = ydome + lateral_part + medial_part
        a_, b_ = xs - lat, ya - Y
        f_pleura = 0.5 * (a_ + b_ + np.sqrt((a_ - b_) ** 2 + 0.004))  # smooth max: a rounded apex
        f = np.maximum(np.maximum(f_pleura, med - xs), Y - ydia)
        mask = ramp(0.008 - f, 0.016)
        heart = ramp(heart_profile(p, c.X[win], Y), 0.15)
        c.lung[side][win] = mask * (1.0 - 0.9 * heart)  # aerated: the heart displaces lung
        c.pleura[side][win] = f_pleura
        air = mask * (0.5 + 0.5 * ramp(-f, 0.14)) * (1.0 - 0.9 * heart)
        c.density[win] -= 0.56 * air
        rng = np.random.default_rng([p.vessel_seed, side + 2])
        c.density[win] += 0.03 * smooth_noise(rng, xs.shape, 18) * mask
        hx, hy = p.hilum(side)
        tree = vessel_layer(c, (hx, hy), side, int(rng.integers(0, TREE_POOL)))[win]
        hilar = np.exp(-(((c.X[win] - hx) ** 2 + (Y - hy) ** 2) * (1.0 / 0.09 ** 2)))
        c.markings[win] += mask * (tree * 0.15 + 0.12 * hilar) * (1.0 - 0.6 * heart)


def heart_profile(p: Patient, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Frontal cardiac silhouette: a tilted ellipsoid, two thirds left of the midline, on the diaphragm."""
    hw = p.heart_half_width()
    cx = p.med_shift + hw * 0.28
    ca, sa = np.cos(p.heart_tilt + 0.35), np.sin(p.heart_tilt + 0.35)
    a = hw / np.sqrt(ca * ca + 0.45 * sa * sa)  # long axis (apex down-left on the patient)
    dx, dy = X - cx, Y - p.heart_y
    u, v = ca * dx + sa * dy, -sa * dx + ca * dy
    r2 = (u * (1.0 / a)) ** 2 + (v * (1.0 / (0.67 * a))) ** 2
    return np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))


TREE_POOL = 32


@lru_cache(maxsize=4)
def _tree_pool(n: int) -> tuple[np.ndarray, ...]:
    """``TREE_POOL`` left-lung vessel trees rooted at the centre of an (n, n) raster, drawn once per size."""
    from cxr.phantom.canvas import Pose, View

    ref = Canvas(View.FRONTAL, n, Pose(scale=0.95))
    trees = []
    for k in range(TREE_POOL):
        img = Image.new("L", (n, n), 0)
        vessel_tree(ref, ImageDraw.Draw(img), (0.0, 0.0), LEFT, np.random.default_rng([7919, n, k]))
        arr = np.asarray(img.filter(ImageFilter.GaussianBlur(0.8)), dtype=np.float32) * (1.0 / 255.0)
        arr.setflags(write=False)
        trees.append(arr)
    return tuple(trees)


def vessel_layer(c: Canvas, hilum: tuple[float, float], side: int, index: int) -> np.ndarray:
    """Tree ``index`` of the pool moved to ``hilum`` (mirrored for the right lung), as an (n, n) layer."""
    src = _tree_pool(c.n)[index]
    if side == RIGHT:
        src = src[:, ::-1]
    col, row = c.to_pixel(*hilum)
    dc, dr = int(np.rint(col - (c.n / 2 - 0.5))), int(np.rint(row - (c.n / 2 - 0.5)))
    out = np.zeros((c.n, c.n), np.float32)
    n = c.n
    out[max(dr, 0):n + min(dr, 0), max(dc, 0):n + min(dc, 0)] = src[max(-dr, 0):n - max(dr, 0), max(-dc, 0):n - max(dc, 0)]
    return out


def vessel_tree(c: Canvas, draw: ImageDraw.ImageDraw, hilum: tuple[float, float], side: int,
                rng: np.random.Generator, branches: int = 7) -> None:
    """Branching pulmonary vessels drawn from the hilum: each branch splits in two, thinner and fainter."""
    stack = []
    for a in np.linspace(-1.9, 1.4, branches) + rng.normal(0, 0.12, branches):
        x0, y0 = hilum[0] + side * 0.04 * np.cos(a), hilum[1] + 0.04 * np.sin(a)
        stack.append((x0, y0, float(a), rng.uniform(0.13, 0.2) * (1.3 if a > 0.6 else 1.0), 0.016, 255.0, 0))
    while stack:
        x, y, a, length, width, value, depth = stack.pop()
        a += rng.normal(0, 0.15)
        x2 = x + side * length * np.cos(a)
        y2 = y + length * np.sin(a)
        p0, p1 = c.to_pixel(x, y), c.to_pixel(x2, y2)
        draw.line([p0, p1], fill=int(value), width=max(1, round(c.px(width))))
        if depth < 4:
            spread = rng.uniform(0.25, 0.55)
            for sign in (-1.0, 1.0):
                stack.append((x2, y2, a + sign * spread * rng.uniform(0.6, 1.2), length * rng.uniform(0.55, 0.75),
                              width * 0.7, value * 0.78, depth + 1))


def _frontal_mediastinum(c: Canvas, p: Patient) -> None:
    X, Y = c.X, c.Y
    xm = p.med_shift
    win = c.window(-0.4, 0.4, -1.0, 0.35)
    if win is not None:
        Xw, Yw = X[win], Y[win]
        half = p.med_half * (0.75 + 0.25 * ramp(Yw + 0.75, 0.2)) + 0.05 * ramp(Yw + 0.05, 0.35)
        c.density[win] += 0.14 * np.sqrt(np.clip(1.0 - ((Xw - xm) / half) ** 2, 0.0, 1.0)) * ramp(0.45 - Yw, 0.1)
    # aortic knob on the patient's left
    kx, ky = xm + p.med_half + 0.015, -0.36
    win = c.window(kx - 0.09, kx + 0.09, ky - 0.08, ky + 0.08)
    if win is not None:
        c.density[win] += 0.08 * p.knob * _ellipsoid(X[win], Y[win], kx - 0.02, ky, 0.055 * p.knob, 0.05)
    # heart: displaces lung (see _frontal_lungs) and adds its own thickness
    hw = p.heart_half_width()
    win = c.window(p.med_shift - hw - 0.3, p.med_shift + hw + 0.3, p.heart_y - 0.4, p.heart_y + 0.4)
    if win is not None:
        heart = heart_profile(p, c.X[win], c.Y[win])
        c.density[win] += 0.06 * heart * ramp(p.dome(LEFT) - c.Y[win], 0.06)
    # trachea and main bronchi: dark air column
    tx = xm * 0.5
    carina = (tx, -0.22)
    for a, b, half, amount in (((tx, -1.05), carina, 0.036, -0.16),
                               (carina, (tx - 0.13, -0.10), 0.024, -0.07),
                               (carina, (tx + 0.15, -0.14), 0.022, -0.07)):
        _add_segment(c, a, b, half, amount)


def _frontal_bones(c: Canvas, p: Patient) -> None:
    # spine: vertebral bodies with disc spaces, seen faintly through the mediastinum
    win = c.window(-0.15, 0.15, -1.0, 1.0)
    if win is not None:
        Xw, Yw = c.X[win], c.Y[win]
        f = ((Yw + 1.2) / (0.085 + 0.02 * (Yw + 1) / 2) + p.rib_phase * 10) % 1.0
        body = np.sqrt(np.clip(1.0 - (Xw / 0.075) ** 2, 0.0, 1.0))
        c.density[win] += body * (0.03 + 0.03 * ramp(np.minimum(f - 0.15, 0.95 - f), 0.08))
    # posterior and anterior ribs: bands of a warped height coordinate
    y0, y1 = p.apex_y - 0.12, max(p.cp_y(RIGHT), p.cp_y(LEFT)) + 0.15
    win = c.window(-1.0, 1.0, y0, y1)
    if win is not None:
        Xw, Yw = c.X[win], c.Y[win]
        xs = np.abs(Xw)
        lat = p.lung_half + 0.05
        outer = np.maximum(p.lung_lateral_x(RIGHT, Yw), p.lung_lateral_x(LEFT, Yw)) + 0.07
        cage = ramp(outer - xs, 0.03) * ramp(xs - 0.05, 0.05) * ramp(Yw - y0, 0.08) * ramp(y1 - Yw, 0.1)
        arc = -0.16 * xs + 0.62 * xs * xs
        h = Yw - arc - (p.apex_y - 0.05) + p.rib_phase
        q = h / p.rib_spacing - 0.9 * h * h
        gap = np.zeros_like(q)
        for fr in p.fractures:
            on_side = (Xw * fr.side) > 0
            near = np.abs(q - fr.rib - 0.2) < 0.5
            beyond = on_side & near & (xs > fr.x)
            q = q - fr.step * beyond
            gap = np.maximum(gap, on_side * near * ramp(fr.gap - np.abs(xs - fr.x), fr.gap * 0.4))
        f = q - np.floor(q)
        width = 0.40
        rib = ramp(np.minimum(f, width - f), 0.06) * (q > 0.5)
        cortex = ramp(0.05 - np.abs(f - width + 0.03), 0.04)  # bright inferior cortex
        posterior = (rib * 0.10 + cortex * 0.05) * (1.0 - gap) - 0.025 * gap * rib
        h2 = Yw + 0.50 * (xs - lat) - (p.apex_y + 0.05) + p.rib_phase
        f2 = (h2 / (p.rib_spacing * 1.55)) % 1.0
        anterior = ramp(np.minimum(f2, 0.32 - f2), 0.05) * ramp(xs - 0.3, 0.1) * 0.045
        c.density[win] += cage * (posterior + anterior)
    # clavicles and humeral heads
    for side in SIDES:
        win = c.window(min(0, side) * 0.95, max(0, side) * 0.95, -1.0, -0.5)
        if win is None:
            continue
        xs, Yw = side * c.X[win], c.Y[win]
        yc = p.apex_y + 0.12 - 0.30 * (xs - 0.07) - 0.05 * np.sin((xs - 0.07) * 9.0)
        along = ramp(xs - 0.06, 0.02) * ramp(0.72 - xs, 0.03)
        c.density[win] += 0.16 * along * np.sqrt(np.clip(1.0 - ((Yw - yc) / 0.032) ** 2, 0.0, 1.0))
        c.density[win] += 0.20 * _ellipsoid(xs, Yw, 0.98, -0.78, 0.15, 0.14)


def _frontal_extras(c: Canvas, p: Patient) -> None:
    if p.bubble > 0:
        by = p.dome(LEFT) + 0.08
        win = c.window(0.2, 0.7, by - 0.1, by + 0.1)
        if win is not None:
            c.density[win] -= 0.22 * ramp(_ellipsoid(c.X[win], c.Y[win], 0.42, by, 0.09 * p.bubble, 0.05 * p.bubble), 0.3)
    if p.breast > 0:
        for side in SIDES:
            by = max(p.dome(side), 0.3) + 0.05
            win = c.window(min(0, side) * 1.0, max(0, side) * 1.0, by - 0.45, by + 0.35)
            if win is None:
                continue
            xs, Yw = side * c.X[win], c.Y[win]
            r = _ellipsoid(xs, Yw, 0.55, by, 0.42 * p.breast ** 0.3, 0.30 * p.breast ** 0.3)
            c.density[win] += 0.06 * p.breast * ramp(r, 0.5) * ramp(Yw - by + 0.35, 0.3)


def paint_frontal(c: Canvas, p: Patient) -> None:
    """Normal PA anatomy; patient's left on the image right."""
    _frontal_body(c, p)
    _frontal_lungs(c, p)
    _frontal_mediastinum(c, p)
    _frontal_bones(c, p)
    _frontal_extras(c, p)


# ---- lateral ---------------------------------------------------------------------------------
# Lateral X (=: z) runs anterior (−1, image left) → posterior (+1).
SPINE_Z = 0.50
STERNUM_Z = -0.66


def lateral_dome(p: Patient, side: int, z: np.ndarray | float) -> np.ndarray | float:
    """Height of a hemidiaphragm on the lateral view; the posterior costophrenic sulcus is the deepest."""
    ydome = p.dome(side) - 0.02
    post = np.clip((z + 0.15) / 0.85, 0.0, None) ** 2 * (p.cp_drop + 0.12)
    ant = np.clip((-0.15 - z) / 0.5, 0.0, None) ** 2 * 0.08
    return ydome + post + ant


def lateral_heart(p: Patient, Z: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Lateral cardiac silhouette: anterior-inferior, against the lower sternum, on the diaphragm."""
    scale = (p.ctr / 0.45) ** 0.9
    hz, hy = -0.30 + 0.06 * (scale - 1), p.heart_y + 0.05
    return _ellipsoid(Z + 0.3 * (Y - hy), Y, hz, hy, 0.31 * scale, 0.25 * scale ** 0.6)


def _lateral_body(c: Canvas, p: Patient) -> None:
    Z, Y = c.X, c.Y
    front = -0.60 - 0.10 * p.soft - 0.06 * np.cos(1.3 * (Y - 0.1)) + 0.45 * np.clip((-0.70 - Y) / 0.3, 0.0, 1.0) ** 1.5
    back = 0.74 + 0.06 * p.soft - 0.04 * Y - 0.22 * np.clip((-0.82 - Y) / 0.25, 0.0, 1.0)
    mid, half = (front + back) / 2, (back - front) / 2
    prof = np.sqrt(np.clip(1.0 - ((Z - mid) / half) ** 2, 0.0, 1.0))
    shoulders = 0.18 * ramp(-0.40 - Y, 0.35)  # the shoulder girdle over the apices
    c.density += (0.80 + 0.08 * p.soft + shoulders) * prof ** 0.4


def _lateral_lungs(c: Canvas, p: Patient) -> None:
    for side in SIDES:
        ya = p.apex_y - 0.02
        win = c.window(-0.8, 0.85, ya - 0.03, p.cp_y(side) + 0.2)
        if win is None:
            continue
        Z, Y = c.X[win], c.Y[win]
        t = np.clip((Y - ya) / 0.35, 0.0, 1.0)
        front = STERNUM_Z + 0.05 + 0.45 * (1.0 - np.sqrt(1.0 - (1.0 - t) ** 2)) - 0.04 * side
        back = 0.70 - 0.35 * (1.0 - np.sqrt(1.0 - (1.0 - t) ** 2))
        f = np.maximum(np.maximum(front - Z, Z - back), np.maximum(Y - lateral_dome(p, side, Z), ya - Y))
        mask = ramp(0.015 - f, 0.03)
        c.lung[side][win] = mask
        c.pleura[side][win] = np.maximum(Z - back, ya - Y)
        heart = ramp(lateral_heart(p, Z, Y), 0.6)
        c.density[win] -= 0.30 * mask * (0.45 + 0.55 * ramp(-f, 0.2)) * (1.0 - 0.6 * heart)
        rng = np.random.default_rng([p.vessel_seed, side + 7])
        c.density[win] += 0.03 * smooth_noise(rng, Z.shape, 16) * mask
    # hila and a vessel tree fanning out from them
    win = c.window(-0.8, 0.85, p.apex_y, 0.7)
    if win is not None:
        Z, Y = c.X[win], c.Y[win]
        rng = np.random.default_rng([p.vessel_seed, 11])
        tree = np.maximum(vessel_layer(c, (0.02, -0.06), RIGHT, int(rng.integers(0, TREE_POOL))),
                          vessel_layer(c, (0.02, -0.06), LEFT, int(rng.integers(0, TREE_POOL))))[win]
        lung = np.maximum(c.lung[RIGHT][win], c.lung[LEFT][win])
        hilar = np.exp(-(((Z - 0.02) / 0.12) ** 2 + ((Y + 0.06) / 0.10) ** 2))
        c.markings[win] += lung * tree * 0.10 + 0.14 * hilar


def _lateral_mediastinum(c: Canvas, p: Patient) -> None:
    win = c.window(-0.8, 0.2, p.heart_y - 0.5, p.heart_y + 0.5)
    if win is not None:
        c.density[win] += 0.05 * lateral_heart(p, c.X[win], c.Y[win]) * ramp(p.dome(LEFT) + 0.05 - c.Y[win], 0.1)
    # ascending aorta, arch and descending aorta; the retrosternal space stays clear
    for a, b, half, amount in (((-0.22, -0.02), (-0.14, -0.36), 0.075, 0.12),
                               ((-0.14, -0.36), (0.08, -0.44), 0.065, 0.10),
                               ((0.08, -0.44), (0.28, -0.30), 0.06, 0.09),
                               ((0.28, -0.30), (0.33, 0.35), 0.05, 0.06)):
        _add_segment(c, a, b, half, amount)
    # trachea: oblique dark column
    _add_segment(c, (-0.10, -1.05), (0.04, -0.18), 0.045, -0.14)


def _lateral_bones(c: Canvas, p: Patient) -> None:
    win = c.window(0.2, 1.0, -1.0, 1.0)
    if win is not None:
        Z, Y = c.X[win], c.Y[win]
        zs = SPINE_Z + 0.06 * (1 - ((Y - 0.05) / 0.9) ** 2)  # thoracic kyphosis
        f = ((Y + 1.2) / (0.095 + 0.025 * (Y + 1) / 2) + p.rib_phase * 10) % 1.0
        across = ramp(0.10 - np.abs(Z - zs), 0.025)
        body = across * ramp(np.minimum(f - 0.16, 0.96 - f), 0.07)
        cortex = across * ramp(0.06 - np.abs(f - 0.18), 0.04) + across * ramp(0.06 - np.abs(f - 0.94), 0.04)
        spine = 0.07 * body + 0.03 * cortex
        # lower thoracic bodies look darker (less overlying soft tissue): the normal "spine sign"
        spine *= 1.0 - 0.35 * ramp(Y - 0.0, 0.5)
        posterior = 0.05 * ramp(0.18 - np.abs(Z - zs - 0.24), 0.05) * ramp(np.minimum(f - 0.3, 0.8 - f), 0.1)
        c.density[win] += spine + posterior
        # posterior ribs: oblique faint bands
        fr = ((Y - 0.45 * Z) / 0.14 + p.rib_phase * 5) % 1.0
        c.density[win] += 0.045 * ramp(np.minimum(fr, 0.35 - fr), 0.05) * ramp(Z - 0.15, 0.2) * ramp(0.45 - Y, 0.2)
    # sternum
    win = c.window(STERNUM_Z - 0.08, STERNUM_Z + 0.1, -0.7, 0.3)
    if win is not None:
        Z, Y = c.X[win], c.Y[win]
        zsn = STERNUM_Z + 0.02 - 0.06 * (Y + 0.2) ** 2
        c.density[win] += 0.14 * ramp(0.028 - np.abs(Z - zsn), 0.012) * ramp(Y + 0.62, 0.05) * ramp(0.22 - Y, 0.05)


def paint_lateral(c: Canvas, p: Patient) -> None:
    """Normal lateral anatomy; anterior on the image left."""
    _lateral_body(c, p)
    _lateral_lungs(c, p)
    _lateral_mediastinum(c, p)
    _lateral_bones(c, p)
    if p.bubble > 0:
        by = p.dome(LEFT) + 0.09
        win = c.window(-0.5, 0.2, by - 0.1, by + 0.1)
        if win is not None:
            c.density[win] -= 0.25 * ramp(_ellipsoid(c.X[win], c.Y[win], -0.15, by, 0.1 * p.bubble, 0.05 * p.bubble), 0.3)
