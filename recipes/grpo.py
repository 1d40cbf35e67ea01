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
import logging
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from trl import GRPOConfig, ModelConfig, TrlParser, get_peft_config, get_quantization_config

from data_prep.errors import setup_logging
from data_prep.families import check_family
from data_prep.frame import processor_rule
from data_prep.io import atomic_write_text
from data_prep.trl_dataset import grpo_dataset, image_boxes, load_checked_records
from evaluation.curves import reward_trend, trend_lines
from evaluation.rl_select import apply_selection
from training import vision_tokens, vllm_guard
from training.args import StageArguments
from training.cli import run_stage
from training.common import (
    end_distributed,
    last_checkpoint,
    load_processor,
    save_final,
    set_model_init_kwargs,
)
from training.dynamic_sampling import DynamicSamplingGRPOTrainer
from training.freeze import freeze_vision_tower
from training.grpo_checks import (
    check_reward_family,
    check_vllm_setup,
    keep_credentialed_text_out,
    resolve_rewards,
    rollout_plan,
)
from training.lengths import filter_long_prompts

log = logging.getLogger(__name__)


@dataclass
class GRPOScriptArguments(StageArguments):
    reward_mode: str = field(default="grounded", metadata={"help": "paper | grounded: default reward set"})
    reward_funcs: list[str] | None = field(
        default=None, metadata={"help": "reward names (default: the mode's set)"}
    )
    reward_server: str | None = field(
        default=None, metadata={"help": "URL of `make reward-server`, which scores served_rewards"}
    )
    served_rewards: list[str] | None = field(
        default=None,
        metadata={"help": "the reward_funcs the reward_server scores (training/reward_client.py)"},
    )
    reward_server_timeout: float = field(default=60.0, metadata={"help": "seconds per reward server request"})
    reward_server_retries: int = field(default=3, metadata={"help": "reward server attempts after the first"})
    max_prompt_tokens: int = field(
        default=2048, metadata={"help": "drop longer prompts (image tokens included)"}
    )
    log_credentialed_text: bool = field(
        default=False,
        metadata={
            "help": "allow completion tables (prompts, images, reports) of credentialed data in the tracker"
        },
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata={"help": "train only on groups whose rewards differ, refilling the step (DAPO)"},
    )
    dynamic_sampling_max_refills: int = field(
        default=2, metadata={"help": "extra generation batches per step at most, with dynamic_sampling"}
    )
    freeze_vision_tower: bool = field(
        default=False, metadata={"help": "vision encoder and merger frozen: not trained, no optimizer state"}
    )
    rl_selection: str | None = field(
        default=None, metadata={"help": "selection.json of `make rl-select`: train on its prompts only"}
    )
    vllm_guard: bool = field(
        default=True,
        metadata={
            "help": "feed vLLM the prompt TRL trains on and check every rollout (training/vllm_guard.py)"
        },
    )


def prompts_of(script_args, split: str, max_samples, processor, family, training_args):
    """The GRPO prompts of one split: checked records (images decoded, in the frame), long prompts dropped,
    the rl_selection applied to the training split, and the columns the rewards read."""
    data = script_args.dataset_name
    records = load_checked_records(
        data,
        split,
        tasks=script_args.tasks,
        max_samples=max_samples,
        skip_bad_rows=script_args.skip_bad_rows,
        frame=processor_rule(processor.image_processor),  # every image decoded and in the frame
        progress=not training_args.disable_tqdm,
    )
    records = filter_long_prompts(records, processor, script_args.max_prompt_tokens, data)
    if script_args.rl_selection and split == script_args.dataset_train_split:
        records = apply_selection(records, script_args.rl_selection, data, split)  # `make rl-select`
    # The grounding reward checks cited boxes against every finding annotated on the image, from all
    # of the split's records (a question's record holds only the asked finding's box).
    all_records = load_checked_records(data, split, skip_bad_rows=True, quiet=True)
    return grpo_dataset(records, data, image_boxes(all_records), family)


def build_trainer(script_args: GRPOScriptArguments, training_args: GRPOConfig, model_args: ModelConfig):
    """Processor, checked records, rewards and the GRPOTrainer with its rollout safeguards: (trainer, guard)."""
    data = script_args.dataset_name
    family = check_family(model_args.model_name_or_path, data, script_args.model_family)
    processor = load_processor(
        model_args.model_name_or_path,
        data,
        script_args.min_pixels,
        script_args.max_pixels,
        require_frame=True,
    )
    split = script_args.dataset_train_split
    train_ds = prompts_of(script_args, split, script_args.max_train_samples, processor, family, training_args)
    eval_ds = None
    if training_args.eval_strategy != "no":  # validation reward: the same rewards on held-out prompts
        test_split, n = script_args.dataset_test_split, script_args.max_eval_samples
        eval_ds = prompts_of(script_args, test_split, n, processor, family, training_args)
    for ds in [d for d in (train_ds, eval_ds) if d is not None]:
        keep_credentialed_text_out(ds, training_args, script_args)

    reward_funcs = resolve_rewards(script_args, training_args)
    check_reward_family(reward_funcs, family)
    log.info("GRPO on %d prompts, %d completions each", len(train_ds), training_args.num_generations)
    log.info(rollout_plan(len(train_ds), training_args))
    check_vllm_setup(training_args, model_args)

    set_model_init_kwargs(training_args, model_args)
    trainer = DynamicSamplingGRPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=processor,
        # QLoRA: the trainer places the 4-bit model (TRL 1.16 has no get_kbit_device_map; bitsandbytes
        # loads onto the process's current CUDA device, which accelerate sets per rank)
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
        dynamic_sampling=script_args.dynamic_sampling,
        max_refills=script_args.dynamic_sampling_max_refills,
    )
    if script_args.freeze_vision_tower:
        freeze_vision_tower(trainer.model)
    log.info("never sampled: %s", " ".join(vision_tokens.ban_in_trainer(trainer)))
    guard = vllm_guard.install(trainer) if script_args.vllm_guard else None
    if guard is not None:
        log.info("vLLM guard, start-up probe: %s", vllm_guard.probe_with_first_prompt(trainer, guard))
    return trainer, guard


def report_trend(trainer, output_dir: str) -> None:
    """Print, save (reward_trend.json) and log to the tracker how each reward term moved over training."""
    trend = reward_trend(trainer.state.log_history)
    if not trend:
        return
    log.info("\n".join(trend_lines(trend)))
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(output_dir) / "reward_trend.json", json.dumps(trend, indent=2) + "\n")
    if "wandb" in (trainer.args.report_to or []):
        import wandb

        if wandb.run is not None:
            wandb.run.summary.update(
                {f"trend/{key}/{k}": v for key, t in trend.items() for k, v in t.items() if k != "steps"}
            )


def main(script_args: GRPOScriptArguments, training_args: GRPOConfig, model_args: ModelConfig) -> None:
    setup_logging(main_process=PartialState().is_main_process)
    trainer, guard = build_trainer(script_args, training_args, model_args)
    processor = trainer.processing_class
    trainer.train(resume_from_checkpoint=last_checkpoint(training_args.output_dir, script_args.resume))
    if guard is not None:
        log.info("vLLM guard: %d rollout prompts checked, image tokens as sent", guard.checked)
    if trainer.accelerator.is_main_process:
        report_trend(trainer, training_args.output_dir)
    save_final(trainer, processor, training_args.output_dir, model_args, script_args.merge_lora)
    if trainer.accelerator.is_main_process:
        trainer.create_model_card(
            model_name=training_args.output_dir.rstrip("/").split("/")[-1],
            dataset_name=script_args.dataset_name,
        )
    end_distributed()


if __name__ == "__main__":
    run_stage(main, TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig)))
