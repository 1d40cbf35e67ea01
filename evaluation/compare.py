"""Compare evaluation runs side by side: a Markdown table, plots and a shared gallery.

    python -m evaluation.compare --runs base=outputs/eval/base sft=outputs/eval/sft \\
        grpo=outputs/eval/grpo --out outputs/eval/compare [--paper] [--gallery 12]

Reads each run's results.json (written by evaluation.run) and writes into --out:
  comparison.md      rows = headline metrics, columns = runs, "value [95% CI]"; best run in bold
                     (also printed)
  comparison.json    the same numbers, machine-readable
  headline_metrics.png  one panel per metric, one bar per run with its CI
  gallery.html       the same sampled records for every run (when all runs share a dataset)

``--paper`` adds a column with DeepMedix-R1's published numbers where a metric matches
(read from the paper's figure, xraybench test set; see the README for when a comparison is fair).
Function API: ``compare(runs, out_dir) -> markdown``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_prep.io import atomic_write_text
from evaluation.runs import load_results, parse_runs  # noqa: F401  (parse_runs: re-exported)
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
    notes = [
        "",
        f"Values are point estimates with 95% percentile-bootstrap CIs ({_resamples(results)} resamples, seeded) "
        "in brackets (METEOR: the per-sample spread around the corpus score); "
        "the best run per metric is in bold. Metric definitions: evaluation/metrics.py.",
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
            for k, v in (r.get("report") or {}).items()
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
    runs: dict[str, str], out_dir: str | Path, paper: bool = False, gallery: int = 12, seed: int = 0
) -> str:
    """Write comparison.md / .json, headline_metrics.png and gallery.html; return the Markdown."""
    if not runs:
        raise SystemExit("compare: no runs given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {name: load_results(folder) for name, folder in runs.items()}
    table, rows = comparison_table(results, paper=paper)
    markdown = "\n".join(["# Evaluation comparison", "", table, *_notes(results, runs, paper)]) + "\n"
    atomic_write_text(out / "comparison.md", markdown)
    atomic_write_text(
        out / "comparison.json",
        json.dumps(
            {"runs": runs, "rows": rows, "run_configs": {n: r.get("run") for n, r in results.items()}},
            indent=2,
        )
        + "\n",
    )
    plot_headline(results, out / "headline_metrics.png", paper=paper)
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
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(compare(parse_runs(args.runs), args.out, paper=args.paper, gallery=args.gallery, seed=args.seed))


if __name__ == "__main__":
    main()
