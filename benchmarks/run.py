"""`make bench`: every benchmark of the repository, figures merged into one JSON file.

    python -m benchmarks.run --out outputs/bench.json [--only sft rewards grpo data]

- sft:     steps/s and peak RSS of the demo SFT recipe (recipes/demo/sft.yaml) on the tiny model
- rewards: completions/s of each reward and of the paper / grounded sets (benchmarks.rewards)
- grpo:    s/step (median TRL step_time) and peak RSS of recipes/grpo.py vs a bare TRL
           GRPOTrainer script (benchmarks/grpo_bare.py), same model, data, rewards, settings
- data:    records/s of the MIMIC converter and images/s of the image step (benchmarks.data)
- vllm:    rollout tokens/s of vLLM vs model.generate on the same GRPO prompts (benchmarks.rollouts),
           and the demo GRPO recipe's s/step with colocated vLLM vs transformers generation

Training benchmarks need the demo's data and models; missing ones are built first.
Each figure is measured in a child process; peak RSS is that process's maxrss.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_prep.errors import OpenMedixError, user_errors
from data_prep.io import atomic_write_text

PY = [sys.executable, "-m"]


class BenchError(OpenMedixError, RuntimeError):
    """A benchmark's child command failed or logged no figure."""


def child(cmd: list[str]) -> dict:
    """Run a child process; return its wall time, peak RSS (MiB) and output."""
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode:
        raise BenchError(
            f"benchmark command failed: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    # getrusage(RUSAGE_CHILDREN) is the max over finished children; run one benchmark per process.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": wall, "peak_rss_mib": peak, "out": proc.stdout + proc.stderr}


def train_runtime(log: str) -> tuple[float, int]:
    """(train_runtime seconds, steps) from a HF Trainer log: the loop only, without start-up."""
    m = re.findall(r"'train_runtime': '?([\d.]+)'?", log)
    steps = re.findall(r"'train_steps_per_second': '?([\d.]+)'?", log)
    if not m:
        raise BenchError("no train_runtime in the training log")
    runtime = float(m[-1])
    return runtime, round(runtime * float(steps[-1])) if steps else 0


def isolated(bench: str, args: argparse.Namespace) -> dict:
    """Run one benchmark in a fresh interpreter so its peak RSS is its own."""
    cmd = PY + ["benchmarks.run", "--one", bench, "--outputs", args.outputs, "--steps", str(args.steps)]
    res = child(cmd)
    return json.loads(res["out"].strip().splitlines()[-1])


def ensure_demo_inputs(outputs: Path, need_coldstart: bool) -> None:
    stop = "coldstart" if need_coldstart else "tiny-model"
    done = outputs / (
        "demo/coldstart/model.safetensors" if need_coldstart else "tiny-qwen2.5-vl/tiny_model.json"
    )
    if not done.exists():
        subprocess.run(PY + ["demo.pipeline", "--out", str(outputs), "--stop_after", stop], check=True)


def bench_sft(outputs: Path, steps: int) -> dict:
    ensure_demo_inputs(outputs, need_coldstart=False)
    if not (outputs / "phantom/records.jsonl").exists():
        subprocess.run(PY + ["demo.pipeline", "--out", str(outputs), "--stop_after", "phantom"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        res = child(
            PY + ["recipes.sft", "--config", "recipes/demo/sft.yaml", "--model_name_or_path",
                  str(outputs / "tiny-qwen2.5-vl"), "--dataset_name", str(outputs / "phantom"),
                  "--output_dir", tmp, "--max_steps", str(steps), "--save_strategy", "no", "--disable_tqdm", "true"]
        )  # fmt: skip
    runtime, n = train_runtime(res["out"])
    return {
        "recipe": "recipes/demo/sft.yaml",
        "steps": n,
        "steps_per_s": n / runtime,
        "peak_rss_mib": res["peak_rss_mib"],
    }


def bench_grpo_one(outputs: Path, steps: int, bare: bool, vllm: bool = False) -> dict:
    model, data = outputs / "demo/coldstart", outputs / "phantom"
    with tempfile.TemporaryDirectory() as tmp:
        if bare:
            cmd = PY + ["benchmarks.grpo_bare", "--model", str(model), "--data", str(data), "--output_dir", tmp,
                        "--max_steps", str(steps)]  # fmt: skip
        else:
            cmd = PY + ["recipes.grpo", "--config", "recipes/demo/grpo.yaml", "--model_name_or_path", str(model),
                        "--dataset_name", str(data), "--output_dir", tmp, "--max_steps", str(steps),
                        "--save_strategy", "no", "--disable_tqdm", "true", "--logging_steps", "1",
                        "--report_to", "none"]  # fmt: skip
            if vllm:
                cmd += ["--use_vllm", "true", "--vllm_mode", "colocate"]
        res = child(cmd)
    # TRL logs each step's time; the median past the first two steps leaves out warm-up
    # (first image decodes, allocator growth), which otherwise dominates a short run.
    step_times = [float(x) for x in re.findall(r"'step_time': '?([\d.]+)'?", res["out"])][2:]
    if not step_times:
        raise BenchError("no step_time in the GRPO log")
    return {
        "s_per_step": statistics.median(step_times),
        "steps": steps,
        "peak_rss_mib": res["peak_rss_mib"],
        "wall_s": res["wall_s"],
    }


def bench_grpo(args) -> dict:
    ensure_demo_inputs(Path(args.outputs), need_coldstart=True)
    # Alternate the two twice and keep each one's best median: the order and the machine's
    # state (page cache, other load) otherwise move a 20-step figure by +-20%.
    runs = {"ours": [], "bare": []}
    for _ in range(2):
        runs["ours"].append(isolated("grpo-ours", args))
        runs["bare"].append(isolated("grpo-bare", args))
    ours = min(runs["ours"], key=lambda r: r["s_per_step"])
    bare = min(runs["bare"], key=lambda r: r["s_per_step"])
    return {
        "runs": runs,
        "ours": ours,
        "bare_trl": bare,
        "step_time_overhead": ours["s_per_step"] / bare["s_per_step"] - 1,
        "peak_rss_overhead": ours["peak_rss_mib"] / bare["peak_rss_mib"] - 1,
        "target_overhead": 0.05,
    }


def bench_vllm(args) -> dict:
    outputs = Path(args.outputs)
    ensure_demo_inputs(outputs, need_coldstart=True)
    with tempfile.TemporaryDirectory() as tmp:
        child(
            PY + ["benchmarks.rollouts", "--model", str(outputs / "demo/coldstart"), "--data",
                  str(outputs / "phantom"), "--out", f"{tmp}/rollouts.json"]
        )  # fmt: skip
        rollouts = json.loads(Path(f"{tmp}/rollouts.json").read_text())
    # As for grpo: alternate, keep each one's best median step time.
    runs = {"vllm": [], "transformers": []}
    for _ in range(2):
        runs["vllm"].append(isolated("grpo-vllm", args))
        runs["transformers"].append(isolated("grpo-ours", args))
    best = {k: min(v, key=lambda r: r["s_per_step"]) for k, v in runs.items()}
    return {
        "rollouts": rollouts,
        "grpo_runs": runs,
        "grpo_s_per_step_vllm": best["vllm"]["s_per_step"],
        "grpo_s_per_step_transformers": best["transformers"]["s_per_step"],
        "grpo_peak_rss_mib_vllm": best["vllm"]["peak_rss_mib"],
        "grpo_peak_rss_mib_transformers": best["transformers"]["peak_rss_mib"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/bench.json")
    ap.add_argument("--only", nargs="*", choices=["sft", "rewards", "grpo", "data", "vllm"])
    ap.add_argument("--outputs", default="outputs", help="where the demo's data and models live")
    ap.add_argument("--steps", type=int, default=20, help="training steps per training benchmark")
    ap.add_argument("--data_studies", type=int, default=20000)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    outputs = Path(args.outputs)

    if args.one:  # child mode: one benchmark, JSON on the last line
        fn = {
            "sft": lambda: bench_sft(outputs, args.steps),
            "grpo-ours": lambda: bench_grpo_one(outputs, args.steps, bare=False),
            "grpo-bare": lambda: bench_grpo_one(outputs, args.steps, bare=True),
            "grpo-vllm": lambda: bench_grpo_one(outputs, args.steps, bare=False, vllm=True),
        }[args.one]
        print(json.dumps(fn()))
        return

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = {
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    todo = args.only or ["sft", "rewards", "grpo", "data", "vllm"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in todo:
            print(f"[bench] {name} ...", flush=True)
            if name == "sft":
                results["sft"] = isolated("sft", args)
            elif name == "grpo":
                results["grpo"] = bench_grpo(args)
            elif name == "vllm":
                results["vllm"] = bench_vllm(args)
            elif name == "rewards":
                child(PY + ["benchmarks.rewards", "--out", f"{tmp}/rewards.json"])
                results["rewards"] = json.loads(Path(f"{tmp}/rewards.json").read_text())
            elif name == "data":
                child(
                    PY + ["benchmarks.data", "--studies", str(args.data_studies), "--out", f"{tmp}/data.json"]
                )
                results["data"] = json.loads(Path(f"{tmp}/data.json").read_text())
            print(json.dumps(results[name], indent=2)[:2000], flush=True)
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print(f"benchmarks written to {out}")


if __name__ == "__main__":
    with user_errors("bench", BenchError):
        main()
