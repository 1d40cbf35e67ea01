"""Shared offline fixtures: a small phantom dataset and the tiny Qwen2.5-VL, built once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    from data_prep.phantom import generate

    out = tmp_path_factory.mktemp("phantom") / "phantom"
    generate(60, out, seed=0, size=TEST_SIZE, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny", size=TEST_SIZE, hidden=64, layers=2)
