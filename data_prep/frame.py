"""The model frame: the image size the model sees after the Qwen-VL resize.

Every image is resized into this frame once, at data-prep time, and every box is stored in
its pixels. The frame depends on the processor's min/max pixels and the family's side multiple
(28 for Qwen2.5-VL, 32 for Qwen3-VL: data_prep.families), so a dataset folder records them in
``frame.json`` and the recipes refuse a processor that would resize again.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_prep.errors import OpenMedixError

FACTOR = 28  # Qwen2.5-VL: patch 14 x spatial merge 2
QWEN_MIN_PIXELS = 56 * 56
# The Qwen3-VL frame of the demo: four merged vision tokens of 32 px, as 56 * 56 is for Qwen2.5-VL
# (qwen-vl-utils). The phantom data and the tiny Qwen3-VL use it; the Qwen3-VL recipes for real
# models keep the processor's own default, 256 * 256 (data_prep.families), which exceeds small frames.
QWEN3_MIN_PIXELS = 64 * 64
PAPER_MAX_PIXELS = 512 * 512  # the released model runs with max_pixels = 262144
# frame.json key: folders outside the dataset folder its records' images may lie in (data_prep.io.image_roots)
IMAGE_ROOTS = "image_roots"


class FrameMismatch(OpenMedixError, ValueError):
    """A processor that would resize a dataset's images again: the boxes would no longer match them."""


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = FACTOR):
    """(h, w) of an image after the Qwen-VL resize: transformers' rule itself, so the frame data prep
    stores is the one the processor computes (Qwen3-VL's image processor applies the same rule with
    factor 32). Imported on first use: it brings in torch, which data prep needs nowhere else.
    ValueError for an aspect ratio over 200 (the processor refuses those too)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as qwen_smart_resize

    return qwen_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


def scale_box(box, src_wh, dst_wh, ndigits: int = 0):
    """Map [x0, y0, x1, y1] from a src (w, h) frame to a dst (w, h) frame, clipped to it."""
    sx, sy = dst_wh[0] / src_wh[0], dst_wh[1] / src_wh[1]
    x0, y0, x1, y1 = box
    out = [
        min(max(x0 * sx, 0), dst_wh[0]),
        min(max(y0 * sy, 0), dst_wh[1]),
        min(max(x1 * sx, 0), dst_wh[0]),
        min(max(y1 * sy, 0), dst_wh[1]),
    ]
    out = [round(v, ndigits) for v in out]
    return [int(v) for v in out] if ndigits == 0 else out


def write_frame(
    dataset_dir: str | Path,
    min_pixels: int,
    max_pixels: int,
    factor: int = FACTOR,
    family: str | None = None,
    image_roots: list[str] | None = None,
) -> None:
    path = Path(dataset_dir) / "frame.json"
    payload = {"min_pixels": int(min_pixels), "max_pixels": int(max_pixels), "factor": int(factor)}
    if family:
        payload["family"] = family
    if image_roots:
        payload[IMAGE_ROOTS] = list(image_roots)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


def frame_rule(frame: dict) -> tuple[int, int, int]:
    """(min_pixels, max_pixels, factor): what decides the resize (``family`` only names it; a frame
    without ``factor`` is Qwen2.5-VL's, 28)."""
    return frame["min_pixels"], frame["max_pixels"], frame.get("factor", FACTOR)


def read_frame(dataset_dir: str | Path) -> dict | None:
    """The dataset's frame.json, or None without one. A frame.json that lists only image roots (original
    files kept outside the folder, not resized: data_prep.converters.adapter with ``frame: null``) is
    no frame either."""
    path = Path(dataset_dir) / "frame.json"
    frame = json.loads(path.read_text()) if path.exists() else None
    return frame if frame and "min_pixels" in frame else None


def processor_rule(image_processor) -> tuple[int, int, int]:
    """(min_pixels, max_pixels, factor) of a Qwen-VL image processor: the resize it applies to every image."""
    size = getattr(image_processor, "size", {}) or {}
    proc_min = size.get("shortest_edge", getattr(image_processor, "min_pixels", None))
    proc_max = size.get("longest_edge", getattr(image_processor, "max_pixels", None))
    proc_factor = getattr(image_processor, "patch_size", 14) * getattr(image_processor, "merge_size", 2)
    return proc_min, proc_max, proc_factor


def check_processor_frame(dataset_dir: str | Path, image_processor) -> None:
    """Stop with a clear message when the processor's min/max pixels differ from the data's."""
    frame = read_frame(dataset_dir)
    if frame is None:
        return
    proc_min, proc_max, proc_factor = processor_rule(image_processor)
    if proc_factor != frame.get("factor", FACTOR):
        raise FrameMismatch(
            f"{dataset_dir}/frame.json was prepared for image sides in multiples of {frame.get('factor', FACTOR)} "
            f"({frame.get('family', 'qwen2.5-vl')}), but the processor resizes to multiples of {proc_factor}. "
            "Prepare the data for this model's family (`--family`), or use a model of the data's family."
        )
    if (proc_min, proc_max) != (frame["min_pixels"], frame["max_pixels"]):
        raise FrameMismatch(
            f"{dataset_dir}/frame.json was prepared for min_pixels={frame['min_pixels']}, "
            f"max_pixels={frame['max_pixels']}, but the processor uses min_pixels={proc_min}, "
            f"max_pixels={proc_max}. Boxes would no longer match the image the model sees. "
            "Set `min_pixels`/`max_pixels` in the recipe to the dataset's values, or prepare "
            "the data again with the processor's values."
        )
