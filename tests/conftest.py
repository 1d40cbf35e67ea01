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
