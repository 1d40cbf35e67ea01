"""rewards.parsing: the fast helpers keep the semantics other packages rely on."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rewards.grounded import answer_score, format_score, make_answer_reward
from rewards.paper import format_score as paper_format_score
from rewards.parsing import (
    THINK_RE,
    answer_items,
    boxed_spans,
    completion_text,
    eval_format_ok,
    eval_normalize,
    find_boxes,
    find_paper_boxes,
    format_box,
    grounded_answer,
    label_key,
    last_boxed,
    normalize_answer,
    normalize_paper,
    parse,
    strip_think,
    think_block,
)


def _boxed_spans_by_chars(text):
    """A plain character loop: the reference the fast helper must equal."""
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


def test_strip_think():
    assert strip_think("<think> a\nb </think>yes<think>c</think>.") == "yes."
    assert strip_think("<think>a</think>yes", " ") == " yes"
    assert strip_think("<think> never closed") == "<think> never closed"


def test_answer_normalisers_differ_on_purpose():
    # Both: lower case, punctuation to spaces, articles dropped, whitespace collapsed.
    assert eval_normalize("  The Right-Upper  lung. ") == "right upper lung"
    assert normalize_answer("  The Right-Upper  lung. ") == "right upper lung"
    # The reward maps yes/no synonyms; the evaluation's exact match does not.
    assert normalize_answer("Present.") == "yes" and eval_normalize("Present.") == "present"
    # The evaluation counts "_" as punctuation (SQuAD); the reward keeps it inside a word.
    assert eval_normalize("pleural_effusion") == "pleural effusion"
    assert normalize_answer("pleural_effusion") == "pleural_effusion"
    assert eval_normalize(None) == ""


def test_label_items():
    assert label_key("  Nodule/Mass ") == "nodule/mass"  # labels keep their punctuation
    assert answer_items("A | b |  | Nodule/Mass", label_key) == {"a", "b", "nodule/mass"}
    assert answer_items("The nodule | a | yes", normalize_answer) == {"nodule", "yes"}  # "a" normalises to ""
    assert answer_items(None, eval_normalize) == set()


def _paper_format_ok(text):
    return paper_format_score(normalize_paper(text)) == 1.0


def test_format_rules():
    """The evaluation's format rule against the released one (the strict reward has its own tests)."""
    good = "<think> heart [1, 2, 3, 4] </think>. The answer is: \\boxed{yes}"
    assert eval_format_ok(good) and _paper_format_ok(good)
    assert eval_format_ok(" < think > x </ think > \\boxed{y}")  # the released normalisation
    assert not eval_format_ok("no think at all \\boxed{y}")
    two = "<think> a </think> <think> b </think> \\boxed{y}"
    assert not eval_format_ok(two) and _paper_format_ok(two)  # ours asks for exactly one block
    assert not eval_format_ok("<think> \\boxed{y} </think>") and not _paper_format_ok(
        "<think> \\boxed{y} </think>"
    )
    assert not eval_format_ok("text first <think> a </think> \\boxed{y}")
    assert not eval_format_ok("") and not eval_format_ok(None)
