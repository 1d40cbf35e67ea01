"""Paper mode: the released DeepMedix-R1 reward, reproduced exactly (see rewards/paper.py).

Three layers of evidence:
1. a golden table of hand-checked cases (arithmetic in the comments),
2. equality with a slow, literal re-statement of the released scoring (``oracle_score`` below,
   built on nltk, rouge_score and ``re`` exactly as the release calls them) on a realistic
   corpus and on random text,
3. the TRL functions with weights [0.9, 0.1, 1.0] add up to ``overall``.
"""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.rewards import make_corpus
from rewards import get_reward_funcs
from rewards.paper import PAPER_FORMAT_RE, format_score, score
from rewards.parsing import PAPER_WS_RE, normalize_paper, paper_boxed_answer

# ---------------------------------------------------------------------------------------------
# The oracle: the released scoring re-stated literally (slow on purpose), from paper-notes.md
# ---------------------------------------------------------------------------------------------


def _oracle_extract(text: str) -> str:
    """Last '\\boxed{', content to the matching brace, stripped; "None" when absent or unclosed."""
    pos = text.rfind("\\boxed{")
    if pos == -1:
        return "None"
    content = text[pos + len("\\boxed{") :]
    level = 0
    for k, ch in enumerate(content):
        if ch == "{":
            level += 1
        elif ch == "}":
            level -= 1
        if level == -1:
            return content[:k].strip()
    return "None"


def _oracle_answer(text: str, gt: str) -> float:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_score import rouge_scorer

    ans = _oracle_extract(text)
    if ans == "":
        ans = " "
    if "|" in gt and len(gt.strip().split()) <= 20:
        truth = [x.strip().lower() for x in gt.strip().split("|")]
        guess = [x.strip().lower() for x in ans.strip().split("|")]
        both = set(truth) & set(guess)
        p = len(both) / len(guess) if guess else 0
        r = len(both) / len(truth) if truth else 0
        return (2 * p * r / (p + r) if p + r > 0 else 0) * 1.5
    if len(gt.strip().split()) <= 2:
        return 1.5 if ans.lower() == gt.lower() else 0.0
    smooth = SmoothingFunction().method2
    b1 = sentence_bleu([gt], ans, weights=(1, 0, 0, 0), smoothing_function=smooth)
    b4 = sentence_bleu([gt], ans, weights=(0.25, 0.25, 0.25, 0.25), smoothing_function=smooth)
    r1 = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True).score(ans, gt)["rouge1"].fmeasure
    return (b1 + b4 + r1) / 3 * 1.5


def _oracle_coordinate(text: str) -> float:
    blocks = re.findall(r"<think>(.*?)</think>", text, re.DOTALL)
    if not blocks:
        return 0.0
    value = 0.0
    for item in re.findall(r"\[([-+]?\d*\.?\d+(?:,\s*[-+]?\d*\.?\d+){3})\]", blocks[0]):
        nums = [float(v.strip()) for v in item.split(",")]
        value += -0.2 if max(nums) > 512 else 0.05
    return 0.15 if value > 0.15 else value


def oracle_score(completion: str, gt: str) -> dict:
    text = re.sub(r"\s*(<|>|/)\s*", r"\1", completion)
    fmt = 1.0 if re.fullmatch(re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL), text) else 0.0
    ans = _oracle_answer(text, gt)
    coord = _oracle_coordinate(text)
    return {"overall": (1 - 0.1) * ans + 0.1 * fmt + coord, "answer": ans, "format": fmt, "coordinate": coord}


# ---------------------------------------------------------------------------------------------
# 1. Golden table
# ---------------------------------------------------------------------------------------------

T = "<think> heart [10, 20, 100, 200] lungs [300,310,400,450] </think>. The answer is: "
BP_16_5 = math.exp(1 - 16 / 5)  # brevity penalty of a 5-character answer against a 16-character truth

GOLDEN = [
    # (id, completion, ground truth, answer, format, coordinate)
    # list: both sides split on "|", stripped, lowercased -> {cardiomegaly, effusion} twice: F1 1 -> 1.5.
    # two boxes <= 512 in the think block: 0.05 + 0.05 = 0.1.
    ("list_exact", T + "\\boxed{Cardiomegaly | effusion}", "cardiomegaly | Effusion", 1.5, 1.0, 0.1),
    # list F1 uses list lengths: pred [a, a] -> P = |{a}| / 2 = 0.5, R = 1/2 -> F1 0.5 -> 0.75.
    ("list_duplicates", T + "\\boxed{a | a}", "a | b", 0.75, 1.0, 0.1),
    # list: pred [a, b, c] vs gt [a, b]: P = 2/3, R = 1 -> F1 = 2*(2/3)/(5/3) = 0.8 -> 1.2.
    ("list_extra", T + "\\boxed{a|b|c}", "a | b", 1.2, 1.0, 0.1),
    # short (<= 2 tokens): case-insensitive equality -> 1.5.
    ("short_case", "<think>x</think>\\boxed{Yes}", "yes", 1.5, 1.0, 0.0),
    # short: no stripping of the truth: "yes" != "yes " -> 0.
    ("short_gt_not_stripped", "<think>x</think>\\boxed{yes}", "yes ", 0.0, 1.0, 0.0),
    # no \boxed at all: the answer is the literal "None", which equals the truth "none" -> 1.5; format 0.
    ("none_literal", "<think>no box here</think> none", "none", 1.5, 0.0, 0.0),
    # empty box -> answer " " != "no" -> 0 (format still 1: \boxed\{.*\} allows empty).
    ("empty_box", "<think>x</think>\\boxed{}", "no", 0.0, 1.0, 0.0),
    # the LAST \boxed{ never closes -> "None", even though an earlier box was complete -> 0.
    ("last_box_unclosed", "<think>x</think>\\boxed{yes} or \\boxed{no", "yes", 0.0, 1.0, 0.0),
    # the last box wins.
    ("last_box_wins", "<think>x</think>\\boxed{no} \\boxed{yes}", "yes", 1.5, 1.0, 0.0),
    # nested: rfind lands on the inner box -> "b".
    ("nested_box", "<think>x</think>\\boxed{a \\boxed{b}}", "b", 1.5, 1.0, 0.0),
    # normalisation: "< think >" -> "<think>", "< / think >" -> "</think>", leading space removed -> format 1;
    # the boxed "L / R" becomes "L/R" and equals the (1-token) truth "l/r" case-insensitively.
    ("normalised_tags", "  < think > x [1, 2, 3, 4] < / think > \\boxed{L / R}", "l/r", 1.5, 1.0, 0.05),
    # format needs <think> at the very start: any preamble -> 0 (coordinate still reads the block).
    ("preamble", "Sure. <think>x [1,2,3,4]</think>\\boxed{yes}", "yes", 1.5, 0.0, 0.05),
    # coordinate: four good boxes 0.05 * 4 = 0.2 -> capped 0.15.
    ("cap", "<think>[1,2,3,4] [1,2,3,4] [1,2,3,4] [1,2,3,4]</think>\\boxed{yes}", "yes", 1.5, 1.0, 0.15),
    # one box above 512 first: -0.2 + 0.05 + 0.05 + 0.05 = -0.05 (floating point, in that order).
    (
        "one_bad",
        "<think>[0,0,600,10] [1,2,3,4] [1,2,3,4] [1,2,3,4]</think>\\boxed{yes}",
        "yes",
        1.5,
        1.0,
        -0.2 + 0.05 + 0.05 + 0.05,
    ),
    # no floor: six bad boxes -> six times -0.2.
    (
        "no_floor",
        "<think>" + "[0, 0, 513, 1] " * 6 + "</think>\\boxed{yes}",
        "yes",
        1.5,
        1.0,
        sum([-0.2] * 6),
    ),
    # no geometry check: inverted and negative boxes pay like good ones.
    ("no_geometry", "<think>[300, 300, 10, 10] [-5, 0, 0, 0]</think>\\boxed{yes}", "yes", 1.5, 1.0, 0.1),
    # the paper box regex allows whitespace only after commas: "[10 , 20, 30, 40]" is not a box.
    ("space_before_comma", "<think>[10 , 20, 30, 40]</think>\\boxed{yes}", "yes", 1.5, 1.0, 0.0),
    # only the FIRST think block counts; boxes after it earn nothing.
    (
        "first_think_only",
        "<think>a</think><think>[1,2,3,4]</think>\\boxed{yes} [5,6,7,8]",
        "yes",
        1.5,
        1.0,
        0.0,
    ),
    # long (3 tokens): identical -> BLEU-1 = BLEU-4 = 1 (bp = exp(1 - 16/16) = 1), ROUGE-1 = 1 -> 3/3 * 1.5.
    ("long_exact", "<think>x</think>\\boxed{no acute disease}", "no acute disease", 1.5, 1.0, 0.0),
    # long, by hand: hyp "acute" (5 chars) vs ref "no acute disease" (16 chars).
    # Character n-grams of "acute" all occur in the ref: p1 = 5/5; smoothed p2 = (4+1)/(4+1), p3 = 4/4, p4 = 3/3.
    # bp = exp(1 - 16/5) = exp(-2.2) ~ 0.1108 -> BLEU-1 = BLEU-4 = bp.
    # ROUGE-1 (stemmed words): {acut} vs {no, acut, diseas}: P = 1, R = 1/3 -> F = 0.5.
    # answer = (bp + bp + 0.5) / 3 * 1.5 ~ 0.3608.
    (
        "long_by_hand",
        "<think>x</think>\\boxed{acute}",
        "no acute disease",
        (2 * BP_16_5 + 0.5) / 3 * 1.5,
        1.0,
        0.0,
    ),
    # long, nothing in common at character level -> BLEU 0 (m1 = 0), ROUGE 0 -> 0.
    ("long_disjoint", "<think>x</think>\\boxed{zzz}", "no acute disease", 0.0, 1.0, 0.0),
]


@pytest.mark.parametrize("case", GOLDEN, ids=[c[0] for c in GOLDEN])
def test_golden(case):
    _, completion, gt, answer, fmt, coord = case
    s = score(completion, gt)
    assert s["answer"] == pytest.approx(answer, abs=1e-12)
    assert s["format"] == fmt
    assert s["coordinate"] == pytest.approx(coord, abs=1e-12)
    assert s["overall"] == pytest.approx(0.9 * answer + 0.1 * fmt + coord, abs=1e-12)
    assert s == oracle_score(completion, gt)  # and bit-for-bit the literal re-statement


def test_three_boxes_hit_the_cap_exactly():
    # 0.05 + 0.05 + 0.05 = 0.15000000000000002 > 0.15, so the cap applies and gives exactly 0.15.
    assert 0.05 + 0.05 + 0.05 > 0.15
    assert score("<think>[1,2,3,4] [1,2,3,4] [1,2,3,4]</think>\\boxed{x}", "x")["coordinate"] == 0.15


def test_maximum_overall_is_1_6():
    # 0.9 * 1.5 + 0.1 * 1 + 0.15 = 1.35 + 0.1 + 0.15 = 1.6
    best = score("<think>[1,2,3,4] [1,2,3,4] [1,2,3,4]</think>\\boxed{yes}", "yes")
    assert best["overall"] == pytest.approx(1.6)


# ---------------------------------------------------------------------------------------------
# 2. Equality with the literal re-statement
# ---------------------------------------------------------------------------------------------


def test_equals_oracle_on_realistic_corpus():
    rows = make_corpus(320, seed=7, group=4)
    for r in rows:
        assert score(r["completion"], r["solution"]) == oracle_score(r["completion"], r["solution"]), r


_PIECES = st.sampled_from(
    [
        "<think>",
        "</think>",
        "< think >",
        "< / think >",
        "\\boxed{",
        "}",
        "{",
        " | ",
        "|",
        " / ",
        "[1, 2, 3, 4]",
        "[10,600,20,30]",
        "[1 ,2,3,4]",
        "no",
        "Yes",
        "acute",
        " disease",
        " effusion",
        " ",
        "\n",
        "\t",
        "\xa0",
        ". The answer is: ",
        "é",
    ]
)
_TEXT = st.lists(_PIECES, max_size=14).map("".join)
_GT = st.sampled_from(
    ["yes", "No", "none", "a | b", "effusion | edema | atelectasis", "no acute disease", "l/r"]
)


@settings(max_examples=250, deadline=None)
@given(_TEXT, _GT)
def test_equals_oracle_on_random_text(completion, gt):
    assert score(completion, gt) == oracle_score(completion, gt)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=" \t\n\x1c\xa0\u2003<>/ab\\{}", max_size=30))
def test_fast_paths_equal_the_released_regexes(text):
    assert normalize_paper(text) == PAPER_WS_RE.sub(r"\1", text)
    assert format_score(text) == (1.0 if PAPER_FORMAT_RE.fullmatch(text) else 0.0)
    assert paper_boxed_answer(text) == _oracle_extract(text)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_format_fast_path_on_tag_soup(text):
    t = normalize_paper(text)
    assert format_score(t) == (1.0 if PAPER_FORMAT_RE.fullmatch(t) else 0.0)


# ---------------------------------------------------------------------------------------------
# 3. As TRL reward functions
# ---------------------------------------------------------------------------------------------


def test_trl_functions_sum_to_overall():
    funcs = get_reward_funcs(["paper_answer", "paper_format", "paper_coordinate"])
    weights = [0.9, 0.1, 1.0]
    rows = make_corpus(64, seed=3)
    completions = [r["completion"] for r in rows]
    solutions = [r["solution"] for r in rows]
    per_func = [f(completions, solution=solutions, prompts=None, completion_ids=None) for f in funcs]
    for i, (c, gt) in enumerate(zip(completions, solutions)):
        total = sum(w * vals[i] for w, vals in zip(weights, per_func))
        assert total == pytest.approx(score(c, gt)["overall"], abs=1e-12)


def test_conversational_completions():
    f = get_reward_funcs(["paper_answer"])[0]
    text = "<think>x</think>\\boxed{yes}"
    conv = [[{"role": "assistant", "content": text}]]
    blocks = [[{"role": "assistant", "content": [{"type": "text", "text": text}]}]]
    assert f(conv, solution=["yes"]) == f(blocks, solution=["yes"]) == f([text], solution=["yes"]) == [1.5]
