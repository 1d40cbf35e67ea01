"""Clinical rewards: what a generated report says about the patient, not its wording.

One TRL reward function (registry name = function name):

``report_labels`` in [0, 1] or None - reads ``solution`` (or ``answer``), ``task``
    For a report task (``grounded.REPORT_TASKS``: ``report_findings``, ``report_impression``): the
    label agreement (``report_labels.label_agreement``) between the answer and the reference
    report - the F1 of the CheXpert observations each report states as positive, micro over the
    14 observations (No Finding included, so two normal reports agree), uncertain mentions counted
    as positive (``UNCERTAIN``, the CheXbert-F1 convention of the report-generation papers). So
    "the heart is enlarged" earns what "cardiomegaly" earns, and "no effusion" against a reference
    with an effusion costs what a missing effusion costs, whatever the word overlap.

    The answer is the one the grounded ``answer`` reward scores (``parsing.grounded_answer``): the
    single ``\\boxed{}`` after the think block. No fallback to the text after ``</think>``: no box,
    several boxes, an unclosed box or an unclosed think block score 0.0, as an empty box does.

    ``None`` for every other task (VQA, classification, grounding): TRL leaves it out of the sum
    and of the mean, so a recipe can add it beside ``answer`` on a mixed dataset. The ``task``
    column is required: without it no row could be told a report, and the reward would silently
    score nothing.

What earns nothing extra (tests/test_rewards_clinical.py): listing every observation (precision
falls: 4/15 against a two-finding reference), hedging every observation ("possible ...": uncertain
counts as positive, so the same), negating everything (only No Finding is left: 0 against an
abnormal reference), the report left in the reasoning (no box: 0).

The labeler is rule-based (``rewards.report_labels``: no model, no I/O, an LRU cache, so a
reference shared by a GRPO group is labeled once); its numbers are not CheXbert's.
"""

from __future__ import annotations

from rewards.grounded import REPORT_TASKS
from rewards.inputs import column, texts_of
from rewards.parsing import parse
from rewards.report_labels import CHEXPERT_OBSERVATIONS, agreement, label_agreement

# How uncertain mentions count ("positive" | "negative" | "ignore", see report_labels.positive_labels):
# positive, as CheXbert F1 is reported for report generation, so hedging is not a way out of a finding.
UNCERTAIN = "positive"
# The observations compared: all 14, so a normal report is rewarded for saying it is normal.
OBSERVATIONS = CHEXPERT_OBSERVATIONS


def boxed_report(text: str, task: str | None) -> tuple[str | None, float | None]:
    """(the boxed report to label, None), or (None, the score without labels): None off report tasks,
    0.0 without a single non-empty boxed answer."""
    if task not in REPORT_TASKS:
        return None, None
    pred = parse(text).answer
    if pred is None or not pred.strip():
        return None, 0.0
    return pred, None


def report_labels_score(text: str, solution: str, task: str | None) -> float | None:
    """The ``report_labels`` score of one completion text: agreement in [0, 1], or None off report tasks."""
    pred, score = boxed_report(text, task)
    if pred is None:
        return score
    return label_agreement(pred, solution, observations=OBSERVATIONS, uncertain=UNCERTAIN)


def report_labels(completions, **kwargs) -> list[float | None]:
    """CheXpert-label F1 of the boxed report against ``solution`` on report tasks, None elsewhere.
    Reads ``solution`` and ``task``."""
    n = len(completions)
    solutions = column(kwargs, "solution", n, "report_labels")
    tasks = column(kwargs, "task", n, "report_labels")
    return [
        report_labels_score(t, str(gt), task) for t, gt, task in zip(texts_of(completions), solutions, tasks)
    ]


def chexbert_label_scores(label, items: list[tuple[str, str, str | None]], cache: dict | None = None) -> list:
    """``report_labels`` with CheXbert's labels (``label``: texts -> label dicts, rewards.chexbert) in place
    of the rule-based ones: for the reward server's ``report_labels_chexbert``. ``items`` are
    (completion text, solution, task); same None / 0.0 rules as ``report_labels_score``. ``cache`` keeps
    the references' labels across batches (a GRPO group shares one reference)."""
    cache = {} if cache is None else cache
    scores: list[float | None] = [None] * len(items)
    pairs = []
    for i, (text, solution, task) in enumerate(items):
        pred, scores[i] = boxed_report(text, task)
        if pred is not None:
            pairs.append((i, pred, solution))
    new_refs = sorted({ref for _, _, ref in pairs if ref not in cache})
    labels = label([pred for _, pred, _ in pairs] + new_refs)
    cache.update(zip(new_refs, labels[len(pairs) :]))
    for (i, _, ref), hyp in zip(pairs, labels):
        scores[i] = agreement(hyp, cache[ref], OBSERVATIONS, UNCERTAIN)
    return scores
