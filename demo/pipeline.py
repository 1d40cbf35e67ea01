"""`make demo`: the whole DeepMedix-R1 pipeline on a laptop CPU, offline, in minutes.

    phantom X-rays -> tiny Qwen2.5-VL -> stage 1 SFT -> cold-start data (offline teacher)
    -> stage 2 cold-start SFT -> stage 3 GRPO -> evaluation of every stage + comparison table

Each stage runs as its own process with the same command a user would type (printed before
it runs), so the demo doubles as a walkthrough. Finished stages are skipped on a rerun
(`--fresh` starts over). Outputs land in `--out` (default `outputs/`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from data_prep.errors import OpenMedixError, setup_logging
from data_prep.synthesis.offline_teacher import parse_unboxed
from evaluation.curves import smooth, terms


class DemoError(OpenMedixError, RuntimeError):
    """A stage failed (the message names its command and log), or old outputs do not fit the settings."""


STAGES = ("phantom", "tiny-model", "sft", "coldstart-data", "coldstart", "grpo", "eval")
# The offline teacher names these findings without their box in 2 of 3 studies unless asked about
# them (a teacher that localises only what it was asked): the cold start inherits the habit and
# GRPO's grounding and coordinate terms pay for the boxes (docs/demo-notes.md, session 4).
UNBOXED = "cardiomegaly=0.67,pleural effusion=0.67"


# Test records each stage is evaluated on: every one of the phantom test split's 227 studies, about two
# records each, tasks in the split's proportions (evaluation.stats.study_sample).
EVAL_SAMPLE = 460
# What the demo's table must show about RL (GRPO against the cold start, paired, studies resampled):
MUST_IMPROVE = {"reward/grounded": "grounded reward", "reasoning/cited_box_iou": "cited-box IoU"}
FLOOR = {"reasoning/format_rate": 0.9, "vqa/closed": 0.8}  # the GRPO checkpoint's value >= these
IOU_FLOOR = 0.5  # and its cited-box IoU above this


def rl_checks(
    comparison: dict, run: str = "grpo", baseline: str = "coldstart"
) -> dict[str, tuple[bool, str]]:
    """The demo's four checks on evaluation.compare's comparison.json: name -> (passed, why).

    1-2. GRPO - cold start is marked better (paired, Holm-adjusted) on the grounded reward and on
         cited-box IoU; 3. no headline metric is marked worse; 4. GRPO meets the floor."""
    pair = next((d for d in comparison["differences"] if (d["run"], d["baseline"]) == (run, baseline)), None)
    if pair is None or "refused" in pair:
        return {"paired": (False, pair["refused"] if pair else f"no {run} - {baseline} comparison")}
    diffs, out = pair["metrics"], {}

    def shown(key):
        d = diffs[key]
        return f"{d['diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"

    for key, label in MUST_IMPROVE.items():
        ok = key in diffs and diffs[key]["verdict"] == "better"
        out[f"{label} up"] = (ok, shown(key) if key in diffs else "not measured")
    worse = [f"{k} {shown(k)}" for k, d in diffs.items() if d["verdict"] == "worse"]
    out["nothing worse"] = (not worse, "; ".join(worse) or "no headline metric significantly worse")
    values = {row["metric"]: (row["runs"].get(run) or {}).get("value") for row in comparison["rows"]}
    short = [
        f"{k} {values[k]:.3f} < {v}" if values.get(k) is not None else f"{k} not measured"
        for k, v in FLOOR.items()
        if values.get(k) is None or values[k] < v
    ]
    iou = values.get("reasoning/cited_box_iou")
    if iou is None or iou <= IOU_FLOOR:
        short.append(f"cited-box IoU {'not measured' if iou is None else f'{iou:.3f}'} <= {IOU_FLOOR}")
    fmt = ", ".join(
        f"{k.split('/')[1]} {values[k]:.3f}"
        for k in (*FLOOR, "reasoning/cited_box_iou")
        if values.get(k) is not None
    )
    out["floor"] = (not short, "; ".join(short) or f"met ({fmt})")
    return out


def check_lines(checks: dict[str, tuple[bool, str]]) -> list[str]:
    lines = ["What RL did (GRPO minus cold start on the same records, studies resampled):"]
    lines += [f"  {'pass' if ok else 'FAIL'}  {name}: {why}" for name, (ok, why) in checks.items()]
    return lines


@dataclass
class Job:
    """One stage or evaluation: the command a user would type, and the file that marks it done."""

    name: str
    done: Path | None  # None: always run
    cmd: list[str]
    threads: int = 1  # OpenMP threads; 1 whenever another job shares the cores


LIVE: list[subprocess.Popen] = []  # every job process still running, killed if the demo stops


def execute(job: Job, logs: Path, stream: bool) -> float | None:
    """Run one job unless its done-marker exists; its output goes to logs/NAME.log and, if `stream`,
    to the terminal. Returns its seconds (None when skipped); stops the demo when it fails."""
    if job.done is not None and job.done.exists():
        print(f"[{job.name}] already done ({job.done}) - skipping", flush=True)
        return None
    log = logs / f"{job.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"\n$ {' '.join(job.cmd)}" + ("" if stream else f" > {log}"), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(job.threads)}
    t0 = time.time()
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            job.cmd, stdout=subprocess.PIPE if stream else f, stderr=subprocess.STDOUT, env=env
        )
        LIVE.append(proc)
        # Raw bytes, not lines: progress bars redraw with "\r" and stay one line on the terminal.
        while stream and (chunk := proc.stdout.read1(65536)):
            f.write(chunk)
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        code = proc.wait()
        LIVE.remove(proc)
    if code:
        raise DemoError(f"stage failed (exit {code}): {' '.join(job.cmd)}\nfull log: {log}")
    seconds = time.time() - t0
    # a side job's line may land after the shown job's progress bar: start it on a line of its own
    print(f"{'' if stream else chr(10)}[{job.name}] {seconds:.0f} s", flush=True)
    return seconds


def together(chains: list[list[Job]], logs: Path, timings: dict) -> None:
    """Run the chains side by side (the jobs of one chain in order); the first one's output is shown."""
    errors: list[BaseException] = []

    def chain_runner(chain: list[Job], stream: bool) -> None:  # one thread per chain
        try:
            for job in chain:
                if errors:
                    return
                seconds = execute(job, logs, stream)
                if seconds is not None:
                    timings[job.name] = seconds
        except BaseException as e:  # noqa: BLE001 - reported below, in the main thread
            errors.append(e)

    side = [threading.Thread(target=chain_runner, args=(c, False)) for c in chains[1:] if c]
    for t in side:
        t.start()
    if chains and chains[0]:
        chain_runner(chains[0], True)
    for t in side:
        while t.is_alive():
            if errors:  # stop the side chains too, also a job one of them started just now
                for proc in list(LIVE):
                    proc.kill()
            t.join(0.1)
    if errors:
        raise errors[0]


def check_teacher(coldstart_data: Path, spec: str) -> None:
    """Stop when existing cold-start data was written with another teacher setting (it would be reused)."""
    ledger = coldstart_data / "ledger.json"
    if ledger.exists() and json.loads(ledger.read_text()).get("offline_unboxed", {}) != parse_unboxed(spec):
        raise DemoError(
            f"{coldstart_data} was written with another offline-teacher setting than --unboxed '{spec}'; "
            "start over with `make demo ARGS=--fresh` (or pass --out elsewhere)"
        )


def grpo_history(grpo_dir: Path) -> list[dict]:
    """The GRPO run's logged steps (trainer_state.json of the run, or of its last checkpoint)."""
    states = sorted(
        grpo_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1])
    )
    state_file = grpo_dir / "trainer_state.json"
    state_file = state_file if state_file.exists() else (states[-1] if states else None)
    if state_file is None:
        return []
    return [h for h in json.loads(state_file.read_text())["log_history"] if "reward" in h]


def plot_rewards(grpo_dir: Path, png: Path) -> Path | None:
    """Training curves of the GRPO run: reward per term, KL to the reference, completion length, boxes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = grpo_history(grpo_dir)
    if not history:
        return None
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    # Raw points are one batch each (mostly noise); the line is the smoothed trend.
    for i, key in enumerate(terms(history)):
        values = [h.get(key) for h in history]
        color = "k" if key == "reward" else f"C{i}"
        label = "total (weighted)" if key == "reward" else key.split("/")[1]
        ax.plot(steps, values, ".", color=color, alpha=0.3, ms=3)
        ax.plot(steps, smooth(values), "-", color=color, lw=2 if key == "reward" else 1.3, label=label)
    ax.set_ylabel("mean reward")
    ax.set_title("reward per term (points: one step; lines: smoothed)")
    ax.legend(fontsize=8)
    axes[1].plot(steps, [h.get("kl") for h in history], "C3.-")
    axes[1].set_title("KL to the cold start (reference)")
    ax = axes[2]
    ax.plot(steps, [h.get("completions/mean_length") for h in history], "C0.-", label="completion tokens")
    ax.set_ylabel("tokens")
    ax.set_title("completion length and boxes cited")
    twin = ax.twinx()
    twin.plot(steps, [h.get("boxes/per_completion") for h in history], "C2.-", label="boxes per completion")
    twin.set_ylabel("boxes")
    ax.legend(handles=ax.get_lines() + twin.get_lines(), fontsize=8)
    for ax in axes:
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Demo GRPO ({grpo_dir})")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def demo_dir(out: Path, seed: int) -> Path:
    """Where one seed's stages and evaluations go: OUT/demo for seed 0, OUT/demo-seedN otherwise."""
    return out / ("demo" if seed == 0 else f"demo-seed{seed}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs")
    ap.add_argument("--studies", type=int, default=2400, help="phantom studies to generate")
    ap.add_argument("--size", type=int, default=112, help="phantom image side (multiple of 28)")
    ap.add_argument(
        "--eval_sample",
        type=int,
        default=EVAL_SAMPLE,
        help="test records evaluated per stage, drawn to span every test study (evaluation.stats.study_sample; "
        "default: %(default)s)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="training seed of stages 1-3 (data, tiny model and teacher stay fixed); seed N > 0 writes "
        "its stages to OUT/demo-seedN",
    )
    ap.add_argument(
        "--unboxed",
        default=UNBOXED,
        help="offline teacher: findings named without their box unless asked, NAME=RATE,... ('' for none; "
        "default: %(default)s)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="OpenMP threads of the cold start and GRPO, which run alone (default: %(default)s; one thread "
        "gives the same comparison, number for number, only slower)",
    )
    ap.add_argument("--stop_after", choices=STAGES, default="eval")
    ap.add_argument("--fresh", action="store_true", help="delete previous demo outputs first")
    return ap.parse_args(argv)


PY = [sys.executable, "-m"]
# evaluation name -> (stage whose model it evaluates, with reasoning); "base" is the tiny model itself
RUNS = {
    "base": ("tiny-model", True),
    "sft": ("sft", False),
    "coldstart": ("coldstart", True),
    "grpo": ("grpo", True),
}


@dataclass
class Plan:
    """Where the demo's inputs and outputs go, and the settings every job shares."""

    args: argparse.Namespace

    def __post_init__(self):
        out = Path(self.args.out)
        self.demo = demo_dir(out, self.args.seed)
        self.phantom, self.tiny, self.coldstart_data = (
            out / "phantom",
            out / "tiny-qwen2.5-vl",
            out / "coldstart",
        )
        self.stage_dirs = {s: self.demo / s for s in ("sft", "coldstart", "grpo")}
        self.evals = self.demo / "eval"

    def model(self, stage: str) -> Path:
        return self.tiny if stage == "tiny-model" else self.stage_dirs[stage]


def train_job(plan: Plan, stage: str, config: str, model: Path, data: Path, threads: int = 1) -> Job:
    script = "recipes.grpo" if stage == "grpo" else "recipes.sft"
    cmd = PY + [script, "--config", f"recipes/demo/{config}.yaml", "--model_name_or_path", str(model)]
    cmd += [
        "--dataset_name",
        str(data),
        "--output_dir",
        str(plan.stage_dirs[stage]),
        "--seed",
        str(plan.args.seed),
    ]
    return Job(stage, plan.stage_dirs[stage] / "model.safetensors", cmd, threads)


def stage_jobs(plan: Plan) -> dict[str, Job]:
    """The pipeline's stages, each the command a user would type."""
    args, size = plan.args, str(plan.args.size)
    teacher = ["data_prep.synthesis.coldstart", "--teacher", "offline", "--offline_style", "survey"]
    teacher += [
        "--offline_unboxed",
        args.unboxed,
        "--data",
        str(plan.phantom),
        "--out",
        str(plan.coldstart_data),
    ]
    return {
        "phantom": Job(
            "phantom",
            plan.phantom / "records.jsonl",
            PY + ["data_prep.phantom", "--n", str(args.studies), "--size", size, "--out", str(plan.phantom)],
        ),
        "tiny-model": Job(
            "tiny-model",
            plan.tiny / "tiny_model.json",
            PY + ["demo.tiny_model", "--size", size, "--out", str(plan.tiny)],
        ),
        "sft": train_job(plan, "sft", "sft", plan.tiny, plan.phantom),
        "coldstart-data": Job("coldstart-data", plan.coldstart_data / "records.jsonl", PY + teacher),
        "coldstart": train_job(
            plan, "coldstart", "coldstart", plan.stage_dirs["sft"], plan.coldstart_data, args.threads
        ),
        "grpo": train_job(plan, "grpo", "grpo", plan.stage_dirs["coldstart"], plan.phantom, args.threads),
    }


def eval_job(plan: Plan, name: str) -> Job:
    stage, reasoning = RUNS[name]
    tokens = "32" if name == "base" else "160"  # the untrained model writes noise: 32 tokens show it
    cmd = PY + [
        "evaluation.run",
        "--model",
        str(plan.model(stage)),
        "--data",
        str(plan.phantom),
        "--split",
        "test",
    ]
    cmd += ["--sample", str(plan.args.eval_sample), "--out", str(plan.evals / name), "--name", name]
    cmd += ["--batch_size", "16", "--max_new_tokens", tokens, "--bootstrap", "1000", "--gallery", "24"]
    cmd += ["--reasoning" if reasoning else "--no_reasoning"]
    return Job(f"eval-{name}", plan.evals / name / "results.json", cmd)


def forget_other_samples(plan: Plan) -> None:
    """An evaluation made on another sample is scored again (its predictions are kept by id)."""
    for name in RUNS:
        config = plan.evals / name / "run_config.json"
        if config.exists() and json.loads(config.read_text()).get("sample") != plan.args.eval_sample:
            (plan.evals / name / "results.json").unlink(missing_ok=True)


def schedule(plan: Plan) -> list[list[list[Job]]]:
    """Steps of chains run side by side. Two cores: one-thread jobs run two at a time; the cold start and
    GRPO run alone on every core (--threads). Evaluations of the small stages fill the gaps beside the
    other preparation job. Only the jobs up to --stop_after (evaluations only when the demo runs to the end)."""
    jobs, ev = stage_jobs(plan), (lambda name: eval_job(plan, name))
    steps = [
        [[jobs["phantom"]], [jobs["tiny-model"]]],
        [[jobs["sft"], ev("sft")], [jobs["coldstart-data"], ev("base")]],
        [[jobs["coldstart"]]],
        [[jobs["grpo"]]],
        [[ev("grpo")], [ev("coldstart")]],
    ]
    stop = plan.args.stop_after
    if stop == "eval":
        return steps
    keep = lambda j: j.name in STAGES and STAGES.index(j.name) <= STAGES.index(stop)  # noqa: E731
    return [[[j for j in chain if keep(j)] for chain in chains] for chains in steps]


def compare_stages(plan: Plan) -> dict[str, tuple[bool, str]]:
    """Each stage against the one before it (SFT vs base, cold start vs SFT, GRPO vs cold start), then
    the checks of what RL did."""
    cmd = PY + [
        "evaluation.compare",
        "--out",
        str(plan.evals / "compare"),
        "--baseline",
        "previous",
        "--runs",
    ]
    cmd += [f"{name}={plan.evals / name}" for name in RUNS]
    execute(Job("compare", None, cmd), plan.demo / "logs", stream=True)
    print(
        f"\ncomparison table: {plan.evals / 'compare'}; gallery of the final model: {plan.evals / 'grpo' / 'gallery.html'}"
    )
    checks = rl_checks(json.loads((plan.evals / "compare" / "comparison.json").read_text()))
    print("\n" + "\n".join(check_lines(checks)))
    return checks


def print_outputs(plan: Plan, total: float) -> None:
    print(f"\ndemo finished in {total / 60:.1f} min. Outputs:")
    for label, path in [
        ("phantom data", plan.phantom),
        ("tiny model", plan.tiny),
        ("stage 1 (SFT)", plan.stage_dirs["sft"]),
        ("cold-start data", plan.coldstart_data),
        ("stage 2 (cold start)", plan.stage_dirs["coldstart"]),
        ("stage 3 (GRPO)", plan.stage_dirs["grpo"]),
        ("logs", plan.demo / "logs"),
    ]:
        print(f"  {label:<22} {path}")


def prepare(plan: Plan) -> None:
    # The GRPO stage logs reward curves and completion tables to wandb, offline: files under
    # outputs/demo/wandb, viewable with `wandb sync` / `wandb leet`; nothing leaves the machine.
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_PROJECT", "openmedix-demo")
    os.environ.setdefault("WANDB_DIR", str(plan.demo))
    plan.demo.mkdir(parents=True, exist_ok=True)
    if plan.args.fresh:
        for p in (plan.demo, plan.phantom, plan.coldstart_data, plan.tiny):
            shutil.rmtree(p, ignore_errors=True)
        plan.demo.mkdir(parents=True, exist_ok=True)
    check_teacher(plan.coldstart_data, plan.args.unboxed)
    forget_other_samples(plan)


def run(plan: Plan) -> None:
    prepare(plan)
    timings: dict[str, float] = {}
    t_start = time.time()
    try:
        for chains in schedule(plan):
            together(chains, plan.demo / "logs", timings)
    except BaseException:
        for proc in LIVE:
            proc.kill()
        raise
    grpo = plan.stage_dirs["grpo"]
    if "grpo" in timings or (grpo / "model.safetensors").exists():
        if png := plot_rewards(grpo, plan.demo / "grpo_rewards.png"):
            print(f"reward curves: {png}")
    if plan.args.stop_after == "eval":
        compare_stages(plan)
    total = time.time() - t_start
    if timings:  # a rerun that skipped everything keeps the timings of the run that did the work
        (plan.demo / "timings.json").write_text(json.dumps({**timings, "total": total}, indent=2) + "\n")
    print_outputs(plan, total)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    try:
        run(Plan(parse_args(argv)))
    except DemoError as e:
        raise SystemExit(str(e)) from None


if __name__ == "__main__":
    main()
