"""Stage 3: the demo GRPO recipe on the real TRL GRPOTrainer (transformers generation, CPU)."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from data_prep.io import read_records, write_jsonl
from tests.conftest import ROOT, run_in_process, run_module, script_env
from training import vllm_guard
from training.cli import RecipeError

pytestmark = pytest.mark.slow
REWARDS = ("answer", "format", "coordinate", "grounding")


def grpo_args(model, data, out, *extra):
    return [
        "--config", "recipes/demo/grpo.yaml", "--model_name_or_path", model, "--dataset_name", data,
        "--output_dir", out, "--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--max_completion_length", "24", "--logging_steps", "1",
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
    proc = run_in_process(
        "recipes.grpo", *grpo_args(tiny_dir, phantom_dir, out, "--max_steps", "2", "--save_strategy", "no")
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    recipe = yaml.safe_load((ROOT / "recipes" / "demo" / "grpo.yaml").read_text())
    weights = ", ".join(f"{n} x {w}" for n, w in zip(recipe["reward_funcs"], recipe["reward_weights"]))
    assert weights == "answer x 1.0, format x 0.2, coordinate x 0.0, grounding x 0.5"
    assert f"rewards: {weights}" in log
    rows = logged_rewards(log)
    assert len(rows) == 2
    for name in REWARDS:
        assert all(f"rewards/{name}/mean" in r for r in rows), name
    assert all("boxes/per_completion" in r and "think/length_words" in r for r in rows)  # log_metric
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()  # model card
    assert "GRPO" in (out / "README.md").read_text()


def test_paper_mode_uses_the_released_weights(tiny_dir, phantom_dir, tmp_path):
    proc = run_in_process(
        "recipes.grpo",
        *grpo_args(tiny_dir, phantom_dir, tmp_path / "p", "--max_steps", "1", "--save_strategy", "no",
                   "--reward_mode", "paper", "--reward_funcs", "paper_answer", "paper_format", "paper_coordinate",
                   "--reward_weights", "0.9", "0.1", "1.0"),
    )  # fmt: skip
    assert "rewards: paper_answer x 0.9, paper_format x 0.1, paper_coordinate x 1.0" in (
        proc.stdout + proc.stderr
    )
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
    result = run_in_process(
        "recipes.grpo",
        *args,
        check=True,
    )
    assert f"resuming from {out}/checkpoint-{done[-1]}" in (result.stdout + result.stderr)
    state = json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())
    assert state["global_step"] == 10
    # the restarted run only trained the missing steps
    assert len(logged_rewards(result.stdout + result.stderr)) == 10 - done[-1]


def test_two_process_launch_with_torchrun_and_a_served_reward(tiny_dir, phantom_dir, tmp_path):
    """Two ranks, each scoring its own completions' report_labels on one reward server."""
    import httpx

    from tests.test_reward_server import free_port, start_server

    torchrun = str(Path(sys.executable).parent / "torchrun")
    assert shutil.which(torchrun)
    out, port = tmp_path / "ddp", free_port()
    served = ["--tasks", "report_findings", "vqa", "--reward_funcs", *REWARDS, "report_labels"]
    served += ["--reward_weights", "1.0", "0.2", "0.0", "0.5", "1.0", "--served_rewards", "report_labels"]
    served += ["--reward_server", f"http://127.0.0.1:{port}"]
    server = start_server(port)
    try:
        proc = run_module(
            "recipes.grpo",
            *grpo_args(tiny_dir, phantom_dir, out, "--max_steps", "2", "--save_strategy", "no", *served),
            launcher=[torchrun, "--nproc_per_node", "2", "--master_port", "29518", "-m"],
        )
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
    finally:
        server.kill()
    rows = logged_rewards(proc.stdout + proc.stderr)
    assert len(rows) == 2 and all("rewards/report_labels/mean" in r for r in rows)
    assert health["requests"] == 2 * 2  # each rank asked once per step
    assert health["items"] == 2 * 2 * 8  # its own 8 completions each time
    assert (out / "model.safetensors").exists()


BREAKS = [
    (lambda r: r.update(image="images/missing.png"), "image file not found"),
    (lambda r: r.update(answer=""), "field 'answer' is empty"),
    (lambda r: r.update(boxes=[{"label": "nodule", "box": [10, 10, 500, 40]}]), "outside the 112x112 frame"),
]


def test_bad_rows_stop_with_an_error_naming_each_row(tiny_dir, phantom_dir, tmp_path):
    """Three rows broken three ways: one launch names every one (file, line, id, reason); a second
    with skip_bad_rows trains on the rest and counts them."""
    data = tmp_path / "bad"
    shutil.copytree(phantom_dir, data)
    records = read_records(data)
    victims = [i for i, r in enumerate(records) if r["split"] == "train" and r["task"] == "vqa"][
        : len(BREAKS)
    ]
    for victim, (break_row, _) in zip(victims, BREAKS):
        break_row(records[victim])
    write_jsonl(data / "records.jsonl", records)
    proc = run_in_process("recipes.grpo", *grpo_args(tiny_dir, data, tmp_path / "o", "--max_steps", "1"))
    err = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for victim, (_, message) in zip(victims, BREAKS):
        assert f"records.jsonl:{victim + 1} (id='{records[victim]['id']}')" in err and message in err, message
    assert "Traceback" not in err  # a clear message, not a crash inside TRL
    ok = run_in_process(
        "recipes.grpo",
        *grpo_args(tiny_dir, data, tmp_path / "o2", "--max_steps", "1", "--skip_bad_rows", "true",
                   "--save_strategy", "no"),
        check=True,
    )  # fmt: skip
    assert f"skipped {len(BREAKS)} bad row(s)" in (ok.stdout + ok.stderr)


def test_long_prompts_are_filtered_and_counted(tiny_dir, phantom_dir, tmp_path):
    proc = run_in_process(
        "recipes.grpo",
        *grpo_args(tiny_dir, phantom_dir, tmp_path / "o", "--max_steps", "1", "--save_strategy", "no",
                   "--max_prompt_tokens", "120"),
        check=False,
    )  # fmt: skip
    assert (
        "prompts longer than 120 tokens" in (proc.stdout + proc.stderr)
        or "every prompt is longer" in proc.stdout + proc.stderr
    )


# --- training/vllm_guard.py logic (the real vLLM path runs in tests/test_vllm.py) ---

IMG = 7


def test_count_and_collapse_runs():
    assert vllm_guard.count_runs([1, 9, 9, 9, 2, 9, 3], 9) == [3, 1]
    assert vllm_guard.count_runs([9, 9], 9) == [2]
    assert vllm_guard.count_runs([1, 2], 9) == []
    assert vllm_guard.collapse_runs([1, 9, 9, 9, 2, 9, 3, 9, 9], 9) == [1, 9, 2, 9, 3, 9]


def test_check_expansion_wants_exactly_the_runs_sent():
    sent = [[1, 2, IMG, IMG, IMG, IMG, 3], [1, IMG, IMG, IMG, IMG, 4]]
    vllm_guard.check_expansion(sent, [p for p in sent for _ in range(2)], IMG)  # 2 generations per prompt
    twice = [p[:2] + [IMG] * 16 + p[6:] for p in sent]  # each of the 4 pads became 4 again
    with pytest.raises(vllm_guard.ImageTokenMismatch, match="TRL sent 4 image tokens .* vLLM processed 16"):
        vllm_guard.check_expansion(sent, twice, IMG)
    with pytest.raises(vllm_guard.ImageTokenMismatch, match="vLLM processed 1 in runs"):
        vllm_guard.check_expansion(sent, [vllm_guard.collapse_runs(p, IMG) for p in sent], IMG)


class FakeGeneration:
    """Stands in for trl's VLLMGeneration: ``expand`` says what its vLLM does to each image token it gets
    (0: keeps it; n: replaces it by n tokens, as vLLM 0.31 does with the image's feature count)."""

    def __init__(self, expand: int, mode: str = "colocate"):
        self.expand, self.mode, self.sent, self.max_completion_length = expand, mode, [], 16
        self.synced, self.reset = 0, 0
        outer = self

        class Engine:
            def reset_encoder_cache(self):
                outer.reset += 1

        self.llm = type("LLM", (), {"llm_engine": Engine()})()

    def generate(self, prompts, images=None, num_generations=1, profiler=None):
        self.sent.append(prompts)
        n = self.expand
        ids = [[t for tok in p for t in ([tok] * n if (tok == IMG and n) else [tok])] for p in prompts]
        return ids, [[5]] * len(ids), None, None

    def _place_features(self, features, prompt_ids):
        return features

    def sync_weights(self):
        self.synced += 1


def test_guard_collapses_runs_checks_rollouts_and_returns_trls_own_ids():
    prompt = [1, IMG, IMG, IMG, IMG, 2]
    gen = FakeGeneration(expand=4)  # vLLM 0.31: every image token it gets becomes the image's 4
    guard = vllm_guard.Guard(gen, IMG)
    prompt_ids, completions, _, _ = gen.generate([prompt], [["image"]], 1)
    assert gen.sent[-1] == [[1, IMG, 2]]  # one placeholder per image reached vLLM
    assert prompt_ids == [prompt] and completions == [[5]] and guard.checked == 1
    guard.collapse = False  # what trl 1.16 does on its own: 4 tokens sent, 16 processed
    with pytest.raises(vllm_guard.ImageTokenMismatch, match="TRL sent 4 .* vLLM processed 16"):
        gen.generate([prompt], [["image"]], 1)
    gen.sync_weights()
    assert (gen.synced, gen.reset) == (1, 1)  # every weight sync also drops vLLM's cached image features


def test_probe_finds_out_whether_this_vllm_needs_the_collapse():
    prompt = [1, IMG, IMG, 2]
    expanding = vllm_guard.Guard(FakeGeneration(expand=2), IMG)
    assert "collapsed" in expanding.probe(prompt, ["image"]) and expanding.collapse
    keeping = vllm_guard.Guard(FakeGeneration(expand=0), IMG)  # a vLLM that trusts TRL's expansion
    assert "no collapse needed" in keeping.probe(prompt, ["image"]) and not keeping.collapse
    assert keeping.generation.max_completion_length == 16  # the probe's 1-token limit is undone
    broken = vllm_guard.Guard(FakeGeneration(expand=3), IMG)  # neither way gives the 2 tokens sent
    with pytest.raises(vllm_guard.ImageTokenMismatch, match="vLLM processed 3"):
        broken.probe(prompt, ["image"])


def test_server_features_must_fit_the_prompts_image_tokens():
    features = {"mm_placeholders": {"image": [{"offset": 0, "length": 16}]}}
    vllm_guard.check_placeholders(features, [1] + [IMG] * 16 + [2], IMG)
    vllm_guard.check_placeholders(None, [1, 2], IMG)
    with pytest.raises(
        vllm_guard.ImageTokenMismatch, match=r"into \[16\] tokens, the trainer's processor into \[8\]"
    ):
        vllm_guard.check_placeholders(features, [1] + [IMG] * 8 + [2], IMG)
    gen = FakeGeneration(expand=0, mode="server")
    guard = vllm_guard.Guard(gen, IMG)
    with pytest.raises(vllm_guard.ImageTokenMismatch):
        gen._place_features(features, [1, IMG, 2])
    assert guard.checked == 0


def test_install_only_with_vllm():
    trainer = type("T", (), {"use_vllm": False, "vllm_generation": None})()
    assert vllm_guard.install(trainer) is None


def test_rollout_plan_counts_whole_batches_and_refuses_an_untrainable_dataset():
    from trl import GRPOConfig

    from training.grpo_checks import rollout_plan

    args = GRPOConfig(
        output_dir="/tmp/x", per_device_train_batch_size=4, steps_per_generation=80, num_generations=5,
        gradient_accumulation_steps=20, use_cpu=True, report_to="none",
    )  # fmt: skip
    # one process: 4 x 80 = 320 completions = 64 prompts per rollout; 4 optimizer steps per rollout
    assert rollout_plan(6600, args).startswith(
        "103 rollout batches of 64 prompts per epoch (8 prompts left out"
    )
    assert "412 optimizer steps per epoch" in rollout_plan(6600, args)
    with pytest.raises(RecipeError, match="63 training prompts are fewer than one rollout batch of 64"):
        rollout_plan(63, args)


def test_use_vllm_without_vllm_says_what_to_install(monkeypatch):
    import importlib.util

    from trl import GRPOConfig, ModelConfig

    from training.grpo_checks import check_vllm_setup

    args = GRPOConfig(output_dir="/tmp/x", use_vllm=True, use_cpu=True, report_to="none")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    with pytest.raises(RecipeError, match="use_vllm: true needs vLLM: `make install`"):
        check_vllm_setup(args, ModelConfig())


def test_grounding_reward_reads_every_finding_of_the_image(phantom_dir):
    """A presence question's record holds only the asked finding's box; its GRPO row carries them all,
    so a survey that cites every true finding scores 1 and one that skips a finding scores less."""
    from data_prep.trl_dataset import grpo_dataset, image_boxes, load_checked_records
    from rewards.grounded import grounding

    records = load_checked_records(phantom_dir, "train")
    multi = next(
        r for r in records if r["task"] == "vqa" and r["answer"] == "yes" and len(r["meta"]["findings"]) >= 2
    )
    union = image_boxes(records)[multi["image"]]
    assert len(multi["boxes"]) == 1 and len(union) == len(multi["meta"]["findings"])
    row = grpo_dataset([multi], phantom_dir, image_boxes(records))[0]
    assert row["image_boxes"] == union and row["boxes"] == multi["boxes"]
    cite = lambda boxes: "<think> " + " ".join(f"F {b['box']}." for b in boxes) + " </think> \\boxed{yes}"  # noqa: E731
    full, asked_only = cite(union), cite(multi["boxes"])
    kwargs = {k: [row[k]] * 2 for k in ("boxes", "image_boxes")}
    scores = grounding([full, asked_only], **kwargs)
    assert scores[0] == pytest.approx(1.0) and scores[1] < 1.0
    # without the column (a dataset made elsewhere) the record's own boxes are the reference
    assert grounding([asked_only], boxes=[row["boxes"]]) == pytest.approx([1.0])
