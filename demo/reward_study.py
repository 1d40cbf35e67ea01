"""`make reward-study`: the paper's reward vs the grounded reward, from the same cold start.

    python -m demo.reward_study [--coldstart outputs/demo/coldstart] [--seeds 0 1 2] [--out outputs/reward-study]

The released DeepMedix-R1 coordinate term pays +0.05 per box in the think block wherever the box
points (rewards/paper.py); the grounded reward pays boxes only for being valid in the frame and
for matching the true findings (rewards/grounded.py). Does RL with the paper's reward learn to cite
more boxes without citing better ones? From one cold-start checkpoint this runs the demo's GRPO
recipe (recipes/demo/grpo.yaml as it is) once per reward and seed, evaluates every checkpoint (and
the cold start) on the same validation records, and writes into --out:

  study.md / study.json   per run: boxes per completion, valid-box rate, cited-box IoU, grounding
                          mIoU, closed VQA, format, grounded reward (value [95% CI, studies
                          resampled]), the mean over seeds per reward, and per seed the paired
                          difference grounded - paper on the same records (evaluation.compare)
  boxes_per_step.png      boxes cited per completion over the GRPO steps, one line per run

Finished runs and evaluations are skipped on a rerun. CPU: the two runs of a seed train side by side,
one thread each, then are evaluated side by side; about 7 minutes per seed on 2 cores.
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
}


def train(mode: str, seed: int, coldstart: Path, data: Path, out: Path, steps: int | None) -> None:
    """recipes.grpo with the demo recipe and one reward set, unless the run finished before."""
    if (out / "model.safetensors").exists():
        print(f"[{out.name}] already trained - skipping")
        return
    cmd = [sys.executable, "-m", "recipes.grpo", "--config", "recipes/demo/grpo.yaml"]
    cmd += ["--model_name_or_path", str(coldstart), "--dataset_name", str(data), "--output_dir", str(out)]
    if mode != "grounded":  # the grounded arm is the demo's GRPO recipe as it is (its own weights)
        names = list(REWARD_SETS[mode])
        cmd += ["--reward_mode", mode, "--reward_funcs", *names]
        cmd += ["--reward_weights", *(str(REWARD_SETS[mode][n]) for n in names)]
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
        color = "C3" if name.startswith("paper") else "C0"
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


def paired_table(evals: Path, seeds: list[int], n_boot: int) -> str:
    """Per seed: grounded-reward run minus paper-reward run, paired on the same records."""
    lines = ["| seed | " + " | ".join(METRICS.values()) + " |", "|---|" + "---|" * len(METRICS)]
    for seed in seeds:
        a, b = evals / f"grounded-seed{seed}", evals / f"paper-seed{seed}"
        diffs = paired(
            (load_results(a), *load_rows(a)), (load_results(b), *load_rows(b)), n_resamples=n_boot, seed=0
        )
        lines.append(f"| {seed} | " + " | ".join(diff_cell(diffs.get(k)) for k in METRICS) + " |")
    return "\n".join(lines) + "\n"


def table(results: dict[str, dict]) -> str:
    lines = ["| run | " + " | ".join(METRICS.values()) + " |", "|---|" + "---|" * len(METRICS)]
    for name, h in results.items():
        lines.append(f"| {name} | " + " | ".join(cell(h.get(k)) for k in METRICS) + " |")
    lines += ["", "Mean over seeds (min, max):", ""]
    lines += ["| reward | " + " | ".join(METRICS.values()) + " |", "|---|" + "---|" * len(METRICS)]
    for mode in REWARD_SETS:
        runs = [h for name, h in results.items() if name.startswith(f"{mode}-")]
        cells = []
        for k in METRICS:
            v = [h[k]["value"] for h in runs if h.get(k) and h[k].get("value") is not None]
            cells.append(f"{np.mean(v):.3f} ({min(v):.3f}, {max(v):.3f})" if v else "-")
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--coldstart", default="outputs/demo/coldstart", help="the cold-start checkpoint both start from"
    )
    ap.add_argument("--data", default="outputs/phantom")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
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
    runs = {f"{mode}-seed{seed}": out / f"{mode}-seed{seed}" for mode in REWARD_SETS for seed in args.seeds}
    results = {
        "coldstart": evaluate(
            coldstart, data, "validation", args.val_sample, out / "eval" / "coldstart", args.bootstrap
        )
    }
    # Per seed, the two rewards' runs train side by side (one thread each, the two cores), then
    # their checkpoints are evaluated side by side.
    for seed in args.seeds:
        pair = {name: folder for name, folder in runs.items() if name.endswith(f"-seed{seed}")}
        with ThreadPoolExecutor(len(pair)) as pool:
            trained = [
                pool.submit(train, name.split("-seed")[0], seed, coldstart, data, folder, args.steps)
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
            results.update({name: f.result() for name, f in scored.items()})
    plot_boxes(runs, out / "boxes_per_step.png")
    md = (
        f"# Reward study: paper vs grounded reward from {coldstart}\n\n"
        f"{args.val_sample or 'All'} validation records, greedy; value [95% CI, whole studies resampled].\n\n"
        + table(results)
        + "\nGrounded minus paper reward, per seed, paired on the same records (difference [95% CI]; "
        "▲/▼: Holm-adjusted p < 0.05 over these and the other headline metrics):\n\n"
        + paired_table(out / "eval", args.seeds, args.bootstrap)
    )
    atomic_write_text(out / "study.md", md)
    atomic_write_text(out / "study.json", json.dumps(results, indent=2) + "\n")
    print(md)
    print(f"written: {out / 'study.md'}, {out / 'boxes_per_step.png'}")


if __name__ == "__main__":
    setup_logging()
    with user_errors("reward-study", OpenMedixError):
        main()
