"""Records -> the datasets TRL's trainers read (prompt / completion / images columns).

Every row is checked before training starts: a missing image, an image outside the dataset
folder (data_prep.io.resolve_image), a duplicate id, an empty answer or a box outside the frame
stops with an error naming the file, line and record id, instead of a crash deep inside TRL.
Given the processor's frame, the image content is checked too (data_prep.image_check): an image
that does not decode, is not in the frame or is not the record's width x height.
``skip_bad_rows=True`` drops them instead, counted by reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from datasets import Dataset, Image, Sequence
from tqdm import tqdm

from data_prep.errors import one_line
from data_prep.families import in_convention, scale_box_list
from data_prep.image_check import ImageChecker
from data_prep.io import RECORDS, image_paths, image_roots, iter_jsonl, resolve_image
from data_prep.prompts import answer_text, question_text, reasoning_text, user_content
from data_prep.schema import (
    IMAGE_TOKEN,
    RecordError,
    image_key,
    is_credentialed,
    record_images,
    validate_record,
)

log = logging.getLogger(__name__)


class BadRowsError(SystemExit):
    """Rows a recipe cannot train on: the message names file:line, the id, the reason and the fix."""


def reason_kind(reason: str) -> str:
    """The category a bad-row reason is counted under: its text before the first ':', ' (' or ', '."""
    return reason.split(":")[0].split(" (")[0].split(", ")[0]


def load_checked_records(
    dataset_dir: str | Path,
    split: str,
    tasks: list[str] | None = None,
    need_reasoning: bool = False,
    max_samples: int | None = None,
    skip_bad_rows: bool = False,
    quiet: bool = False,
    frame: tuple[int, int, int] | None = None,
    progress: bool = False,
    bad_rows: list | None = None,
) -> list[dict]:
    """Records of one split that are safe to train on; bad rows raise (or are skipped, counted; ``quiet``
    skips without saying so, for a second read whose bad rows the first already reported).

    A line that is not valid UTF-8 or not valid JSON (a writer killed mid-line) is a bad row too; its
    split is unknown, so it counts in every split's read. So is a record whose id an earlier line
    already holds (ids key predictions, resumes and reviews): the first is kept.

    ``frame``: the processor's (min_pixels, max_pixels, factor) (data_prep.frame.processor_rule). Given
    it, every image of every kept row is decoded (cached per file) and must already be in that frame,
    the first at the record's width x height (data_prep.image_check); ``progress`` shows a bar. Given
    a ``bad_rows`` list, every bad row is appended to it as (where, reason).
    """
    dataset_dir = Path(dataset_dir)
    file = dataset_dir / RECORDS
    if not file.exists():
        raise FileNotFoundError(
            f"{file} not found: `dataset_path` must be a dataset folder holding {RECORDS} "
            "(make one with `python -m data_prep.phantom --out DIR` or a data_prep converter)."
        )
    roots = image_roots(dataset_dir)
    checker = ImageChecker(dataset_dir, frame) if frame else None
    bar = tqdm(desc=f"checking images ({split})", unit="row", disable=not progress or checker is None)
    good, bad, broken, first_line = [], [], [], {}
    try:
        for lineno, rec in iter_jsonl(file, broken=broken):
            if not isinstance(rec, dict):
                bad.append((f"{file}:{lineno}", f"not a JSON object: got {type(rec).__name__}"))
                continue
            rid = rec.get("id")
            first = first_line.setdefault(rid, lineno) if isinstance(rid, str) else lineno
            if rec.get("split") != split or (tasks and rec.get("task") not in tasks):
                continue
            where = f"{file}:{lineno} (id={rid!r})"
            if first != lineno:
                bad.append((where, f"duplicate id, first at line {first}"))
                continue
            try:
                validate_record(rec)
                paths = [resolve_image(dataset_dir, i, roots) for i in record_images(rec)]
                missing = [p for p in paths if not p.exists()]
            except RecordError as e:  # ImagePathError too: never open what the record merely names
                bad.append((where, str(e)))
                continue
            except (ValueError, OSError) as e:  # a path the OS refuses: a NUL byte, a name too long
                bad.append((where, f"unusable image path: {one_line(e)}"))
                continue
            if missing:
                bad.append((where, f"image file not found: {missing[0]}"))
                continue
            if need_reasoning and not (rec.get("reasoning") or "").strip():
                bad.append((where, "no reasoning (the cold-start stage needs the `reasoning` field)"))
                continue
            if checker is not None:  # last: the one check that reads the files
                bar.update()
                problem = checker.problem(rec, paths)
                if problem:
                    bad.append((where, problem))
                    continue
            good.append(rec)
            if max_samples and len(good) >= max_samples:
                break
    finally:
        bar.close()
        if checker is not None:
            checker.save()
    bad = [(f"{file}:{lineno}", reason) for lineno, reason in broken] + bad
    if bad_rows is not None:
        bad_rows.extend(bad)
    reasons = dict(Counter(reason_kind(reason) for _, reason in bad))
    if bad:
        listing = "\n".join(f"  {w}: {r}" for w, r in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        if not skip_bad_rows and len(bad) == 1:  # one line: where, why, and the fix
            raise BadRowsError(
                f"bad row in split '{split}': {bad[0][0]}: {bad[0][1]}. "
                "Fix the data, or set `skip_bad_rows: true` in the recipe to train without it."
            )
        if not skip_bad_rows:
            raise BadRowsError(
                f"{len(bad)} bad row(s) in split '{split}' of {file}:\n{listing}{more}\n"
                "Fix the data, or set `skip_bad_rows: true` in the recipe to train without them."
            )
        if not quiet:
            print(f"skipped {len(bad)} bad row(s) of {file}: {reasons}\n{listing}{more}")
            for where, reason in bad:  # the whole list, for a log file; the console got the first 10
                log.info("skipped bad row %s: %s", where, reason)
    if not good:
        skipped = f"; {len(bad)} bad row(s) skipped: {reasons}" if bad else ""
        raise BadRowsError(f"no usable records in split '{split}' of {file} (tasks={tasks}){skipped}")
    return good


def _image_column(dataset: Dataset) -> Dataset:
    # Decoded lazily, at batch time: images are small PNGs already in the model frame.
    return dataset.cast_column("images", Sequence(Image()))


def trl_prompt(record: dict, reasoning: bool, family=None) -> list[dict]:
    """The prompt as TRL stores it: string content, TRL putting the image placeholders before the text,
    which renders exactly like data_prep.prompts.build_prompt (a test checks it). A question with
    ``<image>`` placeholders gets content items instead, the images at their places."""
    text = question_text(record, reasoning, family)
    if IMAGE_TOKEN in text:
        return [{"role": "user", "content": user_content(text, len(record_images(record)))}]
    return [{"role": "user", "content": text}]


def _rows_dataset(rows: list[dict]) -> Dataset:
    """Arrow holds one type per column: once a prompt has content items, every row gets them."""
    if any(isinstance(r["prompt"][0]["content"], list) for r in rows):
        for r in rows:
            content = r["prompt"][0]["content"]
            if isinstance(content, str):
                content = user_content(content, len(r["images"]))
            r["prompt"] = [
                {"role": "user", "content": [{"type": c["type"], "text": c.get("text")} for c in content]}
            ]
    return _image_column(Dataset.from_list(rows))


def images_column(record: dict, dataset_dir: str | Path) -> list[str]:
    return [str(p) for p in image_paths(dataset_dir, record)]


def sft_row(record: dict, dataset_dir: str | Path, reasoning: bool, family=None) -> dict:
    """One SFTTrainer row: prompt / completion / images (image paths)."""
    images = images_column(record, dataset_dir)
    rec = in_convention(record, family) if family is not None else record
    text = reasoning_text(rec["reasoning"], rec["answer"]) if reasoning else answer_text(rec["answer"])
    return {
        "prompt": trl_prompt(rec, reasoning, family),
        "completion": [{"role": "assistant", "content": text}],
        "images": images,
    }


def sft_dataset(records: list[dict], dataset_dir: str | Path, reasoning: bool, family=None) -> Dataset:
    """prompt / completion / images rows for SFTTrainer (completion-only loss); boxes in the text (box
    answers, the reasoning's citations) are written in ``family``'s convention (data_prep.families)."""
    return _rows_dataset([sft_row(rec, dataset_dir, reasoning, family) for rec in records])


def image_boxes(records: list[dict]) -> dict[str, list[dict]]:
    """Every box annotated on each image, across all its records (the asked finding's record holds only
    that finding's box; the image shows them all). De-duplicated by (label, box), in first-seen order.
    Keyed by ``schema.image_key`` (a multi-image record's boxes lie on its first image)."""
    out: dict[str, list[dict]] = {}
    for rec in records:
        boxes = out.setdefault(image_key(rec), [])
        for b in rec.get("boxes") or ():
            item = {"label": b["label"], "box": [float(v) for v in b["box"]]}
            if item not in boxes:
                boxes.append(item)
    return out


def grpo_dataset(
    records: list[dict], dataset_dir: str | Path, boxes_of_image: dict | None = None, family=None
) -> Dataset:
    """prompt / images rows plus the columns the rewards read (solution, boxes, image_boxes, width,
    height, task).

    ``image_boxes`` (from ``boxes_of_image``, default: ``image_boxes(records)``) is every annotated box
    of the row's image: what a reasoning that surveys the image should cite (rewards.grounded.grounding).
    ``credentialed`` lets recipes/grpo.py keep completion tables of credentialed sources out of
    trackers unless the recipe opts in.

    With a relative-coordinate ``family`` (Qwen3-VL) the reward columns are in its convention
    (data_prep.families.in_convention: 0-1000 boxes, width = height = 1000), so the rewards compare
    like with like.
    """
    boxes_of_image = image_boxes(records) if boxes_of_image is None else boxes_of_image
    rows = []
    for rec in records:
        images = images_column(rec, dataset_dir)
        img_boxes = boxes_of_image.get(image_key(rec), [])
        if family is not None:  # absolute families: unchanged
            img_boxes = scale_box_list(img_boxes, rec["width"], rec["height"], family)
            rec = in_convention(rec, family)
        rows.append(
            {
                "prompt": trl_prompt(rec, reasoning=True, family=family),
                "images": images,
                "solution": rec["answer"],
                "boxes": [{"label": b["label"], "box": [float(v) for v in b["box"]]} for b in rec["boxes"]],
                "image_boxes": img_boxes,
                "width": rec["width"],
                "height": rec["height"],
                "task": rec["task"],
                "source": rec["source"],
                "credentialed": is_credentialed(rec["source"]),
            }
        )
    return _rows_dataset(rows)


__all__ = ["load_checked_records", "sft_row", "sft_dataset", "grpo_dataset", "image_boxes", "trl_prompt"]
