"""Pure renderer: finding specs + study id + config → uint8 grayscale views (frontal PA, lateral, …).

``render_study(specs, study_id, config, n_views=2)`` → list of (size, size) uint8 arrays; the same
(study id, seed, specs, config) always gives the same pixels. Random streams are split per purpose
(patient, pose, each observation, noise) so adding a finding never moves the anatomy.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops

from cxr.phantom.anatomy import Patient, paint_frontal, paint_lateral, sample_patient
from cxr.phantom.canvas import Canvas, Pose, View
from cxr.phantom.findings import FindingPlan, apply_plan, plan_findings
from cxr.phantom.seeding import study_rng
from cxr.phantom.spec import FindingSpec

PHANTOM_VERSION = "1"
"""Bump when the pictures change for the same (study, seed, config): resumed runs refuse to mix versions."""


@dataclass(frozen=True)
class PhantomConfig:
    size: int = 512               # output side, pixels
    seed: int = 0
    work_size: int = 0            # internal raster side; 0 → size // 2 (smooth layers, upsampled)
    noise: float = 1.0            # quantum-noise multiplier (0 = none)
    faint: float = 0.45           # uncertain findings are drawn at this fraction of full strength
    compress_level: int = 1       # PNG zlib level (Up filter + Z_RLE strategy: fast, small for noisy images)

    def __post_init__(self) -> None:
        if not 64 <= self.size <= 4096:
            raise ValueError(f"PhantomConfig.size must be in [64, 4096], got {self.size}")
        if self.work_size and not 32 <= self.work_size <= self.size:
            raise ValueError(f"PhantomConfig.work_size must be 0 or in [32, size], got {self.work_size}")
        if self.noise < 0:
            raise ValueError(f"PhantomConfig.noise must be >= 0, got {self.noise}")
        if not 0.0 < self.faint <= 1.0:
            raise ValueError(f"PhantomConfig.faint must be in (0, 1], got {self.faint}")
        if not 0 <= self.compress_level <= 9:
            raise ValueError(f"PhantomConfig.compress_level must be in [0, 9], got {self.compress_level}")

    @property
    def grid(self) -> int:
        return self.work_size or max(32, self.size // 2)

    def to_dict(self) -> dict:
        return asdict(self)


def view_kinds(n_views: int) -> list[View]:
    """First frontal, then alternating lateral / frontal variants."""
    return [View.FRONTAL if i % 2 == 0 else View.LATERAL for i in range(n_views)]


@dataclass(frozen=True)
class Exposure:
    """Per-view acquisition look: film latitude (gain), window, gamma and noise level."""

    gain: float
    low: float
    high: float
    gamma: float
    noise: float  # standard deviation, in 8-bit grey levels


def sample_pose(rng: np.random.Generator, view: View) -> Pose:
    return Pose(scale=float(rng.uniform(0.90, 1.02) if view is View.FRONTAL else rng.uniform(0.86, 0.97)),
                dx=float(rng.normal(0, 0.025)), dy=float(rng.normal(0.0, 0.025)),
                angle=float(rng.normal(0, 0.025)))


def sample_exposure(rng: np.random.Generator, view: View) -> Exposure:
    base = 1.55 if view is View.FRONTAL else 1.35
    return Exposure(gain=float(base * rng.uniform(0.85, 1.15)), low=float(rng.uniform(0.02, 0.12)),
                    high=float(rng.uniform(0.90, 1.0)), gamma=float(rng.uniform(0.85, 1.25)),
                    noise=float(rng.uniform(1.2, 3.5)))


LUT_RANGE = 2.5       # densities above this display as white anyway
LUT_SIZE = 4096


@lru_cache(maxsize=8)
def _noise_tile(size: int, sigma_q: int) -> Image.Image:
    """A fixed (2·size)² Gaussian field of σ = sigma_q / 4 grey levels around 128 ('L'); views crop it."""
    field = np.random.default_rng([20240601, size]).standard_normal((2 * size, 2 * size), dtype=np.float32)
    return Image.fromarray(np.clip(field * (sigma_q / 4.0) + 128.5, 0, 255).astype(np.uint8))


def display_lut(exposure: Exposure) -> np.ndarray:
    """Density → 0…255: film response 1 − exp(−gain·D), then window [low, high] and gamma."""
    d = np.linspace(0.0, LUT_RANGE, LUT_SIZE, dtype=np.float64)
    shown = np.clip((1.0 - np.exp(-exposure.gain * d) - exposure.low) / (exposure.high - exposure.low), 0.0, 1.0)
    return (shown ** exposure.gamma * 255.0 + 0.5).astype(np.uint8)


def compose(c: Canvas, exposure: Exposure, size: int, noise_scale: float, rng: np.random.Generator) -> np.ndarray:
    """Density layers → display LUT → upsampled to ``size`` → quantum noise → (size, size) uint8."""
    density = c.density + c.markings
    if c.wires.getbbox() is not None:
        density += np.asarray(c.wires, dtype=np.float32) * (1.0 / 255.0)
    index = np.clip(density * ((LUT_SIZE - 1) / LUT_RANGE), 0, LUT_SIZE - 1).astype(np.intp)
    img = Image.fromarray(display_lut(exposure)[index])
    if c.n != size:
        img = img.resize((size, size), Image.BILINEAR)
    sigma_q = int(np.rint(exposure.noise * noise_scale * 4))
    if sigma_q > 0:
        r0, c0 = (int(v) for v in rng.integers(0, size, 2))
        noise = _noise_tile(size, sigma_q).crop((c0, r0, c0 + size, r0 + size))
        img = ImageChops.add(img, noise, scale=1.0, offset=-128)  # saturating
    return np.asarray(img)


def render_canvases(specs: Sequence[FindingSpec], study_id: str, config: PhantomConfig,
                    n_views: int = 2) -> tuple[Patient, FindingPlan, list[Canvas]]:
    """Everything before compositing: the patient, the finding plan and one painted canvas per view."""
    patient = sample_patient(study_rng(study_id, config.seed, "patient"))
    plan = plan_findings(specs, patient, study_id, config.seed, config.faint)
    canvases = []
    for i, view in enumerate(view_kinds(n_views)):
        canvas = Canvas(view, config.grid, sample_pose(study_rng(study_id, config.seed, "pose", i), view))
        (paint_frontal if view is View.FRONTAL else paint_lateral)(canvas, plan.patient)
        apply_plan(canvas, plan)
        canvases.append(canvas)
    return patient, plan, canvases


def render_study(specs: Sequence[FindingSpec], study_id: str, config: PhantomConfig = PhantomConfig(),
                 n_views: int = 2) -> list[np.ndarray]:
    """Render ``n_views`` images (frontal, lateral, frontal, …) of one study as (size, size) uint8 arrays."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    _, _, canvases = render_canvases(specs, study_id, config, n_views)
    images = []
    for i, canvas in enumerate(canvases):
        exposure = sample_exposure(study_rng(study_id, config.seed, "exposure", i), canvas.view)
        images.append(compose(canvas, exposure, config.size, config.noise,
                              study_rng(study_id, config.seed, "noise", i)))
    return images
