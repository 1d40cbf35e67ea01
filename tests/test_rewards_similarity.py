"""rewards.similarity equals its reference libraries bit for bit (nltk 3.10.4, rouge-score 0.1.2)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer
from rouge_score.rouge_scorer import _score_lcs

from benchmarks.rewards import make_corpus
from rewards import similarity
from rewards.similarity import (
    BLEU1_WEIGHTS,
    BLEU4_WEIGHTS,
    bleu,
    lcs_length,
    rouge1_f,
    rouge_l_f,
    rouge_tokens,
)

SMOOTH = SmoothingFunction().method2
ROUGE1 = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
WORDS = (
    "the heart size is normal no pleural effusion or pneumothorax mild atelectasis left lower lobe "
    "opacity effusions running ran generously Béla 1.5 cm x-ray ying"
).split()


def nltk_pair(ref, hyp):
    return (
        sentence_bleu([ref], hyp, weights=BLEU1_WEIGHTS, smoothing_function=SMOOTH),
        sentence_bleu([ref], hyp, weights=BLEU4_WEIGHTS, smoothing_function=SMOOTH),
    )


def _random_text(rng: random.Random, max_words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, max_words)))
    if rng.random() < 0.3:
        text = text[: rng.randint(0, len(text))]
    return text


@pytest.mark.parametrize("numpy_min_chars", [0, 48, 10**9], ids=["numpy", "default", "python"])
def test_char_bleu_equals_nltk(numpy_min_chars, monkeypatch):
    monkeypatch.setattr(similarity, "_NUMPY_MIN_CHARS", numpy_min_chars)
    similarity.clear_caches()
    rng = random.Random(numpy_min_chars)
    for _ in range(200):
        ref = _random_text(rng, 80) or "x"
        hyp = _random_text(rng, 80) or " "
        assert tuple(bleu(ref, hyp, (BLEU1_WEIGHTS, BLEU4_WEIGHTS))) == nltk_pair(ref, hyp), (ref, hyp)


def test_char_bleu_equals_nltk_on_corpus_answers():
    rows = [r for r in make_corpus(400, seed=11, group=2) if r["task"].startswith("report")]
    assert len(rows) > 50
    for r in rows:
        hyp = r["completion"].rsplit("\\boxed{", 1)[-1].rstrip("}") or " "
        assert tuple(bleu(r["solution"], hyp, (BLEU1_WEIGHTS, BLEU4_WEIGHTS))) == nltk_pair(
            r["solution"], hyp
        )


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="ab c\né", min_size=1, max_size=120),
    st.text(alphabet="ab c\né", min_size=1, max_size=120),
)
def test_char_bleu_equals_nltk_property(ref, hyp):
    assert tuple(bleu(ref, hyp, (BLEU1_WEIGHTS, BLEU4_WEIGHTS))) == nltk_pair(ref, hyp)


def test_word_bleu_equals_nltk():
    rng = random.Random(5)
    for _ in range(200):
        ref = tuple(_random_text(rng, 60).split()) or ("x",)
        hyp = tuple(_random_text(rng, 60).split()) or ("y",)
        assert bleu(ref, hyp)[0] == sentence_bleu([list(ref)], list(hyp), smoothing_function=SMOOTH)


def test_bleu_edge_cases():
    # nltk returns the int 0 when no unigram matches; we return 0.0 (equal).
    assert bleu("abc", "xyz") == [0.0] == [sentence_bleu(["abc"], "xyz", smoothing_function=SMOOTH)]
    # an order longer than the hypothesis: 0 matches over 1, smoothed to 1/2 (nltk does the same).
    assert bleu("abcd", "a", (BLEU1_WEIGHTS, BLEU4_WEIGHTS)) == list(nltk_pair("abcd", "a"))


def test_rouge1_equals_rouge_score():
    rng = random.Random(9)
    for _ in range(300):
        a, b = _random_text(rng, 70), _random_text(rng, 70)
        assert rouge1_f(a, b) == ROUGE1.score(a, b)["rouge1"].fmeasure
        assert rouge1_f(a, b) == rouge1_f(b, a)  # F1 is symmetric: the release's argument order is harmless


def test_rouge_tokens_equal_rouge_score_tokenizer():
    for text in ["Running effusions, 1.5-cm!", "ÉCOLE ying  x-ray\tgenerously", "", "a b c d"]:
        assert rouge_tokens(text) == ROUGE1._tokenizer.tokenize(text)


def test_lcs_equals_table():
    rng = random.Random(13)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        assert rouge_l_f(a, b) == _score_lcs(a, b).fmeasure
        assert lcs_length(a, b) == lcs_length(b, a)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=60), st.lists(st.sampled_from(WORDS), max_size=60))
def test_rouge_l_equals_rouge_score_property(ref, hyp):
    assert rouge_l_f(ref, hyp) == _score_lcs(ref, hyp).fmeasure
