"""The reward server (rewards/server.py) and GRPO's client (training/reward_client.py), over real HTTP.

The server runs as `python -m rewards.server` in its own process on a free port, as `make
reward-server` starts it; clients are separate processes, as training ranks are."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from rewards.clinical import report_labels
from tests.conftest import ROOT, run_in_process, script_env
from tests.reward_client_probe import requests_of
from training import reward_client
from training.reward_client import RewardServerError, check_reward_server, served_reward


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, *args: str, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rewards.server", "--port", str(port), *args],
        cwd=ROOT,
        env={**script_env(), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError(f"reward server did not start: {proc.stderr.read()[-3000:]}") from None
            time.sleep(0.2)


@pytest.fixture
def server():
    port = free_port()
    proc = start_server(port)
    yield f"http://127.0.0.1:{port}", proc
    proc.kill()
    proc.wait()


def test_200_concurrent_requests_from_two_processes_each_get_their_own_scores(server, tmp_path):
    url, _ = server
    n = 100
    clients = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.reward_client_probe",
                url,
                str(i),
                str(n),
                str(tmp_path / f"{i}.json"),
            ],
            cwd=ROOT,
            env=script_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (0, 1)
    ]
    for c in clients:
        assert c.wait(timeout=300) == 0, c.stderr.read()[-3000:]
    for i in (0, 1):
        got = json.loads((tmp_path / f"{i}.json").read_text())
        assert sorted(map(int, got)) == list(range(n))  # every request answered once
        for k, batch in enumerate(requests_of(i, n)):
            assert got[str(k)] == report_labels(**batch), (i, k)  # the in-process scores, exactly
    health = httpx.get(f"{url}/health").json()
    assert health["requests"] == 2 * n and health["items"] == 2 * n * 16
    assert health["batches"] < 2 * n and health["largest_batch"] > 16  # requests were scored together
    assert any(s is None for s in got["0"]) and any(s == 0.0 for b in got.values() for s in b)


def test_scores_through_the_reward_function_are_the_in_process_ones(server):
    url, _ = server
    batch = requests_of(7, 1, size=40)[0]
    reward = served_reward("report_labels", url)
    assert reward.__name__ == "report_labels"
    assert asyncio.run(reward(**batch)) == report_labels(**batch)
    assert check_reward_server(url, ["report_labels"])["rewards"] == ["report_labels"]


def test_refusals_say_what_is_wrong_without_retrying(server):
    url, _ = server
    with pytest.raises(RewardServerError, match=r"not served here; served: \['report_labels'\]"):
        asyncio.run(
            served_reward("radgraph_f1", url, retries=3)(
                completions=["x"], solution=["y"], task=["report_findings"]
            )
        )
    with pytest.raises(ValueError, match="needs the dataset column 'task'"):  # never a silent None
        asyncio.run(served_reward("report_labels", url)(completions=["x"], solution=["y"]))
    with pytest.raises(RewardServerError, match=r"does not serve \['radgraph_f1'\]"):
        check_reward_server(url, ["radgraph_f1"])
    resp = httpx.post(f"{url}/score", json={"reward": "report_labels", "completions": ["a", "b"],
                                            "solutions": ["a"], "tasks": [None, None]})  # fmt: skip
    assert resp.status_code == 422 and "2 completions" in resp.json()["detail"]


def test_a_dead_server_fails_after_the_retries_with_what_to_do(monkeypatch):
    monkeypatch.setattr(reward_client, "BACKOFF_S", 0.01)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(RewardServerError) as e:
        asyncio.run(
            served_reward("report_labels", url, retries=2)(
                completions=["x"], solution=["y"], task=["report_findings"]
            )
        )
    msg = str(e.value)
    assert "in 3 attempts" in msg and "rather than score 0" in msg and "make reward-server" in msg
    with pytest.raises(RewardServerError, match="is not reachable"):
        check_reward_server(url, ["report_labels"], timeout=2)


def test_a_server_that_never_answers_times_out(monkeypatch):
    monkeypatch.setattr(reward_client, "BACKOFF_S", 0.01)
    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        silent.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except TimeoutError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        with pytest.raises(RewardServerError, match=r"2 attempts: no answer within 0.5 s"):
            asyncio.run(
                served_reward("report_labels", url, timeout=0.5, retries=1)(
                    completions=["x"], solution=["y"], task=["report_findings"]
                )
            )
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        silent.close()


GRPO = [
    "--config", "recipes/demo/grpo.yaml", "--per_device_train_batch_size", "8", "--disable_tqdm", "true",
    "--max_completion_length", "24", "--logging_steps", "1", "--tasks", "report_findings", "vqa",
    "--reward_funcs", "answer", "format", "coordinate", "grounding", "report_labels",
    "--reward_weights", "1.0", "0.2", "0.0", "0.5", "1.0", "--served_rewards", "report_labels",
    "--reward_server_retries", "1", "--reward_server_timeout", "10",
]  # fmt: skip


@pytest.mark.slow
def test_killed_server_fails_the_step_then_a_restarted_one_lets_the_run_resume(
    tiny_dir, phantom_dir, tmp_path
):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "grpo"
    args = [*GRPO, "--model_name_or_path", tiny_dir, "--dataset_name", phantom_dir, "--output_dir", out]
    args += ["--reward_server", url, "--max_steps", "8", "--save_steps", "2", "--save_total_limit", "5"]
    server = start_server(port)
    run = subprocess.Popen(
        [sys.executable, "-m", "recipes.grpo", *map(str, args)],
        cwd=ROOT,
        env=script_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while not (out / "checkpoint-2" / "trainer_state.json").exists():
            assert run.poll() is None and time.time() < deadline, run.stderr.read()[-3000:]
            time.sleep(0.05)
        assert httpx.get(f"{url}/health").json()["requests"] >= 2  # steps 1-2 were scored there
        server.send_signal(signal.SIGKILL)
        server.wait()
        assert run.wait(timeout=300) == 1
        err = run.stderr.read()
    finally:
        run.kill()
        server.kill()
    assert f"reward server {url} did not score reward 'report_labels'" in err
    assert "rather than score 0" in err and "Traceback" not in err  # one line saying what to do
    assert not (out / "model.safetensors").exists()
    done = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert 2 <= done < 8

    server = start_server(port)  # restarted: the run resumes from its last checkpoint
    try:
        result = run_in_process("recipes.grpo", *args, check=True)
        served = httpx.get(f"{url}/health").json()["requests"]
    finally:
        server.kill()
    log = result.stdout + result.stderr
    assert f"resuming from {out}/checkpoint-{done}" in log
    assert "report_labels x 1.0 (reward server)" in log
    assert json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())["global_step"] == 8
    assert served == 8 - done  # one request per remaining step, all to the restarted server
    assert (out / "model.safetensors").exists()
