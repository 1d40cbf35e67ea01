"""`make demo-seeds`: does the demo's RL stage teach on this machine? The whole demo for several seeds, judged.

    python -m demo.seeds --seeds 0 1 2 [--out outputs]

One training run is an anecdote: CPU float kernels differ between machines, so the same schedule
lands somewhere else on another machine. For each seed this runs `demo.pipeline --seed N` (finished
stages and evaluations are skipped), which evaluates every stage on the same sample of test records
(every test study represented) and compares GRPO with the cold start by paired differences that
resample whole studies (evaluation.compare). Then, per seed, the demo's four checks (demo.pipeline
rl_checks):

  1-2. GRPO minus cold start is marked better (95% paired CI above 0, Holm-adjusted over the
       headline metrics) on the grounded reward and on cited-box IoU;
  3.   no headline metric is marked worse;
  4.   the GRPO checkpoint meets the floor: format >= 0.9, closed VQA >= 0.8, cited-box IoU > 0.5.

Writes OUT/demo-seeds/seeds.md (per seed: the paired differences and the checks; the spread of the
differences over seeds) and seeds.json. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.io import atomic_write_text
from demo.pipeline import DemoError, check_lines, demo_dir, rl_checks

SHOWN = {
    "reward/grounded": "grounded reward",
    "reasoning/cited_box_iou": "cited-box IoU",
    "grounding/miou": "grounding mIoU",
    "vqa/closed": "closed VQA",
    "classification/micro_f1": "classification micro-F1",
    "reasoning/format_rate": "format",
    "reasoning/boxes_per_answer": "boxes / answer",
}
MARK = {"better": " ▲", "worse": " ▼", "higher": " ▲", "lower": " ▼"}


def run_logged(cmd: list[str], log: Path, what: str) -> None:
    """Run `cmd` with its output in `log` (jobs here run side by side); stop, naming the log, if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"$ {' '.join(cmd)} > {log}\n", end="", flush=True)  # one write: jobs print side by side
    with open(log, "wb") as f:
        if subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode:
            raise DemoError(f"{what} failed: {' '.join(cmd)}\nfull log: {log}")


def evaluate(model: Path, data: Path, split: str, sample: int | None, out: Path, n_boot: int) -> dict:
    """evaluation.run (greedy, reasoning prompt) unless its results.json exists; returns its headline.
    ``sample``: that many records spanning the split's studies (None: all)."""
    if not (out / "results.json").exists():
        cmd = [sys.executable, "-m", "evaluation.run", "--model", str(model), "--data", str(data)]
        cmd += ["--split", split, *(["--sample", str(sample)] if sample else []), "--out", str(out)]
        cmd += ["--name", out.name, "--batch_size", "16", "--max_new_tokens", "160"]
        cmd += ["--bootstrap", str(n_boot), "--gallery", "0", "--reasoning", "--no_model_metrics"]
        run_logged(cmd, out.parent / f"{out.name}.log", "evaluation")
    return json.loads((out / "results.json").read_text())["headline"]


def cell(e: dict | None) -> str:
    """value [95% CI] of a headline entry."""
    if not e or e.get("value") is None:
        return "-"
    if e.get("ci_low") is None:
        return f"{e['value']:.3f}"
    return f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"


def diff_cell(d: dict | None) -> str:
    """difference [95% CI] and its mark of a paired difference."""
    if not d or d.get("diff") is None:
        return "-"
    return f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]{MARK.get(d['verdict'], '')}"


def pair_of(comparison: dict, run: str = "grpo", baseline: str = "coldstart") -> dict:
    for d in comparison["differences"]:
        if (d["run"], d["baseline"]) == (run, baseline):
            return d.get("metrics", {})
    return {}


def report(results: dict) -> str:
    """seeds.md: per seed the cold start, GRPO and their paired difference; the spread; the checks."""
    lines = [
        "\n### GRPO minus cold start, paired, studies resampled: difference [95% CI] (▲/▼: Holm p < 0.05)\n"
    ]
    lines += ["| seed | " + " | ".join(SHOWN.values()) + " |", "|---|" + "---|" * len(SHOWN)]
    for seed, r in results.items():
        diffs = pair_of(r["comparison"])
        values = {row["metric"]: row["runs"] for row in r["comparison"]["rows"]}
        for stage in ("coldstart", "grpo"):
            cells = [cell((values.get(k) or {}).get(stage)) for k in SHOWN]
            lines.append(f"| {seed} {stage} | " + " | ".join(cells) + " |")
        lines.append(f"| {seed} difference | " + " | ".join(diff_cell(diffs.get(k)) for k in SHOWN) + " |")
    lines += ["\n### spread over seeds of the difference (mean [min, max])\n"]
    lines += ["| " + " | ".join(SHOWN.values()) + " |", "|" + "---|" * len(SHOWN)]
    cells = []
    for k in SHOWN:
        d = [pair_of(r["comparison"]).get(k, {}).get("diff") for r in results.values()]
        d = [x for x in d if x is not None]
        cells.append(f"{np.mean(d):+.3f} [{min(d):+.3f}, {max(d):+.3f}]" if d else "-")
    lines.append("| " + " | ".join(cells) + " |")
    lines += ["\n### checks\n"]
    for seed, r in results.items():
        lines += [f"seed {seed}:", *check_lines(r["checks"])[1:]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="outputs")
    args, demo_args = ap.parse_known_args(argv)  # anything else goes to demo.pipeline (e.g. --eval_sample)

    out = Path(args.out)
    results = {}
    for seed in args.seeds:
        cmd = [sys.executable, "-m", "demo.pipeline", "--out", str(out), "--seed", str(seed), *demo_args]
        print(f"\n$ {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
        comparison = json.loads((demo_dir(out, seed) / "eval" / "compare" / "comparison.json").read_text())
        results[seed] = {"comparison": comparison, "checks": rl_checks(comparison)}

    folder = out / "demo-seeds"
    folder.mkdir(parents=True, exist_ok=True)
    md = f"# The demo over seeds {', '.join(map(str, args.seeds))}\n" + report(results)
    atomic_write_text(folder / "seeds.md", md)
    atomic_write_text(folder / "seeds.json", json.dumps(results, indent=2) + "\n")
    print(md)
    print(f"written: {folder / 'seeds.md'}, {folder / 'seeds.json'}")
    failed = [s for s, r in results.items() if not all(ok for ok, _ in r["checks"].values())]
    if failed:
        raise SystemExit(f"checks failed for seed(s) {failed}: see {folder / 'seeds.md'}")


if __name__ == "__main__":
    setup_logging()
    with user_errors("demo-seeds", OpenMedixError):
        main()
