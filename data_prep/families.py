"""Model families: the frame rule and the box convention each VLM family was trained with.

A family is one key (``model_family`` in a recipe, ``family`` in a dataset's ``frame.json``):

  qwen2.5-vl  14 px patches merged 2 x 2: image sides are multiples of 28; boxes in absolute pixels
              of the resized image (what Qwen2.5-VL was trained to ground in, and the paper used)
  qwen3-vl    16 px patches merged 2 x 2: sides are multiples of 32; boxes relative to the image on a
              0-1000 scale (Qwen3-VL's grounding convention)

Data prep stores every box once, in absolute pixels of the stored image (``data_prep.schema``). The
convention is applied where text is built and read: ``in_convention`` rewrites a record's boxes,
box answers and reasoning text into the family's convention before prompts, completions and reward
columns are made, so the rewards and metrics then compare like with like. A box that is exactly
right in either convention scores the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import OpenMedixError
from data_prep.frame import FACTOR, QWEN_MIN_PIXELS, read_frame

RELATIVE_SCALE = 1000  # Qwen3-VL's relative coordinates: 0..1000 of the image's width and height


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # HF config ``model_type`` values
    patch_size: int
    merge_size: int
    boxes: str  # "absolute" (pixels of the resized image) or "relative" (0-1000)
    min_pixels: int  # the processor's default

    @property
    def factor(self) -> int:
        """Image sides are multiples of this (patch x merge)."""
        return self.patch_size * self.merge_size

    @property
    def relative(self) -> bool:
        return self.boxes == "relative"


FAMILIES = {
    "qwen2.5-vl": Family("qwen2.5-vl", ("qwen2_5_vl",), 14, 2, "absolute", QWEN_MIN_PIXELS),
    # Qwen3-VL's processor default min_pixels is 256 x 256 (its preprocessor_config: shortest_edge 65536)
    "qwen3-vl": Family("qwen3-vl", ("qwen3_vl",), 16, 2, "relative", 256 * 256),
}
DEFAULT_FAMILY = "qwen2.5-vl"
assert FAMILIES[DEFAULT_FAMILY].factor == FACTOR


class FamilyError(OpenMedixError, ValueError):
    """A family that is not known, or a model whose family cannot be told."""


class FamilyMismatch(FamilyError):
    """A model, recipe or dataset of one family used with another: the message names both."""


def get_family(name: str | None) -> Family:
    if name is None:
        return FAMILIES[DEFAULT_FAMILY]
    if name not in FAMILIES:
        raise FamilyError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_of_model_type(model_type: str) -> Family | None:
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def model_family(model_path: str | Path) -> Family:
    """The family of a local model folder or hub id, from its config's ``model_type``."""
    from transformers import AutoConfig

    try:
        model_type = AutoConfig.from_pretrained(str(model_path)).model_type
    except OSError as e:  # a missing folder, or a hub id not in the offline cache
        why = next(iter(str(e).splitlines()), type(e).__name__).strip().rstrip(".")  # HF adds lines of advice
        raise FamilyError(
            f"cannot read the model config of {model_path}: {why}. "
            "Give a local model folder (the demo's: `make tiny-model`) or a hub id you have downloaded."
        ) from None
    family = family_of_model_type(model_type)
    if family is None:
        raise FamilyError(
            f"{model_path}: model_type '{model_type}' belongs to no known family "
            f"({', '.join(f'{f.name}: {f.model_types}' for f in FAMILIES.values())})"
        )
    return family


def dataset_family(dataset_dir: str | Path) -> Family | None:
    """The family a dataset folder was prepared for (frame.json), or None when it does not say."""
    frame = read_frame(dataset_dir)
    if frame is None:
        return None
    if frame.get("family"):
        return get_family(frame["family"])
    # a frame.json without ``family`` names only the factor, which tells the family as well
    return next((f for f in FAMILIES.values() if f.factor == frame.get("factor", FACTOR)), None)


def check_family(model_path, dataset_dir, recipe_family: str | None = None) -> Family:
    """The model's family, after checking the recipe's ``model_family`` and the dataset's frame agree."""
    family = model_family(model_path)
    if recipe_family and get_family(recipe_family) != family:
        raise FamilyMismatch(
            f"the recipe says model_family: {recipe_family}, but {model_path} is a {family.name} model. "
            f"Use a {recipe_family} checkpoint, or set model_family: {family.name} (and its recipe)."
        )
    data = dataset_family(dataset_dir)
    if data is not None and data.factor != family.factor:
        raise FamilyMismatch(
            f"{dataset_dir} was prepared for {data.name} (image sides in multiples of {data.factor}), but "
            f"{model_path} is a {family.name} model (multiples of {family.factor}). Prepare the data for "
            f"{family.name} (e.g. `--family {family.name}` on the converter or phantom generator)."
        )
    return family


# ---------------------------------------------------------------------------------------------
# box conventions
# ---------------------------------------------------------------------------------------------


def to_convention(box, width: float, height: float, family: Family) -> list:
    """An absolute-pixel box as the family writes it (relative: integers 0-1000)."""
    if not family.relative:
        return list(box)
    sx, sy = RELATIVE_SCALE / width, RELATIVE_SCALE / height
    x0, y0, x1, y1 = box
    return [round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)]


def from_convention(box, width: float, height: float, family: Family) -> list:
    """A box as the family writes it, in absolute pixels of the width x height image."""
    if not family.relative:
        return list(box)
    sx, sy = width / RELATIVE_SCALE, height / RELATIVE_SCALE
    x0, y0, x1, y1 = box
    return [x0 * sx, y0 * sy, x1 * sx, y1 * sy]


def _box_text(box) -> str:
    return "[" + ", ".join(str(int(v)) if float(v).is_integer() else f"{v:g}" for v in box) + "]"


def convert_box_text(text: str, width: float, height: float, family: Family) -> str:
    """Every ``[x0, y0, x1, y1]`` in text (reasoning, a box answer) rewritten in the family's convention."""
    if not family.relative or not text:
        return text
    from rewards.parsing import BOX_RE

    def repl(m):
        box = [float(m.group(i)) for i in range(1, 5)]
        return _box_text(to_convention(box, width, height, family))

    return BOX_RE.sub(repl, text)


def scale_box_list(boxes: list[dict], width: float, height: float, family: Family) -> list[dict]:
    return [{"label": b["label"], "box": to_convention(b["box"], width, height, family)} for b in boxes]


def in_convention(record: dict, family: Family) -> dict:
    """The record as the family's model should read and write it: boxes, a box answer and the reasoning's
    cited boxes in its convention; ``width``/``height`` the frame those boxes are judged in (1000 x 1000
    for relative coordinates). Absolute families get the record unchanged."""
    if not family.relative:
        return record
    w, h = record["width"], record["height"]
    out = dict(record)
    out["boxes"] = scale_box_list(record["boxes"], w, h, family)
    if record["task"] == "grounding":
        out["answer"] = convert_box_text(record["answer"], w, h, family)
    if record.get("reasoning"):
        out["reasoning"] = convert_box_text(record["reasoning"], w, h, family)
    out["width"] = out["height"] = RELATIVE_SCALE
    return out


__all__ = [
    "FAMILIES",
    "DEFAULT_FAMILY",
    "Family",
    "FamilyError",
    "FamilyMismatch",
    "check_family",
    "convert_box_text",
    "dataset_family",
    "from_convention",
    "get_family",
    "in_convention",
    "model_family",
    "to_convention",
]
