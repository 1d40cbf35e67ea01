"""Stage 1 / stage 2: the demo SFT recipe on the real TRL SFTTrainer, CPU."""

import json
import re

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from tests.conftest import run_in_process

pytestmark = pytest.mark.slow


def sft_args(tiny_dir, data_dir, out, *extra):
    return [
        "--config", "recipes/demo/sft.yaml", "--model_name_or_path", tiny_dir, "--dataset_name", data_dir,
        "--output_dir", out, "--disable_tqdm", "true", "--save_strategy", "no", *extra,
    ]  # fmt: skip


def losses(log: str) -> list[float]:
    return [float(x) for x in re.findall(r"'loss': '?([\d.]+)'?", log)]


def test_sft_loss_goes_down_and_saves_a_loadable_model(tiny_dir, phantom_dir, tmp_path):
    out = tmp_path / "sft"
    proc = run_in_process(
        "recipes.sft",
        *sft_args(
            tiny_dir, phantom_dir, out, "--max_steps", "40", "--logging_steps", "5", "--warmup_steps", "5"
        ),
        check=True,
    )
    curve = losses(proc.stdout + proc.stderr)
    assert len(curve) == 8, curve
    assert curve[-1] < 0.6 * curve[0], f"loss did not go down: {curve}"
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    assert processor.tokenizer.padding_side == "left"
    assert model.config.image_token_id == processor.image_token_id


def test_cold_start_trains_on_reasoning_and_refuses_rows_without_it(tiny_dir, phantom_dir, tmp_path):
    data = tmp_path / "cs"
    run_in_process(
        "data_prep.synthesis.coldstart",
        "--teacher",
        "offline",
        "--data",
        phantom_dir,
        "--out",
        data,
        "--limit",
        "40",
        check=True,
    )
    proc = run_in_process(
        "recipes.sft",
        *sft_args(tiny_dir, data, tmp_path / "out", "--reasoning", "true", "--max_steps", "2"),
        check=True,
    )
    assert "SFT on 40 records (reasoning; qwen2.5-vl, absolute boxes)" in (proc.stdout + proc.stderr)
    # The phantom set has no reasoning: the cold-start stage must stop with a clear message.
    proc = run_in_process(
        "recipes.sft", *sft_args(tiny_dir, phantom_dir, tmp_path / "o2", "--reasoning", "true")
    )
    assert proc.returncode != 0
    assert "no reasoning (the cold-start stage needs the `reasoning` field)" in proc.stdout + proc.stderr


def test_qlora_on_cpu_saves_adapter_and_merged_model(tiny_dir, phantom_dir, tmp_path):
    out = tmp_path / "qlora"
    run_in_process(
        "recipes.sft",
        *sft_args(
            tiny_dir, phantom_dir, out, "--max_steps", "3", "--use_peft", "true", "--load_in_4bit", "true",
            "--lora_r", "8", "--lora_target_modules", "q_proj", "v_proj", "--learning_rate", "1e-3",
        ),
        check=True,
    )  # fmt: skip
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}
    merged = AutoModelForImageTextToText.from_pretrained(out)  # a plain model: the next stage can load it
    base = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    name = next(k for k in merged.state_dict() if k.endswith("self_attn.q_proj.weight"))
    assert merged.state_dict()[name].shape == base.state_dict()[name].shape
    assert not merged.state_dict()[name].equal(base.state_dict()[name])  # the adapter was merged in


def test_frame_mismatch_stops_with_a_clear_message(tiny_dir, phantom_dir, tmp_path):
    proc = run_in_process(
        "recipes.sft", *sft_args(tiny_dir, phantom_dir, tmp_path / "x", "--max_pixels", "50176")
    )
    assert proc.returncode != 0
    assert "was prepared for min_pixels=3136, max_pixels=12544" in proc.stdout + proc.stderr
