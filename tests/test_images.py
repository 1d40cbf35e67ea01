"""Image conversion: real MONOCHROME1 15-bit DICOM, windowing, JPG/PNG, cache, pool, boxes."""

from __future__ import annotations

import numpy as np
import pydicom
import pydicom.data
import pytest
from PIL import Image

from data_prep.frame import scale_box, smart_resize
from data_prep.images import ImageError, ImagePool, cached_info, convert_image, dicom_to_uint8
from data_prep.io import Ledger
from data_prep.labels import merge_boxes, to_frame

RG1 = pydicom.data.get_testdata_file("RG1_UNCR.dcm")  # real PA chest, 1841 x 1955, MONOCHROME1, 15 bits


def make_dicom(
    path, arr, photometric="MONOCHROME2", bits_stored=None, window=None, rescale=None, voi_function=None
):
    """Write a minimal uncompressed DICOM holding ``arr`` (uint8 or uint16)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function:
        ds.VOILUTFunction = voi_function
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_real_monochrome1_dicom_is_inverted_windowed_and_resized(tmp_path):
    ds = pydicom.dcmread(RG1)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 15
    raw = ds.pixel_array.astype(np.float64)
    # Reference: the linear VOI window of the file, then MONOCHROME1 -> inverted.
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    ref = 1.0 - np.clip((raw - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    got = dicom_to_uint8(ds)
    assert got.dtype == np.uint8 and got.shape == raw.shape
    assert np.abs(got.astype(float) - ref * 255).max() <= 1.0
    # Inversion: the brightest raw pixels (most attenuation in MONOCHROME1 = darkest) end darkest.
    assert got[raw >= np.percentile(raw, 99)].mean() < got[raw <= np.percentile(raw, 1)].mean()

    dst = tmp_path / "rg1.png"
    info = convert_image(RG1, dst, 3136, 262144)
    h, w_ = smart_resize(1955, 1841, 3136, 262144)
    assert (info.src_w, info.src_h, info.width, info.height) == (1841, 1955, w_, h)
    with Image.open(dst) as im:
        assert im.mode == "L" and im.size == (w_, h)
        assert np.asarray(im).std() > 20  # a real image, not a flat one


def test_window_functions_and_minmax(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (64, 1))  # 12-bit ramp, 64 x 256
    lin = dicom_to_uint8(
        pydicom.dcmread(make_dicom(tmp_path / "a.dcm", ramp, bits_stored=12, window=(2048, 1024)))
    )
    assert lin[0, 0] == 0 and lin[0, -1] == 255  # clipped outside the window
    mid = np.argmin(np.abs(ramp[0].astype(int) - 2048))
    assert abs(int(lin[0, mid]) - 128) <= 2
    sig = dicom_to_uint8(
        pydicom.dcmread(
            make_dicom(tmp_path / "s.dcm", ramp, bits_stored=12, window=(2048, 1024), voi_function="SIGMOID")
        )
    )
    assert sig[0, 0] <= 2 and sig[0, -1] >= 253 and abs(int(sig[0, mid]) - 128) <= 3
    assert (
        np.all(np.diff(sig[0].astype(int)) >= 0) and 0 < sig[0, mid - 40] < sig[0, mid]
    )  # smooth, no hard clip
    # No window: the full pixel range -> 0..255, after the modality rescale.
    full = dicom_to_uint8(
        pydicom.dcmread(make_dicom(tmp_path / "n.dcm", ramp, bits_stored=12, rescale=(2, -100)))
    )
    assert full.min() == 0 and full.max() == 255 and np.all(np.diff(full[0].astype(int)) >= 0)
    exact = dicom_to_uint8(
        pydicom.dcmread(
            make_dicom(
                tmp_path / "e.dcm", ramp, bits_stored=12, window=(2048, 1024), voi_function="LINEAR_EXACT"
            )
        )
    )
    assert exact[0, 0] == 0 and exact[0, -1] == 255 and exact[0, mid] == 128  # (x - c) / w + 0.5, exactly
    # the window applies after the modality rescale: stored 1024 -> 2 * 1024 - 100 = 1948, the window's centre
    rescaled = dicom_to_uint8(
        pydicom.dcmread(
            make_dicom(tmp_path / "rw.dcm", ramp, bits_stored=12, rescale=(2, -100), window=(1948, 1000))
        )
    )
    assert abs(int(rescaled[0, np.argmin(np.abs(ramp[0].astype(int) - 1024))]) - 128) <= 2
    # a window LINEAR forbids (width under 1) is no window: the full range, as without one
    narrow = dicom_to_uint8(
        pydicom.dcmread(make_dicom(tmp_path / "w.dcm", ramp, bits_stored=12, window=(2048, 0.5)))
    )
    assert np.array_equal(
        narrow, dicom_to_uint8(pydicom.dcmread(make_dicom(tmp_path / "p.dcm", ramp, bits_stored=12)))
    )
    inv = dicom_to_uint8(
        pydicom.dcmread(make_dicom(tmp_path / "m1.dcm", ramp, "MONOCHROME1", bits_stored=12))
    )
    assert np.array_equal(inv, 255 - full) or np.abs(inv.astype(int) - (255 - full)).max() <= 1


def test_jpg_png_16bit_and_cache(tmp_path):
    arr16 = (np.linspace(0, 65535, 300 * 200).reshape(300, 200)).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "x16.png")
    info = convert_image(tmp_path / "x16.png", tmp_path / "out" / "x16.png", 3136, 262144)
    assert (info.src_w, info.src_h) == (200, 300) and (info.height, info.width) == smart_resize(
        300, 200, 3136, 262144
    )
    with Image.open(tmp_path / "out" / "x16.png") as im:
        a = np.asarray(im)
        assert im.mode == "L" and a.min() <= 2 and a.max() >= 253

    big = (np.random.default_rng(0).integers(0, 255, (1200, 1000))).astype(np.uint8)
    Image.fromarray(big).convert("RGB").save(tmp_path / "c.jpg", quality=90)
    dst = tmp_path / "out" / "c.png"
    first = convert_image(tmp_path / "c.jpg", dst, 3136, 262144)
    assert not first.cached and (first.src_w, first.src_h) == (1000, 1200)
    mtime = dst.stat().st_mtime_ns
    again = convert_image(tmp_path / "c.jpg", dst, 3136, 262144)
    assert again.cached and again[:4] == first[:4] and dst.stat().st_mtime_ns == mtime
    assert cached_info(dst, 3136, 100352) is None  # another frame: not a cache hit
    other = convert_image(tmp_path / "c.jpg", dst, 3136, 100352)
    assert not other.cached and other.width * other.height <= 100352


def test_rejects_have_reasons(tmp_path):
    with pytest.raises(ImageError) as e:
        convert_image(tmp_path / "nope.dcm", tmp_path / "o.png", 3136, 262144)
    assert e.value.reason == "missing image"
    (tmp_path / "bad.dcm").write_bytes(b"not a dicom at all" * 10)
    with pytest.raises(ImageError) as e:
        convert_image(tmp_path / "bad.dcm", tmp_path / "o.png", 3136, 262144)
    assert e.value.reason == "unreadable DICOM"
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(ImageError) as e:
        convert_image(tmp_path / "bad.jpg", tmp_path / "o.png", 3136, 262144)
    assert e.value.reason == "unreadable image"


def test_pool_keeps_order_across_workers(tmp_path):
    jobs = []
    for i in range(10):
        Image.new("L", (100 + 10 * i, 120), color=i * 20).save(tmp_path / f"{i}.png")
        jobs.append((tmp_path / f"{i}.png", tmp_path / "o" / f"{i}.png"))
    jobs.insert(3, (tmp_path / "missing.png", tmp_path / "o" / "missing.png"))
    with ImagePool(3136, 262144, workers=2, chunk=2) as pool:
        res = pool.convert(jobs)
    assert isinstance(res[3], ImageError) and res[3].reason == "missing image"
    widths = [r.src_w for k, r in enumerate(res) if k != 3]
    assert widths == [100 + 10 * i for i in range(10)]


def test_box_transform_numbers():
    info_args = (2000, 1000)  # original w, h
    h, w = smart_resize(1000, 2000, 3136, 262144)
    from data_prep.images import ImageInfo

    info = ImageInfo(*info_args, w, h)
    led = Ledger("t")
    box = to_frame([100, 200, 700, 900], info, led, "row 1")
    assert box == [round(100 * w / 2000), round(200 * h / 1000), round(700 * w / 2000), round(900 * h / 1000)]
    assert box == scale_box([100, 200, 700, 900], (2000, 1000), (w, h))
    assert to_frame([100, 200, 2100, 900], info, led, "row 2") is None  # outside the 2000 x 1000 image
    assert to_frame([100, 200, 100, 900], info, led, "row 3") is None
    assert to_frame([0, 0, 1, 1], info, led, "row 4") is None  # vanishes at ~1/3 scale
    assert to_frame([-0.5, 0, 2000.5, 1000], info, led, "row 5") == [0, 0, w, h]  # tolerance, clipped
    assert dict(led.rejected) == {
        "box outside image": 1,
        "degenerate box": 1,
        "box too small after resize": 1,
    }
    assert [r["where"] for r in led.rejects] == ["row 2", "row 3", "row 4"]


def test_merge_boxes_of_several_readers():
    boxes = [([100, 100, 200, 200], "R1"), ([110, 90, 210, 190], "R2"), ([500, 500, 560, 580], "R3")]
    merged = merge_boxes(boxes, iou_thr=0.4)
    assert merged == [([105.0, 95.0, 205.0, 195.0], ["R1", "R2"]), ([500.0, 500.0, 560.0, 580.0], ["R3"])]
