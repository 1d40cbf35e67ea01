"""Stage 1 (instruction fine-tuning) and stage 2 (cold start): TRL's SFTTrainer on CXR records.

    # demo, CPU
    python -m recipes.sft --config recipes/demo/sft.yaml
    # Qwen2.5-VL-7B, 8 GPUs, ZeRO-3
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m recipes.sft \
        --config recipes/qwen2.5-vl-7b/sft.yaml
    # cold start = the same script with reasoning completions
    python -m recipes.sft --config recipes/demo/coldstart.yaml

Flags override the YAML (e.g. `--max_steps 10 --output_dir /tmp/x`). Full fine-tune, LoRA
(`use_peft: true`) and QLoRA (`use_peft: true` + `load_in_4bit: true`) come from ModelConfig.
Rows are prompt/completion pairs with the image (completion-only loss): `\\boxed{answer}` for
stage 1, `<think> ... </think>. The answer is: \\boxed{answer}` for the cold start. Rows longer
than `max_length` (image tokens included) are dropped and counted (`long_rows: truncate` keeps
them cut short); a dataset in which no row fits stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config, get_quantization_config

from data_prep.families import check_family
from data_prep.frame import processor_rule
from data_prep.trl_dataset import BadRowsError, load_checked_records, sft_dataset, sft_row
from training.cli import parse_recipe
from training.common import (
    end_distributed,
    image_tokens,
    last_checkpoint,
    load_processor,
    report,
    save_final,
)

LONG_ROWS = ("drop", "truncate")


@dataclass
class SFTScriptArguments:
    dataset_path: str = field(metadata={"help": "dataset folder with records.jsonl (+ images, frame.json)"})
    train_split: str = "train"
    eval_split: str = "validation"
    reasoning: bool = field(default=False, metadata={"help": "cold start: train on reasoning completions"})
    tasks: list[str] | None = field(default=None, metadata={"help": "keep only these tasks (default all)"})
    max_train_samples: int | None = None
    max_eval_samples: int | None = 64
    min_pixels: int | None = field(default=None, metadata={"help": "default: the dataset's frame.json"})
    max_pixels: int | None = field(default=None, metadata={"help": "default: the dataset's frame.json"})
    skip_bad_rows: bool = False
    long_rows: str = field(
        default="drop",
        metadata={
            "help": "rows longer than max_length (image tokens included): drop | truncate (cut the completion)"
        },
    )
    model_family: str | None = field(
        default=None,
        metadata={
            "help": "qwen2.5-vl | qwen3-vl (data_prep.families); checked against the model and the data"
        },
    )
    resume: bool = field(default=True, metadata={"help": "continue from the last checkpoint in output_dir"})
    merge_lora: bool = field(default=True, metadata={"help": "LoRA/QLoRA: save the merged model too"})


def row_tokens(row: dict, processor) -> tuple[int, int]:
    """(prompt, completion) tokens of an SFT row as TRL's collator builds it: the chat template through
    trl.data_utils, prompt and completion tokenized apart, each image placeholder counted as the image's
    merged patches (decoding and resizing every image through the processor would cost far more)."""
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    example = {
        "prompt": prepare_multimodal_messages(row["prompt"], images=row["images"]),
        "completion": prepare_multimodal_messages(row["completion"]),
    }
    text = apply_chat_template(example, processor)
    tok = processor.tokenizer
    sizes = []
    for path in row["images"]:  # already checked: decodable and in the frame
        with Image.open(path) as im:
            sizes.append(im.size)
    prompt = len(tok(text["prompt"], add_special_tokens=False)["input_ids"])
    prompt += image_tokens(processor.image_processor, sizes) - len(sizes)  # a placeholder is 1 token in text
    return prompt, len(tok(text["completion"], add_special_tokens=False)["input_ids"])


def fit_max_length(
    records: list[dict],
    script_args: SFTScriptArguments,
    family,
    processor,
    max_length: int | None,
    split: str,
) -> list[dict]:
    """The records whose rows fit max_length. TRL cuts longer rows at max_length: a row whose prompt
    alone fills it keeps no completion token (loss 0: a run of only such rows saves a model that
    learned nothing), and a cut through the image tokens crashes the model. ``long_rows: drop`` leaves
    longer rows out; ``truncate`` keeps those with part of their completion left. Counted either way."""
    if max_length is None:  # TRL does not cut either
        return records
    kept, cut, dropped, totals = [], 0, 0, []
    for rec in records:
        prompt, completion = row_tokens(
            sft_row(rec, script_args.dataset_path, script_args.reasoning, family), processor
        )
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
        report(f"{cut + dropped} of {len(records)} {split} rows longer than {where}: {how}")
    return kept


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    if script_args.long_rows not in LONG_ROWS:  # before the image check, which can take a while
        raise SystemExit(f"long_rows must be one of {', '.join(LONG_ROWS)}, got {script_args.long_rows!r}")
    family = check_family(model_args.model_name_or_path, script_args.dataset_path, script_args.model_family)
    processor = load_processor(
        model_args.model_name_or_path,
        script_args.dataset_path,
        script_args.min_pixels,
        script_args.max_pixels,
        require_frame=True,
    )
    load = dict(
        tasks=script_args.tasks,
        need_reasoning=script_args.reasoning,
        skip_bad_rows=script_args.skip_bad_rows,
        frame=processor_rule(processor.image_processor),  # every image decoded and in the frame
        progress=not training_args.disable_tqdm,
    )
    max_length = training_args.max_length
    train = load_checked_records(
        script_args.dataset_path, script_args.train_split, max_samples=script_args.max_train_samples, **load
    )
    train = fit_max_length(train, script_args, family, processor, max_length, script_args.train_split)
    train_ds = sft_dataset(train, script_args.dataset_path, script_args.reasoning, family)
    eval_ds = None
    if training_args.eval_strategy != "no":
        evals = load_checked_records(
            script_args.dataset_path, script_args.eval_split, max_samples=script_args.max_eval_samples, **load
        )
        evals = fit_max_length(evals, script_args, family, processor, max_length, script_args.eval_split)
        eval_ds = sft_dataset(evals, script_args.dataset_path, script_args.reasoning, family)
    mode = "reasoning" if script_args.reasoning else "answers"
    print(f"SFT on {len(train_ds)} records ({mode}; {family.name}, {family.boxes} boxes)")

    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
    }
    trainer = SFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(training_args.output_dir, script_args.resume))
    save_final(trainer, processor, training_args.output_dir, model_args, script_args.merge_lora)
    end_distributed()


if __name__ == "__main__":
    parser = TrlParser((SFTScriptArguments, SFTConfig, ModelConfig))
    main(*parse_recipe(parser))
