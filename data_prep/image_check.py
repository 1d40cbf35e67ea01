"""Image content, checked once before training: every image of a training row must decode, must
already be in the model frame, and the first must be the record's ``width`` x ``height``.

The row check (data_prep.trl_dataset.load_checked_records) only sees paths. A truncated PNG, a text
file named .png, a 20000 x 20000 decompression bomb or an image the processor would resize again
(its boxes then no longer match) would pass it and crash SFT/GRPO mid-run in a data loader, with a
PIL traceback naming no row, or train on boxes that point elsewhere. Here each is a bad row with
its reason.

Decoding a large dataset costs minutes, so what each file decoded to is cached in
``DATASET/.image_check.json``, keyed by path, size and mtime: a rerun decodes only new or changed
files. The frame is checked on every run (cheap, and the recipe's frame may change). The cache is
written atomically (the ranks of one launch may write it at once: the last one wins, every version
is whole); a read-only dataset folder simply goes without it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PIL import Image

from data_prep.errors import one_line
from data_prep.frame import smart_resize
from data_prep.io import atomic_write_text

CACHE_FILE = ".image_check.json"
CACHE_VERSION = 1
FIX = (
    "prepare the data again for this frame (the data_prep converters resize into it), or train with the "
    "frame the data was made in (min_pixels/max_pixels)"
)
log = logging.getLogger(__name__)


def header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header, decoding nothing; ValueError (the bad-row reason) otherwise."""
    try:
        with Image.open(path) as im:  # PIL refuses over 2 x MAX_IMAGE_PIXELS here (DecompressionBombError)
            w, h = im.size
    except Image.DecompressionBombError as e:
        raise ValueError(f"image over the pixel limit: {path}: {one_line(e)}") from None
    except Exception as e:  # noqa: BLE001  PIL reports a damaged header as many exception types
        raise ValueError(f"unreadable image: {path}: {one_line(e)}") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and w * h > limit:  # between 1x and 2x PIL only warns: respect its limit fully
        raise ValueError(
            f"image over the pixel limit: {path} is {w}x{h} = {w * h} pixels, over PIL's MAX_IMAGE_PIXELS "
            f"({limit}): a decompression bomb or an image never resized into the frame"
        )
    return w, h


def decode_problem(path: Path) -> str | None:
    """Why the image does not decode completely, or None."""
    try:
        with Image.open(path) as im:
            im.verify()  # structure and checksums (PNG CRCs) without decoding pixels
        with Image.open(path) as im:  # verify() leaves the image unusable: open it again
            im.load()  # every pixel: data cut short (a killed copy) shows only here
    except Exception as e:  # noqa: BLE001  OSError, SyntaxError, zlib/struct errors, EOFError ...
        return f"unreadable image: {path}: {one_line(e)}"
    return None


def frame_problem(path: Path, size: tuple[int, int], rule: tuple[int, int, int]) -> str | None:
    """Why an image of ``size`` is not already in the frame ``rule`` = (min_pixels, max_pixels, factor),
    i.e. why the processor would resize it, or None."""
    (w, h), (min_pixels, max_pixels, factor) = size, rule
    if w * h > max_pixels:
        return (
            f"image larger than the frame: {path} is {w}x{h} = {w * h} pixels, over max_pixels={max_pixels}; "
            f"the processor would shrink it and the boxes would no longer match: {FIX}"
        )
    try:
        rh, rw = smart_resize(h, w, min_pixels, max_pixels, factor)
    except ValueError as e:  # aspect ratio over 200: the processor refuses it too
        return f"image not in the model frame: {path} is {w}x{h}: {e}"
    if (rw, rh) != (w, h):
        return (
            f"image not in the model frame: the processor (min_pixels={min_pixels}, max_pixels={max_pixels}, "
            f"sides in multiples of {factor}) would resize {path} from {w}x{h} to {rw}x{rh} and the boxes "
            f"would no longer match: {FIX}"
        )
    return None


class ImageChecker:
    """Checks the images of records against one frame rule, with the decode cache of one dataset folder."""

    def __init__(self, dataset_dir: str | Path, rule: tuple[int, int, int]):
        self.file = Path(dataset_dir) / CACHE_FILE
        self.rule = rule
        self.cache = self._read()
        self.changed = False

    def _read(self) -> dict:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:  # a damaged cache costs a re-check, never the run
            log.info("ignoring the image check cache %s: %s", self.file, one_line(e))
            return {}
        ok = isinstance(data, dict) and data.get("version") == CACHE_VERSION
        return data.get("images", {}) if ok and isinstance(data.get("images"), dict) else {}

    def save(self) -> None:
        if not self.changed:
            return
        try:
            atomic_write_text(self.file, json.dumps({"version": CACHE_VERSION, "images": self.cache}) + "\n")
        except OSError as e:  # a read-only dataset folder: fine, only slower next time
            log.info(
                "image check cache not written (%s): the next run decodes every image again", one_line(e)
            )
        self.changed = False

    def _image(self, path: Path) -> tuple[tuple[int, int] | None, str | None]:
        """(size, why it cannot be trained on or None)."""
        try:
            st = path.stat()
        except OSError as e:
            return None, f"image file not found: {path} ({one_line(e)})"
        key, stamp = str(path), [st.st_size, st.st_mtime_ns]
        entry = self.cache.get(key)
        if not isinstance(entry, dict) or entry.get("stamp") != stamp:
            try:
                size = header_size(path)
            except ValueError as e:
                entry = {"stamp": stamp, "size": None, "error": str(e)}
            else:
                why = frame_problem(path, size, self.rule)
                if why:  # not decoded (a large image costs memory) and not cached: the header is cheap
                    return size, why
                entry = {"stamp": stamp, "size": list(size), "error": decode_problem(path)}
            self.cache[key] = entry
            self.changed = True
        if entry["error"]:
            return None, entry["error"]
        size = tuple(entry["size"])
        return size, frame_problem(path, size, self.rule)

    def problem(self, rec: dict, paths: list[Path]) -> str | None:
        """Why the record's images cannot be trained on, or None. ``paths``: its images, resolved."""
        for i, path in enumerate(paths):
            size, why = self._image(path)
            if why:
                return why
            if i == 0 and size != (rec["width"], rec["height"]):
                return (
                    f"width/height disagree with the image: the record says {rec['width']}x{rec['height']}, "
                    f"{path} is {size[0]}x{size[1]}; fix the record or the image (its boxes lie in the "
                    "first image's pixels)"
                )
        return None
