"""The preflight before a GPU launch (issue #24): GPUs, the previous stage's model, the dataset, each
missing one a single line naming what to run, exit status 2."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_module
from training import preflight

SCALE = "qwen2.5-vl-7b"


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A copy of one scale's recipes and the mixtures, as the working directory: outputs/ and data/
    paths in the recipes then resolve inside tmp_path."""
    shutil.copytree(ROOT / "recipes" / SCALE, tmp_path / "recipes" / SCALE)
    shutil.copytree(ROOT / "recipes" / "mixtures", tmp_path / "recipes" / "mixtures")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(preflight, "gpu_count", lambda: 8)
    return tmp_path


def recipe(stage: str) -> Path:
    return Path("recipes", SCALE, f"{stage}.yaml")


def finished_model(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")


def test_without_gpus_it_refuses_naming_the_count_and_the_cpu_demo():
    """On any machine: more processes than GPUs (there are none here) -> one line, exit 2."""
    proc = run_module("training.preflight", "--config", recipe("sft"), "--nproc", "4096", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("preflight:")]
    assert f"{recipe('sft')} needs 4096 GPU(s) here (4096 processes) but torch sees " in line
    assert "`make sft SCALE=demo`" in line


def test_gpu_count_use_cpu_and_machines(repo, monkeypatch):
    monkeypatch.setattr(preflight, "gpu_count", lambda: 0)
    found = preflight.problem(recipe("grpo"), 8)
    assert "needs 8 GPU(s) here (8 processes) but torch sees 0" in found and "`make grpo SCALE=demo`" in found
    assert "GPU" not in preflight.problem(recipe("grpo"), 8, ["--use_cpu", "true"])  # a flag overrides
    monkeypatch.setattr(preflight, "gpu_count", lambda: 8)
    multi = repo / "multi.yaml"
    multi.write_text("num_machines: 2\nuse_cpu: false\n")
    assert "GPU" not in preflight.problem(recipe("grpo"), 16, accelerate_config=multi)  # 8 per machine
    assert "needs 12 GPU(s) here (24 processes)" in preflight.problem(
        recipe("grpo"), 24, accelerate_config=multi
    )


def test_a_missing_model_names_the_stage_that_writes_it(repo):
    assert preflight.problem(recipe("coldstart"), 8) == (
        f"model outputs/{SCALE}/sft not found: run `make sft SCALE={SCALE}` first"
    )
    assert preflight.problem(recipe("grpo"), 8) == (
        f"model outputs/{SCALE}/coldstart not found: run `make coldstart SCALE={SCALE}` first"
    )
    (repo / "outputs" / SCALE / "sft" / "checkpoint-100").mkdir(parents=True)  # a stage that did not finish
    assert preflight.problem(recipe("coldstart"), 8).startswith(
        f"model outputs/{SCALE}/sft holds no finished model (no config.json): run `make sft SCALE={SCALE}`"
    )
    assert "not found: run the stage that writes it first" in preflight.problem(
        recipe("grpo"), 8, ["--model_name_or_path", "outputs/elsewhere/model"]
    )


def test_a_hub_model_must_be_cached_when_offline(repo, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(preflight, "in_hub_cache", lambda model: False)
    assert preflight.problem(recipe("sft"), 8) == (
        "model Qwen/Qwen2.5-VL-7B-Instruct is not in the Hugging Face cache and HF_HUB_OFFLINE=1: "
        "download it once with `HF_HUB_OFFLINE=0 .venv/bin/hf download Qwen/Qwen2.5-VL-7B-Instruct`"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # online: the hub id is left to from_pretrained
    assert preflight.problem(recipe("sft"), 8).startswith("dataset data/mixtures/example/sft has no")


def test_the_dataset_and_then_all_clear(repo, capsys):
    finished_model(repo / "outputs" / SCALE / "sft")
    assert preflight.problem(recipe("coldstart"), 8) == (
        "dataset data/mixtures/example/coldstart has no records.jsonl: build it with "
        "`python -m data_prep.mixture --config recipes/mixtures/example.yaml --out data/mixtures/example --jsonl`"
    )
    found = preflight.problem(recipe("coldstart"), 8, ["--dataset_name", "data/coldstart"])
    assert "`make coldstart-data`" in found
    (repo / "data" / "mixtures" / "example" / "coldstart").mkdir(parents=True)
    (repo / "data" / "mixtures" / "example" / "coldstart" / "records.jsonl").write_text("")
    assert preflight.problem(recipe("coldstart"), 8) is None
    preflight.main(["--config", str(recipe("coldstart")), "--nproc", "8", "--report_to", "none"])
    assert "GPUs, model and dataset found" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        preflight.main(["--config", str(recipe("grpo")), "--nproc", "8"])
    assert e.value.code == 2 and "make coldstart SCALE=" in capsys.readouterr().err
    assert preflight.problem(Path("recipes", SCALE, "grpo-grouned.yaml"), 8).endswith(
        "no such recipe file (did you mean recipes/qwen2.5-vl-7b/grpo-grounded.yaml?)"
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_makefile_runs_it_before_accelerate_and_not_for_the_demo():
    def dry(scale: str) -> str:
        cmd = ["make", "-n", "coldstart", f"SCALE={scale}", "NPROC=4", "ARGS=--max_steps 5"]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout

    gpu = dry(SCALE).split(" else ", 1)[1]
    check = f"-m training.preflight --config recipes/{SCALE}/coldstart.yaml --nproc 4"
    assert check in gpu and "--max_steps 5" in gpu.split("&&")[0]
    assert gpu.index(check) < gpu.index("&&") < gpu.index("accelerate launch")
    assert "training.preflight" not in dry("demo").split(" else ", 1)[0]
