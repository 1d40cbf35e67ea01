"""A self-contained HTML gallery: images with each model's reasoning and boxes drawn on them.

    python -m evaluation.gallery --runs base=OUT1 rl=OUT2 --out gallery.html [--n 24]

Each sampled record shows its image once per run with an SVG overlay: the ground-truth boxes
(green, solid, labelled), the boxes the model cites in its <think> block (red, dashed,
numbered like the citations in the reasoning text) and, for grounding, the boxes of its answer
(blue). Images are embedded as base64 PNG (downscaled to at most 512 px), so the one file can be
mailed or archived; nothing is fetched from the network. Samples are drawn per task, seeded.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import random
from collections import defaultdict
from pathlib import Path

from PIL import Image

from data_prep.errors import OpenMedixError, setup_logging, user_errors
from data_prep.families import from_convention, get_family, in_convention
from data_prep.io import atomic_write_text, image_paths, read_records
from data_prep.schema import box_problem
from evaluation.metrics import answer_boxes, extract_answer, task_group
from evaluation.runs import RESULTS, RunNotFoundError, load_run, parse_runs
from rewards.parsing import BOX_RE, THINK_RE

GT_COLOR, CITED_COLOR, ANSWER_COLOR = "#16a34a", "#dc2626", "#2563eb"
MAX_SIDE = 512

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f5f4;color:#1c1917}
header{position:sticky;top:0;background:#fff;border-bottom:1px solid #d6d3d1;padding:10px 18px;z-index:2}
h1{font-size:18px;margin:0 0 6px 0}
.legend{display:flex;gap:18px;flex-wrap:wrap;font-size:13px}
.legend span{display:inline-flex;align-items:center;gap:6px}
.sw{display:inline-block;width:22px;height:12px;border:3px solid;box-sizing:border-box}
.sw.gt{border-color:$GT}.sw.cited{border-color:$CITED;border-style:dashed}.sw.answer{border-color:$ANSWER}
main{padding:12px 18px;display:flex;flex-direction:column;gap:14px}
.card{background:#fff;border:1px solid #d6d3d1;border-radius:8px;padding:12px}
.meta{font-size:12px;color:#57534e;margin-bottom:4px}
.q{font-weight:600;margin:2px 0}.gold{margin:2px 0 8px 0}
.runs{display:flex;gap:14px;flex-wrap:wrap}
.run{flex:1 1 300px;max-width:560px;border-top:3px solid #e7e5e4;padding-top:6px}
.run h3{font-size:14px;margin:0 0 6px 0}
svg.fig{width:100%;max-width:420px;height:auto;background:#000;display:block}
svg.fig rect{fill:none;stroke-width:2;vector-effect:non-scaling-stroke}
svg.fig rect.gt{stroke:$GT;stroke-width:5}svg.fig rect.cited{stroke:$CITED;stroke-dasharray:6 4}
svg.fig rect.answer{stroke:$ANSWER}
svg.fig text{font-weight:700;paint-order:stroke;stroke:#000;stroke-width:2.5px;stroke-linejoin:round}
svg.fig text.gt{fill:$GT}svg.fig text.cited{fill:$CITED}svg.fig text.answer{fill:$ANSWER}
.answer{margin:6px 0}.score{font-size:12px;color:#57534e}
.text{white-space:pre-wrap;font-family:ui-monospace,Menlo,monospace;font-size:12px;background:#fafaf9;
border:1px solid #e7e5e4;padding:6px;max-height:260px;overflow:auto}
.cite{color:$CITED;font-weight:700}.cite.invalid{text-decoration:line-through}
.ansbox{color:$ANSWER;font-weight:700}
.missing{color:#a8a29e;font-style:italic}
"""
CSS = CSS.replace("$GT", GT_COLOR).replace("$CITED", CITED_COLOR).replace("$ANSWER", ANSWER_COLOR)


def sample_records(records: list[dict], n: int, seed: int = 0) -> list[dict]:
    """Up to n records, drawn round-robin over tasks from seeded shuffles (every task shows)."""
    by_task = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    rng = random.Random(seed)
    queues = []
    for task in sorted(by_task):
        items = list(by_task[task])
        rng.shuffle(items)
        queues.append(items)
    out: list[dict] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def image_data_uri(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            im = im.convert("L") if im.mode not in ("L", "RGB") else im.copy()
            im.thumbnail((MAX_SIDE, MAX_SIDE))
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except (OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _rect(box, cls: str, label: str, width: int, height: int, fs: float) -> str:
    """A box and its label: ground truth labelled above the box, predictions inside it."""
    x0, y0, x1, y1 = (float(v) for v in box)
    x, y = min(x0, x1), min(y0, y1)
    w, h = abs(x1 - x0), abs(y1 - y0)
    if cls == "gt":
        ty = y - fs * 0.3 if y > fs * 1.2 else min(y + h + fs, height - 2)
    elif cls == "cited":
        ty = min(y + fs * 1.05, height - 2)
    else:  # answer: bottom-left inside the box
        ty = max(y + h - fs * 0.3, fs)
    text_w = 0.62 * fs * len(label)
    tx = x + (fs * 0.25 if cls != "gt" else 0)
    anchor = ""
    if tx + text_w > width:  # keep the label inside the image
        tx, anchor = min(x + w, width - 1), ' text-anchor="end"'
    title = html.escape(f"{label} [{', '.join(f'{v:g}' for v in box)}]")
    return (
        f'<rect class="{cls}" x="{x:g}" y="{y:g}" width="{w:g}" height="{h:g}"><title>{title}</title></rect>'
        f'<text class="{cls}" x="{max(tx, 1):.1f}" y="{ty:.1f}"{anchor}>{html.escape(label)}</text>'
    )


def figure_svg(image_id: str, record: dict, cited: list, answer: list) -> str:
    w, h = record["width"], record["height"]
    fs = max(w, h) / 30  # label size in image pixels: ~14 px on screen whatever the frame
    parts = [
        f'<svg class="fig" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="image {html.escape(record["id"])} with boxes" style="font-size:{fs:.1f}px">',
        f'<use href="#{image_id}"/>',
    ]
    # ground truth first and wider: a prediction drawn on top of it leaves a green rim visible
    for b in record.get("boxes") or []:
        parts.append(_rect(b["box"], "gt", b["label"], w, h, fs))
    for i, box in enumerate(cited, 1):
        parts.append(_rect(box, "cited", str(i), w, h, fs))
    for box in answer:
        parts.append(_rect(box, "answer", "answer", w, h, fs))
    parts.append("</svg>")
    return "".join(parts)


def highlight_completion(text: str, record: dict) -> str:
    """Escaped completion; boxes in the think block numbered in red, answer boxes in blue."""
    m = THINK_RE.search(text)
    think = (m.start(1), m.end(1)) if m else (-1, -1)
    out, pos, n = [], 0, 0
    for bm in BOX_RE.finditer(text):
        out.append(html.escape(text[pos : bm.start()]))
        box = [float(v) for v in bm.groups()]
        chunk = html.escape(bm.group(0))
        if think[0] <= bm.start() < think[1]:
            n += 1
            problem = box_problem(box, record["width"], record["height"])
            cls = "cite invalid" if problem else "cite"
            title = f' title="{html.escape(problem)}"' if problem else ""
            out.append(f'<span class="{cls}"{title}>{chunk}<sup>{n}</sup></span>')
        else:
            out.append(f'<span class="ansbox">{chunk}</span>')
        pos = bm.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _run_panel(
    name: str, image_id: str, record: dict, completion: str | None, score: dict | None, family=None
) -> str:
    from evaluation.metrics import cited_boxes

    if completion is None:
        return f'<div class="run"><h3>{html.escape(name)}</h3><p class="missing">no prediction</p></div>'
    answer, source = extract_answer(completion)
    cited = cited_boxes(completion)
    ans_boxes = answer_boxes(answer) if task_group(record["task"]) == "grounding" else []
    text_record = record
    if family is not None and family.relative:  # drawn in pixels; checked in the model's 0-1000 frame
        w, h = record["width"], record["height"]
        cited = [from_convention(b, w, h, family) for b in cited]
        ans_boxes = [from_convention(b, w, h, family) for b in ans_boxes]
        text_record = in_convention(record, family)
    score_txt = ""
    if score and score.get("score") is not None:
        score_txt = f'<span class="score">{html.escape(score["score_name"])} = {score["score"]:.3f}</span>'
    src = "" if source == "boxed" else ' <span class="score">(no \\boxed{}: raw text)</span>'
    return (
        f'<div class="run"><h3>{html.escape(name)}</h3>'
        f"{figure_svg(image_id, record, cited, ans_boxes)}"
        f'<div class="answer"><b>answer:</b> {html.escape(answer) or "<i>empty</i>"}{src} {score_txt}</div>'
        f'<div class="text">{highlight_completion(completion, text_record)}</div></div>'
    )


def _other_views(paths: list[Path]) -> str:
    """Thumbnails of a study's further images (its boxes are drawn on the first)."""
    if not paths:
        return ""
    imgs = []
    for k, path in enumerate(paths, 2):
        uri = image_data_uri(path)
        imgs.append(
            f'<img class="view" src="{uri}" alt="image {k}" title="image {k}" height="96">'
            if uri
            else f'<span class="missing">(image {k} not found)</span>'
        )
    return f'<div class="views">other images: {"".join(imgs)}</div>'


def render_gallery(
    records: list[dict],
    runs: dict[str, dict[str, str]],
    data_dir: str | Path,
    title: str = "OpenMedix-R1 gallery",
    scores: dict[str, dict[str, dict]] | None = None,
    families: dict | None = None,
) -> str:
    """HTML for these records; ``runs`` maps run name -> {record id: completion}; ``families`` run name ->
    data_prep.families.Family (a relative-coordinate run's boxes are drawn in pixels)."""
    defs, cards = [], []
    for k, rec in enumerate(records):
        image_id = f"img{k}"
        views = image_paths(data_dir, rec)  # boxes lie on the first; further views are shown beside
        uri = image_data_uri(views[0])
        if uri is None:  # keep the boxes readable on a grey canvas
            defs.append(
                f'<rect id="{image_id}" width="{rec["width"]}" height="{rec["height"]}" fill="#444"/>'
            )
        else:
            defs.append(
                f'<image id="{image_id}" width="{rec["width"]}" height="{rec["height"]}" href="{uri}"/>'
            )
        panels = "".join(
            _run_panel(
                name,
                image_id,
                rec,
                preds.get(rec["id"]),
                (scores or {}).get(name, {}).get(rec["id"]),
                (families or {}).get(name),
            )
            for name, preds in runs.items()
        )
        missing_img = "" if uri else ' <span class="missing">(image file not found)</span>'
        cards.append(
            f'<section class="card" data-id="{html.escape(rec["id"])}">'
            f'<div class="meta">{html.escape(rec["id"])} &middot; {html.escape(rec["task"])} &middot; '
            f"{html.escape(rec['source'])} &middot; {rec['width']}x{rec['height']}{missing_img}</div>"
            f'<div class="q">{html.escape(rec["question"])}</div>'
            f"{_other_views(views[1:])}"
            f'<div class="gold"><b>ground truth:</b> {html.escape(rec["answer"])}</div>'
            f'<div class="runs">{panels}</div></section>'
        )
    legend = (
        '<div class="legend">'
        '<span><i class="sw gt"></i>ground-truth box (label)</span>'
        '<span><i class="sw cited"></i>box cited in the reasoning (number = citation)</span>'
        '<span><i class="sw answer"></i>box given as the answer (grounding)</span>'
        f"<span>runs: {html.escape(', '.join(runs))} &middot; {len(records)} samples</span></div>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1>{legend}</header>"
        '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
        + "".join(defs)
        + "</defs></svg><main>"
        + "".join(cards)
        + "</main></body></html>\n"
    )


def write_gallery(
    path: str | Path,
    records: list[dict],
    runs: dict[str, dict[str, str]],
    data_dir: str | Path,
    n: int = 24,
    seed: int = 0,
    title: str | None = None,
    scores: dict[str, dict[str, dict]] | None = None,
    families: dict | None = None,
) -> Path:
    """Sample up to n records that every run has a prediction for, render, write atomically."""
    common = [r for r in records if all(r["id"] in preds for preds in runs.values())]
    chosen = sample_records(common, n, seed)
    title = title or f"OpenMedix-R1 gallery: {', '.join(runs)}"
    html_text = render_gallery(chosen, runs, data_dir, title=title, scores=scores, families=families)
    atomic_write_text(path, html_text)
    return Path(path)


def gallery_for_runs(runs: dict[str, str], out_path: str | Path, n: int = 24, seed: int = 0) -> Path:
    """Gallery over several evaluation.run folders (same dataset), the same samples for each."""
    loaded = {name: load_run(d) for name, d in runs.items()}
    first = next(iter(loaded.values()))[0]
    if not first.get("run"):
        raise RunNotFoundError(f"{next(iter(runs.values()))}: no {RESULTS} (run evaluation.run first)")
    data_dir, split = first["run"]["data"], first["run"]["split"]
    records = read_records(data_dir, split=split)
    return write_gallery(
        out_path,
        records,
        {name: preds for name, (_, preds, _) in loaded.items()},
        data_dir,
        n=n,
        seed=seed,
        scores={name: per for name, (_, _, per) in loaded.items()},
        families={name: get_family(res.get("run", {}).get("family")) for name, (res, _, _) in loaded.items()},
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--runs", nargs="+", required=True, metavar="NAME=OUT", help="evaluation.run output folders"
    )
    ap.add_argument("--out", required=True, help="the HTML file to write")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    setup_logging()
    with user_errors("evaluation.gallery", OpenMedixError, FileNotFoundError):
        path = gallery_for_runs(parse_runs(args.runs), args.out, n=args.n, seed=args.seed)
    print(f"gallery: {path}")


if __name__ == "__main__":
    main()
