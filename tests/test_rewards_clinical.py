"""rewards.clinical: the report_labels reward - hand-checked agreements, the tasks it skips, what it does not pay.

Every expected value below was worked out by hand from the labeler's rules (rewards/report_labels.py
docstring): R and H are the observations the reference and the answer state as positive, and the
score is 2|H & R| / (|H| + |R|).
"""

from __future__ import annotations

import pickle

import pytest

from rewards import GROUNDED_SET, PAPER_SET, REWARD_SETS, clinical, get_reward_funcs
from rewards.clinical import report_labels

# R = {Pleural Effusion, Cardiomegaly}; the pneumothorax is negated, No Finding is None (there are findings)
REF = "There is a small left pleural effusion. Mild cardiomegaly. No pneumothorax."
NORMAL_REF = (
    "The lungs are clear. Heart size is normal. No pleural effusion or pneumothorax."  # R = {No Finding}
)
EVERY_FINDING = (
    "atelectasis, cardiomegaly, consolidation, edema, enlarged mediastinum, fracture, nodule, opacity, "
    "pleural effusion, pleural thickening, pneumonia, pneumothorax, catheter"
)  # the 13 observations other than No Finding, one mention each


def comp(answer: str, think: str = "The heart and the left costophrenic angle were reviewed.") -> str:
    return f"<think> {think} </think> The report is: \\boxed{{{answer}}}"


def score(completions, solutions=REF, tasks="report_findings", **cols):
    n = len(completions)
    return report_labels(completions, solution=[solutions] * n, task=[tasks] * n, **cols)


def test_same_findings_in_other_words_score_one():
    # "The heart is enlarged" is Cardiomegaly (a closed statement): H = {PE, CM} = R
    assert score([comp("The heart is enlarged. Small left pleural effusion. No pneumothorax.")]) == [1.0]
    assert score([comp(REF)]) == [1.0]


def test_negated_effusion_scores_two_thirds():
    # H = {Cardiomegaly}: PE and PTX negated. 2 * 1 / (1 + 2) = 2/3
    out = score([comp("The heart is enlarged. No pleural effusion. No pneumothorax.")])
    assert out == [pytest.approx(2 / 3)]


def test_a_missed_finding_costs_as_much_as_a_wrong_one():
    # H = {Cardiomegaly, Pneumothorax}: 2 * 1 / (2 + 2) = 1/2
    out = score([comp("The heart is enlarged. Small left pneumothorax. No pleural effusion.")])
    assert out == [pytest.approx(1 / 2)]


def test_uncertain_counts_as_positive(monkeypatch):
    hedged = comp("The heart is enlarged. Possible small left pleural effusion.")  # PE is -1
    assert score([hedged]) == [1.0]  # H = {CM, PE}
    # the module constant is what the reward reads: uncertain as negative -> H = {CM}, 2/3
    monkeypatch.setattr(clinical, "UNCERTAIN", "negative")
    assert score([hedged]) == [pytest.approx(2 / 3)]


def test_normal_reports_agree_and_a_finding_does_not():
    out = score(
        [comp("No acute cardiopulmonary process."), comp("Small right pleural effusion.")],
        solutions=NORMAL_REF,
        tasks="report_impression",
    )
    assert out == [1.0, 0.0]  # H = {No Finding} = R; H = {PE} vs R = {No Finding}


def test_non_report_tasks_are_none():
    completions = [comp(REF)] * 4
    out = report_labels(
        completions,
        solution=[REF, "yes", "Cardiomegaly | Pleural Effusion", "[10, 20, 100, 200]"],
        task=["report_findings", "vqa", "classification", "grounding"],
    )
    assert out == [1.0, None, None, None]


@pytest.mark.parametrize(
    "text",
    [
        "There is a small left pleural effusion. Mild cardiomegaly.",  # no think block, no box
        "<think> Small left pleural effusion, mild cardiomegaly. </think> " + REF,  # no box after the think
        f"<think> \\boxed{{{REF}}} </think> The report follows.",  # the report left in the reasoning
        comp(REF) + " \\boxed{No pneumothorax.}",  # two boxed answers
        f"<think> The left costophrenic angle is blunted. \\boxed{{{REF}}}",  # think never closes: truncated
        f"<think> reviewed </think> \\boxed{{{REF}",  # box never closes
        comp("   "),  # empty answer
    ],
)
def test_no_parseable_answer_scores_zero(text):
    assert score([text]) == [0.0]


def test_listing_hedging_or_negating_everything_does_not_pay():
    # H = the 13 findings; R = {PE, CM}: 2 * 2 / (13 + 2) = 4/15
    assert score([comp(EVERY_FINDING + ".")]) == [pytest.approx(4 / 15)]
    assert score([comp("Possible " + EVERY_FINDING + ".")]) == [pytest.approx(4 / 15)]
    # every finding negated: H = {No Finding} against R = {PE, CM}
    assert score([comp("No " + EVERY_FINDING + ".")]) == [0.0]


def test_conversational_completions_as_trl_passes_them():
    text = comp("The heart is enlarged. No pleural effusion. No pneumothorax.")
    plain = score([text, comp(REF)])
    assert plain == [pytest.approx(2 / 3), 1.0]
    messages = [[{"role": "assistant", "content": t}] for t in (text, comp(REF))]
    parts = [[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t in (text, comp(REF))]
    assert score(messages) == plain
    assert score(parts) == plain


def test_through_the_registry_with_trl_keywords():
    (f,) = get_reward_funcs(["report_labels"])
    assert f is report_labels and f.__name__ == "report_labels"  # TRL logs rewards/report_labels/mean
    assert pickle.loads(pickle.dumps(f)) is f
    out = f(
        prompts=[[{"role": "user", "content": "Write the findings."}]] * 2,
        completions=[[{"role": "assistant", "content": comp(REF)}]] * 2,
        completion_ids=[[1, 2, 3]] * 2,
        trainer_state=object(),
        log_extra=lambda column, values: None,
        log_metric=lambda name, value: None,
        image=["img.png"] * 2,
        answer=[REF, "no"],  # the alias of solution
        task=["report_findings", "vqa"],
        boxes=[[], []],
        width=[448, 448],
        height=[504, 504],
    )
    assert out == [1.0, None]


def test_in_no_default_set():
    assert all("report_labels" not in s for s in REWARD_SETS.values())
    assert "report_labels" not in PAPER_SET and "report_labels" not in GROUNDED_SET


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="report_labels.*'solution'"):
        report_labels([comp(REF)], task=["report_findings"])
    # without task no row could be told a report: an error, not a reward that silently scores nothing
    with pytest.raises(ValueError, match="report_labels.*'task'"):
        report_labels([comp(REF)], solution=[REF])
