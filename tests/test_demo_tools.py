"""The demo's judging tools: per-seed checks (demo.seeds), training-curve plots
(demo.pipeline) and the reward study's table (demo.reward_study), on hand-made inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from demo import pipeline as demo
from demo import reward_study
from demo import seeds as demo_seeds
from tests.conftest import ROOT


def entry(value, half):
    return {"value": value, "ci_low": value - half, "ci_high": value + half, "n": 100}


def headline(reward, iou, miou, closed, fmt=1.0):
    return {
        "reward/grounded": entry(reward, 0.03),
        "reasoning/cited_box_iou": entry(iou, 0.03),
        "grounding/miou": entry(miou, 0.05),
        "vqa/closed": entry(closed, 0.02),
        "reasoning/format_rate": entry(fmt, 0.0),
        "reasoning/boxes_per_answer": entry(1.5, 0.1),
    }


def diff(value, half, verdict):
    return {"diff": value, "ci_low": value - half, "ci_high": value + half, "verdict": verdict}


def comparison(diffs: dict, grpo: dict) -> dict:
    """comparison.json as evaluation.compare writes it: GRPO's values and GRPO - cold start."""
    rows = [{"metric": k, "runs": {"grpo": {"value": v}}} for k, v in grpo.items()]
    return {"rows": rows, "differences": [{"run": "grpo", "baseline": "coldstart", "metrics": diffs}]}


GOOD = {"reasoning/format_rate": 0.98, "vqa/closed": 0.85, "reasoning/cited_box_iou": 0.6}


def test_rl_checks_pass_on_a_clear_gain_at_the_floor():
    diffs = {
        "reward/grounded": diff(0.1, 0.04, "better"),
        "reasoning/cited_box_iou": diff(0.07, 0.03, "better"),
        "vqa/closed": diff(-0.02, 0.05, "no difference"),
    }
    checks = demo.rl_checks(comparison(diffs, GOOD))
    assert all(ok for ok, _ in checks.values()), checks
    assert "met (format_rate 0.980, closed 0.850, cited_box_iou 0.600)" in checks["floor"][1]


def test_rl_checks_fail_on_no_gain_a_worse_metric_and_the_floor():
    diffs = {
        "reward/grounded": diff(0.03, 0.05, "no difference"),
        "reasoning/cited_box_iou": diff(0.07, 0.03, "better"),
        "vqa/closed": diff(-0.09, 0.04, "worse"),
    }
    checks = demo.rl_checks(comparison(diffs, {**GOOD, "vqa/closed": 0.79, "reasoning/cited_box_iou": 0.5}))
    assert not checks["grounded reward up"][0] and checks["cited-box IoU up"][0]
    assert (
        not checks["nothing worse"][0] and "vqa/closed -0.090 [-0.130, -0.050]" in checks["nothing worse"][1]
    )
    assert not checks["floor"][0]
    assert (
        "vqa/closed 0.790 < 0.8" in checks["floor"][1] and "cited-box IoU 0.500 <= 0.5" in checks["floor"][1]
    )
    refused = {
        "rows": [],
        "differences": [{"run": "grpo", "baseline": "coldstart", "refused": "other records"}],
    }
    assert demo.rl_checks(refused) == {"paired": (False, "other records")}


def test_seeds_report_spread_and_checks():
    results = {}
    for seed, gain in ((0, 0.05), (1, 0.09)):
        diffs = {
            "reward/grounded": diff(gain, 0.02, "better"),
            "reasoning/cited_box_iou": diff(0.07, 0.03, "better"),
        }
        c = comparison(diffs, GOOD)
        c["rows"].append(
            {
                "metric": "reward/grounded",
                "runs": {"coldstart": entry(1.0, 0.03), "grpo": entry(1.0 + gain, 0.03)},
            }
        )
        results[seed] = {"comparison": c, "checks": demo.rl_checks(c)}
    md = demo_seeds.report(results)
    assert "| +0.070 [+0.050, +0.090] |" in md  # grounded reward: mean, min, max of the differences
    assert "| 1 difference | +0.090 [+0.070, +0.110] ▲ |" in md
    assert md.count("pass  grounded reward up") == 2


def write_state(folder, rows):
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps({"log_history": rows}))


def test_plot_rewards_reads_the_run_or_its_last_checkpoint(tmp_path):
    rows = [
        {
            "step": s,
            "reward": 1.0 + s / 10,
            "rewards/answer/mean": 0.5,
            "rewards/grounding/mean": 0.4,
            "kl": 0.01 * s,
            "completions/mean_length": 50 + s,
            "boxes/per_completion": 1.5,
        }
        for s in (2, 4, 6)
    ]
    write_state(tmp_path / "run" / "checkpoint-4", rows[:2])
    write_state(tmp_path / "run" / "checkpoint-6", rows)
    assert [h["step"] for h in demo.grpo_history(tmp_path / "run")] == [2, 4, 6]
    png = demo.plot_rewards(tmp_path / "run", tmp_path / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert demo.plot_rewards(tmp_path / "empty", tmp_path / "none.png") is None
    assert demo.demo_dir(tmp_path, 0).name == "demo" and demo.demo_dir(tmp_path, 2).name == "demo-seed2"


def test_reward_study_table_means_over_seeds():
    results = {
        "coldstart": headline(1.0, 0.5, 0.5, 0.9),
        "paper-seed0": headline(0.9, 0.40, 0.4, 0.9),
        "paper-seed1": headline(0.9, 0.50, 0.4, 0.9),
        "grounded-seed0": headline(1.1, 0.60, 0.6, 0.9),
    }
    md = reward_study.table(results, ["paper", "grounded"])
    paper_row = next(line for line in md.splitlines() if line.startswith("| paper |"))
    assert "0.450 (0.400, 0.500)" in paper_row  # cited-box IoU over the two paper seeds
    assert "| grounded-seed0 | 1.500 [1.400, 1.600] |" in md
    # an arm's mean takes its own runs only, not those of an arm whose name extends it
    results = {
        "reports-seed0": headline(1.0, 0.40, 0.5, 0.9),
        "reports-only-seed0": headline(1.0, 0.80, 0.5, 0.9),
    }
    md = reward_study.table(results, ["reports", "reports-only"])
    assert "0.400 (0.400, 0.400)" in next(line for line in md.splitlines() if line.startswith("| reports |"))


@pytest.mark.parametrize("mode", list(reward_study.ARMS))
def test_reward_study_trains_with_each_reward_set(tmp_path, monkeypatch, mode):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0 if len(calls) == 1 else 1)

    monkeypatch.setattr(demo_seeds.subprocess, "run", fake_run)  # run_logged
    reward_study.train(mode, 3, tmp_path / "cs", tmp_path / "data", tmp_path / "out", 7)
    with pytest.raises(demo.DemoError, match="out2.log"):  # a failed run names its log
        reward_study.train(mode, 3, tmp_path / "cs", tmp_path / "data", tmp_path / "out2", 7)
    cmd = calls[0]
    recipe = yaml.safe_load((ROOT / "recipes" / "demo" / "grpo.yaml").read_text())
    if mode == "paper" or mode.startswith("clinical"):
        names = cmd[cmd.index("--reward_funcs") + 1 : cmd.index("--reward_weights")]
        weights = cmd[cmd.index("--reward_weights") + 1 : cmd.index("--reward_weights") + 1 + len(names)]
        if mode == "paper":
            assert names == list(reward_study.REWARD_SETS[mode])
        else:  # the demo recipe's own terms and weights, plus report_labels
            assert names == [*recipe["reward_funcs"], "report_labels"]
            assert weights == [*map(str, recipe["reward_weights"]), "1.0"]
    else:  # the demo's GRPO recipe as it is: its reward set and weights come from the YAML
        assert "--reward_funcs" not in cmd and "--reward_weights" not in cmd
    assert cmd[cmd.index("--config") + 1] == "recipes/demo/grpo.yaml"
    tasks = cmd[cmd.index("--tasks") + 1 : cmd.index("--seed")] if "--tasks" in cmd else recipe["tasks"]
    reports = ["report_findings", "report_impression"]
    expected = {"reports": recipe["tasks"] + reports, "clinical": recipe["tasks"] + reports}
    expected.update({"reports-only": reports, "clinical-only": reports})
    assert tasks == expected.get(mode, recipe["tasks"])
    assert cmd[cmd.index("--seed") + 1] == "3" and cmd[cmd.index("--max_steps") + 1] == "7"


def job(name, code, done=None, threads=1):
    return demo.Job(name, done, [sys.executable, "-c", code], threads)


def test_together_runs_chains_side_by_side_in_order(tmp_path):
    # Each job appends its name and OMP_NUM_THREADS; the side chain waits for a file the first chain
    # writes, so it can only finish if the two chains really run at the same time.
    trace, flag = tmp_path / "trace.txt", tmp_path / "flag"
    write = f"import os; open({str(trace)!r}, 'a').write('{{}} ' + os.environ['OMP_NUM_THREADS'] + '\\n')"
    wait = f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)\n"
    done = tmp_path / "done.json"
    done.write_text("{}")
    chains = [
        [
            job("a1", write.format("a1"), threads=2),
            job("a2", f"open({str(flag)!r}, 'w')"),
        ],
        [
            job("b1", wait + write.format("b1")),
            job("b2", "raise SystemExit(3)", done=done),
        ],
    ]
    timings = {}
    demo.together(chains, tmp_path / "logs", timings)
    assert sorted(trace.read_text().split("\n")[:-1]) == ["a1 2", "b1 1"]
    assert set(timings) == {"a1", "a2", "b1"}  # b2 was already done: skipped, never run
    assert (tmp_path / "logs" / "b1.log").exists()


def test_together_stops_every_chain_when_a_job_fails(tmp_path):
    chains = [
        [job("bad", "import sys; print('boom'); sys.exit(4)")],
        [job("slow", "import time; time.sleep(60)"), job("never", "pass")],
    ]
    t0 = time.time()
    with pytest.raises(demo.DemoError, match=r"exit 4.*\n.*bad\.log"):
        demo.together(chains, tmp_path / "logs", {})
    assert time.time() - t0 < 30  # the side job was killed, not waited for
    assert "boom" in (tmp_path / "logs" / "bad.log").read_text()
    assert not (tmp_path / "logs" / "never.log").exists() and not demo.LIVE


def test_schedule_runs_each_stage_once_and_stops_where_asked(tmp_path):
    def names(plan):
        return [job.name for step in demo.schedule(plan) for chain in step for job in chain]

    short = demo.Plan(demo.parse_args(["--out", str(tmp_path), "--stop_after", "coldstart"]))
    assert names(short) == ["phantom", "tiny-model", "sft", "coldstart-data", "coldstart"]
    full = demo.Plan(demo.parse_args(["--out", str(tmp_path), "--seed", "2"]))
    evals = [f"eval-{n}" for n in demo.RUNS]
    assert sorted(names(full)) == sorted([s for s in demo.STAGES if s != "eval"] + evals)
    grpo = next(j for step in demo.schedule(full) for chain in step for j in chain if j.name == "grpo")
    cmd = " ".join(grpo.cmd)  # seed N trains into OUT/demo-seedN from that seed's cold start
    assert f"--output_dir {tmp_path}/demo-seed2/grpo" in cmd and "--seed 2" in cmd
    assert (
        f"--model_name_or_path {tmp_path}/demo-seed2/coldstart" in cmd and grpo.threads == full.args.threads
    )
