"""Metrics over (record, completion) pairs: pure functions, one section per task.

Every function here takes records in the data_prep schema and completion strings, and returns
plain numbers / dicts; nothing reads files or loads models (report text metrics live in
``evaluation.nlg``, model-based report metrics in ``evaluation.rexrank``). Box geometry and
set F1 come from ``rewards.boxes``, answer parsing, normalisation and the format checks from
``rewards.parsing``: one definition each, shared with the rewards.

Definitions (also in the README's evaluation section):

* **Answer.** The prediction's answer is the content of the LAST balanced ``\\boxed{...}``
  (``rewards.parsing.last_boxed``), stripped. A completion without one falls back to its raw
  text with every ``<think>...</think>`` block, stray think tags and a leading
  "The answer is:" removed; ``answer_source`` says which ("boxed" / "raw") and the results give
  the boxed rate, so a model that never closes its box is visible, not silently rescued.
* **VQA** (task ``vqa``). A question is *closed* when the record's ``meta["answer_type"]`` says
  so, or else when its ground truth is yes/no or at most two words; *list* when the ground truth
  holds ``|``; otherwise *open*. Closed: normalised exact match (``rewards.parsing.eval_normalize``:
  lower case, punctuation and articles removed, whitespace collapsed). List: F1 of the normalised
  item sets (``rewards.boxes.eval_set_f1``: both empty -> 1). Open: token F1 (SQuAD style).
  ``accuracy`` is the mean of these per-question scores (micro over questions); it is also given
  per ``meta["question_type"]`` and as the macro mean over question types.
* **Classification** (task ``classification``). Answers are label lists joined with " | ";
  labels are compared case- and whitespace-insensitively. Per label: precision, recall, F1 and
  support. Micro F1 pools tp/fp/fn over all labels, including predicted labels that never occur
  in the ground truth (they only add false positives). Macro F1 averages the per-label F1 over
  labels with ground-truth support. ``exact_match`` is the rate of identical label sets.
* **Grounding** (task ``grounding``). Predicted boxes are every ``[x0, y0, x1, y1]`` in the
  answer; ground truth is ``record["boxes"]``. ``miou``: per sample the mean over ground-truth
  boxes of the best IoU with any predicted box (0 without predictions), averaged over samples.
  ``acc50``: the first predicted box overlaps some ground-truth box with IoU >= 0.5.
  ``map50``: boxes from a generative model carry no confidence, so every predicted box has
  score 1 and the precision-recall curve is a single point; with one-to-one matching at
  IoU >= 0.5 (maximum bipartite matching per sample) AP@0.5 = precision x recall for each class
  (the class of a sample is ``meta["label"]`` or its most frequent box label) and mAP@0.5 is the
  mean over classes.
* **Reasoning** (every task, when the prompt asked for reasoning). ``format_rate``: after the
  released reward's normalisation (whitespace around ``<``, ``>``, ``/`` removed) the completion
  starts with ``<think>``, holds exactly one think block and a ``\\boxed{}`` after it.
  ``paper_format_rate``: the released reward's own format regex. ``boxes_per_answer``: boxes
  cited in the (first) think block per completion. ``valid_box_rate``: cited boxes inside the
  record's width x height frame with x0 < x1 and y0 < y1 (``data_prep.schema.box_problem``),
  pooled over all cited boxes. For samples with ground-truth boxes: ``cited_box_iou`` = mean over
  ground-truth boxes of the best IoU of any cited box (0 when nothing is cited) - a measurable
  stand-in for the paper's "grounded preference"; ``cited_box_iou_hungarian`` is the stricter
  one-to-one version (Hungarian matching, one cited box cannot cover several findings);
  ``cited_precision_iou`` = mean over cited boxes of their best IoU with any finding annotated on
  the image, from every record of the split (punishes box spam, over samples that cite at least one
  box and whose image has findings; a question's record holds only the asked finding's box, so a
  survey that also cites the image's other true findings is not punished, as in the grounded
  reward); ``cited_precision_iou_record`` is the same against the record's own boxes; ``cited_hit50`` = some cited box
  has IoU >= 0.5 with some ground-truth box.
* **Confidence intervals** are not computed here: ``evaluation.stats`` resamples whole studies and
  recomputes each metric (ratio metrics from resampled counts).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from data_prep.schema import box_problem
from rewards.boxes import (
    best_match_iou,
    eval_set_f1,
    hungarian_iou,
    iou,
    iou_matrix,
    matched_count,
    precision_iou,
)
from rewards.grounded import REPORT_TASKS
from rewards.paper import format_score as paper_format_score
from rewards.parsing import (
    answer_items,
    eval_format_ok,
    eval_normalize,
    find_boxes,
    label_key,
    last_boxed,
    normalize_paper,
    strip_think,
    think_block,
)


def task_group(task: str) -> str:
    return "report" if task in REPORT_TASKS else task


# ----------------------------------------------------------------------------- answers

_ANSWER_LEAD = re.compile(r"^\s*(the\s+)?(final\s+)?answer\s*(is)?\s*:?\s*", re.IGNORECASE)


def extract_answer(text: str) -> tuple[str, str]:
    """(answer, source): the last \\boxed{} content ("boxed"), else the raw text ("raw")."""
    text = text or ""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip(), "boxed"
    raw = strip_think(text, " ").replace("<think>", " ").replace("</think>", " ")
    raw = _ANSWER_LEAD.sub("", raw.strip().lstrip(".").strip())
    return raw.strip(), "raw"


# ----------------------------------------------------------------------------- text answers


def exact_match(pred: str, gold: str) -> float:
    return float(eval_normalize(pred) == eval_normalize(gold))


def token_f1(pred: str, gold: str) -> float:
    """SQuAD-style token F1 of normalised texts (both empty -> 1, one empty -> 0)."""
    p, g = eval_normalize(pred).split(), eval_normalize(gold).split()
    if not p or not g:
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def list_f1(pred: str, gold: str) -> float:
    """F1 of the normalised " | "-separated items (both empty -> 1)."""
    return eval_set_f1(answer_items(pred, eval_normalize), answer_items(gold, eval_normalize))


# ----------------------------------------------------------------------------- VQA

YES_NO = {"yes", "no"}


def vqa_kind(record: dict) -> str:
    """ "closed", "list" or "open" (meta["answer_type"] wins when it says closed/open)."""
    declared = str((record.get("meta") or {}).get("answer_type", "")).lower()
    if declared in ("closed", "open"):
        return declared
    gold = record["answer"]
    if "|" in gold:
        return "list"
    if eval_normalize(gold) in YES_NO or len(gold.split()) <= 2:
        return "closed"
    return "open"


def vqa_score(pred_answer: str, record: dict) -> tuple[str, float]:
    kind = vqa_kind(record)
    gold = record["answer"]
    if kind == "closed":
        return kind, exact_match(pred_answer, gold)
    if kind == "list":
        return kind, list_f1(pred_answer, gold)
    return kind, token_f1(pred_answer, gold)


def question_type(record: dict) -> str:
    return str((record.get("meta") or {}).get("question_type") or "unknown")


def vqa_metrics(records: Sequence[dict], answers: Sequence[str]) -> tuple[dict, np.ndarray]:
    """Summary and per-question scores (0..1)."""
    kinds, scores = [], []
    for rec, ans in zip(records, answers, strict=True):
        kind, score = vqa_score(ans, rec)
        kinds.append(kind)
        scores.append(score)
    scores = np.asarray(scores, dtype=float)
    out: dict = {"n": len(scores), "accuracy": mean_or_none(scores)}
    out["by_kind"] = {
        k: {"n": int(sum(1 for x in kinds if x == k)), "score": mean_or_none(scores[[x == k for x in kinds]])}
        for k in ("closed", "list", "open")
        if k in kinds
    }
    qtypes = [question_type(r) for r in records]
    by_type = {}
    for qt in sorted(set(qtypes)):
        mask = np.array([q == qt for q in qtypes])
        by_type[qt] = {"n": int(mask.sum()), "accuracy": mean_or_none(scores[mask])}
    out["by_question_type"] = by_type
    out["macro_accuracy_over_question_types"] = mean_or_none([v["accuracy"] for v in by_type.values()])
    return out, scores


# ----------------------------------------------------------------------------- classification


def label_set(answer: str) -> set[str]:
    """The classification labels of an answer ("a | b"), compared by ``label_key``."""
    return answer_items(answer, label_key)


def f1_from_counts(tp: float, fp: float, fn: float) -> float | None:
    denom = 2 * tp + fp + fn
    return None if denom == 0 else 2 * tp / denom


def classification_counts(
    gold_sets: Sequence[set], pred_sets: Sequence[set]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-sample count arrays: (labels, counts[n, L, 3] as tp/fp/fn, extra_fp[n]).

    Labels are those with ground-truth support; predicted labels outside that set go to extra_fp.
    """
    labels = sorted(set().union(*gold_sets)) if gold_sets else []
    index = {lab: i for i, lab in enumerate(labels)}
    counts = np.zeros((len(gold_sets), len(labels), 3), dtype=float)
    extra_fp = np.zeros(len(gold_sets), dtype=float)
    for n, (gold, pred) in enumerate(zip(gold_sets, pred_sets, strict=True)):
        for lab in gold & pred:
            counts[n, index[lab], 0] += 1
        for lab in pred - gold:
            if lab in index:
                counts[n, index[lab], 1] += 1
            else:
                extra_fp[n] += 1
        for lab in gold - pred:
            counts[n, index[lab], 2] += 1
    return labels, counts, extra_fp


def micro_f1_from(counts: np.ndarray, extra_fp: np.ndarray) -> float | None:
    tp, fp, fn = counts[..., 0].sum(), counts[..., 1].sum() + extra_fp.sum(), counts[..., 2].sum()
    return f1_from_counts(tp, fp, fn)


def macro_f1_from(counts: np.ndarray) -> float | None:
    per = counts.sum(axis=0)  # L x 3
    support = per[:, 0] + per[:, 2]
    f1s = [f1_from_counts(*row) for row, s in zip(per, support) if s > 0]
    return float(np.mean(f1s)) if f1s else None


def classification_metrics(records: Sequence[dict], answers: Sequence[str]) -> tuple[dict, dict]:
    """Summary (per-label, micro, macro F1, exact match) and the per-sample arrays for bootstrap."""
    gold_sets = [label_set(r["answer"]) for r in records]
    pred_sets = [label_set(a) for a in answers]
    labels, counts, extra_fp = classification_counts(gold_sets, pred_sets)
    display = {}
    for r in records:
        for lab in r["answer"].split("|"):
            display.setdefault(label_key(lab), lab.strip())
    per_label = {}
    for i, lab in enumerate(labels):
        tp, fp, fn = counts[:, i, :].sum(axis=0)
        per_label[display.get(lab, lab)] = {
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else None,
            "f1": f1_from_counts(tp, fp, fn),
            "support": int(tp + fn),
            "predicted": int(tp + fp),
        }
    unseen = Counter(lab for p, g in zip(pred_sets, gold_sets) for lab in p - set(labels))
    exact = np.array([float(p == g) for p, g in zip(pred_sets, gold_sets)])
    tp, fp, fn = counts[..., 0].sum(), counts[..., 1].sum() + extra_fp.sum(), counts[..., 2].sum()
    out = {
        "n": len(records),
        "micro_f1": micro_f1_from(counts, extra_fp),
        "macro_f1": macro_f1_from(counts),
        "micro_precision": tp / (tp + fp) if tp + fp else 0.0,
        "micro_recall": tp / (tp + fn) if tp + fn else None,
        "exact_match": mean_or_none(exact),
        "per_label": per_label,
        "predicted_labels_not_in_ground_truth": dict(unseen.most_common()),
    }
    return out, {"counts": counts, "extra_fp": extra_fp, "exact": exact}


# ----------------------------------------------------------------------------- boxes


def grounding_class(record: dict) -> str:
    meta_label = (record.get("meta") or {}).get("label")
    if meta_label:
        return label_key(str(meta_label))
    labels = [label_key(b["label"]) for b in record["boxes"]]
    return Counter(labels).most_common(1)[0][0] if labels else "unknown"


def map_from_rows(rows: np.ndarray, n_classes: int) -> float | None:
    """mAP@thr from per-sample rows [class, tp, n_pred, n_gt] (single-point PR: AP = P x R)."""
    cls = rows[:, 0].astype(int)
    tp = np.bincount(cls, weights=rows[:, 1], minlength=n_classes)
    npred = np.bincount(cls, weights=rows[:, 2], minlength=n_classes)
    ngt = np.bincount(cls, weights=rows[:, 3], minlength=n_classes)
    present = ngt > 0
    if not present.any():
        return None
    precision = np.divide(tp, npred, out=np.zeros_like(tp), where=npred > 0)
    recall = np.divide(tp, ngt, out=np.zeros_like(tp), where=ngt > 0)
    return float((precision * recall)[present].mean())


def answer_boxes(answer: str) -> list[list[float]]:
    return find_boxes(answer or "")


def grounding_metrics(
    records: Sequence[dict], answers: Sequence[str], threshold: float = 0.5
) -> tuple[dict, dict]:
    classes = sorted({grounding_class(r) for r in records})
    cindex = {c: i for i, c in enumerate(classes)}
    rows, ious, acc, parsed = [], [], [], []
    for rec, ans in zip(records, answers, strict=True):
        gt = [b["box"] for b in rec["boxes"]]
        pred = answer_boxes(ans)
        rows.append([cindex[grounding_class(rec)], matched_count(pred, gt, threshold), len(pred), len(gt)])
        ious.append(best_match_iou(pred, gt) or 0.0)
        acc.append(float(bool(pred) and bool(gt) and max(iou(pred[0], g) for g in gt) >= threshold))
        parsed.append(float(bool(pred)))
    rows = np.asarray(rows, dtype=float).reshape(-1, 4)
    tp, npred, ngt = rows[:, 1].sum(), rows[:, 2].sum(), rows[:, 3].sum()
    per_class = {}
    for c, i in cindex.items():
        sel = rows[rows[:, 0] == i]
        p = sel[:, 1].sum() / sel[:, 2].sum() if sel[:, 2].sum() else 0.0
        r = sel[:, 1].sum() / sel[:, 3].sum() if sel[:, 3].sum() else 0.0
        per_class[c] = {"n": len(sel), "precision50": p, "recall50": r, "ap50": p * r}
    out = {
        "n": len(records),
        "map50": map_from_rows(rows, len(classes)) if len(rows) else None,
        "miou": mean_or_none(ious),
        "acc50": mean_or_none(acc),
        "precision50": tp / npred if npred else 0.0,
        "recall50": tp / ngt if ngt else None,
        "answer_has_box_rate": mean_or_none(parsed),
        "per_class": per_class,
        "iou_threshold": threshold,
    }
    return out, {"rows": rows, "n_classes": len(classes), "iou": np.asarray(ious), "acc50": np.asarray(acc)}


# ----------------------------------------------------------------------------- reasoning


def cited_boxes(text: str) -> list[list[float]]:
    """Boxes cited in the (first) think block; none without a think block."""
    think = think_block(text or "")
    return find_boxes(think) if think is not None else []


def reasoning_sample(text: str, record: dict, image_findings: Sequence | None = None) -> dict:
    """Per-completion reasoning facts: format, cited boxes, their validity and overlap with gt.
    ``image_findings``: every box annotated on the record's image, ``{"label", "box"}`` items as
    ``data_prep.trl_dataset.image_boxes`` gives them (default: the record's own)."""
    cited = cited_boxes(text)
    valid = [box_problem(b, record["width"], record["height"]) is None for b in cited]
    gt = [b["box"] for b in record.get("boxes") or []]
    hit = None
    if gt:
        hit = bool(cited) and float(iou_matrix(cited, gt).max()) >= 0.5
    return {
        "format": eval_format_ok(text),
        "paper_format": paper_format_score(normalize_paper(text or "")) == 1.0,
        "has_think": think_block(text or "") is not None,
        "has_boxed": last_boxed(text or "") is not None,
        "cited_boxes": cited,
        "n_boxes": len(cited),
        "n_valid": int(sum(valid)),
        "cited_iou": best_match_iou(cited, gt),
        "cited_iou_hungarian": hungarian_iou(cited, gt),
        "cited_precision_iou": precision_iou(
            cited, [b["box"] for b in image_findings] if image_findings else gt
        ),
        "cited_precision_iou_record": precision_iou(cited, gt),
        "cited_hit50": hit,
    }


def reasoning_metrics(samples: Sequence[dict]) -> tuple[dict, dict]:
    """Aggregate reasoning_sample() dicts."""

    def col(key):
        return np.array([float(s[key]) for s in samples], dtype=float)

    def opt(key):
        return np.array([float(s[key]) for s in samples if s[key] is not None], dtype=float)

    n_boxes, n_valid = col("n_boxes"), col("n_valid")
    out = {
        "n": len(samples),
        "format_rate": mean_or_none(col("format")),
        "paper_format_rate": mean_or_none(col("paper_format")),
        "think_rate": mean_or_none(col("has_think")),
        "boxed_rate": mean_or_none(col("has_boxed")),
        "boxes_per_answer": mean_or_none(n_boxes),
        "answers_citing_boxes_rate": mean_or_none(n_boxes > 0),
        "cited_boxes": int(n_boxes.sum()),
        "valid_box_rate": float(n_valid.sum() / n_boxes.sum()) if n_boxes.sum() else None,
        "n_with_gt_boxes": len(opt("cited_iou")),
        "cited_box_iou": mean_or_none(opt("cited_iou")),
        "cited_box_iou_hungarian": mean_or_none(opt("cited_iou_hungarian")),
        "cited_precision_iou": mean_or_none(opt("cited_precision_iou")),
        "cited_precision_iou_record": mean_or_none(opt("cited_precision_iou_record")),
        "cited_hit50": mean_or_none(opt("cited_hit50")),
    }
    arrays = {
        "format": col("format"),
        "boxes": n_boxes,
        "valid_rows": np.stack([n_valid, n_boxes], axis=1) if len(samples) else np.zeros((0, 2)),
        "cited_iou": opt("cited_iou"),
    }
    return out, arrays


def mean_or_none(values) -> float | None:
    values = np.asarray(values, dtype=float)
    return float(values.mean()) if values.size else None
