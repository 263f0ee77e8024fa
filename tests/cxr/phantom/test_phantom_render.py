"""Rendering: determinism, shapes, and each observation's signature where (and how strongly) it belongs.

Differences are taken against the same study rendered without the finding (same patient and pose,
no noise). PA frontal convention: the patient's LEFT is the image RIGHT.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cxr.observations import Observation as O
from cxr.phantom.generate import encode_png
from cxr.phantom.render import PhantomConfig, render_study
from cxr.phantom.spec import Certainty, Detail, Region
from cxr.phantom.spec import FindingSpec as F
from cxr.phantom.spec import Laterality as L
from cxr.phantom.spec import Severity as S

CLEAN = PhantomConfig(size=256, noise=0.0)
STUDY = "CXR1000_IM-0003"


def _diff(specs, study: str = STUDY, view: int = 0, config: PhantomConfig = CLEAN) -> np.ndarray:
    base = render_study([], study, config, n_views=2)[view].astype(np.float64)
    return render_study(specs, study, config, n_views=2)[view].astype(np.float64) - base


def _halves(d: np.ndarray, rows=slice(None), centre: float = 0.0) -> tuple[float, float]:
    """Summed |difference| on the image left (patient right) and image right (patient left),
    leaving out a central band ``centre`` (fraction of the width) wide."""
    w = d.shape[1]
    a, b = int(w * (0.5 - centre / 2)), int(w * (0.5 + centre / 2))
    return float(np.abs(d[rows, :a]).sum()), float(np.abs(d[rows, b:]).sum())


def test_same_inputs_same_bytes_and_seed_changes_them():
    specs = [F(O.PLEURAL_EFFUSION, laterality=L.LEFT), F(O.SUPPORT_DEVICES)]
    a = [encode_png(x) for x in render_study(specs, STUDY, PhantomConfig(size=128))]
    b = [encode_png(x) for x in render_study(specs, STUDY, PhantomConfig(size=128))]
    c = [encode_png(x) for x in render_study(specs, STUDY, PhantomConfig(size=128, seed=1))]
    d = [encode_png(x) for x in render_study(specs, "CXR2_IM-0652", PhantomConfig(size=128))]
    assert a == b
    assert a[0] != c[0] and a[0] != d[0]


def test_views_shapes_and_png_round_trip():
    images = render_study([], STUDY, PhantomConfig(size=160), n_views=3)
    assert [im.shape for im in images] == [(160, 160)] * 3 and all(im.dtype == np.uint8 for im in images)
    assert not np.array_equal(images[0], images[1])  # frontal vs lateral
    assert np.abs(images[0].astype(int) - images[2]).mean() < 40  # a second frontal: same patient, new pose
    decoded = Image.open(io.BytesIO(encode_png(images[0])))
    assert decoded.mode == "L" and np.array_equal(np.asarray(decoded), images[0])


def test_normals_vary_between_studies():
    a, b = (render_study([], s, CLEAN, 1)[0].astype(int) for s in ("CXR1_1_IM-0001", "CXR2_IM-0652"))
    assert np.abs(a - b).mean() > 5


def test_no_finding_draws_nothing():
    assert np.abs(_diff([F(O.NO_FINDING)])).max() == 0


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="size"):
        PhantomConfig(size=8)
    with pytest.raises(ValueError, match="faint"):
        PhantomConfig(faint=0)


def test_cardiomegaly_widens_the_bright_cardiac_silhouette():
    def silhouette_width(img: np.ndarray) -> int:
        band = img[int(0.55 * img.shape[0]):int(0.62 * img.shape[0])].mean(axis=0)
        centre = img.shape[1] // 2
        bright = band > np.percentile(band[centre - 10:centre + 10], 50) * 0.85
        left = right = centre
        while left > 0 and bright[left - 1]:
            left -= 1
        while right < len(bright) - 1 and bright[right + 1]:
            right += 1
        return right - left

    normal = render_study([], STUDY, CLEAN, 1)[0]
    big = render_study([F(O.CARDIOMEGALY, severity=S.LARGE)], STUDY, CLEAN, 1)[0]
    assert silhouette_width(big) > silhouette_width(normal) * 1.2
    d = big.astype(float) - normal
    h, w = d.shape
    assert d[int(0.45 * h):int(0.75 * h), int(0.5 * w):int(0.8 * w)].mean() > 10  # grows to the patient's left


def test_enlarged_cardiomediastinum_brightens_the_upper_mediastinum_edges():
    d = _diff([F(O.ENLARGED_CARDIOMEDIASTINUM, severity=S.LARGE)])
    h, w = d.shape
    assert d[int(0.2 * h):int(0.45 * h), int(0.35 * w):int(0.65 * w)].mean() > 5


@pytest.mark.parametrize("side", [L.LEFT, L.RIGHT])
def test_effusion_is_basal_and_on_the_named_side(side):
    d = _diff([F(O.PLEURAL_EFFUSION, laterality=side, severity=S.MODERATE)])
    h = d.shape[0]
    right_patient, left_patient = _halves(d, slice(h // 2, None))
    named, other = (left_patient, right_patient) if side is L.LEFT else (right_patient, left_patient)
    assert named > 20 * max(other, 1.0)
    assert d[: int(0.35 * h)].__abs__().sum() < 0.02 * np.abs(d).sum()  # nothing in the upper zones
    assert (d >= -1).all()  # fluid only adds density
    lat = _diff([F(O.PLEURAL_EFFUSION, laterality=side, severity=S.MODERATE)], view=1)
    assert lat[h // 2:, d.shape[1] // 2:].sum() > lat[h // 2:, : d.shape[1] // 2].sum()  # posterior angle


def test_effusion_severity_is_monotonic_and_uncertain_is_fainter():
    sums = [_diff([F(O.PLEURAL_EFFUSION, laterality=L.RIGHT, severity=s)]).sum()
            for s in (S.SMALL, S.MODERATE, S.LARGE)]
    assert sums[0] < sums[1] < sums[2]
    faint = _diff([F(O.PLEURAL_EFFUSION, certainty=Certainty.UNCERTAIN, laterality=L.RIGHT, severity=S.MODERATE)])
    assert 0 < faint.sum() < 0.7 * sums[1]


def test_pneumothorax_darkens_the_named_apex_and_draws_a_pleural_line():
    d = _diff([F(O.PNEUMOTHORAX, laterality=L.RIGHT, severity=S.MODERATE)])
    h, w = d.shape
    upper_right_lung = d[: h // 2, : w // 2]
    assert upper_right_lung.min() < -8 and upper_right_lung.max() > 8  # lucent space and the bright line
    assert np.abs(d[:, w // 2:]).sum() < 0.02 * np.abs(d).sum()
    areas = [(_diff([F(O.PNEUMOTHORAX, laterality=L.RIGHT, severity=s)]) < -3).sum() for s in (S.SMALL, S.LARGE)]
    assert areas[0] < areas[1]


@pytest.mark.parametrize("obs", [O.CONSOLIDATION, O.PNEUMONIA, O.LUNG_OPACITY, O.LUNG_LESION, O.ATELECTASIS,
                                 O.PLEURAL_OTHER, O.FRACTURE])
@pytest.mark.parametrize("side", [L.LEFT, L.RIGHT])
def test_lateralised_findings_stay_on_their_side(obs, side):
    d = _diff([F(obs, laterality=side, severity=S.MODERATE)])
    right_patient, left_patient = _halves(d, centre=0.3)  # atelectasis may pull the mediastinum over
    named, other = (left_patient, right_patient) if side is L.LEFT else (right_patient, left_patient)
    assert named > 200, "signature too weak to see"
    assert named > 5 * other


@pytest.mark.parametrize("obs", [O.CONSOLIDATION, O.LUNG_LESION, O.ATELECTASIS, O.CARDIOMEGALY])
def test_uncertain_is_fainter_than_present(obs):
    present = np.abs(_diff([F(obs, laterality=L.LEFT, severity=S.MODERATE)])).sum()
    faint = np.abs(_diff([F(obs, certainty=Certainty.UNCERTAIN, laterality=L.LEFT, severity=S.MODERATE)])).sum()
    assert 0 < faint < 0.8 * present


def test_lesion_size_follows_severity():
    areas = [(_diff([F(O.LUNG_LESION, laterality=L.LEFT, severity=s)]) > 5).sum() for s in (S.SMALL, S.MODERATE, S.LARGE)]
    assert areas[0] < areas[1] < areas[2]


def test_upper_lobe_region_is_respected():
    d = _diff([F(O.CONSOLIDATION, laterality=L.LEFT, region=Region.UPPER)])
    h = d.shape[0]
    assert np.abs(d[: h // 2]).sum() > 3 * np.abs(d[h // 2:]).sum()


def test_edema_is_bilateral_and_perihilar():
    d = _diff([F(O.EDEMA, severity=S.MODERATE)])
    right_patient, left_patient = _halves(d)
    assert min(right_patient, left_patient) > 0.4 * max(right_patient, left_patient) > 0


@pytest.mark.parametrize("device", [Detail.PACEMAKER, Detail.ET_TUBE, Detail.STERNOTOMY, Detail.CENTRAL_LINE,
                                    Detail.ENTERIC_TUBE, Detail.CLIPS, Detail.HARDWARE])
def test_each_device_is_radiopaque_in_both_views(device):
    for view in (0, 1):
        d = _diff([F(O.SUPPORT_DEVICES, details=(device,))], view=view)
        assert d.max() > 25 and (d > 10).sum() > 10


def test_findings_overlap_without_moving_each_other():
    both = _diff([F(O.LUNG_LESION, laterality=L.RIGHT), F(O.PLEURAL_EFFUSION, laterality=L.LEFT)])
    lesion = _diff([F(O.LUNG_LESION, laterality=L.RIGHT)])
    h, w = both.shape
    assert np.array_equal(both[: h // 2, : w // 2], lesion[: h // 2, : w // 2])
