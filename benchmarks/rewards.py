"""Throughput of every reward, and of the paper and grounded sets, on a fixed synthetic corpus.

Usage::

    python -m benchmarks.rewards                      # 10,000 completions, table on stdout
    python -m benchmarks.rewards --n 2000 --out outputs/reward_bench.json

The corpus is generated from a seed (no data needed): prompts in GRPO groups of
``--group`` completions (as the trainer scores them: the group shares its ground truth),
tasks mixed like our RL stage - findings and impression reports (report-length reasoning
citing several boxes, report answers), VQA (closed and short answers), label lists,
grounding - with realistic faults: wrong or partial answers, boxes outside the frame or
above 512, duplicate boxes, missing or truncated think blocks, repetition.

Each measurement starts from cold caches (parsed completions, reference n-grams), calls
the reward(s) batch by batch (``--batch``, with the dataset columns as TRL passes them) and
reports completions per second of CPU time (``time.process_time``: the time this process
actually ran, robust to other load on the machine) and of wall time; the best of
``--repeat`` runs is kept, and the targets are judged on CPU time. The process is pinned
to one CPU core where the OS allows (``--no_pin`` to skip). Targets: paper set >= 5,000/s,
grounded set >= 2,000/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time

from rewards import parsing, similarity
from rewards.registry import GROUNDED_SET, PAPER_SET, get_reward_funcs

TARGETS = {"paper": 5000.0, "grounded": 2000.0}

_FINDINGS = [
    "The heart size is normal.",
    "The cardiomediastinal silhouette is within normal limits.",
    "There is mild cardiomegaly.",
    "The heart is moderately enlarged.",
    "No focal consolidation is seen.",
    "There is a small left pleural effusion.",
    "There is a moderate right pleural effusion with adjacent atelectasis.",
    "No pneumothorax is identified.",
    "Patchy opacity in the left lower lobe may reflect atelectasis or pneumonia.",
    "The lungs are hyperinflated, consistent with chronic obstructive pulmonary disease.",
    "Mild pulmonary vascular congestion is noted.",
    "There is no evidence of pulmonary edema.",
    "A right internal jugular central venous catheter terminates in the mid superior vena cava.",
    "An endotracheal tube terminates 4 cm above the carina.",
    "Degenerative changes are seen in the thoracic spine.",
    "Bibasilar atelectasis is present.",
    "There is a nodular opacity in the right upper lobe measuring 1.5 cm.",
    "The osseous structures are intact.",
    "Calcified granuloma in the left mid lung.",
    "Blunting of the right costophrenic angle suggests a small effusion.",
]
_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "Mild cardiomegaly without pulmonary edema.",
    "Small left pleural effusion with basilar atelectasis.",
    "Left lower lobe pneumonia.",
    "Interval improvement of the right pleural effusion.",
    "Support devices in appropriate position.",
    "Hyperinflation without focal consolidation.",
]
_REGIONS = [
    "the cardiac silhouette",
    "the left lower lung zone",
    "the right costophrenic angle",
    "the right upper lobe",
    "the left hilum",
    "the mediastinum",
    "the right lung base",
    "the left apex",
]
_LABELS = [
    "cardiomegaly",
    "pleural effusion",
    "atelectasis",
    "consolidation",
    "pneumothorax",
    "nodule",
    "edema",
    "aortic enlargement",
    "pleural thickening",
    "lung opacity",
]
_VQA = [
    ("Is there cardiomegaly?", ["yes", "no"]),
    ("Is there a pleural effusion on the left?", ["yes", "no"]),
    ("Which lobe shows the opacity?", ["left lower lobe", "right upper lobe", "right middle lobe"]),
    ("What is the view of this radiograph?", ["PA", "AP", "lateral"]),
    ("What is the level of the effusion?", ["small", "moderate", "large"]),
    ("Where is the nodule located?", ["right upper lung zone", "left mid lung"]),
    ("What abnormality is seen at the right base?", ["atelectasis", "pneumonia", "effusion"]),
]
_TASKS = [
    ("report_findings", 0.25),
    ("report_impression", 0.15),
    ("vqa", 0.40),
    ("classification", 0.15),
    ("grounding", 0.05),
]


def _frame(rng: random.Random) -> tuple[int, int]:
    w = 28 * rng.randint(12, 18)
    h = 28 * min(rng.randint(12, 20), (512 * 512) // (28 * w))
    return w, h


def _box(rng: random.Random, w: int, h: int) -> list[int]:
    bw, bh = rng.randint(20, max(21, w // 2)), rng.randint(20, max(21, h // 2))
    x0, y0 = rng.randint(0, w - bw), rng.randint(0, h - bh)
    return [x0, y0, x0 + bw, y0 + bh]


def _jitter(rng: random.Random, box: list[int], w: int, h: int, px: int) -> list[int]:
    x0, y0, x1, y1 = (v + rng.randint(-px, px) for v in box)
    x0, y0 = max(0, x0), max(0, y0)
    return [x0, y0, max(x0 + 5, min(w, x1)), max(y0 + 5, min(h, y1))]


def _bad_box(rng: random.Random, w: int, h: int) -> list[int]:
    kind = rng.random()
    if kind < 0.4:  # beyond the frame (often > 512)
        return [rng.randint(0, w), rng.randint(0, h), w + rng.randint(10, 200), h + rng.randint(10, 200)]
    if kind < 0.7:  # inverted
        b = _box(rng, w, h)
        return [b[2], b[1], b[0], b[3]]
    return [
        rng.randint(0, 50),
        rng.randint(0, 50),
        rng.randint(0, 50),
        rng.randint(0, 50),
    ]  # tiny / degenerate


def _fmt(b) -> str:
    return "[" + ", ".join(str(v) for v in b) + "]"


def _report(rng: random.Random, task: str) -> str:
    if task == "report_impression":
        return " ".join(rng.sample(_IMPRESSIONS, rng.randint(1, 3)))
    return " ".join(rng.sample(_FINDINGS, rng.randint(4, 9)))


def _perturb_report(rng: random.Random, gt: str, task: str) -> str:
    sents = [s + "." for s in gt.split(". ") if s]
    sents = [s.replace("..", ".") for s in sents]
    r = rng.random()
    if r < 0.2:
        return gt
    if r < 0.7:
        keep = [s for s in sents if rng.random() < 0.7] or sents[:1]
        extra = rng.sample(_FINDINGS if task == "report_findings" else _IMPRESSIONS, rng.randint(0, 2))
        out = keep + extra
        rng.shuffle(out)
        return " ".join(out)
    return _report(rng, task)


def _reasoning(rng: random.Random, w: int, h: int, gt_boxes: list, n_boxes: int) -> str:
    parts = []
    for i in range(n_boxes):
        r = rng.random()
        if gt_boxes and r < 0.5:
            box = _jitter(rng, rng.choice(gt_boxes)["box"], w, h, rng.choice((0, 3, 12, 30)))
        elif r < 0.85:
            box = _box(rng, w, h)
        else:
            box = _bad_box(rng, w, h)
        if parts and rng.random() < 0.08:  # a duplicate citation
            box = _jitter(rng, box, w, h, 1)
        finding = rng.choice(_FINDINGS)
        parts.append(f"Looking at {rng.choice(_REGIONS)} {_fmt(box)}, {finding[0].lower()}{finding[1:]}")
        if i == 0:
            parts.append("The image is a frontal chest radiograph with adequate inspiration and no rotation.")
    parts.append("Comparing both lungs, the overall appearance supports the conclusion below.")
    return " ".join(parts)


def _completion(rng: random.Random, task: str, gt: str, w: int, h: int, gt_boxes: list) -> str:
    long_task = task.startswith("report")
    n_boxes = rng.randint(2, 6) if long_task else rng.randint(0, 3)
    think = _reasoning(rng, w, h, gt_boxes, n_boxes)
    if long_task:
        ans = _perturb_report(rng, gt, task)
    elif task == "grounding":
        ans = _fmt(_jitter(rng, gt_boxes[0]["box"], w, h, rng.choice((0, 5, 20, 60))))
    elif task == "classification":
        labels = [x.strip() for x in gt.split("|")]
        pred = [x for x in labels if rng.random() < 0.75] + rng.sample(_LABELS, rng.randint(0, 2))
        ans = " | ".join(dict.fromkeys(pred)) or "no finding"
    else:
        ans = gt if rng.random() < 0.6 else rng.choice([a for q, opts in _VQA for a in opts])
    fault = rng.random()
    if fault < 0.05:  # no think block
        return f"{think} The answer is: \\boxed{{{ans}}}"
    if fault < 0.09:  # truncated mid-reasoning
        return f"<think> {think[: rng.randint(20, max(21, len(think)))]}"
    if fault < 0.12:  # degenerate repetition
        return f"<think> {' '.join([think[:60]] * 8)} </think>. The answer is: \\boxed{{{ans}}}"
    if fault < 0.15:  # answer only in the reasoning
        return f"<think> {think} So the answer is {ans}. </think>"
    sep = rng.choice([". The answer is: ", " The answer is: ", "\n", ". "])
    return f"<think> {think} </think>{sep}\\boxed{{{ans}}}"


def make_corpus(n: int = 10_000, seed: int = 0, group: int = 8) -> list[dict]:
    """``n`` rows ``{"completion", "solution", "task", "boxes", "width", "height"}``, deterministic in ``seed``."""
    rng = random.Random(seed)
    tasks, weights = zip(*_TASKS)
    rows: list[dict] = []
    while len(rows) < n:
        task = rng.choices(tasks, weights)[0]
        w, h = _frame(rng)
        n_gt = rng.choice((0, 0, 1, 1, 2, 3)) if task != "grounding" else rng.randint(1, 2)
        gt_boxes = [{"label": rng.choice(_LABELS), "box": _box(rng, w, h)} for _ in range(n_gt)]
        if task.startswith("report"):
            gt = _report(rng, task)
        elif task == "grounding":
            gt = _fmt(gt_boxes[0]["box"])
        elif task == "classification":
            gt = " | ".join(rng.sample(_LABELS, rng.randint(1, 4)))
        else:
            gt = rng.choice(rng.choice(_VQA)[1])
        for _ in range(min(group, n - len(rows))):
            rows.append(
                {
                    "completion": _completion(rng, task, gt, w, h, gt_boxes),
                    "solution": gt,
                    "task": task,
                    "boxes": gt_boxes,
                    "width": w,
                    "height": h,
                }
            )
    return rows


def _batches(rows: list[dict], batch: int) -> list[tuple[list, dict]]:
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        kwargs = {k: [r[k] for r in chunk] for k in ("solution", "task", "boxes", "width", "height")}
        out.append(([r["completion"] for r in chunk], kwargs))
    return out


def clear_caches() -> None:
    parsing.clear_caches()
    similarity.clear_caches()


def _time(funcs, batches, repeat: int) -> tuple[float, float]:
    """Best (CPU seconds, wall seconds) over ``repeat`` cold runs of ``funcs`` on every batch."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        clear_caches()
        c0, w0 = time.process_time(), time.perf_counter()
        for completions, kwargs in batches:
            for f in funcs:
                f(completions, **kwargs)
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - w0)
    return best_cpu, best_wall


def _entry(n: int, cpu: float, wall: float) -> dict:
    return {
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "per_s": n / cpu,
        "per_s_wall": n / wall,
        "us_per_completion": cpu / n * 1e6,
    }


def run(n: int = 10_000, seed: int = 0, batch: int = 64, group: int = 8, repeat: int = 3) -> dict:
    rows = make_corpus(n, seed, group)
    batches = _batches(rows, batch)
    # Warm-up outside the clock: first imports (nltk's stemmer, scipy) are a one-off cost.
    for completions, kwargs in _batches(make_corpus(min(n, 256), seed + 1, group), batch):
        for f in get_reward_funcs([*PAPER_SET, *GROUNDED_SET]):
            f(completions, **kwargs)
    result: dict = {
        "n": n,
        "seed": seed,
        "batch": batch,
        "group": group,
        "repeat": repeat,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "tasks": {t: sum(r["task"] == t for r in rows) for t, _ in _TASKS},
        "rewards": {},
        "sets": {},
        "targets": TARGETS,
    }
    for name in [*PAPER_SET, *GROUNDED_SET]:
        result["rewards"][name] = _entry(n, *_time(get_reward_funcs([name]), batches, repeat))
    for set_name, names in (("paper", PAPER_SET), ("grounded", GROUNDED_SET)):
        entry = _entry(n, *_time(get_reward_funcs(list(names)), batches, repeat))
        entry.update(
            rewards=list(names),
            target_per_s=TARGETS[set_name],
            meets_target=entry["per_s"] >= TARGETS[set_name],
        )
        result["sets"][set_name] = entry
    return result


def table(result: dict) -> str:
    lines = [
        f"reward throughput, {result['n']} completions (seed {result['seed']}, batch {result['batch']}, "
        f"best of {result['repeat']} cold runs, cpu {result['cpu_affinity']})",
        f"{'reward / set':<20}{'compl/s (cpu)':>15}{'us/compl':>10}{'compl/s (wall)':>16}  target",
    ]
    for name, r in [*result["rewards"].items(), *((f"set: {k}", v) for k, v in result["sets"].items())]:
        line = f"{name:<20}{r['per_s']:>15,.0f}{r['us_per_completion']:>10.1f}{r['per_s_wall']:>16,.0f}"
        if "target_per_s" in r:
            line += f"  >= {r['target_per_s']:,.0f}/s {'ok' if r['meets_target'] else 'MISSED'}"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rewards", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="completions in the corpus (default 10000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64, help="completions per reward call (default 64)")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt (default 8)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept (default 3)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--no_pin", action="store_true", help="do not pin the process to one CPU core")
    args = ap.parse_args(argv)
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    result = run(args.n, args.seed, args.batch, args.group, args.repeat)
    print(table(result))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
