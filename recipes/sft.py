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
stage 1, `<think> ... </think>. The answer is: \\boxed{answer}` for the cold start.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config, get_quantization_config

from data_prep.families import check_family
from data_prep.trl_dataset import load_checked_records, sft_dataset
from recipes.common import end_distributed, last_checkpoint, load_processor, save_final


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
    model_family: str | None = field(
        default=None,
        metadata={
            "help": "qwen2.5-vl | qwen3-vl (data_prep.families); checked against the model and the data"
        },
    )
    resume: bool = field(default=True, metadata={"help": "continue from the last checkpoint in output_dir"})
    merge_lora: bool = field(default=True, metadata={"help": "LoRA/QLoRA: save the merged model too"})


def main(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    family = check_family(model_args.model_name_or_path, script_args.dataset_path, script_args.model_family)
    processor = load_processor(
        model_args.model_name_or_path,
        script_args.dataset_path,
        script_args.min_pixels,
        script_args.max_pixels,
    )
    load = dict(
        tasks=script_args.tasks, need_reasoning=script_args.reasoning, skip_bad_rows=script_args.skip_bad_rows
    )
    train = load_checked_records(
        script_args.dataset_path, script_args.train_split, max_samples=script_args.max_train_samples, **load
    )
    train_ds = sft_dataset(train, script_args.dataset_path, script_args.reasoning, family)
    eval_ds = None
    if training_args.eval_strategy != "no":
        evals = load_checked_records(
            script_args.dataset_path, script_args.eval_split, max_samples=script_args.max_eval_samples, **load
        )
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
    main(*parser.parse_args_and_config())
