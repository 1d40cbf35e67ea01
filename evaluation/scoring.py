"""Score a run: records + completions -> the results dict (per task group, headline with CIs).

Used by ``evaluation.run`` after generation and usable alone on any predictions file
(``python -m evaluation.run ... --metrics_only``). The metric definitions are in
``evaluation.metrics`` (answers, VQA, classification, grounding, reasoning),
``evaluation.nlg`` (report text metrics) and ``evaluation.rexrank`` (the field's model-based report
metrics, computed in the metric environment).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from data_prep.families import in_convention, scale_box_list
from data_prep.schema import image_key
from data_prep.trl_dataset import image_boxes
from evaluation import metrics as M
from evaluation import nlg
from evaluation import stats as S
from rewards import grounded as G
from rewards.boxes import eval_set_f1
from rewards.grounded import GROUNDED_WEIGHTS
from rewards.parsing import parse

# Order and labels of the headline rows in tables and plots (evaluation.compare).
HEADLINE = [
    ("report/bleu1", "Report BLEU-1"),
    ("report/bleu4", "Report BLEU-4"),
    ("report/meteor", "Report METEOR"),
    ("report/rouge_l", "Report ROUGE-L"),
    ("report/cider", "Report CIDEr"),
    ("report/bleu2", "Report BLEU-2 (ReXrank)"),
    ("report/bertscore", "Report BERTScore F1"),
    ("report/semb_score", "Report SembScore"),
    ("report/radgraph_f1", "Report RadGraph F1 (partial)"),
    ("report/radcliq_v1", "Report RadCliQ-v1 (lower is better)"),
    ("report/ratescore", "Report RaTEScore"),
    ("report/green", "Report GREEN"),
    ("report/chexbert_micro_f1_14", "Report CheXbert micro-F1 (14)"),
    ("report/chexbert_macro_f1_14", "Report CheXbert macro-F1 (14)"),
    ("report/chexbert_micro_f1_5", "Report CheXbert micro-F1 (5)"),
    ("report/chexbert_macro_f1_5", "Report CheXbert macro-F1 (5)"),
    ("report/labels_micro_f1_14", "Report label micro-F1 (14, rule-based)"),
    ("report/labels_macro_f1_14", "Report label macro-F1 (14, rule-based)"),
    ("report/labels_micro_f1_5", "Report label micro-F1 (5, rule-based)"),
    ("report/labels_macro_f1_5", "Report label macro-F1 (5, rule-based)"),
    ("vqa/accuracy", "VQA accuracy"),
    ("vqa/closed", "VQA closed (exact match)"),
    ("vqa/open", "VQA open (token F1)"),
    ("classification/micro_f1", "Classification micro-F1"),
    ("classification/macro_f1", "Classification macro-F1"),
    ("grounding/map50", "Grounding mAP@0.5"),
    ("grounding/miou", "Grounding mIoU"),
    ("grounding/acc50", "Grounding Acc@0.5"),
    ("reasoning/format_rate", "Reasoning format rate"),
    ("reasoning/boxes_per_answer", "Reasoning boxes per answer"),
    ("reasoning/valid_box_rate", "Reasoning valid-box rate"),
    ("reasoning/cited_box_iou", "Reasoning cited-box IoU"),
    ("answers/boxed_rate", "Answers in \\boxed{}"),
    ("reward/grounded", "Grounded reward (mean, default weights)"),
]
HEADLINE_LABELS = dict(HEADLINE)


def score_run(
    records: list[dict],
    completions: dict[str, str],
    reasoning: bool,
    meteor: bool = True,
    model_metrics: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    boxes_of_image: dict | None = None,
    family=None,
    cluster: str = "study",
) -> tuple[dict, list[dict], dict[str, S.Statistic]]:
    """(results, per-sample rows, headline metrics as Statistics). A record without a completion is
    scored as an empty answer.

    Headline intervals resample whole clusters (``cluster``: study, patient or record; evaluation.stats);
    the Statistics let ``evaluation.compare`` pair two runs scored on the same records.
    ``boxes_of_image`` (image -> every box annotated on it, ``data_prep.trl_dataset.image_boxes`` of the
    whole split) is what the grounded reward's grounding term checks; default: from ``records``.
    ``family`` (data_prep.families): a relative-coordinate family's completions are scored against the
    records in its convention (0-1000 boxes), as GRPO rewards them."""
    if family is not None and family.relative:
        records, boxes_of_image = _in_family_convention(records, boxes_of_image, family)
    texts = [completions.get(r["id"], "") for r in records]
    extracted = [M.extract_answer(t) for t in texts]
    answers = [a for a, _ in extracted]
    per_sample = _per_sample_rows(records, extracted)
    stats: dict[str, S.Statistic] = {}
    results = _answer_summary(records, completions, extracted, stats)

    groups = defaultdict(list)
    for i, r in enumerate(records):
        groups[M.task_group(r["task"])].append(i)
    task = TaskData(records, answers, per_sample, meteor, model_metrics)
    for group, scorer in TASK_SCORERS.items():
        if groups.get(group):
            results[group] = scorer(task, np.asarray(groups[group]), stats)
    results["reasoning"] = _score_reasoning(task, texts, stats, boxes_of_image) if reasoning else None
    results["reward"] = _score_grounded_reward(texts, task, boxes_of_image, stats)
    results["by_source"] = _by_source(records, answers, per_sample)

    stats = {k: stats[k] for k, _ in HEADLINE if k in stats}
    results["headline"] = _headline(results, stats, S.cluster_codes(records, cluster), n_boot, seed)
    return results, per_sample, stats


def _in_family_convention(
    records: list[dict], boxes_of_image: dict | None, family
) -> tuple[list[dict], dict]:
    """Records and image boxes in a relative-coordinate family's convention (0-1000 boxes)."""
    boxes_of_image = image_boxes(records) if boxes_of_image is None else boxes_of_image
    boxes_of_image = {
        image_key(r): scale_box_list(boxes_of_image.get(image_key(r), []), r["width"], r["height"], family)
        for r in records
    }
    return [in_convention(r, family) for r in records], boxes_of_image


def _per_sample_rows(records: list[dict], extracted: list[tuple[str, str]]) -> list[dict]:
    """One row per record; the task scorers fill in its score."""
    return [
        {
            "id": r["id"],
            "task": r["task"],
            "source": r["source"],
            "question": r["question"],
            "gold": r["answer"],
            "answer": a,
            "answer_source": src,
            "score": None,
            "score_name": None,
        }
        for r, (a, src) in zip(records, extracted)
    ]


def _answer_summary(records: list[dict], completions: dict, extracted: list, stats: dict) -> dict:
    """The results' head: counts, tasks and how the answers were read (boxed or raw fallback)."""
    boxed = np.array([float(src == "boxed") for _, src in extracted])
    if len(boxed):
        stats["answers/boxed_rate"] = S.mean_of(boxed, np.arange(len(boxed)))
    return {
        "n": len(records),
        "n_missing_predictions": sum(1 for r in records if r["id"] not in completions),
        "tasks": dict(sorted(Counter(r["task"] for r in records).items())),
        "answers": {
            "boxed_rate": M.mean_or_none(boxed),
            "raw_fallback_rate": M.mean_or_none(1 - boxed) if len(boxed) else None,
        },
    }


def _score_grounded_reward(
    texts: list[str], task: TaskData, boxes_of_image: dict | None, stats: dict
) -> dict:
    """The grounded training reward of every completion: per-sample terms, their means and the total."""
    rewards = grounded_rewards(texts, task.records, boxes_of_image)
    for row, rwd in zip(task.per_sample, rewards):
        row["grounded_reward"] = rwd
    total = np.array([r["total"] for r in rewards])
    stats["reward/grounded"] = S.mean_of(total, np.arange(len(total)))
    return {
        "grounded": float(total.mean()),
        "terms": {k: _mean_of(r[k] for r in rewards) for k in GROUNDED_WEIGHTS},
        "weights": dict(GROUNDED_WEIGHTS),
    }


def _headline(results: dict, stats: dict, codes, n_boot: int, seed: int) -> dict:
    """Each headline metric with its cluster-bootstrap interval, in ``HEADLINE`` order; the CheXbert
    corpus scores come without one."""
    headline = {k: S.headline(stat, codes, n_boot, seed) for k, stat in stats.items()}
    headline.update((results.get("report") or {}).pop("_not_resampled", {}))
    return {k: headline[k] for k, _ in HEADLINE if k in headline}


@dataclass
class TaskData:
    """What every per-task scorer reads: all records, their extracted answers, the per-sample rows
    it fills in, and the report-metric switches."""

    records: list[dict]
    answers: list[str]
    per_sample: list[dict]
    meteor: bool
    model_metrics: bool


def _score_vqa(task: TaskData, idx: np.ndarray, stats: dict) -> dict:
    recs = [task.records[i] for i in idx]
    summary, scores = M.vqa_metrics(recs, [task.answers[i] for i in idx])
    stats["vqa/accuracy"] = S.mean_of(scores, idx)
    kinds = np.array([M.vqa_kind(r) for r in recs])
    for kind, key in (("closed", "vqa/closed"), ("open", "vqa/open")):
        if (kinds == kind).any():
            stats[key] = S.mean_of(scores[kinds == kind], idx[kinds == kind])
    for i, rec, s in zip(idx, recs, scores):
        task.per_sample[i].update(score=float(s), score_name=M.vqa_kind(rec))
    return summary


def _score_classification(task: TaskData, idx: np.ndarray, stats: dict) -> dict:
    summary, arrays = M.classification_metrics([task.records[i] for i in idx], [task.answers[i] for i in idx])
    counts, extra = arrays["counts"], arrays["extra_fp"]  # (n, labels, tp/fp/fn), (n,)
    rows = np.concatenate([counts[:, :, 0], counts[:, :, 1], counts[:, :, 2], extra[:, None]], axis=1)
    stats["classification/micro_f1"] = S.Statistic(rows, idx, "micro_f1")
    stats["classification/macro_f1"] = S.Statistic(rows, idx, "macro_f1")
    for i in idx:
        gold, pred = M.label_set(task.records[i]["answer"]), M.label_set(task.answers[i])
        task.per_sample[i].update(score=eval_set_f1(pred, gold), score_name="label_set_f1")
    return summary


def _score_grounding(task: TaskData, idx: np.ndarray, stats: dict) -> dict:
    summary, arrays = M.grounding_metrics([task.records[i] for i in idx], [task.answers[i] for i in idx])
    rows, n_cls = arrays["rows"], arrays["n_classes"]  # rows: [class, tp, n_pred, n_gt]
    per_class = np.zeros((len(idx), 3 * n_cls))
    for j, (cls, tp, npred, ngt) in enumerate(rows):
        per_class[j, [int(cls), n_cls + int(cls), 2 * n_cls + int(cls)]] = tp, npred, ngt
    stats["grounding/map50"] = S.Statistic(per_class, idx, "map")
    stats["grounding/miou"] = S.mean_of(arrays["iou"], idx)
    stats["grounding/acc50"] = S.mean_of(arrays["acc50"], idx)
    for i, iou in zip(idx, arrays["iou"]):
        task.per_sample[i].update(
            score=float(iou), score_name="iou", answer_boxes=M.answer_boxes(task.answers[i])
        )
    return summary


def _score_reports(task: TaskData, idx: np.ndarray, stats: dict) -> dict:
    recs = [task.records[i] for i in idx]
    answers = [task.answers[i] for i in idx]
    refs = [r["answer"] for r in recs]
    toks, method = nlg.tokenize(refs + list(answers))
    ref_t, hyp_t = toks[: len(refs)], toks[len(refs) :]
    summary, per, text_stats = nlg.report_metrics(
        refs, answers, meteor=task.meteor, tokenized=(ref_t, hyp_t, method)
    )
    for key, stat in text_stats.items():
        stats[f"report/{key}"] = S.Statistic(stat.rows, idx[stat.index], stat.finish, stat.offset)
    # Per task (findings / impression): the same text metrics, no intervals, no METEOR.
    by_task = {}
    for name in sorted({r["task"] for r in recs}):
        sel = [i for i, r in enumerate(recs) if r["task"] == name]
        sub, _, _ = nlg.report_metrics(
            [refs[i] for i in sel],
            [answers[i] for i in sel],
            meteor=False,
            tokenized=([ref_t[i] for i in sel], [hyp_t[i] for i in sel], method),
        )
        by_task[name] = sub
    summary["by_task"] = by_task
    _label_statistics(refs, list(answers), idx, stats)
    summary["rexrank"] = _rexrank_statistics(refs, list(answers), idx, stats, task.model_metrics)
    for i, score in zip(idx, per.get("rouge_l", np.zeros(len(recs)))):
        task.per_sample[i].update(score=float(score), score_name="rouge_l")
    return summary


def _label_statistics(refs: list[str], answers: list[str], idx: np.ndarray, stats: dict) -> None:
    """F1 of the positive CheXpert labels of the rule-based labeler (rewards.report_labels; uncertain
    counted positive), no model needed: ``report/labels_{micro,macro}_f1_{14,5}``."""
    from rewards.report_labels import label_reports, positive_labels

    hyp = [positive_labels(h) for h in label_reports(answers)]
    ref = [positive_labels(r) for r in label_reports(refs)]
    _label_f1_statistics("labels", hyp, ref, idx, stats)


def _label_f1_statistics(prefix: str, hyp: list[set], ref: list[set], idx: np.ndarray, stats: dict) -> None:
    """Micro and macro F1 of positive labels over the 14 and the 5 observations, from per-record
    [tp, fp, fn per observation, 0] rows, so studies are resampled as for every metric. Macro averages
    the observations with a reference positive in the (re)sample, as classification's."""
    from rewards.report_labels import CHEXBERT_5, CHEXPERT_OBSERVATIONS

    for name, group in (("14", CHEXPERT_OBSERVATIONS), ("5", CHEXBERT_5)):
        rows = []
        for hp, rp in zip(hyp, ref):
            tp = [o in hp and o in rp for o in group]
            fp = [o in hp and o not in rp for o in group]
            fn = [o in rp and o not in hp for o in group]
            rows.append([*tp, *fp, *fn, 0])
        rows = np.asarray(rows, dtype=float).reshape(len(hyp), 3 * len(group) + 1)
        stats[f"report/{prefix}_micro_f1_{name}"] = S.Statistic(rows, idx, "micro_f1")
        stats[f"report/{prefix}_macro_f1_{name}"] = S.Statistic(rows, idx, "macro_f1")


def _rexrank_statistics(refs: list[str], answers: list[str], idx: np.ndarray, stats: dict, run: bool) -> dict:
    """ReXrank's metrics from the metric environment (evaluation.rexrank): per-report scores become
    resampled means, CheXbert's labels the paper's micro/macro F1 (5, 14). Returns each metric's
    status: "computed", or the skipped dict with its reason and the command that fixes it."""
    from evaluation.rexrank import REXRANK, rexrank_metrics, skipped

    if not run:
        off = skipped("disabled (--no_model_metrics)", "make eval without --no_model_metrics")
        return {m: off for m in REXRANK}
    status = {}
    for name, out in rexrank_metrics(refs, answers).items():
        if "per_sample" in out:
            stats[f"report/{name}"] = S.mean_of(np.asarray(out["per_sample"], dtype=float), idx)
        elif "hyp_labels" in out:
            names = out["names"]
            hyp = [{n for n, v in zip(names, row) if v} for row in out["hyp_labels"]]
            ref = [{n for n, v in zip(names, row) if v} for row in out["ref_labels"]]
            _label_f1_statistics("chexbert", hyp, ref, idx, stats)
        status[name] = {"status": "computed"} if "status" not in out else out
    return status


def _score_reasoning(task: TaskData, texts: list[str], stats: dict, boxes_of_image: dict | None) -> dict:
    records = task.records
    findings = image_boxes(records) if boxes_of_image is None else boxes_of_image  # as the reward reads them
    samples = [M.reasoning_sample(t, r, findings.get(image_key(r))) for t, r in zip(texts, records)]
    summary, arrays = M.reasoning_metrics(samples)
    summary["by_task"] = {
        name: M.reasoning_metrics([s for s, r in zip(samples, records) if r["task"] == name])[0]
        for name in sorted({r["task"] for r in records})
    }
    everyone = np.arange(len(samples))
    stats["reasoning/format_rate"] = S.mean_of(arrays["format"], everyone)
    stats["reasoning/boxes_per_answer"] = S.mean_of(arrays["boxes"], everyone)
    if summary["valid_box_rate"] is not None:
        stats["reasoning/valid_box_rate"] = S.Statistic(arrays["valid_rows"], everyone, "ratio")
    with_gt = np.array([i for i, s in enumerate(samples) if s["cited_iou"] is not None], dtype=int)
    if len(with_gt):
        stats["reasoning/cited_box_iou"] = S.mean_of(arrays["cited_iou"], with_gt)
    for row, s in zip(task.per_sample, samples):
        row["reasoning"] = {
            k: s[k] for k in ("format", "n_boxes", "n_valid", "cited_iou", "cited_hit50", "cited_boxes")
        }
    return summary


# Task group -> its scorer: fills ``stats`` with the group's headline metrics, returns its summary.
TASK_SCORERS = {
    "report": _score_reports,
    "vqa": _score_vqa,
    "classification": _score_classification,
    "grounding": _score_grounding,
}


def grounded_rewards(texts: list[str], records: list[dict], boxes_of_image: dict | None = None) -> list[dict]:
    """Per completion, the grounded reward GRPO trains with: each term and the weighted total.

    The same functions, weights and reference boxes (every box of the image) as ``reward_mode:
    grounded`` in recipes/grpo.py, so a checkpoint's mean here is comparable with the training curves;
    ``grounding`` is None (left out of the sum, as TRL does) where the image has no ground-truth boxes.
    """
    boxes_of_image = image_boxes(records) if boxes_of_image is None else boxes_of_image
    out = []
    for text, r in zip(texts, records):
        terms = {
            "answer": G.answer_score(parse(text).answer, str(r["answer"]), r["task"]),
            "format": G.format_score(text),
            "coordinate": G.coordinate_score(text, r["width"], r["height"]),
            "grounding": G.grounding_score(text, boxes_of_image.get(image_key(r), [])),
        }
        terms["total"] = sum(GROUNDED_WEIGHTS[k] * v for k, v in terms.items() if v is not None)
        out.append(terms)
    return out


def _mean_of(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _by_source(records, answers, per_sample) -> dict:
    """Mean per-sample score per (source, task): a quick breakdown, e.g. MIMIC-CXR vs OpenI."""
    acc = defaultdict(list)
    names = {}
    for r, row in zip(records, per_sample):
        if row["score"] is not None:
            acc[(r["source"], r["task"])].append(row["score"])
            names[(r["source"], r["task"])] = row["score_name"] if r["task"] != "vqa" else "vqa_score"
    out: dict = defaultdict(dict)
    for (source, task), scores in sorted(acc.items()):
        out[source][task] = {"n": len(scores), names[(source, task)]: float(np.mean(scores))}
    return dict(out)
