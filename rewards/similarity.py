"""Text similarity for the answer rewards: BLEU, ROUGE-1 and ROUGE-L, fast and exact.

Three scores, each checked against its reference library in ``tests/test_rewards_similarity.py``:

``bleu(reference, hypothesis)``
    Bit-for-bit what ``nltk.translate.bleu_score.sentence_bleu([reference], hypothesis,
    weights, smoothing_function=SmoothingFunction().method2)`` returns (nltk 3.10.4), for
    several weight vectors at once. ``reference`` and ``hypothesis`` are sequences: when they
    are ``str`` (as in the released DeepMedix-R1 reward) nltk iterates them character by
    character, so every n-gram is an n-gram of *characters*; pass tuples of words for
    word-level BLEU. What nltk does, step by step (and what this function reproduces):

    * for n = 1..N (N = the longest weight vector; BLEU-1 written ``(1, 0, 0, 0)`` still
      counts four orders): clipped matches ``m_n`` = size of the multiset intersection of
      hypothesis and reference n-grams; ``d_n = max(1, len(hyp) - n + 1)`` (an order longer
      than the hypothesis has 0 matches over a denominator of 1);
    * if ``m_1 == 0`` the score is 0;
    * smoothing method2 ("add one", Lin & Och 2004) leaves ``p_1 = m_1 / d_1`` alone and makes
      ``p_n = (m_n + 1) / (d_n + 1)`` for n >= 2, so higher orders are never 0;
    * brevity penalty ``bp = 1`` if ``len(hyp) > len(ref)``, else ``exp(1 - len(ref)/len(hyp))``;
    * ``score = bp * exp(fsum(w_n * log(p_n)))``. A zero weight contributes ``0 * log(p_n)``,
      so BLEU-1 with weights (1, 0, 0, 0) is ``bp * exp(log(p_1))`` - equal to ``bp * p_1`` up
      to the last bit, which is why we compute it the same way rather than as ``bp * p_1``.

    Character n-grams of ASCII text are packed into integers and counted with numpy (about
    10x faster than nltk); other input takes a pure-Python path. Both give nltk's floats.

``rouge1_f(a, b)``
    ``rouge_score.rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True).score(a, b)["rouge1"]
    .fmeasure`` (rouge-score 0.1.2): the same tokenizer (lowercase, non-``[a-z0-9]`` to space,
    Porter stemming of tokens longer than 3 characters) with the stems cached, then unigram
    overlap F1. F1 is symmetric, so argument order does not matter.

``rouge_l_f(ref_tokens, hyp_tokens)``
    ROUGE-L F1 from the true longest common subsequence, computed with the bit-parallel LCS
    algorithm (Allison-Dix / Hyyrö): one big-integer update per hypothesis token instead of
    an O(n*m) table. Equal to rouge_score's ``rougeL`` on the same tokens.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache

import numpy as np

# ---------------------------------------------------------------------------------------------
# BLEU (nltk sentence_bleu, smoothing method2, one reference)
# ---------------------------------------------------------------------------------------------

BLEU1_WEIGHTS = (1, 0, 0, 0)
BLEU4_WEIGHTS = (0.25, 0.25, 0.25, 0.25)
_ORDER_SHIFT = 40  # n-gram order tag above 4 packed 7-bit ASCII characters (28 bits)
_NUMPY_MIN_CHARS = 48  # below this the pure-Python path is faster


def _ngram_counters(seq, max_n: int) -> list[Counter]:
    """Counters of n-grams (tuples) for n = 1..max_n, as nltk.util.ngrams builds them."""
    out = []
    for n in range(1, max_n + 1):
        if len(seq) < n:
            out.append(Counter())
        elif n == 1:
            out.append(Counter(zip(seq)))
        else:
            out.append(Counter(zip(*(seq[i:] for i in range(n)))))
    return out


def _packed_ngrams(text: str, max_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct character n-grams (n = 1..max_n) of an ASCII string, packed as int64, sorted, with counts.

    Each character takes 7 bits, the order n sits above bit 40, so ids never collide.
    """
    b = np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64)
    if not len(b):
        return b, b
    parts = [b | (1 << _ORDER_SHIFT)]
    g = b
    for n in range(2, max_n + 1):
        if len(b) < n:
            break
        g = (g[:-1] << 7) | b[n - 1 :]
        parts.append(g | (n << _ORDER_SHIFT))
    a = np.concatenate(parts)
    a.sort()
    flag = np.empty(len(a), dtype=bool)
    flag[0] = True
    np.not_equal(a[1:], a[:-1], out=flag[1:])
    idx = np.flatnonzero(flag)
    counts = np.diff(np.append(idx, len(a)))
    return a[idx], counts


@lru_cache(maxsize=4096)
def _reference_packed(reference: str, max_n: int):
    return _packed_ngrams(reference, max_n)


@lru_cache(maxsize=4096)
def _reference_counters(reference, max_n: int) -> list[Counter]:
    return _ngram_counters(reference, max_n)


def _overlap(a: dict, b: dict) -> int:
    """Size of the multiset intersection of two counters (a plain loop: faster than Counter ``&``)."""
    get = b.get
    total = 0
    for key, n in a.items():
        m = get(key)
        if m:
            total += n if n < m else m
    return total


def _clipped_matches(reference, hypothesis, max_n: int) -> list[int]:
    """m_n for n = 1..max_n: clipped n-gram matches of hypothesis against reference."""
    if (
        isinstance(reference, str)
        and isinstance(hypothesis, str)
        and max_n <= 4
        and len(hypothesis) >= _NUMPY_MIN_CHARS
        and reference.isascii()
        and hypothesis.isascii()
    ):
        ru, rc = _reference_packed(reference, max_n)
        hu, hc = _packed_ngrams(hypothesis, max_n)
        if not len(ru):
            return [0] * max_n
        pos = np.searchsorted(ru, hu)
        np.minimum(pos, len(ru) - 1, out=pos)
        hit = ru[pos] == hu
        matched = np.minimum(hc, rc[pos]) * hit
        per_order = np.bincount(hu >> _ORDER_SHIFT, weights=matched, minlength=max_n + 1)
        return [int(per_order[n]) for n in range(1, max_n + 1)]
    try:
        ref_counts = _reference_counters(reference, max_n)
    except TypeError:  # unhashable reference (a list of tokens): no cache
        ref_counts = _ngram_counters(reference, max_n)
    return [_overlap(hyp_c, ref_c) for hyp_c, ref_c in zip(_ngram_counters(hypothesis, max_n), ref_counts)]


def bleu(reference, hypothesis, weights=(BLEU4_WEIGHTS,)) -> list[float]:
    """nltk ``sentence_bleu([reference], hypothesis, w, smoothing_function=method2)`` for each w in ``weights``.

    ``reference``/``hypothesis``: ``str`` (character n-grams, like nltk on raw strings) or
    sequences of tokens. Returns one float per weight vector (nltk returns the int ``0``
    when nothing matches; we return ``0.0``, which compares equal).
    """
    max_n = max(len(w) for w in weights)
    hyp_len, ref_len = len(hypothesis), len(reference)
    matches = _clipped_matches(reference, hypothesis, max_n)
    if matches[0] == 0:
        return [0.0] * len(weights)
    # p_1 unsmoothed, p_n (n >= 2) add-one; nltk's Fraction -> float is num/den correctly rounded.
    logs = [math.log(matches[0] / max(1, hyp_len))]
    for n in range(2, max_n + 1):
        denom = max(1, hyp_len - n + 1)
        logs.append(math.log((matches[n - 1] + 1) / (denom + 1)))
    if hyp_len > ref_len:
        bp = 1.0
    elif hyp_len == 0:
        bp = 0.0
    else:
        bp = math.exp(1 - ref_len / hyp_len)
    return [bp * math.exp(math.fsum(w * lg for w, lg in zip(w_vec, logs))) for w_vec in weights]


# ---------------------------------------------------------------------------------------------
# ROUGE-1 (rouge_score, use_stemmer=True)
# ---------------------------------------------------------------------------------------------

_NON_ALNUM_RE = re.compile(r"[^a-z0-9]+")
_SPACES_RE = re.compile(r"\s+")
_VALID_TOKEN_RE = re.compile(r"^[a-z0-9]+$")
_STEM_CACHE_MAX = 200_000


class _TokenMap(dict):
    """token -> what rouge_score keeps of it: its Porter stem (tokens longer than 3 characters),
    the token itself otherwise, or "" when the result is not a valid ``[a-z0-9]+`` token.
    Filled on first sight of a token (``__missing__``), so a text costs one C-level ``map``."""

    stemmer = None

    def __missing__(self, token: str) -> str:
        if len(token) > 3:
            if self.stemmer is None:
                from nltk.stem import porter

                type(self).stemmer = porter.PorterStemmer()  # what rouge_score builds (NLTK_EXTENSIONS)
            out = self.stemmer.stem(token)
        else:
            out = token
        if not _VALID_TOKEN_RE.match(out):
            out = ""
        if len(self) >= _STEM_CACHE_MAX:
            self.clear()
        self[token] = out
        return out


_TOKEN_MAP = _TokenMap()


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's tokenizer with ``use_stemmer=True``: lowercase, non-``[a-z0-9]`` to spaces,
    split, stem tokens longer than 3 characters, keep valid tokens - with the stems cached."""
    tokens = _SPACES_RE.split(_NON_ALNUM_RE.sub(" ", text.lower()))
    return list(filter(None, map(_TOKEN_MAP.__getitem__, tokens)))


@lru_cache(maxsize=4096)
def _rouge_unigrams(text: str) -> Counter:
    return Counter(rouge_tokens(text))


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def rouge1_f(target: str, prediction: str) -> float:
    """rouge_score rouge1 F-measure with the Porter stemmer (symmetric in its arguments)."""
    t = _rouge_unigrams(target)
    p = _rouge_unigrams(prediction)
    inter = _overlap(t, p)
    precision = inter / max(sum(p.values()), 1)
    recall = inter / max(sum(t.values()), 1)
    return _f1(precision, recall)


# ---------------------------------------------------------------------------------------------
# ROUGE-L (true LCS, bit-parallel)
# ---------------------------------------------------------------------------------------------


def lcs_length(a, b) -> int:
    """Length of the longest common subsequence of two token sequences (bit-parallel, O(len(b)) bigint ops)."""
    if len(a) < len(b):
        a, b = b, a  # bits over the longer sequence, one step per token of the shorter
    if not b:
        return 0
    masks: dict = {}
    bit = 1
    for tok in a:
        masks[tok] = masks.get(tok, 0) | bit
        bit <<= 1
    full = bit - 1
    v = full
    get = masks.get
    for tok in b:
        m = get(tok)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l_f(ref_tokens, hyp_tokens) -> float:
    """ROUGE-L F1 (rouge_score's ``rougeL`` formula) on two token sequences."""
    if not ref_tokens or not hyp_tokens:
        return 0.0
    lcs = lcs_length(ref_tokens, hyp_tokens)
    return _f1(lcs / len(hyp_tokens), lcs / len(ref_tokens))


def clear_caches() -> None:
    """Forget cached reference n-grams and tokens (the benchmark measures from cold)."""
    _reference_packed.cache_clear()
    _reference_counters.cache_clear()
    _rouge_unigrams.cache_clear()
