"""Shared offline fixtures: a small phantom dataset and the tiny Qwen2.5-VL, built once per test run.

`make test` runs the suite on two pytest-xdist workers; each worker is a session of its own, so what
is built once (`built_once`) goes to the run's shared folder under a file lock: the first worker
builds it, the other waits and reuses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
TEST_SIZE = 112  # smallest phantom frame: 16 image tokens, fast CPU steps


def script_env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    return env


def run_module(module: str, *args: str, timeout: int = 600, check: bool = True, launcher=None):
    """Run `python -m module args` (or under `launcher`) as a user would; returns CompletedProcess."""
    cmd = (launcher or [sys.executable, "-m"]) + [module, *map(str, args)]
    proc = subprocess.run(cmd, cwd=ROOT, env=script_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(folder)`` once per test run, whatever the number of xdist workers; tests only read it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, shared by every worker
    folder = root / "built-once" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    done = folder.parent / f"{name}.done"
    with FileLock(str(folder) + ".lock"):
        if not done.exists():
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    from data_prep.phantom import generate

    return built_once(
        tmp_path_factory, "phantom", lambda out: generate(60, out, seed=0, size=TEST_SIZE, progress=False)
    )


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from demo.tiny_model import build_tiny_model

    return built_once(
        tmp_path_factory, "tiny", lambda out: build_tiny_model(out, size=TEST_SIZE, hidden=64, layers=2)
    )


@pytest.fixture(scope="session")
def tiny128_dir(tmp_path_factory) -> Path:
    """The demo's tiny model (hidden 128: vLLM's CPU attention has no kernel for head_dim 16)."""
    from demo.tiny_model import build_tiny_model

    return built_once(
        tmp_path_factory, "tiny128", lambda out: build_tiny_model(out, size=TEST_SIZE, hidden=128, layers=2)
    )


QWEN3_SIZE = 128  # smallest square Qwen3-VL frame of the demo's kind: 4 x 4 merged tokens of 32 px


@pytest.fixture(scope="session")
def qwen3_phantom_dir(tmp_path_factory) -> Path:
    from data_prep.phantom import generate

    return built_once(
        tmp_path_factory,
        "qwen3-phantom",
        lambda out: generate(40, out, seed=5, size=QWEN3_SIZE, progress=False, family="qwen3-vl"),
    )


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    """The one tiny Qwen3-VL of the suite (hidden 128, so vLLM's CPU attention runs it too)."""
    from demo.tiny_model import build_tiny_model

    return built_once(
        tmp_path_factory,
        "tiny-qwen3",
        lambda out: build_tiny_model(out, size=QWEN3_SIZE, hidden=128, layers=2, family="qwen3-vl"),
    )


def run_in_process(module: str, *args: str, check: bool = False) -> subprocess.CompletedProcess:
    """`python -m module args` in this process (runpy, as `-m` runs it): the same code path without a
    new interpreter importing torch, transformers and TRL again (about 8 s of CPU each). For commands
    that stop before training, and single-process CPU runs without vLLM; launches, kills and vLLM
    engines stay in subprocesses (run_module). What it prints and logs comes back as stdout / stderr; a
    SystemExit becomes the return code (its message on stderr), as the shell would see it."""
    import contextlib
    import io
    import logging
    import runpy

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 does for a launched command: the other worker's core
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    root, code = logging.getLogger(), 0
    saved_env, saved_argv = dict(os.environ), sys.argv
    os.environ.update({k: v for k, v in script_env().items() if k != "OMP_NUM_THREADS"})
    sys.argv = [module, *map(str, args)]
    root.addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, int) and e.code is not None:
            err.write(f"{e.code}\n")
    except Exception:  # what the interpreter does with an uncaught exception: traceback, exit 1
        import traceback

        err.write(traceback.format_exc())
        code = 1
    finally:
        root.removeHandler(handler)
        torch.set_num_threads(threads)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    proc = subprocess.CompletedProcess([module, *map(str, args)], code, out.getvalue(), err.getvalue())
    if check and code:
        raise AssertionError(
            f"{module} {' '.join(map(str, args))} failed ({code}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


# The longest tests first, alternating between the halves that pytest-xdist's worksteal scheduler
# hands its two workers (`make test`): each worker starts on long tests and the short ones left at the
# ends even out the finish, instead of one long test running alone at the end while the other worker
# idles. Measured with --durations, longest first.
LONGEST_FIRST = (
    "test_launch_shapes.py::test_7b",
    "test_vllm.py::test_server_mode",
    "test_vllm.py::test_eval_vllm_backend",
    "test_qwen3_pipeline.py::test_qwen3_trains",
    "test_vllm.py::test_grpo_trains",
    "test_launch_shapes.py::test_stage1",
    "test_grpo.py::test_two_process",
    "test_vllm.py::test_weight_sync",
    "test_vllm.py::test_check_vllm",
    "test_grpo.py::test_killed",
    "test_rl_select.py::test_killed",
    "test_reward_server.py::test_killed",
)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        return next((i for i, key in enumerate(LONGEST_FIRST) if key in item.nodeid), len(LONGEST_FIRST))

    long = sorted((it for it in items if rank(it) < len(LONGEST_FIRST)), key=rank)
    rest = [it for it in items if rank(it) == len(LONGEST_FIRST)]
    first_half = len(items) - len(items) // 2  # worksteal's first worker gets the first half
    a, b = long[0::2], long[1::2]
    a += rest[: first_half - len(a)]
    items[:] = a + b + rest[first_half - len(long[0::2]) :]
