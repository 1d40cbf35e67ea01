"""rewards.parsing: the fast helpers keep the semantics other packages rely on."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.grounded import answer_score, format_score, make_answer_reward
from rewards.parsing import (
    THINK_RE,
    boxed_spans,
    completion_text,
    find_boxes,
    find_paper_boxes,
    format_box,
    grounded_answer,
    last_boxed,
    parse,
    think_block,
)


def _boxed_spans_by_chars(text):
    """The original character loop (kept here as the reference)."""
    out, i = [], 0
    while True:
        start = text.find("\\boxed{", i)
        if start < 0:
            return out
        j, depth = start + 7, 1
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:
            return out
        out.append((start, j, text[start + 7 : j - 1]))
        i = j


soup = st.lists(
    st.sampled_from(["<think>", "</think>", "\\boxed{", "{", "}", "a", " ", "[1, 2, 3, 4]", "\n"]),
    max_size=16,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(soup)
def test_fast_helpers_equal_the_reference(text):
    m = THINK_RE.search(text)
    assert think_block(text) == (m.group(1) if m else None)
    assert boxed_spans(text) == _boxed_spans_by_chars(text)
    spans = _boxed_spans_by_chars(text)
    assert last_boxed(text) == (spans[-1][2] if spans else None)


def test_helpers():
    assert (
        completion_text(
            [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"}]}]
        )
        == "a"
    )
    assert find_boxes("[1, 2,3 , 4.5] [1,2,3]") == [[1.0, 2.0, 3.0, 4.5]]
    assert find_paper_boxes("[1, 2,3 , 4.5] [1,2,3,4]") == [[1.0, 2.0, 3.0, 4.0]]
    assert format_box([1.4, 2.6, 3, 4]) == "[1, 3, 3, 4]"


def test_grounded_answer():
    assert grounded_answer("<think> a </think> \\boxed{ yes }") == "yes"
    assert grounded_answer("\\boxed{yes}") == "yes"  # no think block: the whole text
    assert grounded_answer("<think> \\boxed{yes} </think>") is None  # only inside the reasoning
    assert grounded_answer("<think> a \\boxed{yes}") is None  # unclosed think
    assert grounded_answer("<think> a </think> \\boxed{yes") is None  # unclosed box
    assert grounded_answer("<think> a </think> \\boxed{yes} \\boxed{no}") is None  # several
    assert grounded_answer("<think> a </think> \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"


def test_parse_is_cached_and_complete():
    text = "<think> heart [1, 2, 30, 40] </think>. The answer is: \\boxed{yes}"
    p = parse(text)
    assert p is parse(text)
    assert p.think == " heart [1, 2, 30, 40] "
    assert p.think_boxes == ((1.0, 2.0, 30.0, 40.0),)
    assert (p.n_open, p.n_close, p.n_boxed, p.answer) == (1, 1, 1, "yes")


def test_configurable_report_mix():
    gt = "The heart size is normal. There is a small left pleural effusion."
    pred = "There is a small left pleural effusion. The heart size is normal."
    bleu_only = answer_score(pred, gt, "report_findings", {"bleu4": 1.0})
    rouge_only = answer_score(pred, gt, "report_findings", {"rouge_l": 1.0})
    assert bleu_only != rouge_only
    assert answer_score(pred, gt, "report_findings") == 0.5 * bleu_only + 0.5 * rouge_only
    f = make_answer_reward({"rouge_l": 1.0}, name="answer_rouge_l")
    assert f.__name__ == "answer_rouge_l"
    text = f"<think> The heart looks normal here. </think> \\boxed{{{pred}}}"
    assert f([text], solution=[gt], task=["report_findings"]) == [rouge_only]
    assert format_score(text) == 1.0
