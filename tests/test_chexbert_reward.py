"""CheXbert labels in the reward server (rewards/chexbert.py, ``report_labels_chexbert``).

The real CheXbert weights are not reachable offline. A stand-in built in the caches' own layouts (a
5-layer BERT as bert-base-uncased, a chexbert.pth shaped for it; tests/test_rexrank.py builds them)
runs the real loading code, and radeval's F1CheXbert, the reference implementation `make eval` uses,
must read the same labels from the same weights."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from evaluation import rexrank
from rewards import chexbert
from rewards.chexbert import CheXbertLabeler, MissingWeights
from rewards.clinical import chexbert_label_scores
from rewards.report_labels import positive_labels
from tests.conftest import ROOT, script_env
from tests.reward_client_probe import requests_of
from tests.test_reward_server import free_port, start_server
from tests.test_rexrank import REFS, chexbert_checkpoint, hub_snapshot, tiny_bert
from training.reward_client import served_reward

REPORTS = [*REFS, "Mild cardiomegaly.", "The lungs are clear.", "Possible right lower lobe consolidation."]


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    hf, xdg = tmp_path / "hf", tmp_path / "xdg"
    bert = hub_snapshot(hf / "hub", "bert-base-uncased")
    tiny_bert(bert, "bert")
    tiny_bert(hub_snapshot(hf / "hub", "distilbert-base-uncased"), "distilbert")
    chexbert_checkpoint(xdg, bert, REPORTS)
    env = {"HF_HOME": str(hf), "XDG_CACHE_HOME": str(xdg), "HF_HUB_OFFLINE": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("OPENMEDIX_CHEXBERT", raising=False)
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hf / "hub"))  # read at import; the env var alone is too late
    return env


def test_labels_equal_radevals_from_the_same_weights(stand_in):
    ours = CheXbertLabeler(device="cpu").label(REPORTS)
    ref = rexrank.rexrank_metrics(REPORTS, REPORTS, metrics=("chexbert",))["chexbert"]
    assert "status" not in ref, ref
    theirs = [{n for n, v in zip(ref["names"], row) if v} for row in ref["hyp_labels"]]  # rrg: 1 and 3
    assert [positive_labels(labels) for labels in ours] == theirs
    assert all(set(labels) == set(chexbert.HEADS) for labels in ours)
    assert len({frozenset(p) for p in theirs}) >= 4  # the stand-in tells the reports apart
    assert {v for labels in ours for v in labels.values()} == {None, 1, 0, -1}  # every class decoded


def test_the_server_scores_with_chexbert_as_in_process(stand_in):
    batch = requests_of(3, 1, size=24)[0]
    items = list(zip(batch["completions"], batch["solution"], batch["task"]))
    expected = chexbert_label_scores(CheXbertLabeler(device="cpu").label, items)
    assert any(s is None for s in expected) and len({s for s in expected if s is not None}) >= 3
    port = free_port()
    server = start_server(port, "--rewards", "report_labels_chexbert", env=stand_in)
    try:
        reward = served_reward("report_labels_chexbert", f"http://127.0.0.1:{port}")
        assert asyncio.run(reward(**batch)) == expected
    finally:
        server.kill()


def test_missing_weights_stop_the_server_with_the_command_that_fetches_them(tmp_path):
    env = {**script_env(), "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rewards.server",
            "--port",
            str(free_port()),
            "--rewards",
            "report_labels_chexbert",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert (
        "reward server: CheXbert's chexbert.pth" in proc.stderr and "make fetch-metric-weights" in proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_a_named_checkpoint_that_is_not_there_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENMEDIX_CHEXBERT", str(tmp_path / "chexbert.pth"))
    with pytest.raises(MissingWeights, match="is not a file"):
        chexbert.checkpoint_path()
