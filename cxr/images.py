"""Chest X-ray files (PNG, JPEG or DICOM) → 8-bit grayscale views → the model's input tensors.

Decoding: a file or in-memory upload → ``PIL.Image`` mode "L". DICOM: stored values → pydicom's
Modality LUT → pydicom's VOI LUT (a VOI LUT sequence or the window; min-max of the data without
either) → MONOCHROME1 inverted → uint8. A 16-bit PNG: scaled by the bit depth its values use
(``stored_range``). Every failure is a ``DataError`` that names the file.
Preparation (the one copy training and serving share): views (H, W) uint8 of any size →
``stack_views`` (V, S, S) uint8 + (V,) valid mask → ``normalise`` (V, 1, S, S) float32.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxr.records import DataError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

RASTER_FORMATS = frozenset({"PNG", "JPEG", "MPO"})   # MPO: JPEG with extra frames
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"}) | DICOM_SUFFIXES
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as PIL's convert("L")


def is_dicom(path: Path) -> bool:
    """A ``.dcm`` / ``.dicom`` name or the ``DICM`` magic after the 128-byte preamble."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with path.open("rb") as fh:
        head = fh.read(132)
    return head[128:132] == b"DICM"


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an 8-bit grayscale image (mode "L")."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        dicom = is_dicom(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read image file ({exc})") from exc
    if dicom:
        return Image.fromarray(dicom_to_uint8(path))
    return _load_raster(path)


def decode_image_bytes(data: bytes, name: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Decode an in-memory PNG, JPEG or DICOM (e.g. an upload) into mode "L"; ``name`` labels errors.

    ``max_pixels`` is checked from the header, before any pixel is decoded (decompression bombs).
    """
    if not data:
        raise DataError(f"{name}: empty image data")
    if data[128:132] == b"DICM":
        return Image.fromarray(dicom_to_uint8(io.BytesIO(data), max_pixels, name))
    return _load_raster(io.BytesIO(data), max_pixels, name)


class ImageTooLargeError(DataError):
    """An image over a pixel limit (uploads): refused before its pixels are decoded."""


def _check_pixels(pixels: int, max_pixels: int | None, name: object) -> None:
    if max_pixels is not None and pixels > max_pixels:
        raise ImageTooLargeError(f"{name}: image has {pixels:,} pixels, over the limit of {max_pixels:,}")


def _load_raster(path: Path | BinaryIO, max_pixels: int | None = None, name: str | None = None) -> Image.Image:
    label = name or path
    try:
        with Image.open(path) as img:
            if img.format not in RASTER_FORMATS:
                raise DataError(f"{label}: unsupported image format {img.format}; "
                                "expected PNG, JPEG or DICOM")
            _check_pixels(img.width * img.height, max_pixels, label)
            img.load()
            return _to_gray8(img)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{label}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{label}: unsupported or unrecognised image format "
                        "(expected PNG, JPEG or DICOM)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{label}: corrupt or truncated image ({exc})") from exc


def _to_gray8(img: Image.Image) -> Image.Image:
    if img.mode == "L":
        return img.copy()
    if img.mode.startswith("I;16"):   # 16-bit grayscale PNG: its used bit depth → 0..255
        data = np.asarray(img, dtype=np.float64)
        return Image.fromarray(_to_uint8(data * (255.0 / stored_range(data))))
    if img.mode in {"I", "F"}:
        return Image.fromarray(_to_uint8(min_max(np.asarray(img, dtype=np.float64))))
    return img.convert("L")


def dicom_to_uint8(path: Path | BinaryIO, max_pixels: int | None = None, name: str | None = None) -> np.ndarray:
    """(H, W) uint8 display values of the first frame of the DICOM file at ``path`` (or in a stream)."""
    from pydicom.pixels import apply_modality_lut  # lazy, see _read_dicom

    ds = _read_dicom(path, name)
    path = name or path   # what messages call it
    _check_pixels(int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0), max_pixels, path)
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises several types for bad / undecodable pixel data
        raise DataError(f"{path}: cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from exc
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    if int(ds.get("SamplesPerPixel", 1)) > 1:     # colour: luma, no LUTs apply
        gray = pixels[..., :3].astype(np.float64) @ _LUMA
        return _to_uint8(gray if int(ds.get("BitsStored", 8)) <= 8 else min_max(gray))
    values = np.asarray(apply_modality_lut(pixels, ds))   # stays integer without a rescale
    display = _voi(values, ds, path)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        display = 255.0 - display
    return _to_uint8(display)


def _read_dicom(path: Path | BinaryIO, name: str | None = None) -> Dataset:
    # imported here: importing pydicom pulls in requests, which edits the warnings filters
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as exc:
        raise DataError(f"{name or path}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise DataError(f"{name or path}: DICOM file has no pixel data (no PixelData element)")
    return ds


def _voi(values: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    """pydicom's VOI LUT (a VOI LUT sequence, else the first window) scaled from its output
    range onto 0..255; min-max of the data when the file has neither or an invalid one."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" not in ds and ("WindowCenter" not in ds or "WindowWidth" not in ds):
        return min_max(values)
    try:
        with np.errstate(over="ignore"):
            display = apply_voi_lut(values, ds)
            # the VOI's output range: what it maps far-below and far-above values to
            table = "VOILUTSequence" in ds and values.dtype.kind in "iu"   # a table indexes stored integers
            extremes = (np.array([np.iinfo(values.dtype).min, np.iinfo(values.dtype).max], dtype=values.dtype)
                        if table else np.array([-1e12, 1e12]))
            low, high = sorted(np.asarray(apply_voi_lut(extremes, ds), dtype=np.float64))
    except (ValueError, TypeError, IndexError) as exc:
        log.warning("%s: unusable VOI LUT / window (%s), using min-max instead", path, exc)
        return min_max(values)
    if high <= low:
        return min_max(np.asarray(display, dtype=np.float64))
    return (np.asarray(display, dtype=np.float64) - low) * (255.0 / (high - low))


def stored_range(values: np.ndarray) -> float:
    """The top of the range a 16-bit store really uses: 2**bits - 1 for the fewest bits (8 to 16)
    that hold its largest value. PACS exports keep 10-, 12- or 14-bit detector values in 16-bit
    PNGs; scaling those by 65535 leaves them nearly black (12-bit data: at most 16 of 255). The PNG
    does not say which depth it holds, so a 12-bit image whose brightest pixel is below 2048 reads
    as 11-bit (one step brighter)."""
    bits = min(16, max(8, int(float(values.max(initial=0))).bit_length()))
    return float(2 ** bits - 1)


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale to 0..255 by the data's own range; a constant image becomes all 0."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float64)
    return (values - low) * (255.0 / (high - low))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# ---- preparation: what the model sees, shared by training and serving ----------------------
# pixels in [0, 1] → [-2, 2]: fixed constants (not ImageNet's) because the images are grayscale
IMAGE_MEAN = 0.5
IMAGE_STD = 0.25


def resize_view(view: np.ndarray | Image.Image, size: int) -> np.ndarray:
    """(H, W) uint8 → (size, size) uint8, bilinear (aspect ratio not kept, as in R2Gen)."""
    image = view if isinstance(view, Image.Image) else Image.fromarray(np.asarray(view, dtype=np.uint8))
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def stack_views(views: Sequence[np.ndarray | Image.Image | None], size: int,
                max_views: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_views`` views (None = unreadable) → (V, S, S) uint8 + (V,) bool valid mask."""
    pixels = np.zeros((max_views, size, size), dtype=np.uint8)
    valid = np.zeros(max_views, dtype=bool)
    for i, view in enumerate(views[:max_views]):
        if view is not None:
            pixels[i], valid[i] = resize_view(view, size), True
    return pixels, valid


def normalise(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(V, S, S) uint8 + (V,) bool → (V, 1, S, S) float32 normalised, zero where not valid."""
    images = (pixels.astype(np.float32) / 255.0 - IMAGE_MEAN) / IMAGE_STD
    images[~valid] = 0.0   # padding stays neutral, not a "black image" (-2)
    return images[:, None]


def load_views(paths: Sequence[str | Path], size: int, max_views: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Files → ``stack_views``; unreadable files are skipped and their reasons returned."""
    views: list[Image.Image | None] = []
    problems = []
    for path in paths[:max_views]:
        try:
            views.append(load_image(path))
        except DataError as exc:
            views.append(None)
            problems.append(str(exc))
    pixels, valid = stack_views(views, size, max_views)
    return pixels, valid, problems
