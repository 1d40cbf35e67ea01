"""Stage 3: the demo GRPO recipe on the real TRL GRPOTrainer (transformers generation, CPU)."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep.io import read_records, write_jsonl
from recipes import vllm_guard
from tests.conftest import ROOT, run_module, script_env

pytestmark = pytest.mark.slow
REWARDS = ("answer", "format", "coordinate", "grounding")


def grpo_args(model, data, out, *extra):
    return [
        "--config", "recipes/demo/grpo.yaml", "--model_name_or_path", model, "--dataset_path", data,
        "--output_dir", out, "--disable_tqdm", "true", "--max_completion_length", "24", "--logging_steps", "1",
        *extra,
    ]  # fmt: skip


def logged_rewards(log: str) -> list[dict]:
    rows = []
    for line in log.splitlines():
        if line.startswith("{") and "rewards/" in line:
            rows.append(eval(line, {}))  # the Trainer prints its log dict with quoted numbers  # noqa: S307
    return rows


def test_grpo_trains_and_logs_every_reward_from_the_yaml(tiny_dir, phantom_dir, tmp_path):
    out = tmp_path / "grpo"
    proc = run_module(
        "recipes.grpo", *grpo_args(tiny_dir, phantom_dir, out, "--max_steps", "2", "--save_strategy", "no")
    )
    log = proc.stdout + proc.stderr
    assert "rewards: answer x 1.0, format x 0.2, coordinate x 0.2, grounding x 0.5" in log
    rows = logged_rewards(log)
    assert len(rows) == 2
    for name in REWARDS:
        assert all(f"rewards/{name}/mean" in r for r in rows), name
    assert all("boxes/per_completion" in r and "think/length_words" in r for r in rows)  # log_metric
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()  # model card
    assert "GRPO" in (out / "README.md").read_text()


def test_paper_mode_uses_the_released_weights(tiny_dir, phantom_dir, tmp_path):
    proc = run_module(
        "recipes.grpo",
        *grpo_args(tiny_dir, phantom_dir, tmp_path / "p", "--max_steps", "1", "--save_strategy", "no",
                   "--reward_mode", "paper", "--reward_funcs", "paper_answer", "paper_format", "paper_coordinate",
                   "--reward_weights", "0.9", "0.1", "1.0"),
    )  # fmt: skip
    assert "rewards: paper_answer x 0.9, paper_format x 0.1, paper_coordinate x 1.0" in proc.stdout
    assert "rewards/paper_coordinate/mean" in proc.stdout + proc.stderr


def test_killed_run_resumes_from_its_last_checkpoint(tiny_dir, phantom_dir, tmp_path):
    out = tmp_path / "resume"
    args = grpo_args(
        tiny_dir, phantom_dir, out, "--max_steps", "10", "--save_steps", "2", "--save_total_limit", "5"
    )
    cmd = [sys.executable, "-m", "recipes.grpo", *map(str, args)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (out / "checkpoint-2" / "trainer_state.json").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint-2 before the run ended"
        time.sleep(0.5)
    proc.kill()  # SIGKILL: no clean shutdown
    proc.wait()
    assert not (out / "model.safetensors").exists()
    done = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    result = run_module("recipes.grpo", *args)
    assert f"resuming from {out}/checkpoint-{done[-1]}" in result.stdout
    state = json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["global_step"] == 10
    # the restarted run only trained the missing steps
    assert len(logged_rewards(result.stdout + result.stderr)) == 10 - done[-1]


def test_two_process_launch_with_torchrun(tiny_dir, phantom_dir, tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    assert shutil.which(torchrun)
    out = tmp_path / "ddp"
    proc = run_module(
        "recipes.grpo",
        *grpo_args(tiny_dir, phantom_dir, out, "--max_steps", "2", "--save_strategy", "no"),
        launcher=[torchrun, "--nproc_per_node", "2", "--master_port", "29518", "-m"],
    )
    assert len(logged_rewards(proc.stdout + proc.stderr)) == 2
    assert (out / "model.safetensors").exists()


@pytest.mark.parametrize(
    "break_row, message",
    [
        (lambda r: r.update(image="images/missing.png"), "image file not found"),
        (lambda r: r.update(answer=""), "field 'answer' is empty"),
        (
            lambda r: r.update(boxes=[{"label": "nodule", "box": [10, 10, 500, 40]}]),
            "outside the 112x112 frame",
        ),
    ],
)
def test_bad_rows_stop_with_an_error_naming_the_row(tiny_dir, phantom_dir, tmp_path, break_row, message):
    data = tmp_path / "bad"
    shutil.copytree(phantom_dir, data)
    records = read_records(data)
    victim = next(i for i, r in enumerate(records) if r["split"] == "train" and r["task"] == "vqa")
    break_row(records[victim])
    write_jsonl(data / "records.jsonl", records)
    proc = run_module(
        "recipes.grpo", *grpo_args(tiny_dir, data, tmp_path / "o", "--max_steps", "1"), check=False
    )
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"records.jsonl:{victim + 1} (id='{records[victim]['id']}')" in err and message in err
    assert "Traceback" not in err  # a clear message, not a crash inside TRL
    ok = run_module(
        "recipes.grpo",
        *grpo_args(
            tiny_dir,
            data,
            tmp_path / "o2",
            "--max_steps",
            "1",
            "--skip_bad_rows",
            "true",
            "--save_strategy",
            "no",
        ),
    )
    assert "skipped 1 bad row(s)" in ok.stdout


def test_long_prompts_are_filtered_and_counted(tiny_dir, phantom_dir, tmp_path):
    proc = run_module(
        "recipes.grpo",
        *grpo_args(tiny_dir, phantom_dir, tmp_path / "o", "--max_steps", "1", "--save_strategy", "no",
                   "--max_prompt_tokens", "120"),
        check=False,
    )  # fmt: skip
    assert (
        "prompts longer than 120 tokens" in proc.stdout
        or "every prompt is longer" in proc.stdout + proc.stderr
    )


# --- the vLLM double image-token expansion guard (CPU: the GPU boundary is faked) ---


def test_count_runs():
    assert vllm_guard.count_runs([1, 9, 9, 9, 2, 9, 3], 9) == [3, 1]
    assert vllm_guard.count_runs([9, 9], 9) == [2]
    assert vllm_guard.count_runs([1, 2], 9) == []


def test_guard_passes_single_expansion_and_stops_double_expansion():
    img = 7
    sent = [[1, 2, img, img, img, img, 3], [1, img, img, img, img, 4]]
    once = [p for p in sent for _ in range(2)]  # 2 generations per prompt, prompts as sent
    vllm_guard.check_expansion(sent, once, img)
    twice = [p[:2] + [img] * 16 + p[6:] for p in once]  # each of the 4 pads became 4 again
    with pytest.raises(
        vllm_guard.DoubleImageExpansionError, match="TRL sent 4 image tokens .* vLLM processed 16"
    ):
        vllm_guard.check_expansion(sent, twice, img)


def test_guard_wraps_the_trainers_vllm_generation():
    class FakeGeneration:  # stands in for trl's VLLMGeneration (needs a GPU)
        def __init__(self, expand):
            self.expand = expand

        def generate(self, prompts, images=None, num_generations=1, profiler=None):
            ids = [[t for tok in p for t in ([tok] * self.expand if tok == 7 else [tok])] for p in prompts]
            return ids, [[5]] * len(ids), None, None

    class FakeTrainer:
        use_vllm = True

        def __init__(self, expand):
            self.vllm_generation = FakeGeneration(expand)
            self.processing_class = type("P", (), {"image_token_id": 7})()

    good, bad = FakeTrainer(1), FakeTrainer(4)
    assert vllm_guard.install(good) and vllm_guard.install(bad)
    good.vllm_generation.generate([[1, 7, 7, 2]])
    with pytest.raises(vllm_guard.DoubleImageExpansionError, match="trl issues 6294/6401"):
        bad.vllm_generation.generate([[1, 7, 7, 2]])
    no_vllm = FakeTrainer(1)
    no_vllm.use_vllm = False
    assert not vllm_guard.install(no_vllm)
