"""The drawing surface of one phantom view: body-coordinate grids, density layers and small raster helpers.

Body coordinates: frontal ``X`` runs from the patient's right (−1, image left on a PA film) to the
patient's left (+1); lateral ``X`` is the antero-posterior axis (−1 anterior, image left). ``Y`` runs
from the neck (−1) to the upper abdomen (+1) in both views, so a finding keeps its height across views.
Every array is (n, n) float32 at the work resolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

RIGHT, LEFT = -1, 1  # the sign of frontal X on the patient's side
SIDES = (RIGHT, LEFT)


class View(str, Enum):
    FRONTAL = "frontal"   # PA
    LATERAL = "lateral"


@dataclass(frozen=True)
class Pose:
    """Where the body lies on the detector: image = scale · rotate(angle) · body + (dx, dy)."""

    scale: float = 0.95
    dx: float = 0.0
    dy: float = 0.0
    angle: float = 0.0  # radians, in-plane


@lru_cache(maxsize=8)
def _pixel_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates in [-1, 1] of the pixel centres, (n, n) each; cached per size."""
    c = ((np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0).astype(np.float32)
    u, v = np.meshgrid(c, c)
    u.setflags(write=False)
    v.setflags(write=False)
    return u, v


@dataclass
class Canvas:
    view: View
    n: int
    pose: Pose
    X: np.ndarray = field(init=False)
    Y: np.ndarray = field(init=False)
    density: np.ndarray = field(init=False)    # attenuation, summed over layers
    markings: np.ndarray = field(init=False)   # lung vascular markings; composed last (pneumothorax erases them)
    lung: dict[int, np.ndarray] = field(init=False)    # aerated-lung fraction per side, in [0, 1]
    pleura: dict[int, np.ndarray] = field(init=False)  # ≈ signed distance to the lateral/apical pleura (<0 inside)
    wires: Image.Image = field(init=False)     # 'L' layer for tubes, lines, Kerley lines (0..255 = density)

    def __post_init__(self) -> None:
        u, v = _pixel_grid(self.n)
        p = self.pose
        c, s = np.cos(p.angle), np.sin(p.angle)
        uu, vv = (u - p.dx) / p.scale, (v - p.dy) / p.scale
        self.X = (c * uu + s * vv).astype(np.float32)
        self.Y = (-s * uu + c * vv).astype(np.float32)
        self.density = np.zeros((self.n, self.n), np.float32)
        self.markings = np.zeros((self.n, self.n), np.float32)
        self.lung = {side: np.zeros((self.n, self.n), np.float32) for side in SIDES}
        self.pleura = {side: np.ones((self.n, self.n), np.float32) for side in SIDES}
        self.wires = Image.new("L", (self.n, self.n), 0)

    # ---- coordinates -------------------------------------------------------------------------
    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Body (x, y) → pixel (col, row) at the work resolution."""
        p = self.pose
        c, s = np.cos(p.angle), np.sin(p.angle)
        u = p.scale * (c * x - s * y) + p.dx
        v = p.scale * (s * x + c * y) + p.dy
        return (u + 1.0) / 2.0 * self.n - 0.5, (v + 1.0) / 2.0 * self.n - 0.5

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice] | None:
        """Pixel slices covering the body box [x0, x1] × [y0, y1]; None when it falls off the image."""
        corners = [self.to_pixel(x, y) for x in (x0, x1) for y in (y0, y1)]
        cols = [c for c, _ in corners]
        rows = [r for _, r in corners]
        c0, c1 = max(int(min(cols)) - 2, 0), min(int(max(cols)) + 3, self.n)
        r0, r1 = max(int(min(rows)) - 2, 0), min(int(max(rows)) + 3, self.n)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def px(self, length: float) -> float:
        """A body-coordinate length in work pixels."""
        return length * self.pose.scale * self.n / 2.0

    def polyline(self, points: list[tuple[float, float]], width: float, value: int) -> None:
        """Draw body-coordinate points as a line ``width`` (body units) wide on the wires layer."""
        draw = ImageDraw.Draw(self.wires)
        xy = [self.to_pixel(x, y) for x, y in points]
        draw.line(xy, fill=int(value), width=max(1, round(self.px(width))), joint="curve")

    def ellipse(self, x: float, y: float, rx: float, ry: float, value: int, width: float | None = None) -> None:
        """A filled ellipse, or its outline ``width`` body units wide."""
        draw = ImageDraw.Draw(self.wires)
        cx, cy = self.to_pixel(x, y)
        ax, ay = self.px(rx), self.px(ry)
        box = (cx - ax, cy - ay, cx + ax, cy + ay)
        if width is not None:
            draw.ellipse(box, outline=int(value), width=max(1, round(self.px(width))))
        else:
            draw.ellipse(box, fill=int(value))

    def polygon(self, points: list[tuple[float, float]], value: int) -> None:
        ImageDraw.Draw(self.wires).polygon([self.to_pixel(x, y) for x, y in points], fill=int(value))


def ramp(a: np.ndarray, width: float) -> np.ndarray:
    """0 below 0, linear to 1 at ``width``: a cheap anti-aliased step."""
    return np.clip(a * (1.0 / width), 0.0, 1.0)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int = 6) -> np.ndarray:
    """Low-frequency noise in about [-1, 1] of ``shape``: a cells×cells random grid upsampled bilinearly."""
    h, w = shape
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    img = Image.fromarray(small).resize((max(w, 1), max(h, 1)), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) * 0.6


def bezier(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float],
           p3: tuple[float, float], steps: int = 24) -> list[tuple[float, float]]:
    """Points of a cubic Bézier curve, for tubes and leads."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    pts = ((1 - t) ** 3 * np.array(p0) + 3 * (1 - t) ** 2 * t * np.array(p1)
           + 3 * (1 - t) * t ** 2 * np.array(p2) + t ** 3 * np.array(p3))
    return [(float(x), float(y)) for x, y in pts]
