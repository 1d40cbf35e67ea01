"""The tiny Qwen3-VL through the demo's stages: SFT, cold start, GRPO (vLLM colocated, on CPU) and
evaluation, on phantom data prepared for its family (sides x 32, boxes written 0-1000 relative)."""

from __future__ import annotations

import json
import os

import pytest

from data_prep.synthesis.coldstart import main as coldstart_main
from tests.conftest import run_in_process, run_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory, qwen3_phantom_dir, tiny_qwen3_dir):
    root = tmp_path_factory.mktemp("q3")
    data = qwen3_phantom_dir
    cs = root / "coldstart"
    assert (
        coldstart_main(
            ["--data", str(data), "--out", str(cs), "--teacher", "offline", "--offline_style", "survey"]
        )
        == 0
    )
    return root, data, cs, tiny_qwen3_dir


def test_qwen3_trains_through_every_stage_and_is_evaluated(qwen3):
    root, data, cs, model = qwen3
    sft = root / "sft"
    proc = run_in_process(
        "recipes.sft", "--config", "recipes/demo/sft.yaml", "--model_name_or_path", model, "--dataset_name", data,
        "--output_dir", sft, "--max_steps", "3", "--save_strategy", "no", "--disable_tqdm", "true",
        "--model_family", "qwen3-vl", check=True,
    )  # fmt: skip
    assert "qwen3-vl, relative boxes" in (proc.stdout + proc.stderr)
    cold = root / "cold"
    run_in_process(
        "recipes.sft", "--config", "recipes/demo/coldstart.yaml", "--model_name_or_path", sft, "--dataset_name", cs,
        "--output_dir", cold, "--max_steps", "3", "--save_strategy", "no", "--disable_tqdm", "true", check=True,
    )  # fmt: skip
    grpo = root / "grpo"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"  # vLLM's CPU KV cache: 1 GiB, not a share of all RAM
    proc = run_module(
        "recipes.grpo", "--config", "recipes/demo/grpo.yaml", "--model_name_or_path", cold, "--dataset_name", data,
        "--output_dir", grpo, "--max_steps", "2", "--per_device_train_batch_size", "8", "--save_strategy", "no", "--max_completion_length", "24",
        "--logging_steps", "1", "--disable_tqdm", "true", "--report_to", "none", "--use_vllm", "true", "--vllm_mode", "colocate",
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert "rewards/grounding/mean" in log
    # rollouts came from vLLM (Qwen3-VL through the guard): TRL logs vLLM's vs the trainer's log-probs
    logged = [line for line in log.splitlines() if line.startswith("{'loss")]
    assert len(logged) == 2 and all("sampling/sampling_logp_difference/mean" in r for r in logged)
    assert "vLLM guard: 17 rollout prompts checked, image tokens as sent" in log  # probe + 2 x 8
    assert "Traceback" not in log
    ev = root / "eval"
    run_in_process(
        "evaluation.run", "--model", grpo, "--data", data, "--split", "test", "--limit", "6", "--out", ev,
        "--max_new_tokens", "24", "--no_model_metrics", "--gallery", "2", check=True,
    )  # fmt: skip
    results = json.loads((ev / "results.json").read_text())
    assert results["run"]["family"] == "qwen3-vl" and results["n"] == 6


def test_paper_reward_and_wrong_family_data_stop_with_both_names(qwen3, phantom_dir, tmp_path):
    root, data, _, model = qwen3
    proc = run_in_process(
        "recipes.grpo", "--config", "recipes/demo/grpo.yaml", "--model_name_or_path", model, "--dataset_name", data,
        "--output_dir", tmp_path / "p", "--max_steps", "1", "--reward_mode", "paper",
        "--reward_funcs", "paper_answer", "paper_format", "paper_coordinate", "--reward_weights", "0.9", "0.1", "1.0",
    )  # fmt: skip
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "qwen3-vl writes boxes relative" in err and "Traceback" not in err
    proc = run_in_process(
        "recipes.sft", "--config", "recipes/demo/sft.yaml", "--model_name_or_path", model,
        "--dataset_name", phantom_dir, "--output_dir", tmp_path / "s", "--max_steps", "1",
    )  # fmt: skip
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "prepared for qwen2.5-vl" in err and "qwen3-vl model" in err
    assert "Traceback" not in err
