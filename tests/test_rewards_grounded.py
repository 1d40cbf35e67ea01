"""Grounded mode: unit cases, hypothesis properties, and the known reward hacks (each earns nothing extra)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.rewards import make_corpus
from rewards import GROUNDED_SET, get_reward_funcs
from rewards.boxes import iou, soft_f1
from rewards.grounded import (
    MAX_BOXES,
    answer_kind,
    answer_score,
    coordinate_score,
    format_score,
    grounding_score,
)
from rewards.parsing import normalize_answer

W, H = 448, 504  # a model frame (multiples of 28)
GOOD = [[40, 60, 200, 220], [250, 80, 400, 300], [100, 300, 220, 480]]
GT = [{"label": "effusion", "box": b} for b in GOOD]


def fmt_box(b) -> str:
    return "[" + ", ".join(str(v) for v in b) + "]"


def think_with(boxes, words="The finding is seen at") -> str:
    return " ".join(f"{words} {fmt_box(b)}." for b in boxes) or "The lungs are clear and the heart is normal."


def comp(think: str, answer: str, lead: str = ". The answer is: ") -> str:
    return f"<think> {think} </think>{lead}\\boxed{{{answer}}}"


def run(name: str, completions, **cols):
    n = len(completions)
    defaults = {
        "solution": ["yes"] * n,
        "task": ["vqa"] * n,
        "boxes": [[]] * n,
        "width": [W] * n,
        "height": [H] * n,
    }
    defaults.update(cols)
    return get_reward_funcs([name])[0](completions, **defaults)


def total(completion: str, solution: str = "yes", task: str = "vqa", boxes=None) -> float:
    """The grounded recipe's weighted reward (None counts as 0, like TRL's nansum)."""
    out = 0.0
    for name, w in GROUNDED_SET.items():
        v = run(name, [completion], solution=[solution], task=[task], boxes=[boxes or []])[0]
        out += w * (v or 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# answer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, gt, task, expected",
    [
        ("Yes.", "yes", "vqa", 1.0),
        ("present", "yes", "vqa", 1.0),
        ("TRUE", "yes", "vqa", 1.0),
        ("absent", "no", "vqa", 1.0),
        ("no", "yes", "vqa", 0.0),
        ("The left lower lobe", "left lower lobe", "vqa", 1.0),
        ("right lower lobe", "left lower lobe", "vqa", 0.0),
        ("effusion | Edema", "edema | effusion", "vqa", 1.0),
        ("edema | effusion | nodule", "edema | effusion", "vqa", 0.8),  # set F1: P 2/3, R 1 -> 0.8
        ("No finding.", "no finding", "classification", 1.0),
        ("cardiomegaly", "cardiomegaly | effusion", "classification", 2 / 3),  # P 1, R 1/2
        ("[0, 0, 100, 100]", "[0, 0, 100, 100]", "grounding", 1.0),
        ("[50, 0, 150, 100]", "[0, 0, 100, 100]", "grounding", 1 / 3),  # IoU 5000 / 15000
        ("", "yes", "vqa", 0.0),
        (None, "yes", "vqa", 0.0),
    ],
)
def test_answer_cases(pred, gt, task, expected):
    assert answer_score(pred, gt, task) == pytest.approx(expected)


def test_answer_kinds():
    assert answer_kind("yes", "vqa") == "short"
    assert answer_kind("a | b", "vqa") == "list"
    assert answer_kind("cardiomegaly", "classification") == "list"
    assert answer_kind("No acute process.", "report_impression") == "text"
    assert answer_kind("one two three four five six seven eight nine ten", "vqa") == "text"
    assert answer_kind("[1, 2, 30, 40]", "grounding") == "box"
    assert answer_kind("[1, 2, 30, 40]", None) == "box"
    assert normalize_answer("  The  Heart, enlarged! ") == "heart enlarged"


def test_report_answer_is_word_level_and_ordered():
    gt = "The heart size is normal. There is a small left pleural effusion. No pneumothorax is identified."
    same = answer_score(gt, gt, "report_findings")
    partial = answer_score("The heart size is normal. No pneumothorax is identified.", gt, "report_findings")
    shuffled_chars = answer_score("".join(sorted(gt)), gt, "report_findings")
    unrelated = answer_score("Degenerative changes of the spine.", gt, "report_findings")
    assert same == 1.0
    assert 0.3 < partial < 1.0
    assert shuffled_chars == 0.0  # characters in common earn nothing at word level (unlike paper BLEU)
    assert unrelated < partial


def test_answer_reward_reads_the_boxed_answer_after_the_think():
    c = comp(think_with(GOOD[:1]), "yes")
    assert run("answer", [c]) == [1.0]
    # the answer column is accepted when there is no solution column
    assert get_reward_funcs(["answer"])[0]([c], answer=["yes"]) == [1.0]


# ---------------------------------------------------------------------------------------------
# format
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (comp("The heart is enlarged at [1, 2, 30, 40].", "yes"), 1.0),
        ("\n  " + comp("The heart is enlarged.", "yes"), 1.0),  # leading whitespace allowed
        (comp("The heart is enlarged.", "yes", lead="\n"), 1.0),
        (comp("The heart is enlarged.", "yes") + ".", 1.0),  # trailing punctuation
        (comp("The heart is enlarged.", "yes", lead=""), 1.0),
        ("Sure! " + comp("The heart is enlarged.", "yes"), 0.0),  # preamble
        ("The heart is enlarged. \\boxed{yes}", 0.0),  # no think
        (comp("", "yes"), 0.0),  # empty think
        (comp("yes", "yes"), 0.0),  # too short to be reasoning
        (comp("The heart is enlarged.", ""), 0.0),  # empty answer
        (comp("The heart is enlarged.", "yes") + " \\boxed{no}", 0.0),  # two answers
        (comp("The heart is enlarged \\boxed{yes}.", "yes"), 0.0),  # a box inside the think too
        ("<think> The heart is enlarged and", 0.0),  # truncated: no </think>
        ("<think> The heart is enlarged. </think> \\boxed{yes", 0.0),  # truncated: unbalanced brace
        (comp("The heart is enlarged.", "yes") + " Let me explain further why this is so.", 0.0),
        (
            comp("The heart is enlarged.", "yes", lead=" After careful consideration of all the findings: "),
            0.0,
        ),
        (comp("The heart is enlarged.", "yes", lead=" [1, 2, 3, 4] "), 0.0),  # a box in the lead-in
        ("<think> a b c </think><think> d e f </think>\\boxed{yes}", 0.0),  # two think blocks
    ],
)
def test_format_cases(text, expected):
    assert format_score(text) == expected


def test_format_accepts_realistic_reasoning():
    rows = [r for r in make_corpus(200, seed=5, group=1) if r["completion"].lstrip().startswith("<think>")]
    passed = [format_score(r["completion"]) for r in rows]
    assert sum(passed) / len(passed) > 0.6  # the clean ones (faults are injected into a minority)


# ---------------------------------------------------------------------------------------------
# coordinate
# ---------------------------------------------------------------------------------------------


def test_coordinate_cases():
    def c(boxes, w=W, h=H):
        return coordinate_score(comp(think_with(boxes), "yes"), w, h)

    assert c([]) == 0.0
    assert c(GOOD[:1]) == pytest.approx(1 / 3)
    assert c(GOOD) == 1.0
    assert c(GOOD + [[10, 10, 60, 60]]) == 1.0  # capped
    assert c(GOOD[:1] * 3) == pytest.approx(1 / 3)  # duplicates paid once
    assert c([GOOD[0], [41, 61, 201, 221]]) == pytest.approx(1 / 3)  # near-duplicate (IoU > 0.9)
    assert c(GOOD + [[0, 0, W + 10, 100]]) == 0.5  # outside the frame: -0.5
    assert c(GOOD + [[200, 60, 40, 220]]) == 0.5  # inverted
    assert c(GOOD + [[10, 10, 12, 80]]) == 0.5  # 2 px wide: degenerate
    assert c(GOOD + [[0, 0, W, H]]) == 1.0  # the whole frame: neutral
    assert c([[0, 0, 600, 100]], w=640, h=480) == pytest.approx(1 / 3)  # the real frame, not 512
    assert c([[0, 0, 500, 100]], w=448, h=504) == -0.5  # 500 > width 448 (paper mode would pay it)
    assert c([[0, 0, 600, 100]] * 3) == -1.0  # floor
    assert c([[i, i, i + 20, i + 20] for i in range(0, 17 * 20, 20)]) == -1.0  # 17 boxes: spam


def test_coordinate_needs_the_frame():
    with pytest.raises(ValueError, match="width"):
        get_reward_funcs(["coordinate"])[0](["x"], solution=["yes"])


# ---------------------------------------------------------------------------------------------
# grounding
# ---------------------------------------------------------------------------------------------


def test_grounding_cases():
    def g(boxes, gt=GT):
        return grounding_score(comp(think_with(boxes), "yes"), gt)

    assert g(GOOD, gt=[]) is None
    assert g(GOOD, gt=None) is None
    assert g(GOOD) == 1.0
    assert g(GOOD[::-1]) == 1.0  # order does not matter
    assert g(GOOD[:2]) == pytest.approx(2 * 2 / 5)  # S = 2, n_pred 2, n_gt 3 -> 2S / 5
    assert g(GOOD + [[300, 400, 340, 440]]) == pytest.approx(2 * 3 / 7)  # an extra box
    assert g(GOOD + GOOD[:1]) == pytest.approx(2 * 3 / 7)  # a duplicate is an extra box
    assert g([]) == 0.0
    assert g(GOOD, gt=[b["box"] for b in GT]) == 1.0  # bare 4-lists accepted
    # one gt box, prediction shifted by half its width: IoU = (w/2) / (3w/2) = 1/3
    assert g([[80, 0, 240, 100]], gt=[{"label": "x", "box": [0, 0, 160, 100]}]) == pytest.approx(1 / 3)


def test_grounding_returns_none_per_sample():
    c = comp(think_with(GOOD), "yes")
    assert run("grounding", [c, c], boxes=[GT, []]) == [1.0, None]


# ---------------------------------------------------------------------------------------------
# Known hacks: each earns nothing extra
# ---------------------------------------------------------------------------------------------

HONEST = comp(think_with(GOOD), "yes")


def test_hack_box_spam():
    spam_random = comp(
        think_with([[i * 7 % 400, i * 11 % 450, i * 7 % 400 + 40, i * 11 % 450 + 40] for i in range(40)]),
        "yes",
    )
    spam_valid = comp(
        think_with([[x, y, x + 60, y + 60] for x in (0, 100, 200, 300) for y in (0, 150, 300)]), "yes"
    )
    for spam in (spam_random, spam_valid):
        assert coordinate_score(spam, W, H) <= coordinate_score(HONEST, W, H)
        assert grounding_score(spam, GT) < grounding_score(HONEST, GT)
        assert total(spam, boxes=GT) < total(HONEST, boxes=GT)
    assert coordinate_score(spam_random, W, H) == -1.0


def test_hack_boxes_outside_the_think_block():
    outside = "<think> The heart is enlarged here. </think>. The answer is: \\boxed{yes} " + think_with(GOOD)
    after = "<think> The heart is enlarged here. </think> " + think_with(GOOD) + " \\boxed{yes}"
    for text in (outside, after):
        assert coordinate_score(text, W, H) == 0.0
        assert grounding_score(text, GT) == 0.0
        assert total(text, boxes=GT) < total(HONEST, boxes=GT)


def test_hack_answer_hidden_in_the_reasoning():
    hidden = f"<think> {think_with(GOOD)} The answer is yes. </think>"
    boxed_in_think = f"<think> {think_with(GOOD)} The answer is \\boxed{{yes}}. </think>"
    unboxed = f"<think> {think_with(GOOD)} </think>. The answer is: yes"
    for text in (hidden, boxed_in_think, unboxed):
        assert run("answer", [text]) == [0.0]
        assert format_score(text) == 0.0


def test_hack_repeated_text():
    loop = " ".join(["The heart is enlarged and the lungs are clear."] * 12)
    degenerate = comp(loop + " " + think_with(GOOD), "yes")
    assert format_score(degenerate) == 0.0
    assert format_score(comp(think_with(GOOD), " ".join(["no acute process"] * 10))) == 0.0
    assert total(degenerate, boxes=GT) < total(HONEST, boxes=GT)


def test_hack_empty_think_block():
    for text in ("<think></think>\\boxed{yes}", "<think> </think>. The answer is: \\boxed{yes}"):
        assert format_score(text) == 0.0
        assert coordinate_score(text, W, H) == 0.0
        assert grounding_score(text, GT) == 0.0
        assert total(text, boxes=GT) < total(HONEST, boxes=GT)


def test_hack_several_boxed_answers():
    for text in (
        comp(think_with(GOOD), "yes") + " or \\boxed{no}",
        comp(think_with(GOOD), "no") + " \\boxed{yes}",
        comp(think_with(GOOD), "yes") + " \\boxed{yes}",
    ):
        assert run("answer", [text]) == [0.0]
        assert format_score(text) == 0.0
        assert total(text, boxes=GT) < total(HONEST, boxes=GT)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

coords = st.integers(min_value=-40, max_value=620)
any_box = st.lists(coords, min_size=4, max_size=4)
frame = st.tuples(st.integers(8, 18).map(lambda k: 28 * k), st.integers(8, 18).map(lambda k: 28 * k))


@st.composite
def valid_box(draw, w=W, h=H):
    x0 = draw(st.integers(0, w - 10))
    y0 = draw(st.integers(0, h - 10))
    return [x0, y0, draw(st.integers(x0 + 5, w)), draw(st.integers(y0 + 5, h))]


@st.composite
def invalid_box(draw, w=W, h=H):
    b = draw(valid_box(w, h))
    kind = draw(st.sampled_from(["outside", "inverted", "negative", "thin"]))
    if kind == "outside":
        return [b[0], b[1], w + draw(st.integers(1, 200)), b[3]]
    if kind == "inverted":
        return [b[2], b[1], b[0], b[3]]
    if kind == "negative":
        return [-draw(st.integers(1, 50)), b[1], b[2], b[3]]
    return [b[0], b[1], b[0] + 2, b[3]]


answers = st.sampled_from(["yes", "no", "a | b", "effusion", "[1, 2, 30, 40]", "", "The heart is normal."])
pieces = st.sampled_from(
    ["<think>", "</think>", "\\boxed{", "}", " | ", "yes", " no ", "[1, 2, 3, 4]", "\n", "the heart"]
)


@settings(max_examples=120, deadline=None)
@given(
    st.lists(any_box, max_size=20),
    answers,
    st.lists(pieces, max_size=8).map("".join),
    frame,
    st.lists(any_box, max_size=4),
    st.sampled_from(["vqa", "classification", "grounding", "report_findings", None]),
    st.sampled_from(["yes", "a | b", "[10, 20, 200, 220]", "The heart is normal. No effusion."]),
)
def test_every_reward_stays_in_range(boxes, ans, noise, wh, gt_boxes, task, solution):
    w, h = wh
    texts = [
        comp(think_with(boxes), ans),
        noise,
        comp(think_with(boxes), ans) + noise,
        noise + comp(noise, ans),
    ]
    cols = {
        "solution": [solution] * 4,
        "task": [task] * 4,
        "boxes": [[{"label": "x", "box": b} for b in gt_boxes]] * 4,
        "width": [w] * 4,
        "height": [h] * 4,
    }
    f_answer, f_format, f_coord, f_ground = get_reward_funcs(["answer", "format", "coordinate", "grounding"])
    assert all(0.0 <= v <= 1.0 for v in f_answer(texts, **cols))
    assert all(v in (0.0, 1.0) for v in f_format(texts, **cols))
    assert all(-1.0 <= v <= 1.0 for v in f_coord(texts, **cols))
    for v in f_ground(texts, **cols):
        assert (v is None) == (not gt_boxes)
        assert v is None or 0.0 <= v <= 1.0


@settings(max_examples=120, deadline=None)
@given(st.lists(st.one_of(valid_box(), any_box), max_size=MAX_BOXES + 2), invalid_box(), st.integers(0, 30))
def test_adding_an_invalid_box_never_raises_coordinate(boxes, bad, pos):
    before = coordinate_score(comp(think_with(boxes), "yes"), W, H)
    with_bad = boxes[: pos % (len(boxes) + 1)] + [bad] + boxes[pos % (len(boxes) + 1) :]
    after = coordinate_score(comp(think_with(with_bad), "yes"), W, H)
    assert after <= before
    if len(with_bad) <= MAX_BOXES and before > -1.0:
        assert after < before  # and it costs


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.one_of(valid_box(), any_box), min_size=1, max_size=MAX_BOXES + 1),
    st.integers(0, 30),
    st.integers(0, 30),
    st.tuples(*[st.integers(-1, 1)] * 4),
)
def test_adding_a_duplicate_box_never_raises_coordinate(boxes, which, pos, jitter):
    src = boxes[which % len(boxes)]
    dup = [v + d for v, d in zip(src, jitter)]
    if iou(src, dup) <= 0.9:  # jitter too large for this box: an exact copy instead
        dup = list(src)
    before = coordinate_score(comp(think_with(boxes), "yes"), W, H)
    k = pos % (len(boxes) + 1)
    after = coordinate_score(comp(think_with(boxes[:k] + [dup] + boxes[k:]), "yes"), W, H)
    assert after <= before


@settings(max_examples=80, deadline=None)
@given(st.lists(valid_box(), min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_grounding_is_one_for_exactly_the_gt_boxes(gt, rnd):
    pred = list(gt)
    rnd.shuffle(pred)
    assert grounding_score(comp(think_with(pred), "yes"), [{"label": "x", "box": b} for b in gt]) == 1.0


@settings(max_examples=100, deadline=None)
@given(
    valid_box(), st.integers(0, 300), st.integers(0, 300), st.sampled_from([(1, 0), (0, 1), (1, 1), (-1, 0)])
)
def test_grounding_falls_with_iou(gt, d1, d2, direction):
    d1, d2 = sorted((d1, d2))
    dx, dy = direction

    def shifted(d):
        b = [gt[0] + dx * d, gt[1] + dy * d, gt[2] + dx * d, gt[3] + dy * d]
        return grounding_score(comp(think_with([b]), "yes"), [{"label": "x", "box": gt}])

    assert shifted(0) == 1.0
    assert shifted(d1) >= shifted(d2)
    assert shifted(d2) == pytest.approx(
        soft_f1([[gt[0] + dx * d2, gt[1] + dy * d2, gt[2] + dx * d2, gt[3] + dy * d2]], [gt])
    )
