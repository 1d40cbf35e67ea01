"""Stage 3: online RL with GRPO (TRL's GRPOTrainer), vLLM doing the group sampling on GPUs.

    # demo, CPU, no vLLM
    python -m recipes.grpo --config recipes/demo/grpo.yaml
    # Qwen2.5-VL-7B, 8 GPUs, vLLM colocated in the training processes
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m recipes.grpo \
        --config recipes/qwen2.5-vl-7b/grpo.yaml
    # vLLM on its own GPU: `make vllm-serve` on GPU 0, training on GPUs 1-7 with `vllm_mode: server`

Each prompt is the image + question + the paper's reasoning instruction; the columns the
rewards read (solution, boxes, width, height, task) ride along. Rewards come from the registry
by name (`reward_funcs`, `reward_weights` in the YAML). Prompts longer than `max_prompt_tokens`
are dropped and counted (GRPOConfig no longer truncates prompts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelerate import PartialState
from trl import (
    GRPOConfig,
    GRPOTrainer,
    ModelConfig,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)

from data_prep.frame import FACTOR
from data_prep.trl_dataset import grpo_dataset, load_checked_records, trl_prompt
from recipes import vllm_guard
from recipes.common import last_checkpoint, load_processor, save_final
from rewards import REWARD_SETS, get_reward_funcs


@dataclass
class GRPOScriptArguments:
    dataset_path: str = field(metadata={"help": "dataset folder with records.jsonl (+ images, frame.json)"})
    train_split: str = "train"
    tasks: list[str] | None = field(default=None, metadata={"help": "keep only these tasks (default all)"})
    max_train_samples: int | None = None
    reward_mode: str = field(default="grounded", metadata={"help": "paper | grounded: default reward set"})
    reward_funcs: list[str] | None = field(
        default=None, metadata={"help": "reward names (default: the mode's set)"}
    )
    max_prompt_tokens: int = field(
        default=2048, metadata={"help": "drop longer prompts (image tokens included)"}
    )
    min_pixels: int | None = field(default=None, metadata={"help": "default: the dataset's frame.json"})
    max_pixels: int | None = field(default=None, metadata={"help": "default: the dataset's frame.json"})
    skip_bad_rows: bool = False
    log_credentialed_text: bool = field(
        default=False,
        metadata={
            "help": "allow completion tables (prompts, images, reports) of credentialed data in the tracker"
        },
    )
    vllm_guard: bool = field(default=True, metadata={"help": "stop if vLLM expands image tokens twice"})
    resume: bool = field(default=True, metadata={"help": "continue from the last checkpoint in output_dir"})
    merge_lora: bool = field(default=True, metadata={"help": "LoRA/QLoRA: save the merged model too"})


def resolve_rewards(script_args: GRPOScriptArguments, training_args: GRPOConfig) -> list:
    if script_args.reward_mode not in REWARD_SETS:
        raise SystemExit(f"reward_mode must be one of {sorted(REWARD_SETS)}, got {script_args.reward_mode!r}")
    default = REWARD_SETS[script_args.reward_mode]
    names = script_args.reward_funcs or list(default)
    if training_args.reward_weights is None and not script_args.reward_funcs:
        training_args.reward_weights = [default[n] for n in names]
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(names):
        raise SystemExit(
            f"reward_weights has {len(training_args.reward_weights)} values for {len(names)} rewards"
        )
    print(
        "rewards:",
        ", ".join(f"{n} x {w}" for n, w in zip(names, training_args.reward_weights or [1.0] * len(names))),
    )
    return get_reward_funcs(names)


def prompt_tokens(record: dict, processor) -> int:
    """Prompt length as the model sees it: chat-template text tokens + the image's merged patches."""
    text = processor.apply_chat_template(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": trl_prompt(record, True)[0]["content"]},
                ],
            }
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    image_tokens = (record["width"] // FACTOR) * (record["height"] // FACTOR)
    return len(processor.tokenizer(text)["input_ids"]) - 1 + image_tokens


def filter_long_prompts(records: list[dict], processor, budget: int) -> list[dict]:
    kept = [r for r in records if prompt_tokens(r, processor) <= budget]
    if len(kept) < len(records):
        print(f"dropped {len(records) - len(kept)} of {len(records)} prompts longer than {budget} tokens")
    if not kept:
        raise SystemExit(
            f"every prompt is longer than max_prompt_tokens={budget}; raise it or shrink the images"
        )
    return kept


def main(script_args: GRPOScriptArguments, training_args: GRPOConfig, model_args: ModelConfig) -> None:
    processor = load_processor(
        model_args.model_name_or_path,
        script_args.dataset_path,
        script_args.min_pixels,
        script_args.max_pixels,
    )
    records = load_checked_records(
        script_args.dataset_path,
        script_args.train_split,
        tasks=script_args.tasks,
        max_samples=script_args.max_train_samples,
        skip_bad_rows=script_args.skip_bad_rows,
    )
    records = filter_long_prompts(records, processor, script_args.max_prompt_tokens)
    train_ds = grpo_dataset(records, script_args.dataset_path)
    if (
        training_args.log_completions
        and any(train_ds["credentialed"])
        and not script_args.log_credentialed_text
    ):
        # Completion tables carry prompts, report text and images: keep credentialed data out of trackers.
        print(
            "log_completions turned off: the data holds credentialed records (set log_credentialed_text to opt in)"
        )
        training_args.log_completions = False
    reward_funcs = resolve_rewards(script_args, training_args)
    print(f"GRPO on {len(train_ds)} prompts, {training_args.num_generations} completions each")

    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
    }
    quantization = get_quantization_config(model_args)
    if quantization is not None:  # QLoRA: GRPOTrainer takes the 4-bit config through model_init_kwargs
        training_args.model_init_kwargs.update(
            quantization_config=quantization, device_map={"": PartialState().local_process_index}
        )
    trainer = GRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_ds,
        processing_class=processor,
        peft_config=get_peft_config(model_args),
    )
    if script_args.vllm_guard and vllm_guard.install(trainer):
        print("vLLM image-token guard installed")
    trainer.train(resume_from_checkpoint=last_checkpoint(training_args.output_dir, script_args.resume))
    save_final(trainer, processor, training_args.output_dir, model_args, script_args.merge_lora)
    if trainer.accelerator.is_main_process:
        trainer.create_model_card(
            model_name=training_args.output_dir.rstrip("/").split("/")[-1],
            dataset_name=script_args.dataset_path,
        )


if __name__ == "__main__":
    parser = TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig))
    main(*parser.parse_args_and_config())
