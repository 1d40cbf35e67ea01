"""The recipes' launch shapes, in miniature on CPU with the tiny model.

Every accelerate config under recipes/accelerate/ is launched as the README launches it (two
processes; single_gpu.yaml with its one), on stage 1; the 7B GRPO shape - DeepSpeed ZeRO-3, two
processes, a vLLM engine colocated in each, the 7B recipe's own settings - trains, writes its shards,
and a second launch resumes from that checkpoint. What a CPU cannot do here: bf16, NCCL, and the
server-mode weight push (CUDA only; tests/test_vllm.py runs server-mode generation from two processes).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_module

pytestmark = pytest.mark.slow
CONFIGS = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate(config: Path, nproc: int) -> list[str]:
    """`accelerate launch` as the README's launch line, on this machine: one node, no bf16 (a CPU)."""
    return [
        str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(config),
        "--num_processes", str(nproc), "--num_machines", "1", "--machine_rank", "0",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
        "-m",
    ]  # fmt: skip


def logged(log: str) -> list[dict]:
    return [eval(line, {}) for line in log.splitlines() if line.startswith("{'loss")]  # noqa: S307


def test_every_accelerate_config_is_covered_here():
    assert {p.stem for p in CONFIGS} == {"ddp", "multi_node", "single_gpu", "zero2", "zero3"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_stage1_launches_under_every_accelerate_config(config, tiny_dir, phantom_dir, tmp_path):
    nproc = 1 if config.stem == "single_gpu" else 2
    out = tmp_path / "sft"
    proc = run_module(
        "recipes.sft",
        *(
            "--config",
            "recipes/demo/sft.yaml",
            "--model_name_or_path",
            tiny_dir,
            "--dataset_name",
            phantom_dir,
        ),
        *("--output_dir", out, "--max_steps", "2", "--save_steps", "2", "--logging_steps", "1"),
        *("--max_train_samples", "64", "--disable_tqdm", "true"),
        launcher=accelerate(config, nproc),
        timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert len(logged(log)) == 2  # the main process logs each step once
    assert log.count("SFT on ") == 1  # the project's messages: main process only
    assert (out / "model.safetensors").exists() and (out / "processor_config.json").exists()
    if config.stem in ("zero2", "zero3", "multi_node"):  # DeepSpeed: optimizer state sharded, one per rank
        shards = sorted((out / "checkpoint-2" / "global_step2").glob("*optim_states.pt"))
        assert len(shards) == nproc, shards
    assert "Traceback" not in log


# The recipe's batch geometry scaled down by its own rule (whole groups per generation batch on any
# process count; tests/test_recipes_config.py checks the 8-GPU numbers): 4 completions per micro-step,
# 5 accumulated, 5 micro-steps per generation: 8 prompts x 5 per vLLM round instead of 128.
SMALL_BATCHES = ("--gradient_accumulation_steps", "5", "--steps_per_generation", "5")
OURS = ("--dynamic_sampling", "true", "--dynamic_sampling_max_refills", "1", "--freeze_vision_tower", "true")


def test_7b_grpo_shape_zero3_two_processes_vllm_colocated_and_resumed(tiny128_dir, phantom_dir, tmp_path):
    """recipes/qwen2.5-vl-7b/grpo.yaml as it is (group 5, 4 x 20 accumulation, 80 steps per generation,
    beta, clip-higher, guard on) under zero3.yaml on two processes, each with its colocated vLLM; what
    the hardware and data dictate is overridden (model, the data's frame, float32, vLLM's memory share,
    32-token completions). One step saves a ZeRO-3 checkpoint; a second launch to step 2 resumes it."""
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"  # vLLM's CPU KV cache: 1 GiB per engine, not a share of RAM
    out = tmp_path / "g7"

    def launch(steps: int):
        return run_module(
            "recipes.grpo",
            *("--config", "recipes/qwen2.5-vl-7b/grpo.yaml", "--model_name_or_path", tiny128_dir),
            *("--dataset_name", phantom_dir, "--max_pixels", str(112 * 112), "--output_dir", out),
            *("--dtype", "float32", "--bf16", "false", "--use_cpu", "true", "--report_to", "none"),
            *("--vllm_gpu_memory_utilization", "0.1", "--max_completion_length", "32"),
            *("--max_steps", str(steps), "--save_steps", "1", "--logging_steps", "1"),
            *("--disable_tqdm", "true", *SMALL_BATCHES, *OURS),
            launcher=accelerate(ROOT / "recipes" / "accelerate" / "zero3.yaml", 2),
            timeout=900,
        )

    first = launch(1)
    log = first.stdout + first.stderr
    assert "rewards: paper_answer x 0.9, paper_format x 0.1, paper_coordinate x 1.0" in log
    assert "rollout batches of 8 prompts per epoch" in log  # 4 x 5 x 2 processes / 5
    (row,) = logged(log)
    assert "vLLM on CPU: linear weights kept unpacked" in log
    assert "vision tower frozen" in log
    # dynamic sampling across both ranks: the untrained model's groups are flat, so a refill was drawn
    # (vLLM rollouts of two rounds merged) and what stayed flat is masked out of the loss
    assert float(row["dynamic_sampling/extra_prompts"]) > 0
    kept, masked = float(row["dynamic_sampling/groups_kept"]), float(row["dynamic_sampling/masked_rows"])
    assert kept * 5 + masked >= 40  # every row of the step trains on an informative group or is masked
    shards = sorted((out / "checkpoint-1" / "global_step1").glob("*optim_states.pt"))
    assert len(shards) == 2, shards  # ZeRO-3: each rank saved its part
    assert "Traceback" not in log

    second = launch(2)
    log = second.stdout + second.stderr
    assert f"resuming from {out / 'checkpoint-1'}" in log
    assert len(logged(log)) == 1  # only step 2 trained: step 1 came from the checkpoint
    assert (out / "model.safetensors").exists()  # zero3_save_16bit_model: the gathered weights
    assert "Traceback" not in log
