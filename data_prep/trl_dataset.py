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

from data_prep.errors import OpenMedixError, one_line
from data_prep.families import in_convention, scale_box_list
from data_prep.image_check import ImageChecker
from data_prep.io import RECORDS, DatasetNotFoundError, image_paths, image_roots, iter_jsonl, resolve_image
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


class BadRowsError(OpenMedixError, ValueError):
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
        raise DatasetNotFoundError(
            f"{file} not found: `dataset_path` must be a dataset folder holding {RECORDS} "
            "(make one with `python -m data_prep.phantom --out DIR` or a data_prep converter)."
        )
    checker = ImageChecker(dataset_dir, frame) if frame else None
    bar = tqdm(desc=f"checking images ({split})", unit="row", disable=not progress or checker is None)
    try:
        rows = _RowCheck(dataset_dir, need_reasoning, checker, bar)
        good, bad = rows.read(file, split, tasks, max_samples)
    finally:
        bar.close()
        if checker is not None:
            checker.save()
    if bad_rows is not None:
        bad_rows.extend(bad)
    reasons = dict(Counter(reason_kind(reason) for _, reason in bad))
    if bad and not skip_bad_rows:
        raise BadRowsError(_bad_rows_message(bad, file, split))
    if bad and not quiet:
        _log_skipped(bad, file, reasons)
    if not good:
        skipped = f"; {len(bad)} bad row(s) skipped: {reasons}" if bad else ""
        raise BadRowsError(f"no usable records in split '{split}' of {file} (tasks={tasks}){skipped}")
    return good


class _RowCheck:
    """The checks of one dataset folder's rows, cheapest first; the image content (``checker``) last."""

    def __init__(self, dataset_dir: Path, need_reasoning: bool, checker: ImageChecker | None, bar):
        self.dataset_dir, self.roots = dataset_dir, image_roots(dataset_dir)
        self.need_reasoning = need_reasoning
        self.checker, self.bar = checker, bar

    def read(self, file: Path, split: str, tasks, max_samples) -> tuple[list[dict], list[tuple[str, str]]]:
        """(good records of the split, bad rows as (where, reason)); lines that do not parse come first."""
        good, bad, broken, first_line = [], [], [], {}
        for lineno, rec in iter_jsonl(file, broken=broken):
            if not isinstance(rec, dict):
                bad.append((f"{file}:{lineno}", f"not a JSON object: got {type(rec).__name__}"))
                continue
            rid = rec.get("id")
            first = first_line.setdefault(rid, lineno) if isinstance(rid, str) else lineno
            if rec.get("split") != split or (tasks and rec.get("task") not in tasks):
                continue
            where = f"{file}:{lineno} (id={rid!r})"
            problem = f"duplicate id, first at line {first}" if first != lineno else self.problem(rec)
            if problem:
                bad.append((where, problem))
                continue
            good.append(rec)
            if max_samples and len(good) >= max_samples:
                break
        return good, [(f"{file}:{lineno}", reason) for lineno, reason in broken] + bad

    def problem(self, rec: dict) -> str | None:
        """Why a record of the split cannot be trained on, or None."""
        try:
            validate_record(rec)
            paths = [resolve_image(self.dataset_dir, i, self.roots) for i in record_images(rec)]
            missing = [p for p in paths if not p.exists()]
        except RecordError as e:  # ImagePathError too: never open what the record merely names
            return str(e)
        except (ValueError, OSError) as e:  # a path the OS refuses: a NUL byte, a name too long
            return f"unusable image path: {one_line(e)}"
        if missing:
            return f"image file not found: {missing[0]}"
        if self.need_reasoning and not (rec.get("reasoning") or "").strip():
            return "no reasoning (the cold-start stage needs the `reasoning` field)"
        if self.checker is not None:  # last: the one check that reads the files
            self.bar.update()
            return self.checker.problem(rec, paths)
        return None


BAD_ROWS_FIX = "Fix the data, or set `skip_bad_rows: true` in the recipe to train without {}."


def _listing(bad: list[tuple[str, str]], sep: str) -> str:
    """The first 10 bad rows as ``where: reason``, then how many more."""
    more = [f"... and {len(bad) - 10} more"] if len(bad) > 10 else []
    return sep.join([f"{w}: {r.rstrip('.')}" for w, r in bad[:10]] + more)


def _bad_rows_message(bad: list[tuple[str, str]], file: Path, split: str) -> str:
    """One line: where, why, and the fix."""
    if len(bad) == 1:
        where, reason = bad[0]
        return f"bad row in split '{split}': {where}: {reason.rstrip('.')}. {BAD_ROWS_FIX.format('it')}"
    listing = _listing(bad, "; ")
    return f"{len(bad)} bad row(s) in split '{split}' of {file}: {listing}. {BAD_ROWS_FIX.format('them')}"


def _log_skipped(bad: list[tuple[str, str]], file: Path, reasons: dict) -> None:
    """The count by reason and the first 10 rows as a warning; the rest for a log file."""
    log.warning("skipped %d bad row(s) of %s: %s\n  %s", len(bad), file, reasons, _listing(bad, "\n  "))
    for where, reason in bad[10:]:
        log.info("skipped bad row %s: %s", where, reason)


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
