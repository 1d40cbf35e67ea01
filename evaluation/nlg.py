"""Report text metrics through pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr(-D).

Texts are tokenised once with pycocoevalcap's Stanford PTB tokenizer (Java, lower case,
punctuation removed), exactly as the COCO caption evaluation does. Without Java the tokenizer
falls back to a Python approximation (same punctuation list) and METEOR is skipped; the result
says which tokenizer ran. SPICE is never run (it downloads models).

* BLEU-n: corpus BLEU as pycocoevalcap computes it (clipped n-gram counts summed over the
  corpus, "closest" reference length, brevity penalty); recomputed here from pycocoevalcap's
  per-report counts, so that a resample (evaluation.stats) recomputes the corpus score.
* METEOR: pycocoevalcap's METEOR 1.5 jar (corpus score from the jar's aggregate statistics).
* ROUGE-L: pycocoevalcap's ROUGE-L (LCS F-measure, beta 1.2), mean over reports.
* CIDEr: pycocoevalcap's CIDEr-D (document frequencies from the evaluated references), mean. A
  resample keeps the document frequencies of the whole evaluated set (recomputing them per resample
  would cost a CIDEr run each) and resamples the per-report scores.

METEOR's jar loads its paraphrase table for ~20 s on a small CPU; ``start_meteor()`` starts it
in the background (evaluation.run calls it before generation so the two overlap).
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from evaluation.stats import Statistic, mean_of

PUNCTUATIONS = {
    "''",
    "'",
    "``",
    "`",
    "-LRB-",
    "-RRB-",
    "-LCB-",
    "-RCB-",
    ".",
    "?",
    "!",
    ",",
    ":",
    "-",
    "--",
    "...",
    ";",
}
JAVA_HINT = "install a Java runtime (Debian: `apt-get install -y default-jre-headless`)"


def java_available() -> bool:
    return shutil.which("java") is not None


def _one_line(text: str) -> str:
    return " ".join((text or "").split())


def ptb_tokenize(texts: list[str]) -> list[str]:
    """pycocoevalcap's PTB tokenisation (one Java call for all texts); empty texts stay empty."""
    import pycocoevalcap.tokenizer.ptbtokenizer as ptb

    jar = Path(ptb.__file__).with_name(ptb.STANFORD_CORENLP_3_4_1_JAR)
    lines = [_one_line(t) for t in texts]
    todo = [i for i, line in enumerate(lines) if line]
    out = [""] * len(texts)
    if not todo:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "sentences.txt"
        src.write_text("\n".join(lines[i] for i in todo), encoding="utf-8")
        cmd = [
            "java",
            "-cp",
            str(jar),
            "edu.stanford.nlp.process.PTBTokenizer",
            "-preserveLines",
            "-lowerCase",
            "-encoding",
            "utf-8",  # whatever the locale
        ]
        proc = subprocess.run([*cmd, str(src)], capture_output=True, check=True)
    tokenised = proc.stdout.decode("utf-8").split("\n")
    if len(tokenised) < len(todo):
        raise RuntimeError(f"PTB tokenizer returned {len(tokenised)} lines for {len(todo)} texts")
    for i, line in zip(todo, tokenised):
        out[i] = " ".join(w for w in line.rstrip().split(" ") if w and w not in PUNCTUATIONS)
    return out


_SIMPLE_TOKEN = re.compile(r"\w+(?:[.'-]\w+)*|[^\w\s]")


def simple_tokenize(texts: list[str]) -> list[str]:
    """Java-free approximation of the PTB tokenizer: lower case, punctuation removed."""
    return [
        " ".join(w for w in _SIMPLE_TOKEN.findall((t or "").lower()) if w not in PUNCTUATIONS) for t in texts
    ]


def tokenize(texts: list[str]) -> tuple[list[str], str]:
    if java_available():
        return ptb_tokenize(texts), "ptb"
    return simple_tokenize(texts), "simple (no Java)"


# ----------------------------------------------------------------------------- BLEU


def bleu_stats(refs: list[str], hyps: list[str], n: int = 4) -> np.ndarray:
    """Per-report BLEU counts [testlen, reflen, guess_1..n, correct_1..n] (pycocoevalcap's cook)."""
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    rows = []
    for ref, hyp in zip(refs, hyps, strict=True):
        comps = cook_test(hyp, cook_refs([ref], n=n), eff="closest", n=n)
        rows.append([comps["testlen"], comps["reflen"], *comps["guess"], *comps["correct"]])
    return np.asarray(rows, dtype=float).reshape(-1, 2 + 2 * n)


def corpus_bleu(stats: np.ndarray, n: int = 4) -> list[float]:
    """BLEU-1..n from summed counts, with pycocoevalcap's smoothing constants."""
    tiny, small = 1e-15, 1e-9
    total = stats.sum(axis=0)
    testlen, reflen = total[0], total[1]
    guess, correct = total[2 : 2 + n], total[2 + n : 2 + 2 * n]
    bleus, bleu = [], 1.0
    for k in range(n):
        bleu *= (correct[k] + tiny) / (guess[k] + small)
        bleus.append(bleu ** (1.0 / (k + 1)))
    ratio = (testlen + tiny) / (reflen + small)
    if ratio < 1:
        bleus = [b * math.exp(1 - 1 / ratio) for b in bleus]
    return [float(b) for b in bleus]


# ----------------------------------------------------------------------------- METEOR

_meteor = None
_meteor_lock = threading.Lock()


def start_meteor():
    """Start (once per process) pycocoevalcap's METEOR jar; returns it, or None without Java."""
    global _meteor
    if not java_available():
        return None
    with _meteor_lock:
        if _meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            _meteor = Meteor()
        return _meteor


def meteor_scores(refs: list[str], hyps: list[str]) -> tuple[float, np.ndarray]:
    meteor = start_meteor()
    if meteor is None:
        raise RuntimeError(f"METEOR needs Java: {JAVA_HINT}")
    gts = {i: [r.replace("|||", " ")] for i, r in enumerate(refs)}
    res = {i: [h.replace("|||", " ")] for i, h in enumerate(hyps)}
    try:
        score, scores = meteor.compute_score(gts, res)
    except Exception:
        _drop_meteor(meteor)
        raise
    return float(score), np.asarray(scores, dtype=float)


def _drop_meteor(meteor) -> None:
    """Kill a broken METEOR process so that its __del__ cannot block on a held lock."""
    global _meteor
    if meteor.lock.locked():
        meteor.lock.release()
    meteor.meteor_p.kill()
    _meteor = None


# ----------------------------------------------------------------------------- everything


def report_metrics(
    refs: list[str],
    hyps: list[str],
    meteor: bool = True,
    tokenized: tuple[list[str], list[str], str] | None = None,
) -> tuple[dict, dict, dict[str, Statistic]]:
    """(summary values, per-report scores, the metrics as ``evaluation.stats.Statistic`` over the
    reports' positions 0..n-1, for their intervals)."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if tokenized is None:
        toks, method = tokenize(list(refs) + list(hyps))
        ref_t, hyp_t = toks[: len(refs)], toks[len(refs) :]
    else:
        ref_t, hyp_t, method = tokenized
    n = len(refs)
    out: dict = {"n": n, "tokenizer": method}
    per: dict = {}
    stats: dict[str, Statistic] = {}
    if n == 0:
        return out, per, stats
    index = np.arange(n)
    counts = bleu_stats(ref_t, hyp_t)
    for k in range(4):
        stats[f"bleu{k + 1}"] = Statistic(counts, index, f"bleu{k + 1}")

    rouge = Rouge()
    per["rouge_l"] = np.array([rouge.calc_score([h], [r]) for r, h in zip(ref_t, hyp_t)], dtype=float)
    stats["rouge_l"] = mean_of(per["rouge_l"], index)

    gts = {i: [r] for i, r in enumerate(ref_t)}
    res = {i: [h] for i, h in enumerate(hyp_t)}
    _, cider = Cider().compute_score(gts, res)
    per["cider"] = np.asarray(cider, dtype=float)
    stats["cider"] = mean_of(per["cider"], index)

    if not meteor:
        out["meteor"] = {"status": "skipped", "reason": "disabled (--no_meteor)"}
    elif not java_available():
        out["meteor"] = {"status": "skipped", "reason": f"METEOR needs Java: {JAVA_HINT}"}
    else:
        try:
            score, per["meteor"] = meteor_scores(ref_t, hyp_t)
            # the jar's corpus score is not the mean of its per-report scores: resample the
            # per-report mean, shifted onto the corpus score
            stat = mean_of(per["meteor"], index)
            stat.offset = score - stat.value()
            stats["meteor"] = stat
        except Exception as e:  # the jar died (memory, broken install): say so, keep the rest
            out["meteor"] = {"status": "error", "reason": f"METEOR failed: {e}"}
    for key, stat in stats.items():
        out[key] = stat.value()
    return out, per, stats
