"""Records -> the datasets TRL's trainers read (prompt / completion / images columns).

Every row is checked before training starts: a missing image, an empty answer or a box
outside the frame stops with an error naming the file, line and record id, instead of a
crash deep inside TRL. ``skip_bad_rows=True`` drops them instead, counted by reason.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from datasets import Dataset, Image, Sequence

from data_prep.io import RECORDS, iter_jsonl, resolve_image
from data_prep.prompts import answer_text, question_text, reasoning_text
from data_prep.schema import RecordError, is_credentialed, validate_record


class BadRowsError(SystemExit):
    pass


def load_checked_records(
    dataset_dir: str | Path,
    split: str,
    tasks: list[str] | None = None,
    need_reasoning: bool = False,
    max_samples: int | None = None,
    skip_bad_rows: bool = False,
    quiet: bool = False,
) -> list[dict]:
    """Records of one split that are safe to train on; bad rows raise (or are skipped, counted; ``quiet``
    skips without saying so, for a second read whose bad rows the first already reported)."""
    dataset_dir = Path(dataset_dir)
    file = dataset_dir / RECORDS
    if not file.exists():
        raise FileNotFoundError(
            f"{file} not found: `dataset_path` must be a dataset folder holding {RECORDS} "
            "(make one with `python -m data_prep.phantom --out DIR` or a data_prep converter)."
        )
    good, bad = [], []
    for lineno, rec in iter_jsonl(file):
        if rec.get("split") != split or (tasks and rec.get("task") not in tasks):
            continue
        where = f"{file}:{lineno} (id={rec.get('id')!r})"
        try:
            validate_record(rec)
        except RecordError as e:
            bad.append((where, str(e)))
            continue
        if not resolve_image(dataset_dir, rec["image"]).exists():
            bad.append((where, f"image file not found: {resolve_image(dataset_dir, rec['image'])}"))
            continue
        if need_reasoning and not (rec.get("reasoning") or "").strip():
            bad.append((where, "no reasoning (the cold-start stage needs the `reasoning` field)"))
            continue
        good.append(rec)
        if max_samples and len(good) >= max_samples:
            break
    if bad:
        reasons = Counter(reason.split(":")[0] for _, reason in bad)
        listing = "\n".join(f"  {w}: {r}" for w, r in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        if not skip_bad_rows:
            raise BadRowsError(
                f"{len(bad)} bad row(s) in split '{split}' of {file}:\n{listing}{more}\n"
                "Fix the data, or set `skip_bad_rows: true` in the recipe to train without them."
            )
        if not quiet:
            print(f"skipped {len(bad)} bad row(s) of {file}: {dict(reasons)}\n{listing}{more}")
    if not good:
        raise BadRowsError(f"no usable records in split '{split}' of {file} (tasks={tasks})")
    return good


def _image_column(dataset: Dataset) -> Dataset:
    # Decoded lazily, at batch time: images are small PNGs already in the model frame.
    return dataset.cast_column("images", Sequence(Image()))


def trl_prompt(record: dict, reasoning: bool) -> list[dict]:
    """The prompt as TRL stores it: string content; TRL puts the image placeholder before the text,
    which renders exactly like data_prep.prompts.build_prompt (a test checks it)."""
    return [{"role": "user", "content": question_text(record, reasoning)}]


def sft_dataset(records: list[dict], dataset_dir: str | Path, reasoning: bool) -> Dataset:
    """prompt / completion / images rows for SFTTrainer (completion-only loss)."""
    rows = []
    for rec in records:
        text = reasoning_text(rec["reasoning"], rec["answer"]) if reasoning else answer_text(rec["answer"])
        rows.append(
            {
                "prompt": trl_prompt(rec, reasoning),
                "completion": [{"role": "assistant", "content": text}],
                "images": [str(resolve_image(dataset_dir, rec["image"]))],
            }
        )
    return _image_column(Dataset.from_list(rows))


def image_boxes(records: list[dict]) -> dict[str, list[dict]]:
    """Every box annotated on each image, across all its records (the asked finding's record holds only
    that finding's box; the image shows them all). De-duplicated by (label, box), in first-seen order."""
    out: dict[str, list[dict]] = {}
    for rec in records:
        boxes = out.setdefault(rec["image"], [])
        for b in rec.get("boxes") or ():
            item = {"label": b["label"], "box": [float(v) for v in b["box"]]}
            if item not in boxes:
                boxes.append(item)
    return out


def grpo_dataset(records: list[dict], dataset_dir: str | Path, boxes_of_image: dict | None = None) -> Dataset:
    """prompt / images rows plus the columns the rewards read (solution, boxes, image_boxes, width,
    height, task).

    ``image_boxes`` (from ``boxes_of_image``, default: ``image_boxes(records)``) is every annotated box
    of the row's image: what a reasoning that surveys the image should cite (rewards.grounded.grounding).
    ``credentialed`` lets recipes/grpo.py keep completion tables of credentialed sources out of
    trackers unless the recipe opts in.
    """
    boxes_of_image = image_boxes(records) if boxes_of_image is None else boxes_of_image
    rows = []
    for rec in records:
        rows.append(
            {
                "prompt": trl_prompt(rec, reasoning=True),
                "images": [str(resolve_image(dataset_dir, rec["image"]))],
                "solution": rec["answer"],
                "boxes": [{"label": b["label"], "box": [float(v) for v in b["box"]]} for b in rec["boxes"]],
                "image_boxes": boxes_of_image.get(rec["image"], []),
                "width": rec["width"],
                "height": rec["height"],
                "task": rec["task"],
                "source": rec["source"],
                "credentialed": is_credentialed(rec["source"]),
            }
        )
    return _image_column(Dataset.from_list(rows))


__all__ = ["load_checked_records", "sft_dataset", "grpo_dataset", "image_boxes", "trl_prompt"]
