"""Parsing of model completions: the think block, the boxed answer, box lists, answer normalisation
and the format checks.

One module, used by the rewards, the cold-start filters and the evaluation. Where the rewards and the
evaluation read a completion differently on purpose, both readings live here side by side, each
with the reason it differs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
# Four signed ints/decimals, whitespace only after commas: the released reward's box regex.
PAPER_BOX_RE = re.compile(r"\[([-+]?\d*\.?\d+(?:,\s*[-+]?\d*\.?\d+){3})\]")
# Our looser reader: whitespace allowed anywhere inside the brackets.
_BRACE_RE = re.compile(r"[{}]")
BOX_RE = re.compile(
    r"\[\s*([-+]?\d*\.?\d+)\s*,\s*([-+]?\d*\.?\d+)\s*,\s*([-+]?\d*\.?\d+)\s*,\s*([-+]?\d*\.?\d+)\s*\]"
)


def completion_text(completion) -> str:
    """TRL passes completions as strings or as conversational message lists."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        parts = []
        for msg in completion:
            content = msg.get("content", "") if isinstance(msg, dict) else msg
            if isinstance(content, list):
                content = "".join(c.get("text", "") for c in content if isinstance(c, dict))
            parts.append(str(content))
        return "".join(parts)
    if isinstance(completion, dict):
        return completion_text([completion])
    return str(completion)


def strip_think(text: str, sep: str = "") -> str:
    """``text`` with every complete ``<think>...</think>`` block replaced by ``sep``."""
    return THINK_RE.sub(sep, text)


def think_block(text: str) -> str | None:
    """Content of the FIRST <think>...</think> block, or None.

    Same result as ``THINK_RE.search(text).group(1)`` (non-greedy, DOTALL), found with
    ``str.find``: the first ``<think>``, then the first ``</think>`` after it.
    """
    start = text.find("<think>")
    if start < 0:
        return None
    end = text.find("</think>", start + 7)
    return text[start + 7 : end] if end >= 0 else None


def _closing_brace(text: str, pos: int) -> int:
    """Index of the ``}`` closing a ``{`` whose content starts at ``pos``, or -1 when it never closes."""
    depth = 1
    for m in _BRACE_RE.finditer(text, pos):
        if m.group() == "{":
            depth += 1
        else:
            depth -= 1
            if not depth:
                return m.start()
    return -1


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """Every \\boxed{...} with balanced braces: (start, end, content).

    Scans left to right; stops at the first ``\\boxed{`` that never closes.
    """
    out = []
    i = 0
    while True:
        start = text.find("\\boxed{", i)
        if start < 0:
            return out
        close = _closing_brace(text, start + 7)
        if close < 0:  # unbalanced: the box never closes
            return out
        out.append((start, close + 1, text[start + 7 : close]))
        i = close + 1


def last_boxed(text: str) -> str | None:
    """Content of the LAST balanced \\boxed{...}, or None when there is none."""
    spans = boxed_spans(text)
    return spans[-1][2] if spans else None


def find_boxes(text: str) -> list[list[float]]:
    """All [a, b, c, d] number quadruples in ``text`` (whitespace-tolerant)."""
    return [[float(v) for v in m.groups()] for m in BOX_RE.finditer(text)]


def find_paper_boxes(text: str) -> list[list[float]]:
    """Boxes exactly as the released reward's regex sees them."""
    return [[float(v) for v in m.group(1).split(",")] for m in PAPER_BOX_RE.finditer(text)]


def format_box(box) -> str:
    return "[" + ", ".join(str(int(round(v))) for v in box) + "]"


# ---------------------------------------------------------------------------------------------
# Paper mode: the released reward's own text handling (quirks kept on purpose)
# ---------------------------------------------------------------------------------------------

PAPER_WS_RE = re.compile(r"\s*(<|>|/)\s*")  # the released regex (replacement: the character)
_PAPER_SEP_RE = re.compile(r"([<>/])")


@lru_cache(maxsize=4096)
def normalize_paper(text: str) -> str:
    """The released reward's first step: drop all whitespace around ``<``, ``>`` and ``/``.

    Equal to ``PAPER_WS_RE.sub(r"\\1", text)`` (tested on random text, unicode whitespace
    included) but faster: that regex removes a whitespace run exactly when it directly
    precedes or follows one of the three characters, so we split on them and strip the
    pieces' facing ends (``str.strip`` and ``\\s`` agree on what whitespace is). Applied to the
    whole completion before every paper score, answer included: a boxed ``left / right`` is
    compared as ``left/right`` (the ground truth is NOT normalised). Cached: the three paper
    rewards of a batch normalise each completion once.
    """
    parts = _PAPER_SEP_RE.split(text)
    last = len(parts) - 1
    if not last:
        return text
    for k in range(0, last + 1, 2):
        if k == 0:
            parts[k] = parts[k].rstrip()
        elif k == last:
            parts[k] = parts[k].lstrip()
        else:
            parts[k] = parts[k].strip()
    return "".join(parts)


def paper_boxed_answer(text: str) -> str:
    """The answer exactly as the released reward extracts it (mathruler 0.1.0 ``extract_boxed_content``).

    Start at the LAST occurrence of ``\\boxed{`` (``str.rfind``), read to its matching ``}``
    and return the content stripped. When there is no ``\\boxed{`` - or when that last one
    never closes (a truncated completion), even if an earlier box was complete - the answer
    is the literal string ``"None"``. A nested ``\\boxed{a \\boxed{b}}`` gives ``"b"``.
    (The caller turns an empty answer into ``" "``.)
    """
    start = text.rfind("\\boxed{")
    if start < 0:
        return "None"
    close = _closing_brace(text, start + 7)
    return text[start + 7 : close].strip() if close >= 0 else "None"


# ---------------------------------------------------------------------------------------------
# Grounded mode: one parse per completion, shared by every reward of a batch
# ---------------------------------------------------------------------------------------------

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class Parsed(NamedTuple):
    """What the grounded rewards read from one completion (cached, immutable)."""

    text: str
    think: str | None  # content of the FIRST complete <think>...</think> block
    n_open: int  # how many <think> tags
    n_close: int  # how many </think> tags
    think_boxes: tuple  # boxes (x0, y0, x1, y1) cited inside ``think`` (whitespace-tolerant reader)
    answer: str | None  # see grounded_answer()
    n_boxed: int  # how many "\\boxed{" in the whole text


def grounded_answer(text: str) -> str | None:
    """The final answer for the grounded rewards, or None when there is no single clean one.

    Looked for after the last ``</think>`` (or in the whole text when there is no think tag).
    None when: a ``<think>`` never closes (truncated), there is no ``\\boxed{}`` there (an
    answer left in the reasoning earns nothing), a ``\\boxed{`` never closes, or there are
    several boxed answers (hedging earns nothing). Otherwise the box content, stripped.
    """
    close = text.rfind(THINK_CLOSE)
    if close >= 0:
        region = text[close + len(THINK_CLOSE) :]
    elif THINK_OPEN in text:
        return None
    else:
        region = text
    n = region.count("\\boxed{")
    if n != 1:
        return None
    spans = boxed_spans(region)
    if len(spans) != 1:
        return None
    return spans[0][2].strip()


@lru_cache(maxsize=4096)
def parse(text: str) -> Parsed:
    """Parse a completion once; every grounded reward of a batch reuses the result (LRU cache)."""
    think = think_block(text)
    boxes = tuple(tuple(b) for b in find_boxes(think)) if think is not None else ()
    return Parsed(
        text,
        think,
        text.count(THINK_OPEN),
        text.count(THINK_CLOSE),
        boxes,
        grounded_answer(text),
        text.count("\\boxed{"),
    )


def clear_caches() -> None:
    """Forget parsed completions (the benchmark measures from cold)."""
    parse.cache_clear()
    normalize_paper.cache_clear()


# ---------------------------------------------------------------------------------------------
# Answer normalisation: two variants on purpose
# ---------------------------------------------------------------------------------------------
# Both lower-case, turn punctuation into spaces, drop the articles and collapse whitespace.
# ``normalize_answer`` (rewards, cold-start filter) also maps yes/no synonyms ("present",
# "true", "y" -> "yes"): a right answer in other words should not be trained away.
# ``eval_normalize`` (evaluation's exact match, token F1, list F1) follows the SQuAD normaliser
# that published numbers use: no synonyms, and "_" counts as punctuation. Keeping them apart
# leaves both the trained rewards and the reported metrics unchanged.

ARTICLES = frozenset({"a", "an", "the"})
SYNONYMS = {
    **dict.fromkeys(("yes", "y", "true", "present", "positive", "correct"), "yes"),
    **dict.fromkeys(("no", "n", "false", "absent", "negative", "incorrect"), "no"),
}
_PUNCT_RE = re.compile(r"[^\w\s]")
_EVAL_PUNCT_RE = re.compile(r"[^\w\s]|_")


def _content_words(text: str, punct: re.Pattern) -> list[str]:
    return [w for w in punct.sub(" ", text.lower()).split() if w not in ARTICLES]


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation to spaces, drop articles, collapse whitespace, map yes/no synonyms."""
    s = " ".join(_content_words(text, _PUNCT_RE))
    return SYNONYMS.get(s, s)


def eval_normalize(text: str | None) -> str:
    """Lowercase, punctuation (and "_") to spaces, drop articles, collapse whitespace; None -> ""."""
    return " ".join(_content_words(text or "", _EVAL_PUNCT_RE))


def label_key(label: str) -> str:
    """A classification label's identity for evaluation: case and spacing only, so per-label tables
    keep names such as "nodule/mass" apart from "nodule mass"."""
    return " ".join(label.lower().split())


def answer_items(text: str | None, normalise: Callable[[str], str]) -> set[str]:
    """The non-empty normalised items of a " | "-separated answer (a label list or a list answer)."""
    return {s for s in map(normalise, (text or "").split("|")) if s}


# ---------------------------------------------------------------------------------------------
# Format checks: three on purpose
# ---------------------------------------------------------------------------------------------
# ``rewards.paper.format_score`` is the released reward's regex, kept to reproduce the paper;
# ``rewards.grounded.format_score`` is the strict training reward (non-empty reasoning, nothing
# after the answer, no repetition). ``eval_format_ok`` is the evaluation's ``format_rate``: only
# the structure, so models trained with either reward are measured by one rule.


def eval_format_ok(text: str | None) -> bool:
    """After the released normalisation: one think block at the start, then a balanced \\boxed{} after it."""
    t = normalize_paper(text or "").strip()
    if not t.startswith(THINK_OPEN) or t.count(THINK_OPEN) != 1 or t.count(THINK_CLOSE) != 1:
        return False
    end = t.index(THINK_CLOSE)
    return any(start > end for start, _, _ in boxed_spans(t))
