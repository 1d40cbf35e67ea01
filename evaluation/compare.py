"""Compare evaluation runs side by side: a Markdown table, plots and a shared gallery.

    python -m evaluation.compare --runs base=outputs/eval/base sft=outputs/eval/sft \\
        grpo=outputs/eval/grpo --out outputs/eval/compare [--baseline NAME|previous] \\
        [--cluster study|patient|record] [--paper] [--gallery 12]

Reads each run's results.json and metric_rows.npz (written by evaluation.run) and writes into --out:
  comparison.md      rows = headline metrics, columns = runs, "value [95% CI]"; best run in bold;
                     then every run minus its baseline: the paired difference with its 95% CI,
                     resampling whole studies, marked better / worse (Holm over the headline
                     metrics) (also printed)
  comparison.json    the same numbers, machine-readable
  headline_metrics.png  one panel per metric, one bar per run with its CI
  differences.png    forest plot: each paired difference with its CI, one panel per comparison
  gallery.html       the same sampled records for every run (when all runs share a dataset)

The baseline is the first run by default; ``--baseline previous`` compares each run with the one
listed before it (base -> sft -> cold start -> GRPO). Two runs are paired only when they scored the
same records (same ids, data and split); otherwise the pair is refused and the reason written.

``--paper`` adds a column with DeepMedix-R1's published numbers where a metric matches
(read from the paper's figure, xraybench test set; see the README for when a comparison is fair).
Function API: ``compare(runs, out_dir) -> markdown``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.io import atomic_write_text
from evaluation import stats as S
from evaluation.runs import METRIC_ROWS, RunError, load_results, parse_runs
from evaluation.scoring import HEADLINE, HEADLINE_LABELS

# DeepMedix-R1 on xraybench, read from the paper's figure (paper-notes.md). Same metric names as
# our headline keys; only these have a published counterpart.
PAPER_REFERENCE = {
    "report/rouge_l": 0.287,
    "report/radgraph_f1": 0.222,
    "report/chexbert_micro_f1_5": 0.511,
    "report/chexbert_macro_f1_5": 0.428,
    "report/chexbert_micro_f1_14": 0.486,
    "vqa/accuracy": 0.69,
}
PAPER_COLUMN = "DeepMedix-R1 (paper)"
NOT_RANKED = {"reasoning/boxes_per_answer"}  # more is not better
LOWER_IS_BETTER = {"report/radcliq_v1"}  # a distance to the reference
ALPHA = 0.05


class PairingError(OpenMedixError, ValueError):
    """Two runs that cannot be compared record by record (different records, or no metric rows)."""


def _cell(entry: dict | None, bold: bool = False) -> str:
    if not entry or entry.get("value") is None:
        return "—"
    text = f"{entry['value']:.3f}"
    if bold:
        text = f"**{text}**"
    if entry.get("ci_low") is not None:
        text += f" [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"
    return text


def comparison_table(results: dict[str, dict], paper: bool = False) -> tuple[str, list[dict]]:
    """(markdown, rows) for these runs' headline metrics."""
    keys = [k for k, _ in HEADLINE if any(k in r.get("headline", {}) for r in results.values())]
    extra = sorted({k for r in results.values() for k in r.get("headline", {})} - set(keys))
    names = list(results)
    header = ["metric", *names] + ([PAPER_COLUMN] if paper else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for key in keys + extra:
        entries = {n: results[n].get("headline", {}).get(key) for n in names}
        values = {n: e["value"] for n, e in entries.items() if e and e.get("value") is not None}
        best = max(values.values()) if values and len(names) > 1 and key not in NOT_RANKED else None
        cells = [_cell(entries[n], bold=best is not None and values.get(n) == best) for n in names]
        if paper:
            ref = PAPER_REFERENCE.get(key)
            cells.append("—" if ref is None else f"{ref:.3f}")
        lines.append(f"| {HEADLINE_LABELS.get(key, key)} | " + " | ".join(cells) + " |")
        rows.append(
            {
                "metric": key,
                "label": HEADLINE_LABELS.get(key, key),
                "runs": entries,
                "paper": PAPER_REFERENCE.get(key) if paper else None,
            }
        )
    counts = [str(results[n].get("n", "—")) for n in names]
    lines.append("| records | " + " | ".join(counts) + (" | 14213 |" if paper else " |"))
    return "\n".join(lines), rows


def _resamples(results: dict[str, dict]) -> str:
    counts = sorted({str((r.get("bootstrap") or {}).get("resamples", "?")) for r in results.values()})
    return "/".join(counts)


def _notes(results: dict[str, dict], runs: dict[str, str], paper: bool) -> list[str]:
    boots = {
        (b.get("cluster", "record"), b.get("resamples"))
        for b in (r.get("bootstrap") or {} for r in results.values())
    }
    unit = "/".join(sorted({u for u, _ in boots}))
    notes = [
        "",
        f"Values are point estimates with 95% percentile-bootstrap CIs in brackets ({_resamples(results)} "
        f"resamples, seeded), resampling whole {unit}s: the records of one study are not independent. "
        "The best run per metric is in bold; overlapping intervals do not decide a comparison (the paired "
        "differences below do). Metric definitions: evaluation/metrics.py.",
    ]
    datasets = {
        (r.get("run", {}).get("data"), r.get("run", {}).get("split"), r.get("n")) for r in results.values()
    }
    if len(datasets) > 1:
        notes.append(
            "**Warning:** the runs were not evaluated on the same records (data / split / limit differ), "
            "so their numbers are not directly comparable."
        )
    modes = {r.get("run", {}).get("reasoning") for r in results.values()}
    if len(modes) > 1:
        notes.append("Note: some runs used the reasoning prompt and some did not (see run configs).")
    skipped = sorted(
        {
            f"{k} ({v['reason']})"
            for r in results.values()
            for k, v in ((r.get("report") or {}).get("rexrank") or {}).items()
            if isinstance(v, dict) and v.get("status") in ("skipped", "error")
        }
    )
    if skipped:
        notes.append("Not computed: " + "; ".join(skipped) + ".")
    if paper:
        notes.append(
            f"{PAPER_COLUMN}: numbers read from the paper's figure (arXiv 2509.03906) on xraybench's 14,213 test "
            "rows. Comparable only for runs on xraybench itself (evaluation.adapter) with the same metric "
            "implementations (RadGraph partial, CheXbert with uncertain as positive); the paper's VQA scoring "
            "rule is unpublished, ours is exact match / token F1 (see README)."
        )
    notes.append("")
    notes.append("Runs: " + ", ".join(f"`{n}` = {d}" for n, d in runs.items()))
    return notes


# ----------------------------------------------------------------------------- paired differences


def pairs_for(names: list[str], baseline: str | None) -> list[tuple[str, str]]:
    """(run, baseline) pairs: every run against ``baseline`` (default: the first run), or each run
    against the one before it (``previous``)."""
    if len(names) < 2:
        return []
    if baseline == "previous":
        return list(zip(names[1:], names[:-1]))
    baseline = baseline or names[0]
    if baseline not in names:
        raise PairingError(f"--baseline {baseline}: no such run (runs: {', '.join(names)})")
    return [(n, baseline) for n in names if n != baseline]


def load_rows(folder: str | Path) -> tuple[list[dict], dict]:
    path = Path(folder) / METRIC_ROWS
    if not path.exists():
        raise PairingError(
            f"{path} not found (the run's per-record metric rows, which pairing needs): rescore it with "
            f"`python -m evaluation.run --metrics_only --data DATA --out {folder}`"
        )
    return S.load_statistics(path)


def paired(
    a: tuple[dict, list[dict], dict],
    b: tuple[dict, list[dict], dict],
    cluster: str = "study",
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict]:
    """Every headline metric of run a minus run b on the same records: {metric: paired_difference(...)
    + holm_p and verdict}. ``a``/``b`` are (results, records, stats); raises PairingError when the two
    runs did not score the same records."""
    (res_a, recs_a, stats_a), (res_b, recs_b, stats_b) = a, b
    where = [(r.get("run") or {}).get(k) for r in (res_a, res_b) for k in ("data", "split")]
    if where[:2] != where[2:]:
        raise PairingError(f"scored on different data: {where[0]} ({where[1]}) vs {where[2]} ({where[3]})")
    ids_a, ids_b = [r["id"] for r in recs_a], [r["id"] for r in recs_b]
    if set(ids_a) != set(ids_b) or len(ids_a) != len(ids_b):
        only_a, only_b = len(set(ids_a) - set(ids_b)), len(set(ids_b) - set(ids_a))
        raise PairingError(
            f"scored on different records ({len(ids_a)} vs {len(ids_b)} records; {only_a} only in the first, "
            f"{only_b} only in the second): evaluate both with the same --split/--limit/--sample"
        )
    where_in_a = {rid: i for i, rid in enumerate(ids_a)}
    to_a = np.array([where_in_a[rid] for rid in ids_b], dtype=int)  # b's positions -> a's
    codes = S.cluster_codes(recs_a, cluster)
    out = {}
    for key in stats_a:
        if key not in stats_b:
            continue
        sb = stats_b[key]
        sb = S.Statistic(sb.rows, to_a[sb.index], sb.finish, sb.offset)
        out[key] = S.paired_difference(stats_a[key], sb, codes, n_resamples, seed)
    adjusted = S.holm({k: d["p"] for k, d in out.items()})
    for key, d in out.items():
        d["holm_p"] = adjusted[key]
        d["verdict"] = verdict(key, d)
    return out


def verdict(key: str, d: dict) -> str:
    """better / worse (Holm-adjusted p < ALPHA, in the metric's good direction), higher / lower for a
    metric without one, or "no difference"."""
    if d.get("holm_p") is None or d["holm_p"] >= ALPHA or not d["diff"]:
        return "no difference"
    up = d["diff"] > 0
    if key in NOT_RANKED:
        return "higher" if up else "lower"
    return "better" if up != (key in LOWER_IS_BETTER) else "worse"


MARK = {"better": "▲ better", "worse": "▼ worse", "higher": "▲ higher", "lower": "▼ lower"}


def differences_table(diffs: dict[tuple[str, str], dict | str]) -> list[str]:
    """Markdown: rows = metrics, one column per (run, baseline): difference [95% CI], verdict."""
    if not diffs:
        return []
    keys = [k for k, _ in HEADLINE if any(isinstance(d, dict) and k in d for d in diffs.values())]
    header = ["metric", *(f"{a} − {b}" for a, b in diffs)]
    lines = ["## Paired differences", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key in keys:
        cells = []
        for d in diffs.values():
            e = d.get(key) if isinstance(d, dict) else None
            if not e or e["diff"] is None:
                cells.append("—")
                continue
            text = f"{e['diff']:+.3f}"
            if e["ci_low"] is not None:
                text += f" [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]"
            cells.append(text + (f" {MARK[e['verdict']]}" if e["verdict"] in MARK else ""))
        lines.append(f"| {HEADLINE_LABELS.get(key, key)} | " + " | ".join(cells) + " |")
    for (a, b), d in diffs.items():
        if isinstance(d, str):
            lines.append(f"\n**{a} − {b} not paired:** {d}")
    return lines


def plot_differences(diffs: dict[tuple[str, str], dict | str], path: str | Path) -> Path | None:
    """Forest plot: one panel per comparison, one row per metric, the difference and its CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = {pair: d for pair, d in diffs.items() if isinstance(d, dict) and d}
    if not done:
        return None
    keys = [k for k, _ in HEADLINE if any(k in d and d[k]["diff"] is not None for d in done.values())]
    colors = {"better": "C2", "worse": "C3", "higher": "C0", "lower": "C0", "no difference": "0.5"}
    fig, axes = plt.subplots(
        1, len(done), figsize=(4.2 * len(done) + 2.2, 0.32 * len(keys) + 1.4), squeeze=False, sharey=True
    )
    for ax, ((a, b), d) in zip(axes[0], done.items()):
        for y, key in enumerate(keys):
            e = d.get(key)
            if not e or e["diff"] is None:
                continue
            lo = e["ci_low"] if e["ci_low"] is not None else e["diff"]
            hi = e["ci_high"] if e["ci_high"] is not None else e["diff"]
            c = colors[e["verdict"]]
            ax.plot([lo, hi], [y, y], color=c, lw=2)
            ax.plot(e["diff"], y, "o", color=c, ms=4)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{a} − {b}", fontsize=9)
        ax.set_xlabel("difference (95% CI)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(keys)))
    axes[0][0].set_yticklabels([HEADLINE_LABELS.get(k, k) for k in keys], fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle("Paired differences (green better, red worse: Holm-adjusted p < 0.05)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_headline(results: dict[str, dict], path: str | Path, paper: bool = False) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k, _ in HEADLINE if any(k in r.get("headline", {}) for r in results.values())]
    if not keys:
        return None
    names = list(results)
    ncols = min(4, len(keys))
    nrows = (len(keys) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        vals, lo, hi = [], [], []
        for n in names:
            e = results[n].get("headline", {}).get(key) or {}
            v = e.get("value")
            vals.append(v)
            has_ci = v is not None and e.get("ci_low") is not None
            # a percentile CI of a ratio metric need not contain the point estimate: clamp at 0
            lo.append(max(v - e["ci_low"], 0.0) if has_ci else 0.0)
            hi.append(max(e["ci_high"] - v, 0.0) if has_ci else 0.0)
        x = range(len(names))
        heights = [v if v is not None else 0.0 for v in vals]
        ax.bar(x, heights, yerr=[lo, hi], capsize=3, color=[colors[i % len(colors)] for i in x])
        top = max([h + e for h, e in zip(heights, hi)] + [1e-9])
        for i, v in zip(x, vals):
            label = "n/a" if v is None else f"{v:.2f}"
            ax.text(
                i, (0 if v is None else v + hi[i]) + 0.02 * top, label, ha="center", va="bottom", fontsize=7
            )
        ax.set_ylim(0, top * 1.15)
        if paper and key in PAPER_REFERENCE:
            ax.axhline(PAPER_REFERENCE[key], color="k", linestyle="--", linewidth=1, label="paper")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(HEADLINE_LABELS.get(key, key), fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle("Headline metrics (bars: 95% bootstrap CI)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def compare(
    runs: dict[str, str],
    out_dir: str | Path,
    paper: bool = False,
    gallery: int = 12,
    seed: int = 0,
    baseline: str | None = None,
    cluster: str = "study",
    n_resamples: int = 1000,
) -> str:
    """Write comparison.md / .json, headline_metrics.png, differences.png and gallery.html; return the
    Markdown."""
    if not runs:
        raise RunError("compare: no runs given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {name: load_results(folder) for name, folder in runs.items()}
    table, rows = comparison_table(results, paper=paper)
    diffs: dict[tuple[str, str], dict | str] = {}
    for a, b in pairs_for(list(runs), baseline):
        try:
            diffs[(a, b)] = paired(
                (results[a], *load_rows(runs[a])),
                (results[b], *load_rows(runs[b])),
                cluster,
                n_resamples,
                seed,
            )
        except PairingError as e:
            diffs[(a, b)] = str(e)
    legend = [
        "",
        f"Paired differences: each run minus its baseline on the same records, recomputed on the same "
        f"resampled {cluster} clusters ({n_resamples} resamples, seed {seed}), 95% percentile CI. ▲ better / ▼ worse: "
        f"the difference's bootstrap p-value, Holm-adjusted over the headline metrics of that comparison, is "
        f"below {ALPHA} (so a CI that just excludes 0 may stay unmarked); ▲/▼ higher/lower for a metric "
        "where more is not better.",
    ]
    markdown = "\n".join(
        ["# Evaluation comparison", "", table, *_notes(results, runs, paper), ""]
        + (differences_table(diffs) + legend if diffs else [])
    )
    markdown += "\n"
    atomic_write_text(out / "comparison.md", markdown)
    atomic_write_text(
        out / "comparison.json",
        json.dumps(
            {
                "runs": runs,
                "rows": rows,
                "run_configs": {n: r.get("run") for n, r in results.items()},
                "differences": [
                    {"run": a, "baseline": b, **({"refused": d} if isinstance(d, str) else {"metrics": d})}
                    for (a, b), d in diffs.items()
                ],
                "statistics": {"cluster": cluster, "resamples": n_resamples, "seed": seed, "alpha": ALPHA},
            },
            indent=2,
        )
        + "\n",
    )
    plot_headline(results, out / "headline_metrics.png", paper=paper)
    plot_differences(diffs, out / "differences.png")
    datasets = {(r.get("run", {}).get("data"), r.get("run", {}).get("split")) for r in results.values()}
    if gallery and len(datasets) == 1:
        from evaluation.gallery import gallery_for_runs

        gallery_for_runs(runs, out / "gallery.html", n=gallery, seed=seed)
    return markdown


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--runs", nargs="+", required=True, metavar="NAME=OUT", help="evaluation.run output folders"
    )
    ap.add_argument("--out", required=True, help="folder for the table, plots and gallery")
    ap.add_argument("--paper", action="store_true", help="add DeepMedix-R1's published numbers as a column")
    ap.add_argument("--gallery", type=int, default=12, help="samples in the shared gallery (0: none)")
    ap.add_argument(
        "--baseline",
        default=None,
        help="run every other run is compared with (default: the first); 'previous': each with the one before",
    )
    ap.add_argument(
        "--cluster", choices=S.CLUSTER_UNITS, default="study", help="what the bootstrap resamples"
    )
    ap.add_argument("--bootstrap", type=int, default=1000, help="resamples of the paired differences")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    setup_logging()
    with user_errors("evaluation.compare", OpenMedixError, FileNotFoundError):
        runs = parse_runs(args.runs)
        if args.baseline not in (None, "previous") and args.baseline not in runs:
            raise PairingError(f"--baseline {args.baseline}: no such run in --runs")
        markdown = compare(
            runs,
            args.out,
            paper=args.paper,
            gallery=args.gallery,
            seed=args.seed,
            baseline=args.baseline,
            cluster=args.cluster,
            n_resamples=args.bootstrap,
        )
    print(markdown)


if __name__ == "__main__":
    main()
