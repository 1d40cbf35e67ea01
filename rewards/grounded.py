"""Grounded mode: the default reward of our recipes - task-aware answers, strict format, boxes checked
against the real image frame and, where the data has them, against the ground-truth boxes.

Four TRL reward functions (registry names = function names):

``answer`` in [0, 1] - reads ``solution`` (or ``answer``), optional ``task``
    The answer is the single ``\\boxed{}`` after the think block (``parsing.grounded_answer``):
    none, several, or an unclosed one -> 0. Then by kind (``answer_kind``):

    * *short* (closed questions, at most ``LONG_ANSWER_WORDS`` words): exact match after
      ``parsing.normalize_answer`` (lowercase, punctuation -> space, articles dropped, whitespace
      collapsed, yes/no synonyms such as "y", "true", "present" -> "yes").
    * *list* (ground truth joined with " | ", or task ``classification``): set F1 of the
      normalised labels (``boxes.set_f1``: no labels at all scores 0).
    * *text* (task ``report_findings``/``report_impression``, or a longer answer): word-level
      ``REPORT_MIX`` of BLEU-4 (nltk-exact, add-one smoothing) and ROUGE-L F1 (true LCS).
    * *box* (task ``grounding``, answer "[x0, y0, x1, y1]"): soft F1 of IoU between the boxes
      in the answer and in the ground truth (= IoU for one box each).

``format`` in {0, 1} - reads nothing but the completion
    1 only for ``<think> reasoning </think>`` at the very start (leading whitespace allowed)
    with at least ``MIN_THINK_WORDS`` words (``[a-z0-9]+`` tokens) of reasoning, then a short
    lead-in (at most ``MAX_LEAD_CHARS`` characters, no markup), exactly one
    ``\\boxed{non-empty}`` in the whole completion, and at most trailing whitespace and one
    ``.`` or ``!``. Truncated output (missing ``</think>``, unbalanced braces) and degenerate
    repetition (more than ``MAX_REPEATED_4GRAMS`` of the word 4-grams of the reasoning or of the
    answer are repeats) score 0.

``coordinate`` in [-1, 1] - reads ``width``, ``height``
    Boxes cited in the first think block, judged in the sample's real frame
    (``boxes.box_status``). Near-duplicate citations (IoU > 0.9, transitively) form one
    region; each region whose citations are all valid pays ``1 / PAID_BOXES``, up to 1.0; each
    invalid box (outside the frame, inverted, thinner than 4 px) costs ``INVALID_BOX_COST``; a
    box covering over 90 % of the frame is neutral (costs nothing, pays nothing); more than
    ``MAX_BOXES`` boxes is spam and scores -1. Clipped to [-1, 1]. No think block: 0. Adding
    an invalid or a near-duplicate box never raises it (property-tested). Also logs completion
    statistics (``rewards.stats``).

``grounding`` in [0, 1] or None - reads ``image_boxes`` (else ``boxes``)
    Where the image has ground-truth boxes: soft F1 of IoU under a one-to-one Hungarian
    matching between the boxes cited in the think block and the ground-truth boxes
    (``boxes.soft_f1``): 1.0 for exactly the ground-truth boxes, falling with IoU, lowered by
    extra, duplicate or missing boxes. Labels are not compared (the reasoning cites boxes as
    text). ``None`` where there are no boxes: TRL leaves it out of the sum and the mean.
    The reference is every box annotated on the image (``image_boxes``, the union over the
    image's records, made by ``data_prep.trl_dataset.grpo_dataset``): the reasoning reads the
    whole image, and a record about one finding holds only that finding's box. Scored against
    ``boxes`` alone, citing the study's other true findings costs precision, and GRPO learns to
    stop reading the image (measured on the demo: boxes per answer 1.60 -> 1.30, closed VQA
    0.915 -> 0.869 in 150 steps; docs/demo-notes.md).

What earns nothing extra (each has a test in tests/test_rewards_grounded.py): box spam (the
coordinate cap and spam rule, grounding precision), boxes outside the think block (not read),
the answer left in the reasoning (no box after the think -> answer 0), repeated text (format
0), an empty think block (format 0, no boxes), several boxed answers (answer 0, format 0).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache

from rewards.boxes import INVALID, box_status, count_paying_regions, set_f1, soft_f1
from rewards.inputs import column, texts_of
from rewards.parsing import answer_items, boxed_spans, find_boxes, normalize_answer, parse
from rewards.similarity import BLEU4_WEIGHTS, bleu, rouge_l_f
from rewards.stats import log_completion_stats

GROUNDED_WEIGHTS = {"answer": 1.0, "format": 0.2, "coordinate": 0.2, "grounding": 0.5}

# --- answer ---------------------------------------------------------------------------------
REPORT_TASKS = ("report_findings", "report_impression")  # the tasks whose answer is a report text
LONG_ANSWER_WORDS = 8  # more words than this (and not a list) -> scored as text
REPORT_MIX = {"bleu4": 0.5, "rouge_l": 0.5}  # word-level text score = weighted sum of these
_WORD_RE = re.compile(r"[a-z0-9]+")
_BOX_ANSWER_RE = re.compile(r"\s*(\[[^\[\]]*\]\s*[,;]?\s*)+")

# --- format ---------------------------------------------------------------------------------
MIN_THINK_WORDS = 3
MAX_LEAD_CHARS = 40
_LEAD_FORBIDDEN = frozenset("<>[]{}\\")
_TRAIL_RE = re.compile(r"\s*[.!]?\s*")
MAX_REPEATED_4GRAMS = 0.3  # share of repeated word 4-grams above which text is degenerate
_REPETITION_MIN_WORDS = 16

# --- coordinate -----------------------------------------------------------------------------
PAID_BOXES = 3  # distinct valid boxes that reach the maximum of 1.0
INVALID_BOX_COST = 0.5
MAX_BOXES = 16  # more boxes than this in one think block is spam: -1


# ---------------------------------------------------------------------------------------------
# answer
# ---------------------------------------------------------------------------------------------


def answer_kind(solution: str, task: str | None = None) -> str:
    """``short``, ``list``, ``text`` or ``box`` for a ground-truth answer and its task."""
    if task == "grounding" and find_boxes(solution):
        return "box"
    if task in REPORT_TASKS:
        return "text"
    if task == "classification" or "|" in solution:
        return "list"
    if task is None and find_boxes(solution) and _BOX_ANSWER_RE.fullmatch(solution):
        return "box"
    if len(solution.split()) > LONG_ANSWER_WORDS:
        return "text"
    return "short"


@lru_cache(maxsize=4096)
def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD_RE.findall(text.lower()))


def text_score(pred: str, solution: str, mix: dict | None = None) -> float:
    """Word-level similarity of a report: ``mix`` of BLEU-4 (nltk-exact, method2) and ROUGE-L F1."""
    mix = REPORT_MIX if mix is None else mix
    ref, hyp = _words(solution), _words(pred)
    if not ref or not hyp:
        return 0.0
    total = 0.0
    if mix.get("bleu4"):
        total += mix["bleu4"] * bleu(ref, hyp, (BLEU4_WEIGHTS,))[0]
    if mix.get("rouge_l"):
        total += mix["rouge_l"] * rouge_l_f(ref, hyp)
    return min(1.0, max(0.0, total))


def answer_score(pred: str | None, solution: str, task: str | None = None, mix: dict | None = None) -> float:
    """Score of an extracted answer (None -> 0) against the ground truth, in [0, 1]."""
    if pred is None or not pred.strip():
        return 0.0
    kind = answer_kind(solution, task)
    if kind == "short":
        return 1.0 if normalize_answer(pred) == normalize_answer(solution) else 0.0
    if kind == "list":
        return set_f1(answer_items(pred, normalize_answer), answer_items(solution, normalize_answer))
    if kind == "box":
        return soft_f1([tuple(b) for b in find_boxes(pred)], [tuple(b) for b in find_boxes(solution)])
    return text_score(pred, solution, mix)


# ---------------------------------------------------------------------------------------------
# format
# ---------------------------------------------------------------------------------------------


def repeated_4gram_share(text: str) -> float:
    """Share of word 4-grams that repeat an earlier one (0 for texts under 16 words)."""
    w = _words(text)
    if len(w) < _REPETITION_MIN_WORDS:
        return 0.0
    grams = list(zip(w, w[1:], w[2:], w[3:]))
    return 1.0 - len(set(grams)) / len(grams)


def format_score(text: str) -> float:
    """1.0 for a complete, clean ``<think>...</think> lead-in \\boxed{answer}`` completion, else 0.0."""
    p = parse(text)
    if p.n_open != 1 or p.n_close != 1 or p.n_boxed != 1 or p.think is None:
        return 0.0
    s = text.lstrip()
    if not s.startswith("<think>"):
        return 0.0
    if len(_words(p.think)) < MIN_THINK_WORDS:
        return 0.0
    rest = s[s.index("</think>") + len("</think>") :]
    spans = boxed_spans(rest)
    if len(spans) != 1:  # unbalanced braces, or the only box sits inside the think block
        return 0.0
    start, end, content = spans[0]
    lead = rest[:start]
    if not content.strip() or len(lead) > MAX_LEAD_CHARS or not _LEAD_FORBIDDEN.isdisjoint(lead):
        return 0.0
    if not _TRAIL_RE.fullmatch(rest[end:]):
        return 0.0
    if (
        repeated_4gram_share(p.think) > MAX_REPEATED_4GRAMS
        or repeated_4gram_share(content) > MAX_REPEATED_4GRAMS
    ):
        return 0.0
    return 1.0


# ---------------------------------------------------------------------------------------------
# coordinate and grounding
# ---------------------------------------------------------------------------------------------


def coordinate_score(text: str, width: float, height: float) -> float:
    """Boxes of the think block judged in the width x height frame, in [-1, 1] (see module doc)."""
    p = parse(text)
    if p.think is None or not p.think_boxes:
        return 0.0
    if len(p.think_boxes) > MAX_BOXES:
        return -1.0
    statuses = [box_status(b, width, height) for b in p.think_boxes]
    paid = min(count_paying_regions(p.think_boxes, statuses), PAID_BOXES) / PAID_BOXES
    return max(-1.0, paid - INVALID_BOX_COST * statuses.count(INVALID))


def gt_box_list(boxes) -> list[tuple]:
    """Ground-truth boxes from the ``boxes`` column: [{"label", "box"}, ...] (or bare 4-lists, or that
    list as a JSON string); None -> []."""
    if isinstance(boxes, str):
        boxes = json.loads(boxes)
    out = []
    for b in boxes or ():
        box = b.get("box") if isinstance(b, dict) else b
        if box is not None and len(box) == 4:
            out.append(tuple(float(v) for v in box))
    return out


def grounding_score(text: str, gt_boxes) -> float | None:
    """Soft F1 of think-block boxes vs ground-truth boxes (Hungarian on IoU); None without gt boxes."""
    gts = gt_box_list(gt_boxes)
    if not gts:
        return None
    return soft_f1(list(parse(text).think_boxes), gts)


# ---------------------------------------------------------------------------------------------
# TRL reward functions
# ---------------------------------------------------------------------------------------------


def make_answer_reward(mix: dict | None = None, name: str = "answer"):
    """An ``answer`` reward with another BLEU-4 / ROUGE-L mix for text answers (register it under ``name``)."""

    def reward(completions, **kwargs) -> list[float]:
        n = len(completions)
        solutions = column(kwargs, "solution", n, name)
        tasks = column(kwargs, "task", n, name, required=False)
        return [
            answer_score(parse(t).answer, str(gt), task, mix)
            for t, gt, task in zip(texts_of(completions), solutions, tasks)
        ]

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = f"Grounded answer score in [0, 1] with text mix {mix or REPORT_MIX}."
    return reward


def answer(completions, **kwargs) -> list[float]:
    """Task-aware answer score in [0, 1] of the single boxed answer. Reads ``solution``, optional ``task``."""
    n = len(completions)
    solutions = column(kwargs, "solution", n, "answer")
    tasks = column(kwargs, "task", n, "answer", required=False)
    return [
        answer_score(parse(t).answer, str(gt), task)
        for t, gt, task in zip(texts_of(completions), solutions, tasks)
    ]


def format(completions, **kwargs) -> list[float]:  # shadows the builtin on purpose: TRL logs __name__
    """Strict structure, 1.0 or 0.0: one non-empty think block first, one boxed answer, nothing else."""
    return [format_score(t) for t in texts_of(completions)]


def coordinate(completions, **kwargs) -> list[float]:
    """Think-block boxes judged in the real frame, in [-1, 1]. Reads ``width``, ``height``; logs stats."""
    n = len(completions)
    texts = texts_of(completions)
    widths = column(kwargs, "width", n, "coordinate")
    heights = column(kwargs, "height", n, "coordinate")
    log_completion_stats(texts, kwargs)
    return [coordinate_score(t, w, h) for t, w, h in zip(texts, widths, heights)]


def grounding(completions, **kwargs) -> list[float | None]:
    """Soft IoU-F1 of think-block boxes vs the image's ground-truth boxes (``image_boxes`` where the
    dataset has that column, else ``boxes``); None where a sample has none."""
    n = len(completions)
    key = "image_boxes" if "image_boxes" in kwargs else "boxes"
    gts = column(kwargs, key, n, "grounding")
    return [grounding_score(t, g) for t, g in zip(texts_of(completions), gts)]
