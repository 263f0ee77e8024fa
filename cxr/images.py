"""Chest X-ray files (PNG, JPEG or DICOM) → 8-bit grayscale views → the model's input tensors.

Decoding: a file or in-memory upload → ``PIL.Image`` mode "L". DICOM: stored values → pydicom's
Modality LUT → pydicom's VOI LUT (a VOI LUT sequence or the window; min-max of the data without
either) → MONOCHROME1 inverted → uint8. A 16-bit PNG: scaled by the bit depth its values use
(``stored_range``). Every failure is a ``DataError`` that names the file. Memory: an upload is
charged to a ``DecodeLimits`` (pixels per image, decoded bytes per request) from its header, before
any pixel is decoded; only a DICOM's first frame is decoded; conversions to 8 bits run in row
blocks, so a decode needs about its decoded bytes plus the 8-bit result, not float64 copies.
Preparation (the one copy training and serving share): views (H, W) uint8 of any size →
``stack_views`` (V, S, S) uint8 + (V,) valid mask → ``normalise`` (V, 1, S, S) float32.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


class ImageTooLargeError(DataError):
    """An image over a pixel or decoded-bytes limit (uploads): refused before its pixels are decoded."""


@dataclass
class DecodeLimits:
    """What one caller (an API request) may decode, checked from each image's header before any of its
    pixels are: ``max_pixels`` per image, ``max_bytes`` of decoded pixel data over all the images
    charged to it (bit depth, samples and decoded frames included)."""

    max_pixels: int | None = None
    max_bytes: int | None = None
    used: int = 0

    def charge(self, name: object, width: int, height: int, bytes_per_pixel: int, what: str) -> None:
        pixels = width * height
        if self.max_pixels is not None and pixels > self.max_pixels:
            raise ImageTooLargeError(f"{name}: image has {pixels:,} pixels, over the limit of {self.max_pixels:,}")
        size = pixels * bytes_per_pixel
        if self.max_bytes is not None and self.used + size > self.max_bytes:
            others = f" (with {self.used:,} bytes of the other images)" if self.used else ""
            raise ImageTooLargeError(f"{name}: decodes to {size:,} bytes ({width}×{height}, {what}){others}, "
                                     f"over the limit of {self.max_bytes:,} decoded bytes per request")
        self.used += size


def decode_image_bytes(data: bytes, name: str = "image", limits: DecodeLimits | None = None) -> Image.Image:
    """Decode an in-memory PNG, JPEG or DICOM (e.g. an upload) into mode "L"; ``name`` labels errors.

    ``limits`` are checked from the header, before any pixel is decoded (decompression bombs).
    """
    if not data:
        raise DataError(f"{name}: empty image data")
    if data[128:132] == b"DICM":
        return Image.fromarray(dicom_to_uint8(io.BytesIO(data), limits, name))
    return _load_raster(io.BytesIO(data), limits, name)


# decoded bytes per pixel of PIL's modes (what ``Image.load`` allocates), for ``DecodeLimits``
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3,
               "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4}


def _mode_bytes(mode: str) -> int:
    return 2 if mode.startswith("I;16") else _MODE_BYTES.get(mode, 4)


def _load_raster(path: Path | BinaryIO, limits: DecodeLimits | None = None, name: str | None = None) -> Image.Image:
    label = name or path
    try:
        with Image.open(path) as img:
            if img.format not in RASTER_FORMATS:
                raise DataError(f"{label}: unsupported image format {img.format}; "
                                "expected PNG, JPEG or DICOM")
            if limits is not None:
                limits.charge(label, img.width, img.height, _mode_bytes(img.mode), f"{img.format} mode {img.mode}")
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
        data = np.asarray(img)
        scale = 255.0 / stored_range(data)
        return Image.fromarray(_by_rows(lambda block: block * scale, data))
    if img.mode in {"I", "F"}:
        data = np.asarray(img)
        return Image.fromarray(_by_rows(_min_max_map(float(data.min()), float(data.max())), data))
    return img.convert("L")


_ROWS = 256   # rows per block: float64 temporaries stay at 256 × width, not the whole image


def _by_rows(display: Callable[[np.ndarray], np.ndarray], values: np.ndarray,
             dtype: type[np.generic] = np.uint8) -> np.ndarray:
    """(H, W, …) stored values → (H, W) ``dtype``, ``display`` applied block by block: uint8 takes
    0..255 display values (rounded, clipped); float32 keeps them as they are."""
    out = np.empty(values.shape[:2], dtype=dtype)
    for start in range(0, values.shape[0], _ROWS):
        block = display(values[start:start + _ROWS])
        out[start:start + _ROWS] = _to_uint8(block) if dtype is np.uint8 else block
    return out


def _min_max_map(low: float, high: float) -> Callable[[np.ndarray], np.ndarray]:
    """low..high → 0..255, block by block (a constant image becomes all 0)."""
    if high <= low:
        return lambda block: np.zeros(block.shape[:2], dtype=np.float64)
    scale = 255.0 / (high - low)
    return lambda block: (np.asarray(block, dtype=np.float64) - low) * scale


def dicom_to_uint8(path: Path | BinaryIO, limits: DecodeLimits | None = None, name: str | None = None) -> np.ndarray:
    """(H, W) uint8 display values of the first frame of the DICOM file at ``path`` (or in a stream).

    Only the first frame is decoded (a multi-frame file's other frames are never expanded), and the
    LUTs run in row blocks: memory is the frame's stored values plus the 8-bit result."""
    from pydicom.pixels import apply_modality_lut, pixel_array  # lazy, see _read_dicom

    ds = _read_dicom(path, name)
    path = name or path   # what messages call it
    frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1) or 1)
    if limits is not None:
        bits = int(ds.get("BitsAllocated", 8) or 8)
        limits.charge(path, int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0),
                      samples * max(1, -(-bits // 8)),
                      f"{bits}-bit, {samples} sample(s); the first of {frames} frame(s) decoded")
    try:
        pixels = pixel_array(ds, index=0) if frames > 1 else ds.pixel_array
    except Exception as exc:  # pydicom raises several types for bad / undecodable pixel data
        raise DataError(f"{path}: cannot decode DICOM pixel data ({type(exc).__name__}: {exc})") from exc
    if samples > 1:     # colour: luma, no LUTs apply
        def luma(block: np.ndarray) -> np.ndarray:
            return block[..., :3].astype(np.float64) @ _LUMA
        if int(ds.get("BitsStored", 8)) <= 8:
            return _by_rows(luma, pixels)
        gray = _by_rows(luma, pixels, np.float32)   # the range first, then the mapping
        return _by_rows(_min_max_map(float(gray.min()), float(gray.max())), gray)
    invert = str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    display = _voi(lambda block: np.asarray(apply_modality_lut(block, ds)), pixels, ds, path)
    return _by_rows((lambda block: 255.0 - display(block)) if invert else display, pixels)


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


def _voi(modality: Callable[[np.ndarray], np.ndarray], stored: np.ndarray, ds: Dataset,
         path: object) -> Callable[[np.ndarray], np.ndarray]:
    """stored values → 0..255, block-wise: the modality LUT, then pydicom's VOI LUT (a VOI LUT
    sequence, else the first window) scaled from its output range onto 0..255; min-max of the
    modality values when the file has neither or an invalid one."""
    from pydicom.pixels import apply_voi_lut

    def min_max_of(values: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        low, high = np.inf, -np.inf
        for start in range(0, stored.shape[0], _ROWS):   # the range first, block by block
            block = values(stored[start:start + _ROWS])
            if block.size:
                low, high = min(low, float(block.min())), max(high, float(block.max()))
        scale = _min_max_map(low, high)
        return lambda block: scale(values(block))

    if "VOILUTSequence" not in ds and ("WindowCenter" not in ds or "WindowWidth" not in ds):
        return min_max_of(modality)
    sample = modality(stored[:1])
    try:
        with np.errstate(over="ignore"):
            apply_voi_lut(sample, ds)   # an unusable LUT / window fails here, on one row
            # the VOI's output range: what it maps far-below and far-above values to
            table = "VOILUTSequence" in ds and sample.dtype.kind in "iu"   # a table indexes stored integers
            extremes = (np.array([np.iinfo(sample.dtype).min, np.iinfo(sample.dtype).max], dtype=sample.dtype)
                        if table else np.array([-1e12, 1e12]))
            low, high = sorted(np.asarray(apply_voi_lut(extremes, ds), dtype=np.float64))
    except (ValueError, TypeError, IndexError) as exc:
        log.warning("%s: unusable VOI LUT / window (%s), using min-max instead", path, exc)
        return min_max_of(modality)

    def voi(block: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.asarray(apply_voi_lut(modality(block), ds), dtype=np.float64)

    if high <= low:
        return min_max_of(voi)
    scale = 255.0 / (high - low)
    return lambda block: (voi(block) - low) * scale


def stored_range(values: np.ndarray) -> float:
    """The top of the range a 16-bit store really uses: 2**bits - 1 for the fewest bits (8 to 16)
    that hold its largest value. PACS exports keep 10-, 12- or 14-bit detector values in 16-bit
    PNGs; scaling those by 65535 leaves them nearly black (12-bit data: at most 16 of 255). The PNG
    does not say which depth it holds, so a 12-bit image whose brightest pixel is below 2048 reads
    as 11-bit (one step brighter)."""
    bits = min(16, max(8, int(float(values.max(initial=0))).bit_length()))
    return float(2 ** bits - 1)


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
