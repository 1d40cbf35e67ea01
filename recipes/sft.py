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

import logging
from dataclasses import dataclass, field

from accelerate import PartialState
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config, get_quantization_config

from data_prep.errors import setup_logging
from data_prep.families import check_family
from data_prep.frame import processor_rule
from data_prep.trl_dataset import load_checked_records, sft_dataset
from training.args import StageArguments
from training.cli import RecipeError, run_stage
from training.common import (
    end_distributed,
    last_checkpoint,
    load_processor,
    save_final,
    set_model_init_kwargs,
)
from training.lengths import LONG_ROWS, fit_max_length

log = logging.getLogger(__name__)


@dataclass
class SFTScriptArguments(StageArguments):
    reasoning: bool = field(default=False, metadata={"help": "cold start: train on reasoning completions"})
    long_rows: str = field(
        default="drop",
        metadata={
            "help": "rows longer than max_length (image tokens included): drop | truncate (cut the completion)"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.long_rows not in LONG_ROWS:  # before the image check, which can take a while
            raise RecipeError(f"long_rows must be one of {', '.join(LONG_ROWS)}, got {self.long_rows!r}")


def load_split(script_args, split, max_samples, processor, family, training_args):
    """A split's checked records that fit max_length, as the trainer's dataset."""
    records = load_checked_records(
        script_args.dataset_name,
        split,
        max_samples=max_samples,
        tasks=script_args.tasks,
        need_reasoning=script_args.reasoning,
        skip_bad_rows=script_args.skip_bad_rows,
        frame=processor_rule(processor.image_processor),  # every image decoded and in the frame
        progress=not training_args.disable_tqdm,
    )
    records = fit_max_length(records, script_args, family, processor, training_args.max_length, split)
    return sft_dataset(records, script_args.dataset_name, script_args.reasoning, family)


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    setup_logging(main_process=PartialState().is_main_process)
    family = check_family(model_args.model_name_or_path, script_args.dataset_name, script_args.model_family)
    processor = load_processor(
        model_args.model_name_or_path,
        script_args.dataset_name,
        script_args.min_pixels,
        script_args.max_pixels,
        require_frame=True,
    )
    train_ds = load_split(
        script_args,
        script_args.dataset_train_split,
        script_args.max_train_samples,
        processor,
        family,
        training_args,
    )
    eval_ds = None
    if training_args.eval_strategy != "no":
        eval_ds = load_split(
            script_args,
            script_args.dataset_test_split,
            script_args.max_eval_samples,
            processor,
            family,
            training_args,
        )
    mode = "reasoning" if script_args.reasoning else "answers"
    log.info("SFT on %d records (%s; %s, %s boxes)", len(train_ds), mode, family.name, family.boxes)

    set_model_init_kwargs(training_args, model_args)
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
    run_stage(main, TrlParser((SFTScriptArguments, SFTConfig, ModelConfig)))
