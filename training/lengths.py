"""What fits the token budget: prompt and row lengths as the model sees them, image tokens included.

TRL counts an image placeholder as one text token; the model sees the image's merged patches
instead. Decoding and resizing every image through the processor would cost far more than reading
each image's size, and the images are already checked to be in the frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from data_prep.io import image_paths
from data_prep.prompts import build_prompt
from data_prep.trl_dataset import BadRowsError, sft_row
from training.common import image_tokens

log = logging.getLogger(__name__)
LONG_ROWS = ("drop", "truncate")


def image_sizes(paths) -> list[tuple[int, int]]:
    sizes = []
    for path in paths:
        with Image.open(path) as im:
            sizes.append(im.size)
    return sizes


def prompt_tokens(record: dict, processor, dataset_dir: str | Path = ".") -> int:
    """GRPO prompt length: chat-template text tokens + every image's merged patches."""
    text = processor.apply_chat_template(
        build_prompt(record, True), tokenize=False, add_generation_prompt=True
    )
    # the first view's size is in the record; further views have their own
    sizes = [(record["width"], record["height"]), *image_sizes(image_paths(dataset_dir, record)[1:])]
    text_tokens = len(processor.tokenizer(text)["input_ids"]) - len(sizes)
    return text_tokens + image_tokens(processor.image_processor, sizes)


def filter_long_prompts(
    records: list[dict], processor, budget: int, dataset_dir: str | Path = "."
) -> list[dict]:
    """GRPO: drop (and count) prompts longer than ``budget``; GRPOConfig no longer truncates prompts."""
    kept = [r for r in records if prompt_tokens(r, processor, dataset_dir) <= budget]
    if len(kept) < len(records):
        log.info(
            "dropped %d of %d prompts longer than %d tokens", len(records) - len(kept), len(records), budget
        )
    if not kept:
        raise BadRowsError(
            f"every prompt is longer than max_prompt_tokens={budget}; raise it or shrink the images"
        )
    return kept


def row_tokens(row: dict, processor) -> tuple[int, int]:
    """(prompt, completion) tokens of an SFT row as TRL's collator builds it: the chat template through
    trl.data_utils, prompt and completion tokenized apart."""
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    example = {
        "prompt": prepare_multimodal_messages(row["prompt"], images=row["images"]),
        "completion": prepare_multimodal_messages(row["completion"]),
    }
    text = apply_chat_template(example, processor)
    tok = processor.tokenizer
    sizes = image_sizes(row["images"])
    prompt = len(tok(text["prompt"], add_special_tokens=False)["input_ids"])
    prompt += image_tokens(processor.image_processor, sizes) - len(sizes)
    return prompt, len(tok(text["completion"], add_special_tokens=False)["input_ids"])


def fit_max_length(
    records: list[dict], script_args, family, processor, max_length: int | None, split: str
) -> list[dict]:
    """SFT: the records whose rows fit max_length. TRL cuts longer rows at max_length: a row whose
    prompt alone fills it keeps no completion token (loss 0: a run of only such rows saves a model that
    learned nothing), and a cut through the image tokens crashes the model. ``long_rows: drop`` leaves
    longer rows out; ``truncate`` keeps those with part of their completion left. Counted either way."""
    if max_length is None:  # TRL does not cut either
        return records
    kept, cut, dropped, totals = [], 0, 0, []
    for rec in records:
        row = sft_row(rec, script_args.dataset_name, script_args.reasoning, family)
        prompt, completion = row_tokens(row, processor)
        totals.append(prompt + completion)
        if prompt + completion <= max_length:
            kept.append(rec)
        elif script_args.long_rows == "truncate" and prompt < max_length:
            kept.append(rec)
            cut += 1
        else:
            dropped += 1
    where = f"max_length={max_length} tokens (image tokens included)"
    if not kept:
        raise BadRowsError(
            f"no {split} row fits {where}: the shortest has {min(totals)}, the longest {max(totals)}, so "
            f"training would learn nothing. Raise max_length (`--max_length {max(totals)}` keeps every row), "
            "or shorten the texts or the frame (max_pixels)."
        )
    if cut or dropped:
        if script_args.long_rows == "drop":
            how = f"dropped (long_rows: drop; `truncate` keeps them cut short, --max_length {max(totals)} whole)"
        else:
            how = f"{cut} cut to max_length (long_rows: truncate), {dropped} dropped (the prompt alone fills it)"
        log.info("%d of %d %s rows longer than %s: %s", cut + dropped, len(records), split, where, how)
    return kept
