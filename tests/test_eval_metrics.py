"""Evaluation metrics against hand-computed values (no model, no Java except where marked)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import metrics as M
from evaluation import nlg
from evaluation.scoring import score_run


def rec(i, task, answer, boxes=(), meta=None, width=224, height=224, question="q?"):
    return {
        "id": f"r{i}",
        "source": "phantom",
        "task": task,
        "question": question,
        "answer": answer,
        "boxes": [{"label": lab, "box": list(b)} for lab, b in boxes],
        "image": "images/none.png",
        "width": width,
        "height": height,
        "patient_id": f"p{i}",
        "study_id": f"s{i}",
        "split": "test",
        "reasoning": None,
        "meta": meta,
    }


# ----------------------------------------------------------------------------- answers


def test_extract_answer_last_boxed_and_fallback():
    assert M.extract_answer("<think> a \\boxed{no} </think>. The answer is: \\boxed{yes}") == ("yes", "boxed")
    assert M.extract_answer("\\boxed{ a {b} }") == ("a {b}", "boxed")
    assert M.extract_answer("\\boxed{}") == ("", "boxed")
    # no box: raw text without the think block and the answer lead
    assert M.extract_answer("<think> heart [1, 2, 3, 4] </think>. The answer is: no") == ("no", "raw")
    assert M.extract_answer("") == ("", "raw")
    assert M.extract_answer("\\boxed{unclosed") == ("\\boxed{unclosed", "raw")


# ----------------------------------------------------------------------------- VQA


def test_normalisation_exact_match_and_token_f1():
    assert M.exact_match("Yes.", "yes") == 1.0
    assert M.exact_match("yes, there is", "yes") == 0.0
    # pred: "right upper zone" vs gold "right upper lung zone": common 3, P = 1, R = 3/4
    assert M.token_f1("right upper zone", "right upper lung zone") == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert M.token_f1("", "yes") == 0.0
    assert M.token_f1("", "") == 1.0
    assert M.list_f1("nodule | Pleural effusion", "pleural effusion | nodule") == 1.0
    assert M.list_f1("nodule", "pleural effusion | nodule") == pytest.approx(2 / 3)


def test_vqa_kinds_and_per_type_accuracy():
    recs = [
        rec(1, "vqa", "yes", meta={"question_type": "presence"}),
        rec(2, "vqa", "no", meta={"question_type": "presence"}),
        rec(3, "vqa", "right upper lung zone", meta={"question_type": "location"}),
        rec(4, "vqa", "pleural effusion | nodule", meta={"question_type": "abnormality"}),
        rec(
            5,
            "vqa",
            "a small right apical pneumothorax",
            meta={"question_type": "location", "answer_type": "closed"},
        ),
    ]
    assert [M.vqa_kind(r) for r in recs] == ["closed", "closed", "open", "list", "closed"]
    answers = ["Yes", "yes", "right upper zone", "nodule", "small right apical pneumothorax"]
    summary, scores = M.vqa_metrics(recs, answers)
    expected = [1.0, 0.0, 6 / 7, 2 / 3, 1.0]  # the last: articles are dropped by the normalisation
    assert scores.tolist() == pytest.approx(expected)
    assert summary["accuracy"] == pytest.approx(np.mean(expected))
    assert summary["by_question_type"]["presence"] == {"n": 2, "accuracy": 0.5}
    assert summary["by_question_type"]["location"]["accuracy"] == pytest.approx((6 / 7 + 1) / 2)
    assert summary["macro_accuracy_over_question_types"] == pytest.approx((0.5 + (6 / 7 + 1) / 2 + 2 / 3) / 3)
    assert summary["by_kind"]["closed"] == {"n": 3, "score": pytest.approx(2 / 3)}


# ----------------------------------------------------------------------------- classification


def test_per_label_micro_macro_f1():
    recs = [rec(i, "classification", a) for i, a in enumerate(["A | b", "a", "c", "b | c"])]
    answers = ["a", "a | B", "c | d", ""]
    s, _ = M.classification_metrics(recs, answers)
    # a: tp 2; b: tp 0 fp 1 fn 2; c: tp 1 fn 1; d: a false positive outside the gt labels
    assert s["per_label"]["A"]["f1"] == 1.0
    assert s["per_label"]["b"]["f1"] == 0.0
    assert s["per_label"]["c"]["f1"] == pytest.approx(2 / 3)
    assert s["per_label"]["c"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
        "predicted": 1,
    }
    assert s["micro_f1"] == pytest.approx(6 / 11)  # tp 3, fp 2, fn 3
    assert s["macro_f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert s["exact_match"] == 0.0
    assert s["predicted_labels_not_in_ground_truth"] == {"d": 1}


def test_classification_all_empty_predictions():
    recs = [rec(i, "classification", a) for i, a in enumerate(["a", "b | c"])]
    s, _ = M.classification_metrics(recs, ["", ""])
    assert s["micro_f1"] == 0.0 and s["macro_f1"] == 0.0 and s["micro_precision"] == 0.0


# ----------------------------------------------------------------------------- grounding
# (IoU and matching: tests/test_rewards_boxes.py)


def grounding(answers, gts, labels=None):
    recs = [
        rec(i, "grounding", "[0, 0, 1, 1]", boxes=[((labels or ["x"] * len(gts))[i], g) for g in gt])
        for i, gt in enumerate(gts)
    ]
    return M.grounding_metrics(recs, answers)[0]


def test_grounding_perfect_empty_and_partial():
    gt = [[[10, 10, 50, 50]]]
    perfect = grounding(["[10, 10, 50, 50]"], gt)
    assert perfect["map50"] == 1.0 and perfect["miou"] == 1.0 and perfect["acc50"] == 1.0
    empty = grounding([""], gt)
    assert empty["map50"] == 0.0 and empty["miou"] == 0.0 and empty["acc50"] == 0.0
    assert empty["precision50"] == 0.0 and empty["answer_has_box_rate"] == 0.0
    # IoU 0.4 < 0.5: not a hit for mAP/acc, but counts in mIoU
    low = grounding(["[10, 10, 26, 50]"], gt)
    assert low["miou"] == pytest.approx(0.4) and low["map50"] == 0.0 and low["acc50"] == 0.0


def test_grounding_map_per_class_and_duplicates():
    # class a: 2 gt, 1 correct prediction -> P 1, R 0.5, AP 0.5
    # class b: 1 gt, 2 identical predictions -> one-to-one: tp 1, P 0.5, R 1, AP 0.5
    s = grounding(
        ["[0, 0, 10, 10]", "[20, 20, 40, 40] [20, 20, 40, 40]"],
        [[[0, 0, 10, 10], [50, 50, 60, 60]], [[20, 20, 40, 40]]],
        labels=["a", "b"],
    )
    assert s["per_class"]["a"]["ap50"] == pytest.approx(0.5)
    assert s["per_class"]["b"]["ap50"] == pytest.approx(0.5)
    assert s["map50"] == pytest.approx(0.5)
    assert s["precision50"] == pytest.approx(2 / 3) and s["recall50"] == pytest.approx(2 / 3)
    assert s["miou"] == pytest.approx((0.5 + 1.0) / 2)
    # acc@0.5 looks at the first predicted box only
    first_wrong = grounding(["[90, 90, 99, 99] [0, 0, 10, 10]"], [[[0, 0, 10, 10]]])
    assert first_wrong["acc50"] == 0.0 and first_wrong["map50"] == pytest.approx(0.5)


def test_map_from_rows_absent_class_is_ignored():
    rows = np.array([[0, 1, 1, 1], [1, 0, 0, 0]], dtype=float)  # class 1 has no gt in this resample
    assert M.map_from_rows(rows, 2) == 1.0
    assert M.map_from_rows(np.zeros((0, 4)), 2) is None


# ----------------------------------------------------------------------------- reasoning
# (the format checks themselves: tests/test_rewards_parsing.py)


def test_reasoning_sample_reads_both_format_rules():
    r = rec(1, "vqa", "yes")
    two = M.reasoning_sample("<think> a </think> <think> b </think> \\boxed{y}", r)
    assert two["format"] is False and two["paper_format"] is True  # ours asks for exactly one block
    spaced = M.reasoning_sample(" < think > x </ think > \\boxed{y}", r)
    assert spaced["format"] is True and spaced["paper_format"] is True  # the released normalisation
    assert M.reasoning_sample(None, r)["format"] is False


def test_reasoning_boxes_validity_and_cited_iou():
    r = rec(1, "vqa", "yes", boxes=[("a", [0, 0, 10, 10]), ("b", [20, 20, 30, 30])], width=100, height=50)
    text = "<think> [0, 0, 10, 10] and [10, 10, 5, 20] and [0, 0, 101, 10] </think> \\boxed{yes} [1, 1, 2, 2]"
    s = M.reasoning_sample(text, r)
    assert s["n_boxes"] == 3 and s["n_valid"] == 1  # x0 > x1, and outside the 100 x 50 frame
    assert s["cited_iou"] == pytest.approx(0.5)  # gt a: 1.0, gt b: 0.0
    assert s["cited_hit50"] is True
    # one big box over both findings: best-match gives it to both, Hungarian to one only
    big = M.reasoning_sample("<think> [0, 0, 30, 30] </think> \\boxed{yes}", r)
    assert big["cited_iou"] == pytest.approx(100 / 900)
    assert big["cited_iou_hungarian"] == pytest.approx(100 / 900 / 2)
    assert big["cited_hit50"] is False
    # no citation with gt boxes -> 0; without gt boxes -> not counted
    assert M.reasoning_sample("<think> none </think> \\boxed{yes}", r)["cited_iou"] == 0.0
    assert M.reasoning_sample("<think> [0, 0, 1, 1] </think>", rec(2, "vqa", "no"))["cited_iou"] is None
    summary, _ = M.reasoning_metrics([s, big])
    assert summary["valid_box_rate"] == pytest.approx(2 / 4)
    assert summary["boxes_per_answer"] == 2.0
    assert summary["format_rate"] == 1.0


# ----------------------------------------------------------------------------- bootstrap


# ----------------------------------------------------------------------------- report text metrics


def test_bleu_by_hand_and_equal_to_pycocoevalcap():
    from pycocoevalcap.bleu.bleu import Bleu

    refs, hyps = ["the cat is on the mat"], ["the cat sat on the mat"]
    b = nlg.corpus_bleu(nlg.bleu_stats(refs, hyps))
    # 1-grams 5/6, 2-grams 3/5, 3-grams 1/4, 4-grams 0/3; same length, no brevity penalty
    assert b[0] == pytest.approx(5 / 6)
    assert b[1] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert b[2] == pytest.approx(0.5)
    assert b[3] < 1e-3
    refs = ["the heart is normal in size no effusion", "small left pleural effusion", "no pneumothorax"]
    hyps = ["heart size is normal no effusion", "left pleural effusion", ""]
    ours = nlg.corpus_bleu(nlg.bleu_stats(refs, hyps))
    theirs, _ = Bleu(4).compute_score(
        {i: [r] for i, r in enumerate(refs)}, {i: [h] for i, h in enumerate(hyps)}
    )
    assert ours == pytest.approx(theirs, rel=1e-9)
    # brevity penalty: a 3-word hypothesis for a 4-word reference
    short = nlg.corpus_bleu(nlg.bleu_stats(["a b c d"], ["a b c"]))
    assert short[0] == pytest.approx(math.exp(1 - 4 / 3))


def test_rouge_l_and_cider_small_examples():
    out, per, stats = nlg.report_metrics(
        ["the cat is on the mat", "the cat sat", "no effusion"],
        ["the cat sat on the mat", "the cat", ""],
        meteor=False,
        tokenized=(
            ["the cat is on the mat", "the cat sat", "no effusion"],
            ["the cat sat on the mat", "the cat", ""],
            "given",
        ),
    )
    # LCS 5 of 6/6 -> 5/6; LCS 2: P 1, R 2/3, beta 1.2 -> (1 + b^2) P R / (R + b^2 P)
    b2 = 1.2**2
    assert per["rouge_l"].tolist() == pytest.approx([5 / 6, (1 + b2) * (2 / 3) / (2 / 3 + b2), 0.0])
    assert out["rouge_l"] == pytest.approx(per["rouge_l"].mean()) == stats["rouge_l"].value()
    assert per["cider"][2] == 0.0 and out["cider"] > 0
    assert out["meteor"]["status"] == "skipped"


def test_simple_tokenizer_matches_ptb_style():
    assert nlg.simple_tokenize(["The heart, is NORMAL. No effusion!"]) == ["the heart is normal no effusion"]


@pytest.mark.skipif(not nlg.java_available(), reason="needs Java (pycocoevalcap's PTB tokenizer)")
def test_ptb_tokenizer_keeps_alignment_with_empty_texts():
    toks = nlg.ptb_tokenize(["The heart, is normal.", "", "Small L-sided effusion;\nno PTX."])
    assert toks[0] == "the heart is normal" and toks[1] == ""
    assert toks[2].startswith("small l-sided effusion") and toks[2].endswith("no ptx")


@pytest.mark.slow
@pytest.mark.skipif(not nlg.java_available(), reason="METEOR needs Java")
def test_meteor_identical_and_empty():
    score, per = nlg.meteor_scores(["the heart is normal", "no effusion"], ["the heart is normal", ""])
    assert per[0] > 0.9 and per[1] == 0.0 and 0 < score < 1


# ----------------------------------------------------------------------------- whole run


def mixed_records():
    return [
        rec(1, "report_findings", "The heart is normal in size. No effusion."),
        rec(2, "report_impression", "Small left pleural effusion."),
        rec(3, "vqa", "yes", meta={"question_type": "presence"}),
        rec(4, "vqa", "right upper lung zone", meta={"question_type": "location"}),
        rec(5, "classification", "cardiomegaly | pleural effusion"),
        rec(6, "grounding", "[10, 10, 50, 50]", boxes=[("nodule", [10, 10, 50, 50])]),
    ]


def test_score_run_good_predictions():
    completions = {
        "r1": "<think> heart [60, 80, 150, 160] </think>. The answer is: \\boxed{The heart is normal in size. No effusion.}",
        "r2": "<think> left base [120, 150, 200, 210] </think>. The answer is: \\boxed{Small left pleural effusion.}",
        "r3": "<think> [1, 1, 5, 5] </think>. The answer is: \\boxed{Yes}",
        "r4": "<think> apex [20, 20, 90, 80] </think>. The answer is: \\boxed{right upper lung zone}",
        "r5": "<think> heart [60, 80, 150, 160] </think>. The answer is: \\boxed{Pleural effusion | cardiomegaly}",
        "r6": "<think> nodule [10, 10, 50, 50] </think>. The answer is: \\boxed{[10, 10, 50, 50]}",
    }
    results, per, _ = score_run(
        mixed_records(), completions, reasoning=True, meteor=False, model_metrics=False, n_boot=100
    )
    h = results["headline"]
    assert h["report/rouge_l"]["value"] == pytest.approx(1.0)
    assert h["report/bleu4"]["value"] == pytest.approx(1.0)
    # the rule-based labels of the reports: the effusion of r2 found, nothing invented in r1
    assert h["report/labels_micro_f1_14"]["value"] == pytest.approx(1.0)
    assert h["report/labels_macro_f1_5"]["value"] == pytest.approx(1.0)
    for key in (
        "vqa/accuracy",
        "classification/micro_f1",
        "classification/macro_f1",
        "grounding/map50",
        "grounding/miou",
        "reasoning/format_rate",
        "reasoning/valid_box_rate",
        "reasoning/cited_box_iou",
        "answers/boxed_rate",
    ):
        assert h[key]["value"] == pytest.approx(1.0), key
    assert h["reasoning/boxes_per_answer"]["value"] == 1.0
    assert [p["score"] for p in per] == pytest.approx([1.0] * 6)
    assert results["n_missing_predictions"] == 0


def test_score_run_empty_and_missing_predictions():
    completions = {"r1": "", "r2": "", "r3": "", "r4": "", "r5": ""}  # r6 missing
    results, per, _ = score_run(
        mixed_records(), completions, reasoning=True, meteor=False, model_metrics=False, n_boot=50
    )
    h = results["headline"]
    assert results["n_missing_predictions"] == 1
    for key in (
        "report/rouge_l",
        "report/bleu1",
        "report/cider",
        "vqa/accuracy",
        "classification/micro_f1",
        "grounding/map50",
        "grounding/miou",
        "reasoning/format_rate",
        "reasoning/cited_box_iou",
        "answers/boxed_rate",
    ):
        assert h[key]["value"] == pytest.approx(0.0, abs=1e-6), key
    assert "reasoning/valid_box_rate" not in h  # no boxes cited at all: undefined, not 0
    assert h["report/labels_micro_f1_14"]["value"] == 0.0  # the reference's effusion missed
    assert results["reasoning"]["valid_box_rate"] is None
    assert all(p["answer"] == "" for p in per)


def test_score_run_without_reasoning_prompt():
    results, _, _ = score_run(
        mixed_records()[2:4],
        {"r3": "\\boxed{yes}", "r4": "\\boxed{left}"},
        reasoning=False,
        meteor=False,
        model_metrics=False,
        n_boot=10,
    )
    assert results["reasoning"] is None
    assert not any(k.startswith("reasoning/") for k in results["headline"])
    assert results["headline"]["vqa/accuracy"]["value"] == 0.5


def test_meteor_interval_brackets_the_corpus_score():
    # METEOR's corpus score is not the mean of its per-sample scores: the resampled per-sample mean is
    # shifted onto it, so the interval holds the corpus score with the per-sample mean's width.
    from evaluation import stats as S

    per = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    plain = S.mean_of(per, np.arange(6))
    shifted = S.mean_of(per, np.arange(6))
    shifted.offset = 0.62 - per.mean()
    codes = np.arange(6)
    lo, hi = S.interval(plain, codes, 500, seed=1)
    slo, shi = S.interval(shifted, codes, 500, seed=1)
    assert shifted.value() == pytest.approx(0.62)
    assert slo < 0.62 < shi
    assert (slo, shi) == pytest.approx((lo + shifted.offset, hi + shifted.offset))


def test_score_run_grounded_reward_mean_matches_the_training_reward():
    """reward/grounded = mean over records of answer + 0.2 format + 0.2 coordinate + 0.5 grounding."""
    records = [
        rec(1, "vqa", "yes", boxes=[("nodule", (10, 10, 50, 50))], width=112, height=112),
        rec(2, "vqa", "yes", boxes=[("nodule", (10, 10, 50, 50))], width=112, height=112),
        rec(3, "vqa", "no", width=112, height=112),  # no gt boxes on its image: grounding is left out
    ]
    for i, r in enumerate(records):
        r["image"] = f"images/{i}.png"
    completions = {
        # right answer, clean format, one valid box (1/3 of the coordinate cap), exact box: 1 + 0.2 + 0.2/3 + 0.5
        "r1": "<think> Asked: nodule. Nodule [10, 10, 50, 50]. So: seen. </think>. The answer is: \\boxed{yes}",
        # wrong answer, clean format, no box: 0 + 0.2 + 0 + 0.5 * 0
        "r2": "<think> Asked: nodule. Clear lungs. So: not seen. </think>. The answer is: \\boxed{no}",
        # right answer, no think block: format 0, coordinate 0, grounding None: 1
        "r3": "\\boxed{no}",
    }
    results, per, _ = score_run(
        records, completions, reasoning=True, meteor=False, model_metrics=False, n_boot=50
    )
    expected = [1 + 0.2 + 0.2 / 3 + 0.5, 0.2, 1.0]
    assert [p["grounded_reward"]["total"] for p in per] == pytest.approx(expected)
    assert per[2]["grounded_reward"]["grounding"] is None
    entry = results["headline"]["reward/grounded"]
    assert entry["value"] == pytest.approx(np.mean(expected))
    assert entry["ci_low"] <= entry["value"] <= entry["ci_high"]
    assert results["reward"]["terms"]["grounding"] == pytest.approx(0.5)  # mean of 1 and 0; None left out


def test_grounded_reward_checks_cited_boxes_against_every_box_of_the_image():
    """A question about one finding: citing the image's other true finding is right, not an extra box."""
    records = [
        rec(1, "vqa", "yes", boxes=[("nodule", (10, 10, 30, 30))], width=112, height=112),
        rec(2, "vqa", "yes", boxes=[("effusion", (60, 60, 100, 100))], width=112, height=112),
    ]  # both records ask about the same image (rec() gives them one image path)
    text = "<think> Nodule [10, 10, 30, 30]. Effusion [60, 60, 100, 100]. So: seen. </think>. The answer is: \\boxed{yes}"
    _, per, _ = score_run(
        records, {"r1": text, "r2": text}, True, meteor=False, model_metrics=False, n_boot=10
    )
    assert [p["grounded_reward"]["grounding"] for p in per] == pytest.approx([1.0, 1.0])
    alone = {"images/none.png": [{"label": "nodule", "box": [10.0, 10.0, 30.0, 30.0]}]}
    _, per, _ = score_run(
        records[:1], {"r1": text}, True, meteor=False, model_metrics=False, n_boot=10, boxes_of_image=alone
    )
    assert per[0]["grounded_reward"]["grounding"] == pytest.approx(
        2 / 3
    )  # soft F1: 1 of 2 cited, 1 of 1 true


def test_cited_precision_iou_counts_every_finding_of_the_image():
    """Two questions on one image, one finding each. Citing both true findings is precise (1.0) against
    the image's findings, as the grounded reward judges it; against the record's own box only, the
    other finding looks like a wrong box (0.5), kept as cited_precision_iou_record."""
    records = [
        rec(1, "vqa", "yes", boxes=[("nodule", (10, 10, 30, 30))], width=112, height=112),
        rec(2, "vqa", "yes", boxes=[("effusion", (60, 60, 100, 100))], width=112, height=112),
    ]
    both = (
        "<think> Nodule [10, 10, 30, 30]; effusion [60, 60, 100, 100]. </think>. The answer is: \\boxed{yes}"
    )
    results, _, _ = score_run(
        records, {"r1": both, "r2": both}, reasoning=True, meteor=False, model_metrics=False, n_boot=50
    )
    assert results["reasoning"]["cited_precision_iou"] == pytest.approx(1.0)
    assert results["reasoning"]["cited_precision_iou_record"] == pytest.approx(0.5)
    sample = M.reasoning_sample(both, records[0])  # no image findings given: the record's own boxes
    assert sample["cited_precision_iou"] == sample["cited_precision_iou_record"] == pytest.approx(0.5)
