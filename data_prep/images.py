"""Images into the model frame: decode once, resize once, cache, in parallel.

* DICOM through pydicom: Modality LUT (rescale), then the VOI LUT or the window
  (WindowCenter / WindowWidth, LINEAR / LINEAR_EXACT / SIGMOID), or the full pixel range
  when neither is present; any bit depth ends as 8-bit; MONOCHROME1 is inverted so bone is
  bright; colour DICOMs become grey; a multi-frame DICOM gives its first frame.
* JPG / PNG through Pillow (8- or 16-bit, grey or colour; JPEGs are decoded at a reduced
  DCT scale when the target is much smaller, which is exact for the frame and ~4x faster).
* Each image is resized once with ``frame.smart_resize(min_pixels, max_pixels)`` and stored
  as an 8-bit grey PNG. The PNG carries its source size and frame in a text chunk, so a
  rerun skips it (the cache) and still knows how to scale boxes; a different frame redoes it.
* :class:`ImagePool` runs conversions in worker processes, a bounded batch at a time
  (memory does not grow with the dataset), returning results in order.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, PngImagePlugin

from data_prep.errors import OpenMedixError
from data_prep.frame import FACTOR, smart_resize

CACHE_KEY = "openmedix-frame"
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}


class ImageInfo(NamedTuple):
    src_w: int  # original size, the frame source boxes are given in
    src_h: int
    width: int  # stored size: the model frame
    height: int
    cached: bool = False


class ImageError(OpenMedixError, ValueError):
    """A counted reject: ``reason`` is the ledger category, the message the detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)  # both in args: picklable across worker processes
        self.reason, self.detail = reason, detail

    def __str__(self) -> str:
        return self.detail


# ---------------------------------------------------------------------------- decoding


def _window(arr: np.ndarray, ds) -> np.ndarray | None:
    """The VOI window (WindowCenter / WindowWidth; LINEAR, LINEAR_EXACT or SIGMOID, DICOM PS3.3
    C.11.2.1.2) mapped to [0, 1], or None when the file has no usable window."""
    from pydicom.pixels import apply_windowing

    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        out = apply_windowing(arr, ds)
        # pydicom maps the window onto the output range of the stored values; windowing the two
        # extremes asks it for that range, whose ends become 0 and 1
        lo, hi = apply_windowing(np.array([-np.inf, np.inf]), ds)
    except ValueError:  # a width the function forbids (LINEAR under 1, others 0 or less), an unknown function
        return None
    if hi == lo:
        return None
    return np.clip((out - lo) / (hi - lo), 0.0, 1.0)


def _minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def dicom_to_uint8(ds) -> np.ndarray:
    """8-bit grey pixels of a pydicom dataset, as a radiologist would see them."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    arr = ds.pixel_array
    samples = int(ds.get("SamplesPerPixel", 1))
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    if samples > 1:  # colour (pydicom converts YBR to RGB): plain grey conversion
        return np.asarray(Image.fromarray(arr.astype(np.uint8)).convert("L"))
    arr = apply_modality_lut(arr, ds).astype(np.float32)
    if "VOILUTSequence" in ds:
        unit = _minmax(apply_voi_lut(arr, ds, prefer_lut=True).astype(np.float32))
    else:
        unit = _window(arr, ds)
        if unit is None:
            unit = _minmax(arr)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        unit = 1.0 - unit
    return np.rint(unit * 255.0).astype(np.uint8)


def _to_gray(im: Image.Image) -> Image.Image:
    if im.mode == "L":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = _minmax(np.asarray(im, dtype=np.float32))
        return Image.fromarray(np.rint(arr * 255.0).astype(np.uint8))
    return im.convert("L")


def open_source(src: Path) -> tuple[Image.Image, int, int]:
    """(image still to be decoded/converted, original width, original height); raises ImageError."""
    if not src.is_file():
        raise ImageError("missing image", f"file not found: {src}")
    if src.suffix.lower() in DICOM_SUFFIXES:
        import pydicom

        try:
            ds = pydicom.dcmread(src)
            pixels = dicom_to_uint8(ds)
        except Exception as e:  # pydicom raises many kinds; all mean the same to us
            raise ImageError("unreadable DICOM", f"{src}: {type(e).__name__}: {e}") from None
        im = Image.fromarray(pixels)
        return im, im.width, im.height
    try:
        im = Image.open(src)
        return im, im.width, im.height
    except Exception as e:
        raise ImageError("unreadable image", f"{src}: {type(e).__name__}: {e}") from None


# ------------------------------------------------------------------------------ converting


def cached_info(dst: Path, min_pixels: int, max_pixels: int, factor: int = FACTOR) -> ImageInfo | None:
    """The info of an already converted image for this frame, or None (missing / other frame)."""
    try:
        with Image.open(dst) as im:
            meta = json.loads(im.info.get(CACHE_KEY, "null") or "null")
            if not meta or (meta.get("min_pixels"), meta.get("max_pixels")) != (min_pixels, max_pixels):
                return None
            if meta.get("factor", FACTOR) != factor:
                return None
            return ImageInfo(int(meta["src_w"]), int(meta["src_h"]), im.width, im.height, True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def convert_image(
    src: str | Path, dst: str | Path, min_pixels: int, max_pixels: int, factor: int = FACTOR
) -> ImageInfo:
    """Convert one image into the model frame (or reuse the cached one); raises ImageError.
    ``factor``: the family's side multiple (28 for Qwen2.5-VL, 32 for Qwen3-VL; data_prep.families)."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        info = cached_info(dst, min_pixels, max_pixels, factor)
        if info is not None:
            return info
    im, src_w, src_h = open_source(src)
    try:
        h, w = smart_resize(src_h, src_w, min_pixels, max_pixels, factor)
    except ValueError as e:
        raise ImageError("bad image size", f"{src}: {src_w}x{src_h}: {e}") from None
    try:
        if im.format == "JPEG":
            im.draft("L", (w, h))  # DCT-domain downscale, never below the target size
        im = _to_gray(im)
        if im.size != (w, h):
            im = im.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    except Exception as e:
        raise ImageError("unreadable image", f"{src}: {type(e).__name__}: {e}") from None
    meta = {"src_w": src_w, "src_h": src_h, "min_pixels": min_pixels, "max_pixels": max_pixels}
    # the default factor stays out of the key: files converted without one stay cache hits
    if factor != FACTOR:
        meta["factor"] = factor
    png = PngImagePlugin.PngInfo()
    png.add_text(CACHE_KEY, json.dumps(meta))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        im.save(tmp, format="PNG", pnginfo=png, compress_level=1)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return ImageInfo(src_w, src_h, w, h, False)


Result = ImageInfo | ImageError


def _convert_chunk(
    chunk: list[tuple[str, str]], min_pixels: int, max_pixels: int, factor: int = FACTOR
) -> list[Result]:
    out: list[Result] = []
    for src, dst in chunk:
        try:
            out.append(convert_image(src, dst, min_pixels, max_pixels, factor))
        except ImageError as e:
            out.append(e)
        except Exception as e:  # never lose a whole chunk to one odd file
            out.append(ImageError("unreadable image", f"{src}: {type(e).__name__}: {e}"))
    return out


class ImagePool:
    """Parallel, cached image conversion; ``workers <= 1`` converts in this process.

    ``submit`` starts a batch and returns at once; ``collect`` waits for it. A caller can thus
    build the records of one batch while the workers convert the next. The workers are started
    (forked) when the pool is made, before a converter loads its indexes, so their memory does
    not grow with the dataset.
    """

    def __init__(
        self, min_pixels: int, max_pixels: int, workers: int = 1, chunk: int = 8, factor: int = FACTOR
    ):
        self.min_pixels, self.max_pixels, self.factor = min_pixels, max_pixels, factor
        self.workers, self.chunk = max(1, workers), max(1, chunk)
        # the resize rule's import (transformers, torch) happens once here, before the fork, so
        # the workers share it instead of each importing it again
        smart_resize(factor, factor, min_pixels, max_pixels, factor)
        self._pool = ProcessPoolExecutor(self.workers) if self.workers > 1 else None
        if self._pool is not None:
            self._pool.submit(int).result()  # start every worker now

    def submit(self, jobs: list[tuple[str | Path, str | Path]]):
        jobs = [(str(s), str(d)) for s, d in jobs]
        if self._pool is None:
            return jobs
        chunks = [jobs[i : i + self.chunk] for i in range(0, len(jobs), self.chunk)]
        return [
            self._pool.submit(_convert_chunk, c, self.min_pixels, self.max_pixels, self.factor)
            for c in chunks
        ]

    def collect(self, handle, progress=None) -> list[Result]:
        """Results of a submitted batch, in order; each is an ImageInfo or an ImageError."""
        if self._pool is None:
            results: list[Result] = []
            for job in handle:
                results += _convert_chunk([job], self.min_pixels, self.max_pixels, self.factor)
                if progress is not None:
                    progress.update(1)
            return results
        index = {fut: i for i, fut in enumerate(handle)}
        parts: list[list[Result]] = [[] for _ in handle]
        for fut in as_completed(handle):
            parts[index[fut]] = fut.result()
            if progress is not None:
                progress.update(len(parts[index[fut]]))
        return [r for part in parts for r in part]

    def convert(self, jobs: list[tuple[str | Path, str | Path]], progress=None) -> list[Result]:
        """submit + collect."""
        return self.collect(self.submit(jobs), progress)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
