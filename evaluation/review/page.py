"""The reviewer's pages as HTML strings: one item at a time, the two answers side by side.

Blinding: a page names the models only "A" (left) and "B" (right); it holds no run name, folder,
record id or file path. Images come from the token-checked route ``/r/TOKEN/image/ITEM/K`` (ITEM
is an opaque id) and carry boxes as an SVG overlay drawn by the gallery's own functions: cited
boxes red and numbered like the citations in the text, answer boxes blue, ground truth green
(only in a study made with --show_truth). CSS and JS are inline (the script nonce-checked by the
page's Content-Security-Policy); nothing is loaded from another origin.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from evaluation.gallery import CSS as GALLERY_CSS
from evaluation.gallery import figure_svg, highlight_completion
from evaluation.metrics import answer_boxes, cited_boxes, extract_answer, task_group
from evaluation.review.study import CRITERIA

STATIC = Path(__file__).parent / "static"
TITLE = "Blind review: grounded preference"
DATA_USE_WARNING = (
    "Data-use warning: this study shows credentialed data ({sources}) and this server is reachable "
    "from other machines ({host}). Only people covered by the dataset's data use agreement may see it; "
    "do not copy, photograph or upload what is shown."
)


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def layout(body: str, nonce: str, warning: str | None = None, title: str = TITLE) -> str:
    banner = f'<div class="warning" role="alert">{html.escape(warning)}</div>' if warning else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{html.escape(title)}</title>"
        f"<style>{GALLERY_CSS}{_static('review.css')}</style></head>"
        f"<body>{banner}{body}</body></html>\n"
    )


def _progress(reviewer: str, done: int, total: int) -> str:
    pct = 100 * done / total if total else 100
    return (
        f'<header><h1>{html.escape(TITLE)}</h1><div class="status">'
        f"<span>reviewer: <b>{html.escape(reviewer)}</b></span>"
        f'<span id="progress-text">{done} of {total} reviewed</span>'
        f'<progress id="progress" max="{total}" value="{done}">{pct:.0f}%</progress></div></header>'
    )


def _panel(side: str, image_id: str, view: dict, completion: str, task: str) -> str:
    answer, source = extract_answer(completion)
    cited = cited_boxes(completion)
    ans_boxes = answer_boxes(answer) if task_group(task) == "grounding" else []
    raw = "" if source == "boxed" else ' <span class="note">(no \\boxed{} answer: raw text)</span>'
    return (
        f'<section class="model" id="model-{side.lower()}" aria-label="Model {side}">'
        f"<h2>Model {side}</h2>"
        f"{figure_svg(image_id, view, cited, ans_boxes)}"
        f'<div class="answer"><b>Answer:</b> <span class="answer-text">'
        f"{html.escape(answer) or '<i>empty</i>'}</span>{raw}</div>"
        f'<div class="text reasoning">{highlight_completion(completion, view)}</div></section>'
    )


def _criterion(c, index: int, chosen: str | None) -> str:
    options = []
    for value, label, key in (("A", "A is better", "a"), ("tie", "Tie", "t"), ("B", "B is better", "b")):
        checked = " checked" if chosen == value else ""
        options.append(
            f'<label class="choice"><input type="radio" name="{c.key}" value="{value}" required{checked}>'
            f" {label} <kbd>{key}</kbd></label>"
        )
    paper = ' <span class="note">(the paper\'s criterion)</span>' if index == 0 else ""
    return (
        f'<fieldset class="criterion" data-criterion="{c.key}"><legend>{index + 1}. '
        f"{html.escape(c.label)}{paper}</legend>"
        f'<p class="help">{html.escape(c.question)}</p><div class="choices">{"".join(options)}</div></fieldset>'
    )


def item_page(
    *,
    token: str,
    reviewer: str,
    item: dict,
    completions: tuple[str, str],
    position: int,
    total: int,
    done: int,
    show_truth: bool,
    vote: dict | None,
    nonce: str,
    warning: str | None = None,
) -> str:
    """One item: the image twice (each model's boxes), question, both answers, the voting form."""
    base = f"/r/{token}"
    images = json.loads(item["images"])
    width, height = item["width"], item["height"]
    truth_boxes = json.loads(item["boxes"]) if show_truth else []
    view = {"id": f"item {position}", "width": width, "height": height, "boxes": truth_boxes}
    image_url = f"{base}/image/{item['item_id']}/0"
    defs = (
        '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
        f'<image id="xray" width="{width}" height="{height}" href="{html.escape(image_url)}"/></defs></svg>'
    )
    others = "".join(
        f'<figure class="view"><img alt="view {k + 1}" src="{base}/image/{item["item_id"]}/{k}">'
        f"<figcaption>view {k + 1} (boxes refer to view 1)</figcaption></figure>"
        for k in range(1, len(images))
    )
    truth = ""
    if show_truth:
        truth = f'<div class="truth"><b>Ground truth:</b> {html.escape(item["answer"])}</div>'
    legend = (
        '<div class="legend"><span><i class="sw cited"></i>box cited in the reasoning (number = citation)</span>'
        '<span><i class="sw answer"></i>box given as the answer</span>'
        + ('<span><i class="sw gt"></i>ground-truth box</span>' if show_truth else "")
        + "</div>"
    )
    vote = vote or {}
    criteria = "".join(_criterion(c, i, vote.get(c.key)) for i, c in enumerate(CRITERIA))
    comment = html.escape(vote.get("comment") or "")
    prev_link = (
        f'<a id="prev" href="{base}?item={position - 1}">&larr; previous <kbd>p</kbd></a>'
        if position > 1
        else ""
    )
    next_link = (
        f'<a id="next" href="{base}?item={position + 1}">next &rarr; <kbd>n</kbd></a>'
        if position < total and vote
        else ""
    )
    voted = '<span class="note">(already voted: saving replaces your vote)</span>' if vote else ""
    body = f"""{_progress(reviewer, done, total)}
<main>
<section class="case"><div class="meta">item {position} of {total} &middot; {html.escape(item["task"])} {voted}</div>
<div class="q">{html.escape(item["question"])}</div>{truth}{legend}</section>
{defs}
<div class="pair">{_panel("A", "xray", view, completions[0], item["task"])}{_panel("B", "xray", view, completions[1], item["task"])}</div>
{others}
<form id="vote" method="post" action="{base}/vote">
<input type="hidden" name="item_id" value="{html.escape(item["item_id"])}">
<input type="hidden" name="elapsed_ms" value="">
{criteria}
<label class="comment"><span>Comment (optional) <kbd>c</kbd></span><textarea name="comment" rows="2" maxlength="5000">{comment}</textarea></label>
<div class="actions"><button type="submit" id="submit">Save and next <kbd>Enter</kbd></button>
<span id="missing" class="note" hidden>choose A, B or tie on every criterion</span>
<nav>{prev_link} {next_link}</nav></div>
</form>
<p class="keys">Keys: <kbd>a</kbd> / <kbd>b</kbd> / <kbd>t</kbd> choose for the highlighted criterion and move on,
<kbd>&uarr;</kbd> <kbd>&darr;</kbd> move between criteria, <kbd>c</kbd> comment (<kbd>Esc</kbd> leaves it),
<kbd>Enter</kbd> save, <kbd>p</kbd> / <kbd>n</kbd> previous / next item.</p>
</main>
<script nonce="{nonce}">{_static("review.js")}</script>"""
    return layout(body, nonce, warning)


def done_page(*, token: str, reviewer: str, total: int, nonce: str, warning: str | None = None) -> str:
    body = (
        f"{_progress(reviewer, total, total)}<main><section class='case done'>"
        f"<h2>All {total} items reviewed. Thank you.</h2>"
        f'<p>Your votes are saved. You can <a href="/r/{token}?item=1">go through them again</a>; '
        "saving an item again replaces your vote on it.</p></section></main>"
    )
    return layout(body, nonce, warning)


def message_page(title: str, text: str, nonce: str) -> str:
    body = f"<main><section class='case'><h2>{html.escape(title)}</h2><p>{html.escape(text)}</p></section></main>"
    return layout(body, nonce, title=title)
