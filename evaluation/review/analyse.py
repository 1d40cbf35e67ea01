"""What a study found: preference rates with bootstrap CIs, ties, agreement, per task, the judge.

Every vote is first resolved from the side the reviewer saw (A / B / tie) to a run name or "tie".
Per criterion, over all votes, with FOCUS the run whose rate is reported (default: the first run):

* ``share``: the fraction of votes for each run and for tie (they sum to 1).
* ``preference``: FOCUS's votes / (FOCUS's + the other run's votes), ties left out: the form of the
  paper's 0.7708 vs 0.2292 (Table 2), whose shares sum to 1 (the paper does not say how ties were
  counted; with ``ties`` reported beside it nothing is hidden).
* 95% CIs: percentile bootstrap over items (an item's votes from all reviewers are resampled
  together, since they are not independent), seeded.
* Agreement: Cohen's kappa for each pair of reviewers over the items both voted; Fleiss' kappa over
  the items every reviewer voted (3 categories: each run, tie; defined by the resolved choice, so
  it does not matter that reviewers saw different sides). Undefined (None) when chance agreement is 1.
* The VLM judge (``judge.py``) asks each pair in both orders. Both orders naming the same run is a
  win; both tie is a tie; anything else is swap-inconsistent and counted as a tie, split into
  ``flipped`` (each order picked the same *side*: position decided) and ``half`` (one tie).
  ``position_bias``: among the judge's single non-tie verdicts, the share that picked side A
  (0.5 = no bias). Its agreement with the humans: every (judge, human) pair on an item both judged,
  as percent agreement and Cohen's kappa.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from data_prep.io import atomic_write_text
from evaluation.review import db
from evaluation.review.study import CRITERIA, CRITERION_KEYS, StudyError, resolve

TIE = "tie"
PAPER = {
    "criterion": "grounded_preference",
    "models": ("DeepMedix-R1", "Qwen2.5-VL-7B"),
    "rates": (0.7708, 0.2292),
    "where": "the DeepMedix-R1 paper's Table 2: expert review, thinking prompt; its method is not described",
}
LABELS = {c.key: c.label for c in CRITERIA}


# ----------------------------------------------------------------------------- statistics


def cohen_kappa(x: list, y: list, categories: list) -> float | None:
    """Cohen's kappa of two raters' labels on the same items."""
    if not x or len(x) != len(y):
        return None
    n = len(x)
    po = sum(a == b for a, b in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    pe = sum(cx[c] * cy[c] for c in categories) / (n * n)
    return None if pe == 1 else (po - pe) / (1 - pe)


def fleiss_kappa(table: list[list[int]]) -> float | None:
    """Fleiss' kappa; ``table[i][j]``: raters putting item i in category j (same rater count per item)."""
    t = np.asarray(table, dtype=float)
    if t.ndim != 2 or len(t) == 0:
        return None
    m = t.sum(axis=1)
    if m.min() != m.max() or m[0] < 2:
        return None
    m = m[0]
    p_item = ((t * t).sum(axis=1) - m) / (m * (m - 1))
    p_cat = t.sum(axis=0) / t.sum()
    pe = float((p_cat**2).sum())
    return None if pe == 1 else float((p_item.mean() - pe) / (1 - pe))


def _ci(values: np.ndarray) -> tuple[float | None, float | None]:
    values = values[~np.isnan(values)]
    if not len(values):
        return None, None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def rates(per_item: list[list[str]], focus: str, other: str, n_boot: int, seed: int) -> dict:
    """Shares, the decisive preference for ``focus`` and their item-bootstrap CIs.

    ``per_item``: for each item, the resolved votes on it (run names or "tie").
    """
    per_item = [v for v in per_item if v]
    counts = np.array([[v.count(focus), v.count(other), v.count(TIE)] for v in per_item], dtype=float)
    if not len(counts):
        return {"n_votes": 0, "n_items": 0}
    total = counts.sum(axis=0)
    n = total.sum()
    out = {
        "n_votes": int(n),
        "n_items": len(per_item),
        "votes": {focus: int(total[0]), other: int(total[1]), TIE: int(total[2])},
        "share": {focus: total[0] / n, other: total[1] / n, TIE: total[2] / n},
        "preference": total[0] / (total[0] + total[1]) if total[0] + total[1] else None,
    }
    ci = {"share": {focus: (None, None), other: (None, None), TIE: (None, None)}, "preference": (None, None)}
    if n_boot:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(counts), size=(n_boot, len(counts)))
        boot = counts[idx].sum(axis=1)  # (n_boot, 3)
        boot_n = boot.sum(axis=1)
        for j, key in enumerate((focus, other, TIE)):
            ci["share"][key] = _ci(boot[:, j] / boot_n)
        decisive = boot[:, 0] + boot[:, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            ci["preference"] = _ci(np.where(decisive > 0, boot[:, 0] / decisive, np.nan))
    out["ci"] = ci
    return out


# ----------------------------------------------------------------------------- loading


def load(study: str | Path) -> dict:
    """Runs, items (id -> task) and resolved votes of a study."""
    with db.connect(db.study_db(study)) as conn:
        runs = db.run_names(conn)
        items = {r["item_id"]: r["task"] for r in db.items(conn)}
        votes = [
            {
                "reviewer": v["reviewer"],
                "item_id": v["item_id"],
                "task": v["task"],
                **{k: resolve(v[k], v["run_a"], v["run_b"]) for k in CRITERION_KEYS},
            }
            for v in db.votes(conn)
        ]
        judge = [dict(r) for r in db.judge_rows(conn)]
    return {"runs": runs, "items": items, "votes": votes, "judge": judge}


def combine_judge(rows: list[dict], runs: list[str]) -> dict:
    """Per model: per item and criterion, the combined verdict of both orders, and its tallies."""
    by_model: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        by_model[r["model"]][r["item_id"]][r["run_a"]] = r
    out = {}
    for model, items in by_model.items():
        verdicts: dict[str, dict[str, str]] = defaultdict(dict)
        tallies = {k: Counter() for k in CRITERION_KEYS}
        sides = {k: Counter() for k in CRITERION_KEYS}
        for item_id, orders in items.items():
            for key in CRITERION_KEYS:
                for r in orders.values():
                    if r[key] in ("A", "B"):
                        sides[key][r[key]] += 1
                if len(orders) < 2 or any(r[key] is None for r in orders.values()):
                    tallies[key]["invalid or missing"] += 1
                    continue
                first, second = orders[runs[0]], orders[runs[1]]
                w1 = resolve(first[key], first["run_a"], first["run_b"])
                w2 = resolve(second[key], second["run_a"], second["run_b"])
                if w1 == w2:
                    verdicts[item_id][key] = w1
                    tallies[key]["consistent tie" if w1 == TIE else "consistent win"] += 1
                else:
                    verdicts[item_id][key] = TIE
                    tallies[key][
                        "swap-inconsistent: flipped" if TIE not in (w1, w2) else "swap-inconsistent: half"
                    ] += 1
        out[model] = {
            "verdicts": verdicts,
            "tallies": {k: dict(v) for k, v in tallies.items()},
            "position_bias": {
                k: (s["A"] / (s["A"] + s["B"]) if s["A"] + s["B"] else None) for k, s in sides.items()
            },
            "single_verdicts_by_side": {k: dict(s) for k, s in sides.items()},
        }
    return out


# ----------------------------------------------------------------------------- the analysis


def analyse(study: str | Path, focus: str | None = None, n_boot: int = 2000, seed: int = 0) -> dict:
    data = load(study)
    runs = data["runs"]
    focus = focus or runs[0]
    if focus not in runs:
        raise StudyError(f"--focus {focus!r}: the study compares {runs[0]!r} and {runs[1]!r}")
    other = runs[1] if focus == runs[0] else runs[0]
    votes = data["votes"]
    categories = [focus, other, TIE]
    reviewers = sorted({v["reviewer"] for v in votes})
    out: dict = {
        "study": str(study),
        "runs": runs,
        "focus": focus,
        "other": other,
        "n_items": len(data["items"]),
        "reviewers": {r: sum(v["reviewer"] == r for v in votes) for r in reviewers},
        "bootstrap": {"resamples": n_boot, "seed": seed, "unit": "item", "confidence": 0.95},
        "criteria": {},
        "per_task": {},
        "judge": {},
    }

    def per_item(rows: list[dict], key: str) -> list[list[str]]:
        grouped = defaultdict(list)
        for v in rows:
            grouped[v["item_id"]].append(v[key])
        return list(grouped.values())

    by_reviewer = {r: {v["item_id"]: v for v in votes if v["reviewer"] == r} for r in reviewers}
    for key in CRITERION_KEYS:
        entry = rates(per_item(votes, key), focus, other, n_boot, seed)
        pairs = {}
        for r1, r2 in itertools.combinations(reviewers, 2):
            common = sorted(set(by_reviewer[r1]) & set(by_reviewer[r2]))
            x = [by_reviewer[r1][i][key] for i in common]
            y = [by_reviewer[r2][i][key] for i in common]
            pairs[f"{r1} vs {r2}"] = {
                "n_items": len(common),
                "agreement": (sum(a == b for a, b in zip(x, y)) / len(common)) if common else None,
                "cohen_kappa": cohen_kappa(x, y, categories),
            }
        all_voted = [i for i in data["items"] if all(i in by_reviewer[r] for r in reviewers)]
        table = [[sum(by_reviewer[r][i][key] == c for r in reviewers) for c in categories] for i in all_voted]
        entry["agreement"] = {
            "cohen_kappa": pairs,
            "fleiss_kappa": fleiss_kappa(table) if len(reviewers) >= 2 else None,
            "fleiss_items": len(all_voted) if len(reviewers) >= 2 else 0,
        }
        out["criteria"][key] = entry

    for task in sorted({v["task"] for v in votes}):
        rows = [v for v in votes if v["task"] == task]
        out["per_task"][task] = {
            key: rates(per_item(rows, key), focus, other, n_boot, seed) for key in CRITERION_KEYS
        }

    for model, j in combine_judge(data["judge"], runs).items():
        entry = {"tallies": j["tallies"], "position_bias": j["position_bias"], "criteria": {}}
        entry["single_verdicts_by_side"] = j["single_verdicts_by_side"]
        for key in CRITERION_KEYS:
            judged = [[v[key]] for v in j["verdicts"].values() if key in v]
            crit = rates(judged, focus, other, n_boot, seed)
            x, y = [], []
            for v in votes:
                verdict = j["verdicts"].get(v["item_id"], {}).get(key)
                if verdict is not None:
                    x.append(verdict)
                    y.append(v[key])
            crit["human_agreement"] = {
                "n_pairs": len(x),
                "agreement": (sum(a == b for a, b in zip(x, y)) / len(x)) if x else None,
                "cohen_kappa": cohen_kappa(x, y, categories),
            }
            entry["criteria"][key] = crit
        out["judge"][model] = entry
    return out


# ----------------------------------------------------------------------------- reporting


def _f(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _ci_txt(ci) -> str:
    return "" if not ci or ci[0] is None else f" [{ci[0]:.4f}, {ci[1]:.4f}]"


def _rate_row(label: str, e: dict, focus: str, other: str, paper: bool, key: str) -> str:
    if not e.get("n_votes"):
        return f"| {label} | 0 | - | - | - | - |" + (" |" if paper else "")
    row = (
        f"| {label} | {e['n_votes']} | {_f(e['preference'])}{_ci_txt(e['ci']['preference'])} | "
        f"{_f(e['share'][focus])} | {_f(e['share'][other])} | {_f(e['share'][TIE])} |"
    )
    if paper:
        row += f" {PAPER['rates'][0]:.4f} |" if key == PAPER["criterion"] else " |"
    return row


def _headline_lines(result: dict, paper: bool) -> list[str]:
    focus, other = result["focus"], result["other"]
    voters = ", ".join(f"{r} ({n})" for r, n in result["reviewers"].items()) or "none yet"
    head = f"| criterion | votes | {focus} preferred (ties excluded) [95% CI] | {focus} | {other} | tie |"
    rule = "|---|---|---|---|---|---|"
    if paper:
        head += f" paper: {PAPER['models'][0]} |"
        rule += "---|"
    lines = [
        f"# Review study: {focus} vs {other}",
        "",
        f"{result['n_items']} items; votes by reviewer: {voters}. CIs: {result['bootstrap']['resamples']} "
        "bootstrap resamples over items.",
        "",
        head,
        rule,
    ]
    for key, e in result["criteria"].items():
        lines.append(_rate_row(LABELS[key], e, focus, other, paper, key))
    if paper:
        g = result["criteria"].get(PAPER["criterion"], {})
        measured = g.get("preference")
        lines += [
            "",
            f"Paper: {PAPER['models'][0]} {PAPER['rates'][0]:.4f} vs {PAPER['models'][1]} {PAPER['rates'][1]:.4f} "
            f"({PAPER['where']}). Measured here: {focus} {_f(measured)}{_ci_txt(g.get('ci', {}).get('preference'))} "
            f"vs {other} {_f(None if measured is None else 1 - measured)}, ties {_f(g.get('share', {}).get(TIE))} of votes.",
        ]
    return lines


def _agreement_lines(result: dict) -> list[str]:
    lines = [
        "",
        "## Agreement between reviewers",
        "",
        "| criterion | Fleiss' kappa (items) | Cohen's kappa by pair |",
        "|---|---|---|",
    ]
    for key, e in result["criteria"].items():
        a = e.get("agreement", {})
        pairs = "; ".join(
            f"{p}: {_f(v['cohen_kappa'], 3)} (agree {_f(v['agreement'], 3)}, n={v['n_items']})"
            for p, v in a.get("cohen_kappa", {}).items()
        )
        lines.append(
            f"| {LABELS[key]} | {_f(a.get('fleiss_kappa'), 3)} ({a.get('fleiss_items', 0)}) | {pairs or '-'} |"
        )
    return lines


def _per_task_lines(result: dict) -> list[str]:
    if not result["per_task"]:
        return []
    focus, other = result["focus"], result["other"]
    lines = [
        "",
        "## Per task",
        "",
        f"| task | criterion | votes | {focus} preferred [95% CI] | {focus} | {other} | tie |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, crits in result["per_task"].items():
        for key, e in crits.items():
            if e.get("n_votes"):
                lines.append(
                    f"| {task} | {LABELS[key]} | {e['n_votes']} | {_f(e['preference'])}{_ci_txt(e['ci']['preference'])} | "
                    f"{_f(e['share'][focus])} | {_f(e['share'][other])} | {_f(e['share'][TIE])} |"
                )
    return lines


def _judge_lines(model: str, j: dict, focus: str, other: str) -> list[str]:
    lines = [
        "",
        f"## VLM judge: {model}",
        "",
        "Each pair judged in both orders; a win needs both orders to name the same run; "
        "swap-inconsistent verdicts count as ties.",
        "",
        f"| criterion | items | {focus} preferred [95% CI] | {focus} | {other} | tie | consistent win / tie | "
        "swap-inconsistent: flipped / half | invalid | position bias (share picking A) | agreement with humans (kappa, pairs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, e in j["criteria"].items():
        t = j["tallies"].get(key, {})
        h = e["human_agreement"]
        agree = (
            f"{_f(h['agreement'], 3)} ({_f(h['cohen_kappa'], 3)}, {h['n_pairs']})" if h["n_pairs"] else "-"
        )
        if e.get("n_votes"):
            rate = f"{_f(e['preference'])}{_ci_txt(e['ci']['preference'])} | {_f(e['share'][focus])} | {_f(e['share'][other])} | {_f(e['share'][TIE])}"
        else:
            rate = "- | - | - | -"
        lines.append(
            f"| {LABELS[key]} | {e.get('n_votes', 0)} | {rate} | {t.get('consistent win', 0)} / {t.get('consistent tie', 0)} | "
            f"{t.get('swap-inconsistent: flipped', 0)} / {t.get('swap-inconsistent: half', 0)} | "
            f"{t.get('invalid or missing', 0)} | {_f(j['position_bias'][key], 3)} | {agree} |"
        )
    return lines


def report(result: dict, paper: bool = False) -> str:
    """Markdown: the headline table, agreement, per task, the judge."""
    lines = _headline_lines(result, paper) + _agreement_lines(result) + _per_task_lines(result)
    for model, j in result["judge"].items():
        lines += _judge_lines(model, j, result["focus"], result["other"])
    return "\n".join(lines) + "\n"


def plot(result: dict, path: str | Path, paper: bool = False) -> Path:
    """Left: vote shares per criterion (humans, then each judge). Right: FOCUS's preference with CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    focus, other = result["focus"], result["other"]
    rows = [(f"{LABELS[k]} (humans)", e) for k, e in result["criteria"].items()]
    for model, j in result["judge"].items():
        rows += [(f"{LABELS[k]} (judge {model})", e) for k, e in j["criteria"].items()]
    rows = [(label, e) for label, e in rows if e.get("n_votes")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 1.2 + 0.5 * max(len(rows), 1)), sharey=True)
    y = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for key, color, name in ((focus, "#2563eb", focus), (TIE, "#a8a29e", "tie"), (other, "#f97316", other)):
        width = np.array([e["share"][key] for _, e in rows])
        ax1.barh(y, width, left=left, color=color, label=name)
        left += width
    ax1.set_yticks(y, [label for label, _ in rows])
    ax1.set_xlim(0, 1)
    ax1.set_xlabel("share of votes")
    ax1.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, fontsize=8, frameon=False)
    for yi, (_, e) in zip(y, rows):
        p, (lo, hi) = e["preference"], e["ci"]["preference"]
        if p is None:
            continue
        err = [[p - lo], [hi - p]] if lo is not None else None
        ax2.errorbar([p], [yi], xerr=err, fmt="o", color="#2563eb", capsize=4)
    ax2.axvline(0.5, color="#57534e", linestyle=":", linewidth=1)
    if paper:
        label = f"paper, grounded preference: {PAPER['rates'][0]}"
        ax2.axvline(PAPER["rates"][0], color="#dc2626", linestyle="--", linewidth=1, label=label)
        ax2.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=8, frameon=False)
    ax2.set_xlim(-0.02, 1.02)
    ax2.set_xlabel(f"{focus} preferred over {other} (ties excluded), 95% CI")
    fig.suptitle(f"Blind pairwise review: {focus} vs {other}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_analysis(
    study: str | Path,
    out: str | Path | None = None,
    focus: str | None = None,
    paper: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict:
    """analysis.json, analysis.md and preference.png into OUT (default: the study folder)."""
    result = analyse(study, focus=focus, n_boot=n_boot, seed=seed)
    out = Path(out or (study if Path(study).is_dir() else Path(study).parent))
    out.mkdir(parents=True, exist_ok=True)
    text = report(result, paper=paper)
    atomic_write_text(out / "analysis.json", json.dumps(result, indent=2, default=str) + "\n")
    atomic_write_text(out / "analysis.md", text)
    if any(e.get("n_votes") for e in result["criteria"].values()) or result["judge"]:
        plot(result, out / "preference.png", paper=paper)
    result["report"] = text
    return result
