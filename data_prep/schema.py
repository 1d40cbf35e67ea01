"""The one record schema every dataset is converted into.

A record is a plain dict (one JSON object per line in ``records.jsonl``):

    id          str   unique within the dataset
    source      str   dataset name, e.g. "phantom", "mimic-cxr", "vindr-cxr"
    task        str   one of TASKS
    question    str   the instruction / question shown to the model
    answer      str   the final answer; list answers are joined with " | "
    boxes       list  [{"label": str, "box": [x_min, y_min, x_max, y_max]}, ...] in the
                      pixel frame of the FIRST stored image (the model frame); may be empty.
                      With several images, boxes and the reasoning's cited boxes lie on the first.
    image       str | list[str]   path of the image, already resized into the model frame;
                      relative paths are relative to the dataset folder. A study with several
                      views (frontal + lateral, prior + current) holds a list, every image in the
                      same frame rule (min/max pixels), each with its own size.
    width       int   first image's width  (model frame)
    height      int   first image's height (model frame)
    patient_id  str
    study_id    str
    split       str   one of SPLITS
    reasoning   str | None   grounded reasoning (cold-start data), without the answer
    meta        dict | None  free-form extras (question type, view, original size, ...)

The question may place the images with ``<image>`` placeholders (one per image, as EasyR1 and
LLaVA-style datasets do); without them the images come first. Prompts turn placeholders into
image items at their place (data_prep.prompts.user_content); they never reach the model as text.
"""

from __future__ import annotations

import math
from typing import Any

from data_prep.errors import OpenMedixError

TASKS = ("report_findings", "report_impression", "vqa", "classification", "grounding")
SPLITS = ("train", "validation", "test")
LIST_SEP = " | "
IMAGE_TOKEN = "<image>"

REQUIRED = {
    "id": str,
    "source": str,
    "task": str,
    "question": str,
    "answer": str,
    "boxes": list,
    "image": (str, list),
    "width": int,
    "height": int,
    "patient_id": str,
    "study_id": str,
    "split": str,
}
OPTIONAL = {"reasoning": (str, type(None)), "meta": (dict, type(None))}
CREDENTIALED_SOURCES = (
    "mimic-cxr",
    "mimic-cxr-jpg",
    "mimic-cxr-vqa",
    "medical-diff-vqa",
    "ms-cxr",
    "vindr-cxr",
    "chest-imagenome",
)


class RecordError(OpenMedixError, ValueError):
    """A record that breaks the schema; the message says which field and why."""


def is_credentialed(source: str) -> bool:
    """True for MIMIC-CXR and derivatives, VinDr-CXR, MS-CXR, Chest ImaGenome."""
    s = source.lower()
    return any(s == c or s.startswith(c + "/") or s.startswith(c + ":") for c in CREDENTIALED_SOURCES)


def record_images(rec: dict) -> list[str]:
    """The record's image paths, in order (one for a single-image record)."""
    image = rec["image"]
    return [image] if isinstance(image, str) else list(image)


def image_key(rec: dict) -> str:
    """The image a record's boxes lie on (its first): groups the records of one image."""
    return record_images(rec)[0]


def box_problem(box: Any, width: int, height: int) -> str | None:
    """Why ``box`` is not a valid [x_min, y_min, x_max, y_max] in a width x height frame, or None."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return f"box must be a list of 4 numbers, got {box!r}"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
        return f"box must hold numbers, got {box!r}"
    if not all(math.isfinite(v) for v in box):
        return f"box holds a non-finite number: {box!r}"
    x0, y0, x1, y1 = box
    if x0 >= x1:
        return f"x_min >= x_max in {list(box)}"
    if y0 >= y1:
        return f"y_min >= y_max in {list(box)}"
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return f"box {list(box)} lies outside the {width}x{height} frame"
    return None


def validate_record(rec: Any) -> dict:
    """Return ``rec`` if it is a valid record, else raise RecordError naming the problem."""
    if not isinstance(rec, dict):
        raise RecordError(f"record must be a JSON object, got {type(rec).__name__}")
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        raise RecordError(f"missing field(s): {', '.join(missing)}")
    for key, typ in REQUIRED.items():
        val = rec[key]
        if typ is int and isinstance(val, bool) or not isinstance(val, typ):
            name = " or ".join(t.__name__ for t in typ) if isinstance(typ, tuple) else typ.__name__
            raise RecordError(f"field '{key}' must be {name}, got {type(val).__name__}")
    for key, typs in OPTIONAL.items():
        if key in rec and not isinstance(rec[key], typs):
            raise RecordError(f"field '{key}' must be {typs[0].__name__} or null")
    unknown = set(rec) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise RecordError(f"unknown field(s): {', '.join(sorted(unknown))}")
    if not rec["id"]:
        raise RecordError("field 'id' is empty")
    if rec["task"] not in TASKS:
        raise RecordError(f"unknown task '{rec['task']}' (expected one of {', '.join(TASKS)})")
    if rec["split"] not in SPLITS:
        raise RecordError(f"unknown split '{rec['split']}' (expected one of {', '.join(SPLITS)})")
    if not rec["answer"].strip():
        raise RecordError("field 'answer' is empty")
    if not rec["question"].strip():
        raise RecordError("field 'question' is empty")
    images = record_images(rec)
    if not images or not all(isinstance(i, str) and i for i in images):
        raise RecordError(f"field 'image' must be a path or a non-empty list of paths, got {rec['image']!r}")
    placeholders = rec["question"].count(IMAGE_TOKEN)
    if placeholders not in (0, len(images)):
        raise RecordError(
            f"the question has {placeholders} {IMAGE_TOKEN} placeholder(s) for {len(images)} image(s): "
            "use one per image, or none (the images then come first)"
        )
    if rec["width"] <= 0 or rec["height"] <= 0:
        raise RecordError(f"width/height must be positive, got {rec['width']}x{rec['height']}")
    for i, b in enumerate(rec["boxes"]):
        if not isinstance(b, dict) or set(b) != {"label", "box"}:
            raise RecordError(f"boxes[{i}] must be {{'label': str, 'box': [4 numbers]}}, got {b!r}")
        if not isinstance(b["label"], str) or not b["label"]:
            raise RecordError(f"boxes[{i}] has an empty or non-string label")
        problem = box_problem(b["box"], rec["width"], rec["height"])
        if problem:
            raise RecordError(f"boxes[{i}] ('{b['label']}'): {problem}")
    if rec["task"] == "grounding" and not rec["boxes"]:
        raise RecordError("a grounding record needs at least one box")
    return rec


def make_record(**fields: Any) -> dict:
    """Build a record with optional fields defaulted, validated."""
    rec = {"reasoning": None, "meta": None, **fields}
    return validate_record(rec)
