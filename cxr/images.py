"""Load one chest X-ray file (PNG, JPEG or DICOM) as an 8-bit grayscale ``PIL.Image`` (mode "L").

DICOM: stored values → Modality LUT (RescaleSlope / Intercept) → VOI window (WindowCenter /
WindowWidth, first value if several; min-max of the data without one) → MONOCHROME1 inverted →
uint8.  Every failure is a ``DataError`` that names the file.
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
    if img.mode.startswith("I;16"):   # 16-bit grayscale PNG: full range → 0..255
        data = np.asarray(img, dtype=np.float64)
        return Image.fromarray(_to_uint8(data * (255.0 / 65535.0)))
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
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
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


def _first(value: object) -> float:
    """First of a multi-valued element (pydicom's MultiValue is a Sequence), else the value."""
    is_many = isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    return float(value[0]) if is_many else float(value)


def _voi(values: np.ndarray, ds: Dataset, path: Path) -> np.ndarray:
    """VOI window per DICOM PS3.3 C.11.2.1.2 onto 0..255; min-max when there is no usable window."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return min_max(values)
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction", "LINEAR")).strip().upper() or "LINEAR"
    if width <= 0 or (function == "LINEAR" and width < 1):
        log.warning("%s: invalid WindowWidth %s, using min-max instead", path, width)
        return min_max(values)
    if function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip(((values - center) / width + 0.5) * 255.0, 0.0, 255.0)
    if width == 1:
        return np.where(values > center - 0.5, 255.0, 0.0)
    return np.clip(((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0, 0.0, 255.0)


def min_max(values: np.ndarray) -> np.ndarray:
    """Scale to 0..255 by the data's own range; a constant image becomes all 0."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float64)
    return (values - low) * (255.0 / (high - low))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
