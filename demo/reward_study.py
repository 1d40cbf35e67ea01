"""`make reward-study`: the paper's reward vs the grounded reward vs a clinical report reward, one cold start.

    python -m demo.reward_study [--coldstart outputs/demo/coldstart] [--seeds 0 1 2] [--out outputs/reward-study]

The released DeepMedix-R1 coordinate term pays +0.05 per box in the think block wherever the box
points (rewards/paper.py); the grounded reward pays boxes only for being valid in the frame and
for matching the true findings (rewards/grounded.py). Does RL with the paper's reward learn to cite
more boxes without citing better ones? And the demo's GRPO trains on short answers only, which
costs the reports' label F1 (docs/results.md): does a clinical report reward on report prompts win it
back? From one cold-start checkpoint this runs the demo's GRPO recipe once per arm and seed:

  paper     the paper's reward (rewards/paper.py), the recipe's tasks
  grounded  recipes/demo/grpo.yaml as it is (grounded reward, VQA/classification/grounding)
  reports   the grounded reward, with the report tasks added (the answer term scores reports by
            BLEU-4 + ROUGE-L): the control for the arm below
  clinical  as `reports`, plus the `report_labels` reward (CheXpert label F1 of the boxed report,
            rewards/clinical.py), weight 1.0
  reports-only, clinical-only   the last two on report prompts alone (not run unless named in --arms)

It evaluates every checkpoint (and the cold start) on the same validation records and writes into --out:

  study.md / study.json   per run: boxes per completion, valid-box rate, cited-box IoU, grounding
                          mIoU, closed VQA, format, grounded reward, report label F1 and ROUGE-L
                          (value [95% CI, studies resampled]), the mean over seeds per arm, and per
                          seed the paired differences grounded - paper, clinical - grounded and
                          clinical - reports on the same records (evaluation.compare)
  boxes_per_step.png      boxes cited per completion over the GRPO steps, one line per run

Finished runs and evaluations are skipped on a rerun (``--arms`` picks arms). CPU: the runs of a seed
train side by side, one thread each, then are evaluated side by side; about 7 minutes per seed and
pair of arms on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.io import atomic_write_text
from demo.pipeline import grpo_history
from demo.seeds import cell, diff_cell, evaluate, run_logged
from evaluation.compare import load_rows, paired
from evaluation.runs import load_results
from rewards import REWARD_SETS

METRICS = {
    "reasoning/boxes_per_answer": "boxes / completion",
    "reasoning/valid_box_rate": "valid-box rate",
    "reasoning/cited_box_iou": "cited-box IoU",
    "grounding/miou": "grounding mIoU",
    "vqa/closed": "closed VQA",
    "reasoning/format_rate": "format",
    "reward/grounded": "grounded reward",
    "report/labels_macro_f1_14": "report label macro-F1 (14)",
    "report/labels_micro_f1_14": "report label micro-F1 (14)",
    "report/rouge_l": "report ROUGE-L",
}
REPORT_TASKS = ["report_findings", "report_impression"]
DEMO_TASKS = ["vqa", "classification", "grounding"]  # recipes/demo/grpo.yaml
CLINICAL_WEIGHT = 1.0  # report_labels beside answer (1.0): label agreement counts as much as wording
# Per arm: (reward mode, reward funcs and weights or None for the recipe's, tasks or None for the recipe's)
ARMS = {
    "paper": ("paper", dict(REWARD_SETS["paper"]), None),
    "grounded": ("grounded", None, None),
    "reports": ("grounded", None, DEMO_TASKS + REPORT_TASKS),
    "clinical": ("grounded", None, DEMO_TASKS + REPORT_TASKS),
    # Not run by default: GRPO on report prompts only, where the report terms get every group.
    "reports-only": ("grounded", None, REPORT_TASKS),
    "clinical-only": ("grounded", None, REPORT_TASKS),
}
DEFAULT_ARMS = ["paper", "grounded", "reports", "clinical"]
# Paired differences reported per seed: (run, baseline)
PAIRS = [
    ("grounded", "paper"),
    ("clinical", "grounded"),
    ("clinical", "reports"),
    ("clinical-only", "reports-only"),
]


def arm_of(run: str) -> str:
    """The arm of a run name ("reports-only-seed2" -> "reports-only"; "coldstart" stays)."""
    return run.rsplit("-seed", 1)[0]


def arm_args(arm: str) -> list[str]:
    """The recipes.grpo overrides of an arm (the demo recipe's own grounded weights where it keeps them)."""
    mode, rewards, tasks = ARMS[arm]
    if arm.startswith("clinical"):
        rewards = {**demo_recipe_rewards(), "report_labels": CLINICAL_WEIGHT}
    cmd = []
    if rewards:
        cmd += ["--reward_mode", mode, "--reward_funcs", *rewards]
        cmd += ["--reward_weights", *(str(w) for w in rewards.values())]
    return cmd + (["--tasks", *tasks] if tasks else [])


def demo_recipe_rewards() -> dict[str, float]:
    import yaml

    recipe = yaml.safe_load(Path("recipes/demo/grpo.yaml").read_text())
    return dict(zip(recipe["reward_funcs"], recipe["reward_weights"]))


def train(arm: str, seed: int, coldstart: Path, data: Path, out: Path, steps: int | None) -> None:
    """recipes.grpo with the demo recipe and one arm's rewards and tasks, unless the run finished before."""
    if (out / "model.safetensors").exists():
        print(f"[{out.name}] already trained - skipping")
        return
    cmd = [sys.executable, "-m", "recipes.grpo", "--config", "recipes/demo/grpo.yaml"]
    cmd += ["--model_name_or_path", str(coldstart), "--dataset_name", str(data), "--output_dir", str(out)]
    cmd += arm_args(arm)
    cmd += ["--seed", str(seed), "--report_to", "none", *(["--max_steps", str(steps)] if steps else [])]
    run_logged(cmd, out.parent / f"{out.name}.log", "GRPO run")
    print(f"[{out.name}] trained", flush=True)


def plot_boxes(runs: dict[str, Path], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, folder in runs.items():
        h = [x for x in grpo_history(folder) if "boxes/per_completion" in x]
        color = dict(zip(ARMS, ("C3", "C0", "C2", "C1", "C4", "C5")))[arm_of(name)]
        ax.plot(
            [x["step"] for x in h], [x["boxes/per_completion"] for x in h], color=color, alpha=0.8, label=name
        )
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("boxes cited per completion (sampled)")
    ax.set_title("Reward study: boxes per completion during GRPO")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def paired_table(evals: Path, arms: list[str], seeds: list[int], n_boot: int) -> str:
    """Per pair of arms and seed: one run minus the other, paired on the same records."""
    lines = ["| run - baseline | seed | " + " | ".join(METRICS.values()) + " |"]
    lines.append("|---|---|" + "---|" * len(METRICS))
    for run, base in [p for p in PAIRS if set(p) <= set(arms)]:
        for seed in seeds:
            a, b = evals / f"{run}-seed{seed}", evals / f"{base}-seed{seed}"
            diffs = paired(
                (load_results(a), *load_rows(a)), (load_results(b), *load_rows(b)), n_resamples=n_boot, seed=0
            )
            cells = " | ".join(diff_cell(diffs.get(k)) for k in METRICS)
            lines.append(f"| {run} - {base} | {seed} | {cells} |")
    return "\n".join(lines) + "\n"


def table(results: dict[str, dict], arms: list[str]) -> str:
    lines = ["| run | " + " | ".join(METRICS.values()) + " |", "|---|" + "---|" * len(METRICS)]
    for name, h in results.items():
        lines.append(f"| {name} | " + " | ".join(cell(h.get(k)) for k in METRICS) + " |")
    lines += ["", "Mean over seeds (min, max):", ""]
    lines += ["| arm | " + " | ".join(METRICS.values()) + " |", "|---|" + "---|" * len(METRICS)]
    for arm in arms:
        runs = [h for name, h in results.items() if arm_of(name) == arm]
        cells = []
        for k in METRICS:
            v = [h[k]["value"] for h in runs if h.get(k) and h[k].get("value") is not None]
            cells.append(f"{np.mean(v):.3f} ({min(v):.3f}, {max(v):.3f})" if v else "-")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def train_and_evaluate(
    pair: dict[str, Path], seed: int, coldstart: Path, data: Path, out: Path, args
) -> dict:
    """Train the runs of ``pair`` side by side, then evaluate them side by side; their headlines."""
    with ThreadPoolExecutor(len(pair)) as pool:
        trained = [
            pool.submit(train, arm_of(name), seed, coldstart, data, folder, args.steps)
            for name, folder in pair.items()
        ]
        for f in trained:
            f.result()
        scored = {
            name: pool.submit(
                evaluate, folder, data, "validation", args.val_sample, out / "eval" / name, args.bootstrap
            )
            for name, folder in pair.items()
        }
        return {name: f.result() for name, f in scored.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--coldstart", default="outputs/demo/coldstart", help="the cold-start checkpoint both start from"
    )
    ap.add_argument("--data", default="outputs/phantom")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--arms", nargs="+", choices=list(ARMS), default=DEFAULT_ARMS, help=f"default: {DEFAULT_ARMS}"
    )
    ap.add_argument("--steps", type=int, default=None, help="GRPO steps (default: the recipe's max_steps)")
    ap.add_argument(
        "--val_sample", type=int, default=None, help="validation records, spanning its studies (default: all)"
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", default="outputs/reward-study")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # two jobs side by side, one thread each (as `make` sets)

    coldstart, data, out = Path(args.coldstart), Path(args.data), Path(args.out)
    if not (coldstart / "model.safetensors").exists():
        raise SystemExit(
            f"{coldstart}: no cold-start checkpoint; run `make demo` (or --stop_after coldstart) first"
        )
    runs = {f"{arm}-seed{seed}": out / f"{arm}-seed{seed}" for arm in args.arms for seed in args.seeds}
    results = {
        "coldstart": evaluate(
            coldstart, data, "validation", args.val_sample, out / "eval" / "coldstart", args.bootstrap
        )
    }
    # Per seed, two arms' runs at a time train side by side (one thread each, the two cores), then
    # their checkpoints are evaluated side by side.
    for seed in args.seeds:
        of_seed = [(name, folder) for name, folder in runs.items() if name.endswith(f"-seed{seed}")]
        for pair in (dict(of_seed[i : i + 2]) for i in range(0, len(of_seed), 2)):
            results.update(train_and_evaluate(pair, seed, coldstart, data, out, args))
    plot_boxes(runs, out / "boxes_per_step.png")
    md = (
        f"# Reward study: {', '.join(args.arms)} from {coldstart}\n\n"
        f"{args.val_sample or 'All'} validation records, greedy; value [95% CI, whole studies resampled].\n\n"
        + table(results, args.arms)
        + "\nPer seed, one arm minus another, paired on the same records (difference [95% CI]; "
        "▲/▼: Holm-adjusted p < 0.05 over these and the other headline metrics):\n\n"
        + paired_table(out / "eval", args.arms, args.seeds, args.bootstrap)
    )
    atomic_write_text(out / "study.md", md)
    atomic_write_text(out / "study.json", json.dumps(results, indent=2) + "\n")
    print(md)
    print(f"written: {out / 'study.md'}, {out / 'boxes_per_step.png'}")


if __name__ == "__main__":
    setup_logging()
    with user_errors("reward-study", OpenMedixError):
        main()
