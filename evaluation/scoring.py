"""Score a run: records + completions -> the results dict (per task group, headline with CIs).

Used by ``evaluation.run`` after generation and usable alone on any predictions file
(``python -m evaluation.run ... --metrics-only``). The metric definitions are in
``evaluation.metrics`` (answers, VQA, classification, grounding, reasoning),
``evaluation.nlg`` (report text metrics) and ``evaluation.model_metrics`` (clinical metrics).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from data_prep.families import in_convention, scale_box_list
from data_prep.schema import image_key
from data_prep.trl_dataset import image_boxes
from evaluation import metrics as M
from evaluation import nlg
from rewards import grounded as G
from rewards.grounded import GROUNDED_WEIGHTS
from rewards.parsing import parse

# Order and labels of the headline rows in tables and plots (evaluation.compare).
HEADLINE = [
    ("report/bleu1", "Report BLEU-1"),
    ("report/bleu4", "Report BLEU-4"),
    ("report/meteor", "Report METEOR"),
    ("report/rouge_l", "Report ROUGE-L"),
    ("report/cider", "Report CIDEr"),
    ("report/bertscore_f1", "Report BERTScore F1"),
    ("report/radgraph_f1", "Report RadGraph F1 (partial)"),
    ("report/chexbert_micro_f1_14", "Report CheXbert micro-F1 (14)"),
    ("report/chexbert_macro_f1_14", "Report CheXbert macro-F1 (14)"),
    ("report/chexbert_micro_f1_5", "Report CheXbert micro-F1 (5)"),
    ("report/chexbert_macro_f1_5", "Report CheXbert macro-F1 (5)"),
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
    ("reward/grounded", "Grounded reward (mean, GRPO weights)"),
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
) -> tuple[dict, list[dict]]:
    """(results, per-sample rows). A record without a completion is scored as an empty answer.

    ``boxes_of_image`` (image -> every box annotated on it, ``data_prep.trl_dataset.image_boxes`` of the
    whole split) is what the grounded reward's grounding term checks; default: from ``records``.
    ``family`` (data_prep.families): a relative-coordinate family's completions are scored against the
    records in its convention (0-1000 boxes), as GRPO rewards them."""
    if family is not None and family.relative:
        boxes_of_image = image_boxes(records) if boxes_of_image is None else boxes_of_image
        boxes_of_image = {
            image_key(r): scale_box_list(
                boxes_of_image.get(image_key(r), []), r["width"], r["height"], family
            )
            for r in records
        }
        records = [in_convention(r, family) for r in records]
    texts = [completions.get(r["id"], "") for r in records]
    missing = sum(1 for r in records if r["id"] not in completions)
    extracted = [M.extract_answer(t) for t in texts]
    answers = [a for a, _ in extracted]
    per_sample = [
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
    boxed = np.array([float(src == "boxed") for _, src in extracted])
    results: dict = {
        "n": len(records),
        "n_missing_predictions": missing,
        "tasks": dict(sorted(_count(r["task"] for r in records).items())),
        "answers": {
            "boxed_rate": M._mean(boxed),
            "raw_fallback_rate": M._mean(1 - boxed) if len(boxed) else None,
        },
    }
    headline: dict = {}
    if len(boxed):
        headline["answers/boxed_rate"] = M.headline_entry(
            boxed.mean(), M.bootstrap_ci(boxed, n_resamples=n_boot, seed=seed), len(boxed)
        )

    groups = defaultdict(list)
    for i, r in enumerate(records):
        groups[M.task_group(r["task"])].append(i)

    if groups.get("report"):
        idx = groups["report"]
        results["report"] = _score_reports(
            [records[i] for i in idx],
            [answers[i] for i in idx],
            meteor,
            model_metrics,
            n_boot,
            seed,
            headline,
        )
        for i, score in zip(idx, results["report"].pop("_per_rouge")):
            per_sample[i].update(score=score, score_name="rouge_l")

    if groups.get("vqa"):
        idx = groups["vqa"]
        recs = [records[i] for i in idx]
        summary, scores = M.vqa_metrics(recs, [answers[i] for i in idx])
        results["vqa"] = summary
        headline["vqa/accuracy"] = M.headline_entry(
            summary["accuracy"], M.bootstrap_ci(scores, n_resamples=n_boot, seed=seed), len(scores)
        )
        kinds = np.array([M.vqa_kind(r) for r in recs])
        for kind, key in (("closed", "vqa/closed"), ("open", "vqa/open")):
            sel = scores[kinds == kind]
            if len(sel):
                headline[key] = M.headline_entry(
                    sel.mean(), M.bootstrap_ci(sel, n_resamples=n_boot, seed=seed), len(sel)
                )
        for i, rec, s in zip(idx, recs, scores):
            per_sample[i].update(score=float(s), score_name=M.vqa_kind(rec))

    if groups.get("classification"):
        idx = groups["classification"]
        summary, arrays = M.classification_metrics([records[i] for i in idx], [answers[i] for i in idx])
        results["classification"] = summary
        counts, extra = arrays["counts"], arrays["extra_fp"]
        flat = np.concatenate([counts.reshape(len(idx), -1), extra[:, None]], axis=1)
        n_lab = counts.shape[1]

        def unflat(rows):
            return rows[:, :-1].reshape(len(rows), n_lab, 3), rows[:, -1]

        headline["classification/micro_f1"] = M.headline_entry(
            summary["micro_f1"],
            M.bootstrap_ci(flat, lambda r: M.micro_f1_from(*unflat(r)), n_resamples=n_boot, seed=seed),
            len(idx),
        )
        headline["classification/macro_f1"] = M.headline_entry(
            summary["macro_f1"],
            M.bootstrap_ci(flat, lambda r: M.macro_f1_from(unflat(r)[0]), n_resamples=n_boot, seed=seed),
            len(idx),
        )
        for i in idx:
            gold, pred = M.label_set(records[i]["answer"]), M.label_set(answers[i])
            per_sample[i].update(score=M.set_f1(pred, gold), score_name="label_set_f1")

    if groups.get("grounding"):
        idx = groups["grounding"]
        summary, arrays = M.grounding_metrics([records[i] for i in idx], [answers[i] for i in idx])
        results["grounding"] = summary
        n_cls = arrays["n_classes"]
        headline["grounding/map50"] = M.headline_entry(
            summary["map50"],
            M.bootstrap_ci(
                arrays["rows"], lambda r: M.map_from_rows(r, n_cls), n_resamples=n_boot, seed=seed
            ),
            len(idx),
        )
        for key in ("miou", "acc50"):
            arr = arrays["iou" if key == "miou" else "acc50"]
            headline[f"grounding/{key}"] = M.headline_entry(
                summary[key], M.bootstrap_ci(arr, n_resamples=n_boot, seed=seed), len(idx)
            )
        for i, iou in zip(idx, arrays["iou"]):
            per_sample[i].update(score=float(iou), score_name="iou", answer_boxes=M.answer_boxes(answers[i]))

    if reasoning:
        samples = [M.reasoning_sample(t, r) for t, r in zip(texts, records)]
        summary, arrays = M.reasoning_metrics(samples)
        by_task = {}
        for task in sorted({r["task"] for r in records}):
            sel = [s for s, r in zip(samples, records) if r["task"] == task]
            by_task[task] = M.reasoning_metrics(sel)[0]
        summary["by_task"] = by_task
        results["reasoning"] = summary
        headline["reasoning/format_rate"] = M.headline_entry(
            summary["format_rate"],
            M.bootstrap_ci(arrays["format"], n_resamples=n_boot, seed=seed),
            len(samples),
        )
        headline["reasoning/boxes_per_answer"] = M.headline_entry(
            summary["boxes_per_answer"],
            M.bootstrap_ci(arrays["boxes"], n_resamples=n_boot, seed=seed),
            len(samples),
        )
        if summary["valid_box_rate"] is not None:
            headline["reasoning/valid_box_rate"] = M.headline_entry(
                summary["valid_box_rate"],
                M.bootstrap_ci(arrays["valid_rows"], _ratio_of_sums, n_resamples=n_boot, seed=seed),
                summary["cited_boxes"],
            )
        if len(arrays["cited_iou"]):
            headline["reasoning/cited_box_iou"] = M.headline_entry(
                summary["cited_box_iou"],
                M.bootstrap_ci(arrays["cited_iou"], n_resamples=n_boot, seed=seed),
                len(arrays["cited_iou"]),
            )
        for row, s in zip(per_sample, samples):
            row["reasoning"] = {
                k: s[k] for k in ("format", "n_boxes", "n_valid", "cited_iou", "cited_hit50", "cited_boxes")
            }
    else:
        results["reasoning"] = None

    rewards = grounded_rewards(texts, records, boxes_of_image)
    for row, rwd in zip(per_sample, rewards):
        row["grounded_reward"] = rwd
    total = np.array([r["total"] for r in rewards])
    results["reward"] = {
        "grounded": float(total.mean()),
        "terms": {k: _mean_of(r[k] for r in rewards) for k in GROUNDED_WEIGHTS},
        "weights": dict(GROUNDED_WEIGHTS),
    }
    headline["reward/grounded"] = M.headline_entry(
        total.mean(), M.bootstrap_ci(total, n_resamples=n_boot, seed=seed), len(total)
    )

    results["by_source"] = _by_source(records, answers, per_sample)
    results["headline"] = {k: headline[k] for k, _ in HEADLINE if k in headline}
    return results, per_sample


def _score_reports(recs, answers, meteor, model_metrics, n_boot, seed, headline) -> dict:
    refs = [r["answer"] for r in recs]
    toks, method = nlg.tokenize(refs + list(answers))
    ref_t, hyp_t = toks[: len(refs)], toks[len(refs) :]
    summary, per = nlg.report_metrics(
        refs, answers, meteor=meteor, n_boot=n_boot, seed=seed, tokenized=(ref_t, hyp_t, method)
    )
    for key in ("bleu1", "bleu4", "meteor", "rouge_l", "cider"):
        if "value" in summary.get(key, {}):
            headline[f"report/{key}"] = summary[key]
    # Per task (findings / impression) and per source: the same text metrics, no CIs, no METEOR.
    by_task = {}
    for task in sorted({r["task"] for r in recs}):
        sel = [i for i, r in enumerate(recs) if r["task"] == task]
        sub, _ = nlg.report_metrics(
            [refs[i] for i in sel],
            [answers[i] for i in sel],
            meteor=False,
            n_boot=0,
            tokenized=([ref_t[i] for i in sel], [hyp_t[i] for i in sel], method),
        )
        by_task[task] = _values(sub)
    summary["by_task"] = by_task
    if model_metrics:
        from evaluation.model_metrics import clinical_metrics

        clinical = clinical_metrics(refs, list(answers), n_boot=n_boot, seed=seed)
        summary.update(clinical)
        for key in ("bertscore_f1", "radgraph_f1"):
            if "value" in clinical[key]:
                headline[f"report/{key}"] = clinical[key]
        chex = clinical["chexbert"]
        for key in ("micro_f1_14", "macro_f1_14", "micro_f1_5", "macro_f1_5"):
            if key in chex:
                headline[f"report/chexbert_{key}"] = M.headline_entry(chex[key], (None, None), chex["n"])
    else:
        note = {"status": "skipped", "reason": "disabled (--no-model-metrics)"}
        summary.update({"bertscore_f1": note, "radgraph_f1": note, "chexbert": note})
    summary["_per_rouge"] = per.get("rouge_l", np.zeros(len(recs))).tolist()
    return summary


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


def _values(summary: dict) -> dict:
    return {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in summary.items()}


def _ratio_of_sums(rows: np.ndarray) -> float | None:
    total = rows[:, 1].sum()
    return float(rows[:, 0].sum() / total) if total else None


def _count(items) -> dict:
    out: dict = defaultdict(int)
    for x in items:
        out[x] += 1
    return dict(out)
