"""cxr.images: PNG/JPEG/DICOM → 8-bit gray, DICOM LUT / window / inversion values, named errors."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxr.images import is_dicom, load_image
from cxr.records import DataError

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


def write_dicom(path: Path, pixels: np.ndarray, bits_stored: int, *, signed: bool = False,
                photometric: str = "MONOCHROME2", pixel_data: bool = True, **elements) -> Path:
    """A minimal CR image; ``pixels`` is (H, W) or (frames, H, W) of the dtype to store."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    if pixel_data:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def gray(path: Path) -> np.ndarray:
    img = load_image(path)
    assert img.mode == "L"
    return np.asarray(img)


# --- DICOM --------------------------------------------------------------------------------------
def test_dicom_8bit_without_window_is_min_max(tmp_path):
    pixels = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    assert gray(write_dicom(tmp_path / "a.dcm", pixels, 8)).tolist() == [[0, 51], [102, 255]]
    narrow = np.array([[100, 110], [120, 150]], dtype=np.uint8)   # (x - 100) * 255 / 50
    assert gray(write_dicom(tmp_path / "b.dcm", narrow, 8)).tolist() == [[0, 51], [102, 255]]


def test_dicom_12bit_in_16_with_window(tmp_path):
    pixels = np.array([[0, 1000], [1050, 4095]], dtype=np.uint16)
    # linear window c=1000, w=200: y = ((x - 999.5) / 199 + 0.5) * 255, clipped
    path = write_dicom(tmp_path / "w.dcm", pixels, 12, WindowCenter=1000, WindowWidth=200)
    assert gray(path).tolist() == [[0, 128], [192, 255]]
    # multi-valued window: the first pair is used
    path = write_dicom(tmp_path / "m.dcm", pixels, 12, WindowCenter=[1000, 2048], WindowWidth=[200, 4096])
    assert gray(path).tolist() == [[0, 128], [192, 255]]
    # full-range window c=2048, w=4096
    full = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "f.dcm", full, 12, WindowCenter=2048, WindowWidth=4096)
    assert gray(path).tolist() == [[0, 64], [128, 255]]


def test_dicom_12bit_without_window_uses_data_range(tmp_path):
    pixels = np.array([[1000, 1100], [1200, 2000]], dtype=np.uint16)   # (x - 1000) * 0.255
    assert gray(write_dicom(tmp_path / "a.dcm", pixels, 12)).tolist() == [[0, 26], [51, 255]]


def test_dicom_16bit_signed_with_rescale_then_window(tmp_path):
    pixels = np.array([[-1000, 0], [40, 3000]], dtype=np.int16)
    # slope 2, intercept -1024 → HU -3024, -1024, -944, 4976; lung window c=-600, w=1500
    path = write_dicom(tmp_path / "ct.dcm", pixels, 16, signed=True, RescaleSlope=2,
                       RescaleIntercept=-1024, WindowCenter=-600, WindowWidth=1500)
    assert gray(path).tolist() == [[0, 55], [69, 255]]


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    path = write_dicom(tmp_path / "m1.dcm", pixels, 8, photometric="MONOCHROME1")
    assert gray(path).tolist() == [[255, 204], [153, 0]]
    windowed = np.array([[0, 1000], [1050, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "m1w.dcm", windowed, 12, photometric="MONOCHROME1",
                       WindowCenter=1000, WindowWidth=200)
    assert gray(path).tolist() == [[255, 127], [63, 0]]


def test_dicom_voi_functions_and_frames(tmp_path):
    pixels = np.array([[900, 1000], [1050, 1100]], dtype=np.uint16)
    exact = write_dicom(tmp_path / "e.dcm", pixels, 12, WindowCenter=1000, WindowWidth=200,
                        VOILUTFunction="LINEAR_EXACT")   # ((x - 1000) / 200 + 0.5) * 255
    assert gray(exact).tolist() == [[0, 128], [191, 255]]
    sigmoid = write_dicom(tmp_path / "s.dcm", pixels, 12, WindowCenter=1000, WindowWidth=200,
                          VOILUTFunction="SIGMOID")      # 255 / (1 + exp(-4 (x - c) / w))
    assert gray(sigmoid).tolist() == [[30, 128], [186, 225]]  # x=1050: 255 / (1 + e**-1)
    frames = np.stack([np.array([[0, 255], [0, 255]]), np.full((2, 2), 7)]).astype(np.uint8)
    assert gray(write_dicom(tmp_path / "mf.dcm", frames, 8)).tolist() == [[0, 255], [0, 255]]


def test_dicom_voi_lut_sequence_is_applied(tmp_path):
    """A VOI LUT table (not a window) maps stored values; its output range becomes 0..255."""
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 8]             # 4 entries, first input value 0, 8-bit output
    lut.add_new("LUTData", "US", [0, 50, 200, 255])
    path = write_dicom(tmp_path / "lut.dcm", np.array([[0, 1, 2, 3, 9]], dtype=np.uint16), 12,
                       VOILUTSequence=[lut])
    assert gray(path).tolist() == [[0, 50, 200, 255, 255]]   # past the table: its last entry


def test_dicom_detected_by_magic_without_suffix(tmp_path):
    path = write_dicom(tmp_path / "img.bin", np.array([[0, 255]], dtype=np.uint8), 8)
    assert is_dicom(path)
    assert gray(path).tolist() == [[0, 255]]


def test_dicom_without_pixel_data_names_file(tmp_path):
    path = write_dicom(tmp_path / "nopix.dcm", np.zeros((2, 2), np.uint8), 8, pixel_data=False)
    with pytest.raises(DataError, match=r"nopix\.dcm.*no pixel data"):
        load_image(path)


def test_truncated_and_bogus_dicom_name_file(tmp_path):
    path = write_dicom(tmp_path / "cut.dcm", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), 16)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(DataError, match=r"cut\.dcm"):
        load_image(path)
    text = tmp_path / "notes.dcm"
    text.write_text("not a dicom file")
    with pytest.raises(DataError, match=r"notes\.dcm: not a readable DICOM"):
        load_image(text)


# --- PNG / JPEG ---------------------------------------------------------------------------------
def test_png_jpeg_and_color_become_gray8(tmp_path):
    arr = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    assert gray(tmp_path / "a.png").tolist() == arr.tolist()
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "b.jpg", quality=95)
    assert np.abs(gray(tmp_path / "b.jpg").astype(int) - 128).max() <= 2
    Image.new("RGB", (2, 2), (255, 0, 0)).save(tmp_path / "c.png")
    assert gray(tmp_path / "c.png").tolist() == [[76, 76], [76, 76]]     # 0.299 * 255


def test_16bit_png_scaled_by_full_range(tmp_path):
    arr = np.array([[0, 257 * 100], [65535, 257 * 200]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    assert gray(tmp_path / "d.png").tolist() == [[0, 100], [255, 200]]


def test_16bit_png_with_12bit_values_scaled_by_12_bits(tmp_path):
    # a PACS export: 12-bit detector values in a 16-bit PNG; by 65535 it would decode almost black
    arr = np.array([[0, 1024], [2457, 4095]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "e.png")
    assert gray(tmp_path / "e.png").tolist() == [[0, 64], [153, 255]]


def test_16bit_png_with_8bit_values_kept_as_they_are(tmp_path):
    arr = np.array([[0, 7], [100, 200]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "f.png")
    assert gray(tmp_path / "f.png").tolist() == [[0, 7], [100, 200]]


def test_truncated_png_and_jpeg_name_file(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    for name in ("t.png", "t.jpg"):
        Image.fromarray(noise).save(tmp_path / name)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(DataError, match=re.escape(name) + ": corrupt or truncated"):
            load_image(tmp_path / name)


def test_unsupported_and_missing_files(tmp_path):
    Image.new("L", (2, 2)).save(tmp_path / "x.bmp")
    with pytest.raises(DataError, match=r"x\.bmp: unsupported image format BMP"):
        load_image(tmp_path / "x.bmp")
    (tmp_path / "y.png").write_text("hello")
    with pytest.raises(DataError, match=r"y\.png: unsupported or unrecognised"):
        load_image(tmp_path / "y.png")
    with pytest.raises(DataError, match=r"gone\.png: image file not found"):
        load_image(tmp_path / "gone.png")


# --- memory: limits from the header, one DICOM frame, row blocks -------------------------------
def _png16(values: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(buf, "PNG")
    return buf.getvalue()


def test_decoded_bytes_are_charged_from_the_header_across_a_request():
    from cxr.images import DecodeLimits, ImageTooLargeError, decode_image_bytes

    data = _png16(np.full((300, 200), 4095))
    limits = DecodeLimits(max_pixels=300 * 200, max_bytes=200_000)
    assert np.asarray(decode_image_bytes(data, "image 0", limits)).max() == 255   # 120,000 bytes
    with pytest.raises(ImageTooLargeError, match=r"image 1: decodes to 120,000 bytes \(200×300, PNG mode I;16\) "
                       r"\(with 120,000 bytes of the other images\), over the limit of 200,000"):
        decode_image_bytes(data, "image 1", limits)
    with pytest.raises(ImageTooLargeError, match="60,000 pixels, over the limit of 59,999"):
        decode_image_bytes(data, "x", DecodeLimits(max_pixels=59_999))


def test_a_multi_frame_dicom_decodes_and_is_charged_for_its_first_frame_only(tmp_path):
    from cxr.images import DecodeLimits, decode_image_bytes

    frames = np.stack([np.full((40, 50), 100 * (k + 1), dtype=np.uint16) for k in range(6)])
    frames[0, 0, 0] = 0   # frame 0 is not constant: min-max gives 0 and 255
    data = write_dicom(tmp_path / "m.dcm", frames, 12).read_bytes()
    limits = DecodeLimits(max_bytes=40 * 50 * 2)   # one 16-bit frame fits, six would not
    view = np.asarray(decode_image_bytes(data, "image 0", limits))
    assert view.shape == (40, 50) and view[0, 0] == 0 and view[1, 1] == 255 and limits.used == 4000


def test_row_blocks_give_the_same_pixels_as_one_pass(monkeypatch):
    """A 16-bit PNG taller than one block: identical to the whole-image formula."""
    from cxr import images

    values = np.random.default_rng(0).integers(0, 4096, (600, 40))
    monkeypatch.setattr(images, "_ROWS", 64)
    got = np.asarray(images.decode_image_bytes(_png16(values)))
    want = np.clip(np.rint(values * (255.0 / 4095)), 0, 255).astype(np.uint8)
    assert np.array_equal(got, want)


def test_a_nearly_flat_view_is_warned_about():
    from cxr.views import view_warnings

    rng = np.random.default_rng(0)
    assert view_warnings(rng.integers(0, 256, (64, 64), dtype=np.uint8)) == []
    dark = rng.integers(0, 15, (64, 64), dtype=np.uint8)   # a 12-bit image scaled by 65535: 0..14
    (warning,) = view_warnings(dark)
    assert warning.startswith("nearly flat: 98% of its pixels lie within gray levels 0–14 of 255")
    assert view_warnings(np.full((8, 8), 200, dtype=np.uint8))
