"""`make sampling-study`: does GRPO spend its compute better with dynamic sampling, pre-selection or GDPO?

    python -m demo.sampling_study [--coldstart outputs/demo/coldstart] [--seeds 0 1 2]
        [--rewards paper grounded] [--arms plain dynamic preselect] [--out outputs/sampling-study]

From one cold-start checkpoint, the demo's GRPO recipe (recipes/demo/grpo.yaml) runs once per reward
set (the paper's, the grounded one), arm and seed:

  plain      the recipe as it is (dynamic sampling off)
  dynamic    dynamic_sampling: true (flat groups dropped, the step refilled; training/dynamic_sampling.py)
  preselect  rl_selection: the prompts `evaluation.rl_select` kept (k = the group size, sampled with
             the cold start, scored with the same reward), made once per reward set
  gdpo       multi_objective_aggregation: normalize_then_sum (each reward term normalised in its group
             before the weighted sum)

Every run evaluates on held-out validation prompts during training (TRL's own GRPO evaluation, the
run's reward, sampled as in training, at the start and every --eval_steps), and logs the share of
flat groups per step (dynamic_sampling/flat_group_share, also with the option off). Written into --out:

  study.md / study.json   per reward and arm, mean over seeds (min, max): flat-group share, extra
                          prompts per step, training seconds (generation + updates, evaluation
                          excluded), validation reward at the start and the end; per seed the paired
                          difference arm - plain of the final validation reward on the same prompts
                          (prompts resampled: one prompt per study here, so prompt = study)
  validation_reward.png   validation reward against training seconds, one line per run
  flat_share.png          the flat-group share per step, one line per run

Finished runs are skipped on a rerun. CPU: two runs train side by side, one thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.io import atomic_write_text
from demo.seeds import run_logged
from rewards import REWARD_SETS

ARMS = ("plain", "dynamic", "preselect", "gdpo")
RECIPE = Path("recipes/demo/grpo.yaml")


class StudyError(OpenMedixError, RuntimeError):
    """The study cannot run: a missing input, or a run without the numbers it must log."""


def recipe_for(mode: str, out: Path) -> Path:
    """The demo recipe with one reward set (the grounded arm is the recipe as it is)."""
    cfg = yaml.safe_load(RECIPE.read_text())
    if mode != "grounded":
        names = list(REWARD_SETS[mode])
        cfg.update(reward_mode=mode, reward_funcs=names, reward_weights=[REWARD_SETS[mode][n] for n in names])
    path = out / "recipes" / f"{mode}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    return path


def preselect(mode: str, recipe: Path, coldstart: Path, data: Path, out: Path, limit: int) -> Path:
    """`evaluation.rl_select` with the cold start and this reward (resumes if it ran before)."""
    sel = out / f"select-{mode}"
    if not (sel / "selection.json").exists():
        cmd = [sys.executable, "-m", "evaluation.rl_select", "--recipe", str(recipe), "--out", str(sel)]
        cmd += ["--model_name_or_path", str(coldstart), "--dataset_name", str(data)]
        cmd += ["--k", str(yaml.safe_load(recipe.read_text())["num_generations"]), "--limit", str(limit)]
        cmd += ["--no_progress"]
        run_logged(cmd, out / f"select-{mode}.log", "rl-select")
    return sel / "selection.json"


def train(run: Path, recipe: Path, arm: str, seed: int, coldstart: Path, data: Path, opts) -> Path:
    """One GRPO run with validation during training, unless it finished before."""
    if (run / "trainer_state.json").exists():
        print(f"[{run.name}] already trained - skipping", flush=True)
        return run
    cmd = [sys.executable, "-m", "recipes.grpo", "--config", str(recipe), "--output_dir", str(run)]
    cmd += ["--model_name_or_path", str(coldstart), "--dataset_name", str(data), "--seed", str(seed)]
    cmd += ["--report_to", "none", "--save_strategy", "no", "--eval_strategy", "steps"]
    cmd += ["--eval_steps", str(opts.eval_steps), "--eval_on_start", "true"]
    cmd += ["--max_eval_samples", str(opts.eval_prompts), "--per_device_eval_batch_size", "32"]
    if opts.steps:
        cmd += ["--max_steps", str(opts.steps)]
    if arm == "dynamic":
        cmd += ["--dynamic_sampling", "true"]
    if arm == "preselect":
        cmd += ["--rl_selection", str(opts.selections[recipe.stem])]
    if arm == "gdpo":
        cmd += ["--multi_objective_aggregation", "normalize_then_sum"]
    run_logged(cmd, run.parent / f"{run.name}.log", "GRPO run")
    print(f"[{run.name}] trained", flush=True)
    return run


def history(run: Path) -> tuple[list[dict], list[dict]]:
    """(training rows, evaluation rows) of a finished run's log history, each with its training seconds."""
    state = json.loads((run / "trainer_state.json").read_text())
    logging_steps = state.get("logging_steps") or 1
    rows, evals, seconds = [], [], 0.0
    for h in state["log_history"]:
        if "step_time" in h:  # TRL: mean seconds per optimizer step (generation included) over the window
            seconds += h["step_time"] * logging_steps
            rows.append({**h, "seconds": seconds})
        elif "eval_reward" in h:
            evals.append({**h, "seconds": seconds})
    if not rows or not evals:
        raise StudyError(f"{run}: no training or evaluation rows in trainer_state.json")
    return rows, evals


def summarise(run: Path) -> dict:
    rows, evals = history(run)
    flat = [r["dynamic_sampling/flat_group_share"] for r in rows if "dynamic_sampling/flat_group_share" in r]
    extra = [r.get("dynamic_sampling/extra_prompts", 0.0) for r in rows]
    return {
        "flat_share": float(np.mean(flat)) if flat else None,
        "extra_prompts_per_step": float(np.mean(extra)),
        "train_seconds": rows[-1]["seconds"],
        "val_reward_start": evals[0]["eval_reward"],
        "val_reward_end": evals[-1]["eval_reward"],
    }


def spread_cell(values: list) -> str:
    v = [x for x in values if x is not None]
    return f"{np.mean(v):.3f} ({min(v):.3f}, {max(v):.3f})" if v else "-"


def table(summaries: dict[str, dict], modes: list[str], arms: list[str]) -> str:
    cols = {
        "flat_share": "flat-group share",
        "extra_prompts_per_step": "extra prompts / step",
        "train_seconds": "training s",
        "val_reward_start": "val. reward, start",
        "val_reward_end": "val. reward, end",
    }
    lines = ["| reward | arm | " + " | ".join(cols.values()) + " |", "|---|---|" + "---|" * len(cols)]
    for mode in modes:
        for arm in arms:
            runs = [s for name, s in summaries.items() if name.startswith(f"{mode}-{arm}-")]
            cells = [spread_cell([s[k] for s in runs]) for k in cols]
            lines.append(f"| {mode} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"plain": "C0", "dynamic": "C3", "preselect": "C2", "gdpo": "C1"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    fig2, ax2 = plt.subplots(figsize=(7, 4))
    for name, run in runs.items():
        mode, arm = name.split("-")[:2]
        rows, evals = history(run)
        ax = axes[0 if mode == "paper" else 1]
        ax.plot(
            [e["seconds"] for e in evals], [e["eval_reward"] for e in evals], color=colors[arm], alpha=0.7
        )
        flat = [
            (r["step"], r["dynamic_sampling/flat_group_share"])
            for r in rows
            if "dynamic_sampling/flat_group_share" in r
        ]
        ax2.plot(*zip(*flat), color=colors[arm], alpha=0.5, ls="-" if mode == "grounded" else ":")
    for ax, mode in zip(axes, ("paper", "grounded")):
        ax.set(
            title=f"{mode} reward",
            xlabel="training seconds (evaluation excluded)",
            ylabel="validation reward",
        )
        ax.grid(alpha=0.3)
    for arm, c in colors.items():
        axes[1].plot([], [], color=c, label=arm)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "validation_reward.png", dpi=110)
    ax2.set(
        xlabel="GRPO step", ylabel="share of flat groups (first round)", title="flat groups (dotted: paper)"
    )
    ax2.grid(alpha=0.3)
    fig2.tight_layout()
    fig2.savefig(out / "flat_share.png", dpi=110)
    plt.close("all")


PAIRED = {
    "reward/grounded": "grounded reward",
    "vqa/closed": "closed VQA",
    "reasoning/cited_box_iou": "cited-box IoU",
}


def paired_table(evals: Path, runs: dict[str, Path], n_boot: int) -> str:
    """Per reward, arm and seed: the final checkpoint minus the plain run's, on the same validation records."""
    from demo.seeds import diff_cell
    from evaluation.compare import load_rows, paired
    from evaluation.runs import load_results

    lines = ["| run - plain | " + " | ".join(PAIRED.values()) + " |", "|---|" + "---|" * len(PAIRED)]
    for name in runs:
        mode, arm, seed = name.split("-")
        if arm == "plain":
            continue
        a, b = evals / name, evals / f"{mode}-plain-{seed}"
        diffs = paired(
            (load_results(a), *load_rows(a)), (load_results(b), *load_rows(b)), n_resamples=n_boot, seed=0
        )
        lines.append(f"| {name} | " + " | ".join(diff_cell(diffs.get(k)) for k in PAIRED) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--coldstart", default="outputs/demo/coldstart", help="the checkpoint every run starts from"
    )
    ap.add_argument("--data", default="outputs/phantom")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rewards", nargs="+", default=["paper", "grounded"], choices=sorted(REWARD_SETS))
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--steps", type=int, default=None, help="GRPO steps (default: the recipe's max_steps)")
    ap.add_argument("--eval_steps", type=int, default=20, help="validation every N steps (and at the start)")
    ap.add_argument(
        "--eval_prompts", type=int, default=64, help="validation prompts evaluated during training"
    )
    ap.add_argument("--select_limit", type=int, default=1200, help="prompts rl-select scores (the first N)")
    ap.add_argument(
        "--val_sample", type=int, default=200, help="validation records for the paired comparison"
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="outputs/sampling-study")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    from demo.seeds import evaluate

    opts = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # two jobs side by side, one thread each (as `make` sets)
    coldstart, data, out = Path(opts.coldstart), Path(opts.data), Path(opts.out)
    if not (coldstart / "model.safetensors").exists():
        raise StudyError(
            f"{coldstart}: no cold-start checkpoint; run `make demo` (or --stop_after coldstart) first"
        )
    recipes = {mode: recipe_for(mode, out) for mode in opts.rewards}
    opts.selections = {}
    if "preselect" in opts.arms:
        with ThreadPoolExecutor(2) as pool:
            jobs = {
                m: pool.submit(preselect, m, r, coldstart, data, out, opts.select_limit)
                for m, r in recipes.items()
            }
            opts.selections = {m: job.result() for m, job in jobs.items()}
    runs = {
        f"{mode}-{arm}-{seed}": out / f"{mode}-{arm}-{seed}"
        for seed in opts.seeds
        for mode in opts.rewards
        for arm in opts.arms
    }
    with ThreadPoolExecutor(2) as pool:  # two runs side by side, one thread each
        jobs = [
            pool.submit(
                train,
                run,
                recipes[name.split("-")[0]],
                name.split("-")[1],
                int(name.split("-")[2]),
                coldstart,
                data,
                opts,
            )
            for name, run in runs.items()
        ]
        for job in jobs:
            job.result()
        evals = [
            pool.submit(
                evaluate, run, data, "validation", opts.val_sample, out / "eval" / name, opts.bootstrap
            )
            for name, run in runs.items()
        ]
        for job in evals:
            job.result()
    summaries = {name: summarise(run) for name, run in runs.items()}
    plot(runs, out)
    md = (
        f"# Sampling study: where GRPO spends its compute, from {coldstart}\n\n"
        f"Mean over seeds {opts.seeds} (min, max). Validation reward: TRL's evaluation on {opts.eval_prompts} "
        "held-out prompts, sampled as in training, the run's own reward.\n\n"
        + table(summaries, opts.rewards, opts.arms)
        + f"\nFinal checkpoint minus the plain run of the same reward and seed, on the same {opts.val_sample} "
        "validation records (greedy; difference [95% CI, studies resampled]):\n\n"
        + paired_table(out / "eval", runs, opts.bootstrap)
    )
    atomic_write_text(out / "study.md", md)
    atomic_write_text(out / "study.json", json.dumps(summaries, indent=2) + "\n")
    print(md)
    print(f"written: {out / 'study.md'}, {out / 'validation_reward.png'}, {out / 'flat_share.png'}")


if __name__ == "__main__":
    setup_logging()
    with user_errors("sampling-study", OpenMedixError):
        main()
