"""`make demo-seeds`: does the demo's RL stage teach on this machine? The demo for several seeds, judged.

    python -m recipes.demo_seeds --seeds 0 1 2 [--out outputs] [--val-limit N] [--test-limit N]

One training run is an anecdote: CPU float kernels differ between machines, so the same schedule
lands somewhere else on another machine. For each seed this runs `recipes.demo --seed N` up to
GRPO (finished stages are skipped), evaluates the cold start and the GRPO checkpoint on validation
(where choices were made) and on test (reported), all records of each split by default (the demo's
own table uses the first 200 test records, which come from 24 of the 227 test studies), and checks,
per seed:

  1. validation: GRPO's mean grounded reward is above the cold start's;
  2. validation: on at least one headline metric (cited-box IoU, grounding mIoU, closed VQA) GRPO's
     95% bootstrap CI lies wholly above the cold start's;
  3. validation: no headline metric drops by more than the cold start's CI half-width;
  4. test: the GRPO checkpoint meets the demo's floor: format >= 0.9, closed VQA >= 0.8,
     cited-box IoU > 0.5.

Writes OUT/demo-seeds/seeds.md (per seed: value [95% CI] before -> after, and the checks),
seeds.json, and the spread (mean, min, max over seeds). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from data_prep.io import atomic_write_text
from recipes.demo import demo_dir

HEADLINE = {
    "reasoning/cited_box_iou": "cited-box IoU",
    "grounding/miou": "grounding mIoU",
    "vqa/closed": "closed VQA",
}
SHOWN = {
    "reward/grounded": "grounded reward",
    **HEADLINE,
    "reasoning/format_rate": "format",
    "reasoning/boxes_per_answer": "boxes / answer",
}
FLOOR = {"reasoning/format_rate": 0.9, "vqa/closed": 0.8}  # >=
IOU_FLOOR = 0.5  # cited-box IoU must be above it


def run_logged(cmd: list[str], log: Path, what: str) -> None:
    """Run `cmd` with its output in `log` (jobs here run side by side); stop, naming the log, if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(cmd)} > {log}\n", end="", flush=True)  # one write: jobs print side by side
    with open(log, "wb") as f:
        if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode:
            raise SystemExit(f"{what} failed: {' '.join(cmd)}\nfull log: {log}")


def evaluate(model: Path, data: Path, split: str, limit: int | None, out: Path, n_boot: int) -> dict:
    """evaluation.run (greedy, reasoning prompt) unless its results.json exists; returns its headline."""
    if not (out / "results.json").exists():
        cmd = [
            sys.executable,
            "-m",
            "evaluation.run",
            "--model",
            str(model),
            "--data",
            str(data),
            "--split",
            split,
            *(["--limit", str(limit)] if limit else []),
            "--out",
            str(out),
            "--name",
            out.parent.name,
            "--batch-size",
            "16",
            "--max-new-tokens",
            "160",
            "--bootstrap",
            str(n_boot),
            "--gallery",
            "0",
            "--reasoning",
            "--no-model-metrics",
        ]
        run_logged(cmd, out.parent / f"{out.name}.log", "evaluation")
    return json.loads((out / "results.json").read_text())["headline"]


def checks(val_before: dict, val_after: dict, test_after: dict) -> dict[str, tuple[bool, str]]:
    """The four checks of the module docstring: name -> (passed, why)."""
    out = {}
    b, a = val_before["reward/grounded"]["value"], val_after["reward/grounded"]["value"]
    out["reward up"] = (a > b, f"grounded reward {b:.3f} -> {a:.3f}")
    clear = [
        label
        for key, label in HEADLINE.items()
        if key in val_before and key in val_after and val_after[key]["ci_low"] > val_before[key]["ci_high"]
    ]
    out["CI-clear gain"] = (bool(clear), ", ".join(clear) or "no metric's CIs separate")
    drops = []
    for key, label in HEADLINE.items():
        if key not in val_before or key not in val_after:
            continue
        e = val_before[key]
        half = (e["ci_high"] - e["ci_low"]) / 2
        if e["value"] - val_after[key]["value"] > half:
            drops.append(f"{label} -{e['value'] - val_after[key]['value']:.3f} > {half:.3f}")
    out["no drop"] = (not drops, "; ".join(drops) or "none beyond the CI half-width")
    floor = [
        f"{SHOWN[k]} {test_after[k]['value']:.3f} < {v}"
        for k, v in FLOOR.items()
        if test_after[k]["value"] < v
    ]
    iou = test_after["reasoning/cited_box_iou"]
    if iou["value"] <= IOU_FLOOR:
        floor.append(f"cited-box IoU {iou['value']:.3f} <= {IOU_FLOOR}")
    out["test floor"] = (not floor, "; ".join(floor) or f"met (cited-box IoU lower CI {iou['ci_low']:.3f})")
    return out


def cell(e: dict | None) -> str:
    if not e or e.get("value") is None:
        return "-"
    return f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"


def report(results: dict) -> str:
    lines = []
    for split in ("validation", "test"):
        lines += [f"\n### {split}: cold start -> GRPO (value [95% bootstrap CI])\n"]
        lines += ["| seed | " + " | ".join(SHOWN.values()) + " |", "|---|" + "---|" * len(SHOWN)]
        for seed, r in results.items():
            for stage in ("coldstart", "grpo"):
                h = r[split][stage]
                lines.append(f"| {seed} {stage} | " + " | ".join(cell(h.get(k)) for k in SHOWN) + " |")
    lines += ["\n### spread over seeds (GRPO minus cold start; mean [min, max])\n"]
    lines += ["| split | " + " | ".join(SHOWN.values()) + " |", "|---|" + "---|" * len(SHOWN)]
    for split in ("validation", "test"):
        cells = []
        for k in SHOWN:
            d = [
                r[split]["grpo"][k]["value"] - r[split]["coldstart"][k]["value"]
                for r in results.values()
                if k in r[split]["grpo"] and k in r[split]["coldstart"]
            ]
            cells.append(f"{np.mean(d):+.3f} [{min(d):+.3f}, {max(d):+.3f}]" if d else "-")
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    lines += ["\n### checks\n", "| seed | " + " | ".join(next(iter(results.values()))["checks"]) + " |"]
    lines.append("|---|" + "---|" * len(next(iter(results.values()))["checks"]))
    for seed, r in results.items():
        lines.append(
            f"| {seed} | "
            + " | ".join(("pass: " if ok else "FAIL: ") + why for ok, why in r["checks"].values())
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="outputs")
    ap.add_argument(
        "--val-limit", type=int, default=None, help="validation records per evaluation (default: all)"
    )
    ap.add_argument(
        "--test-limit",
        type=int,
        default=None,
        help="test records per evaluation (default: all; the demo's first 200 records come from 24 studies)",
    )
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)

    out = Path(args.out)
    data = out / "phantom"
    results = {}
    for seed in args.seeds:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "recipes.demo",
                "--out",
                str(out),
                "--seed",
                str(seed),
                "--stop-after",
                "grpo",
            ],
            check=True,
        )
        demo = demo_dir(out, seed)
        r = {}
        for split, limit in (("validation", args.val_limit), ("test", args.test_limit)):
            # one thread each: the two checkpoints are evaluated side by side on the two cores
            with ThreadPoolExecutor(2) as pool:
                futures = {
                    stage: pool.submit(
                        evaluate,
                        demo / stage,
                        data,
                        split,
                        limit,
                        demo / "eval-seeds" / (split if limit is None else f"{split}-first{limit}") / stage,
                        args.bootstrap,
                    )
                    for stage in ("coldstart", "grpo")
                }
                r[split] = {stage: f.result() for stage, f in futures.items()}
        r["checks"] = checks(r["validation"]["coldstart"], r["validation"]["grpo"], r["test"]["grpo"])
        results[seed] = r

    folder = out / "demo-seeds"
    folder.mkdir(parents=True, exist_ok=True)
    md = f"# Demo over seeds {', '.join(map(str, args.seeds))}\n" + report(results)
    atomic_write_text(folder / "seeds.md", md)
    atomic_write_text(folder / "seeds.json", json.dumps(results, indent=2) + "\n")
    print(md)
    print(f"written: {folder / 'seeds.md'}, {folder / 'seeds.json'}")
    failed = [s for s, r in results.items() if not all(ok for ok, _ in r["checks"].values())]
    if failed:
        raise SystemExit(f"checks failed for seed(s) {failed}: see {folder / 'seeds.md'}")


if __name__ == "__main__":
    main()
