"""Paper mode: the released DeepMedix-R1 reward (``compute_xray_score``), reproduced exactly.

``score(completion, solution)`` returns ``{"overall", "answer", "format", "coordinate"}`` with
the released values (its ``"accuracy"`` is our ``"answer"``)::

    overall = 0.9 * answer + 0.1 * format + coordinate        # max 0.9*1.5 + 0.1 + 0.15 = 1.6

As TRL reward functions the three parts are ``paper_answer``, ``paper_format`` and
``paper_coordinate``; with ``reward_weights: [0.9, 0.1, 1.0]`` TRL's weighted sum is
``overall``. Every quirk of the released code is kept on purpose (paper mode exists to
reproduce the paper, not to be a good reward - that is grounded mode):

1. **Whitespace normalisation.** Before any score, ``\\s*(<|>|/)\\s*`` -> the character alone,
   over the whole completion (``parsing.normalize_paper``). So ``< think >`` counts as
   ``<think>``, whitespace before a leading ``<think>`` disappears (so it still passes the
   format), and a boxed ``left / right`` is scored as ``left/right`` against an un-normalised
   ground truth.
2. **Answer extraction** (``parsing.paper_boxed_answer``, mathruler's): the LAST ``\\boxed{``,
   read to its matching brace, stripped. No ``\\boxed{`` (or a last one that never closes)
   gives the literal answer ``"None"`` - which scores full marks when the ground truth is
   "none". An empty box gives ``" "`` (one space).
3. **Answer score**, first matching rule (token counts are ``len(gt.strip().split())``):

   * *list*: ``"|" in gt`` and at most 20 tokens - split both on ``"|"``, strip, lowercase;
     ``F1 x 1.5`` with ``precision = |set(pred) & set(gt)| / len(pred_list)`` and
     ``recall = ... / len(gt_list)``: the denominators are list lengths, so duplicate or empty
     items count against you.
   * *short*: at most 2 tokens - ``1.5`` if ``answer.lower() == gt.lower()`` (no stripping,
     no punctuation handling), else ``0``.
   * *long*: ``(BLEU-1 + BLEU-4 + ROUGE) / 3 x 1.5``. BLEU is nltk ``sentence_bleu([gt],
     answer, weights, smoothing_function=SmoothingFunction().method2)`` on the raw strings,
     so it counts **characters**: BLEU-1 is ``weights=(1, 0, 0, 0)`` (character unigram
     precision times the brevity penalty) and BLEU-4 the default ``(0.25,) * 4`` (geometric
     mean of character 1-4-gram precisions, 2-4 smoothed by add-one, times the brevity
     penalty). ROUGE is rouge_score ``rouge1`` F-measure with ``use_stemmer=True`` (called
     "rouge_l" in the released code, but it is ROUGE-1 - word unigrams; the release passes
     the answer as the target and the truth as the prediction, harmless since F1 is
     symmetric). nltk computes BLEU-1 as ``bp * exp(log(p_1))``, which can differ from
     ``bp * p_1`` in the last bit; see ``rewards.similarity`` for nltk's full arithmetic. We
     compute both scores with exact reimplementations there (about 10x faster), tested equal
     to nltk / rouge_score bit for bit.
4. **Format** (0 or 1): ``re.fullmatch(r"<think>.*</think>.*\\\\boxed\\{.*\\}.*", text, re.DOTALL)``
   on the normalised text: it must start with ``<think>``; anything may follow the box.
5. **Coordinate**: the FIRST ``<think>(.*?)</think>`` block (none -> 0.0); every box matched
   by ``\\[([-+]?\\d*\\.?\\d+(?:,\\s*[-+]?\\d*\\.?\\d+){3})\\]`` (whitespace only after commas)
   adds ``-0.2`` if its largest number is ``> 512`` else ``+0.05``, summed in order in floating
   point; then ``if value > 0.15: value = 0.15``. No floor (ten bad boxes give -2.0), no
   geometry check (``[300, 300, 10, 10]`` and ``[-5, 0, 0, 0]`` pay), the 512 bound is a
   constant (the released model's 512 x 512 frame), and boxes need not be different.
   Note ``0.05 + 0.05 + 0.05 = 0.15000000000000002 > 0.15``, so three boxes give exactly 0.15.
"""

from __future__ import annotations

import re

from rewards.inputs import column, texts_of
from rewards.parsing import PAPER_BOX_RE, completion_text, normalize_paper, paper_boxed_answer, think_block
from rewards.similarity import BLEU1_WEIGHTS, BLEU4_WEIGHTS, bleu, rouge1_f
from rewards.stats import log_completion_stats

FORMAT_WEIGHT = 0.1
PAPER_WEIGHTS = {"paper_answer": 0.9, "paper_format": 0.1, "paper_coordinate": 1.0}
PAPER_FORMAT_RE = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)
PAPER_MAX_COORD = 512
PAPER_ANSWER_SCALE = 1.5


def answer_score(normalised: str, ground_truth: str) -> float:
    """The released ``accuracy_xray_reward_new`` on an already normalised completion (0 .. 1.5)."""
    answer = paper_boxed_answer(normalised)
    if len(answer) == 0:
        answer = " "
    n_tokens = len(ground_truth.strip().split())
    if "|" in ground_truth and n_tokens <= 20:
        gt_items = [item.strip().lower() for item in ground_truth.strip().split("|")]
        pred_items = [item.strip().lower() for item in answer.strip().split("|")]
        common = set(gt_items) & set(pred_items)
        precision = len(common) / len(pred_items) if len(pred_items) > 0 else 0
        recall = len(common) / len(gt_items) if len(gt_items) > 0 else 0
        f1 = 2 * (precision * recall) / (precision + recall) if (precision + recall) > 0 else 0
        return f1 * PAPER_ANSWER_SCALE
    if n_tokens <= 2:
        return PAPER_ANSWER_SCALE if answer.lower() == ground_truth.lower() else 0.0
    bleu1, bleu4 = bleu(ground_truth, answer, (BLEU1_WEIGHTS, BLEU4_WEIGHTS))
    rouge = rouge1_f(answer, ground_truth)
    return (bleu1 + bleu4 + rouge) / 3 * PAPER_ANSWER_SCALE


def format_score(normalised: str) -> float:
    """1.0 when the normalised completion fully matches the released format regex, else 0.0.

    Computed without the regex's backtracking but with the same result (tested on random
    text): the text starts with ``<think>``; some ``</think>`` follows; some ``\\boxed{``
    follows that; some ``}`` follows that. Taking the first occurrence at each step leaves the
    most room for the next, so the first occurrences decide.
    """
    if not normalised.startswith("<think>"):
        return 0.0
    i = normalised.find("</think>", 7)
    if i < 0:
        return 0.0
    j = normalised.find("\\boxed{", i + 8)
    if j < 0:
        return 0.0
    return 1.0 if normalised.find("}", j + 7) >= 0 else 0.0


def coordinate_score(normalised: str) -> float:
    """The released ``coordinate_reward`` on an already normalised completion (<= 0.15, no floor)."""
    think = think_block(normalised)  # = THINK_RE.search(text).group(1): the first block, non-greedy
    if think is None:
        return 0.0
    value = 0.0
    for box in PAPER_BOX_RE.findall(think):
        if max(map(float, box.split(","))) > PAPER_MAX_COORD:  # float() ignores the spaces strip() removed
            value += -0.2
        else:
            value += 0.05
    if value > 0.15:
        value = 0.15
    return value


def score(completion, solution: str, format_weight: float = FORMAT_WEIGHT) -> dict[str, float]:
    """One completion scored like the released ``compute_xray_score`` (its "accuracy" is "answer")."""
    text = normalize_paper(completion_text(completion))
    fmt = format_score(text)
    ans = answer_score(text, solution)
    coord = coordinate_score(text)
    return {
        "overall": (1 - format_weight) * ans + format_weight * fmt + coord,
        "answer": ans,
        "format": fmt,
        "coordinate": coord,
    }


# ---------------------------------------------------------------------------------------------
# TRL reward functions (weights [0.9, 0.1, 1.0] give the released "overall")
# ---------------------------------------------------------------------------------------------


def paper_answer(completions, **kwargs) -> list[float]:
    """Released answer score, 0 .. 1.5 (list F1 / short exact match / char-BLEU+ROUGE-1). Reads ``solution``."""
    solutions = column(kwargs, "solution", len(completions), "paper_answer")
    return [answer_score(normalize_paper(t), str(gt)) for t, gt in zip(texts_of(completions), solutions)]


def paper_format(completions, **kwargs) -> list[float]:
    """Released format score: 1.0 if ``<think>.*</think>.*\\boxed{.*}.*`` matches the whole normalised text."""
    return [format_score(normalize_paper(t)) for t in texts_of(completions)]


def paper_coordinate(completions, **kwargs) -> list[float]:
    """Released coordinate score: +0.05 per box in the first think block, -0.2 if a number > 512, capped at 0.15.

    Also logs the completion statistics of ``rewards.stats`` through TRL's ``log_metric``.
    """
    texts = texts_of(completions)
    log_completion_stats(texts, kwargs)
    return [coordinate_score(normalize_paper(t)) for t in texts]


# ---------------------------------------------------------------------------------------------
# EasyR1's batch reward signature (the framework the paper trained with)
# ---------------------------------------------------------------------------------------------


def compute_score(reward_inputs: list[dict], format_weight: float = FORMAT_WEIGHT) -> list[dict[str, float]]:
    """The released reward as an EasyR1 batch reward function.

    ``worker.reward.reward_type=batch worker.reward.reward_function=rewards/paper.py:compute_score``
    (with this repository on PYTHONPATH). Each input is EasyR1's ``{"response", "response_length",
    "ground_truth"}``; each output the released ``{"overall", "format", "accuracy", "coordinate"}``.
    """
    if not isinstance(reward_inputs, list):
        raise ValueError("compute_score takes a list of reward inputs: use worker.reward.reward_type=batch")
    out = []
    for item in reward_inputs:
        s = score(item["response"], str(item["ground_truth"]), format_weight)
        out.append(
            {
                "overall": s["overall"],
                "format": s["format"],
                "accuracy": s["answer"],
                "coordinate": s["coordinate"],
            }
        )
    return out
