"""Intervals that respect how records cluster, and paired differences between two checkpoints.

Records of one study (findings, impression, VQA, classification, grounding of the same image) are
not independent, nor are the studies of one patient. Every interval here is a percentile bootstrap
that resamples whole clusters - studies by default (``cluster="study" | "patient" | "record"``) -
and recomputes the metric from the records of the drawn clusters, corpus-level metrics included.

A metric is a ``Statistic``: per-record rows and the name of a function (``FINISH``) that turns the
column sums of those rows into the value. Every headline metric is a function of sums: a mean is
sum(x) / sum(1), micro-F1 comes from summed tp/fp/fn, mAP@0.5 from per-class sums, corpus BLEU from
summed n-gram counts. So one resample costs a matrix product: how often each cluster was drawn
(resamples x clusters) times each cluster's row sums (clusters x columns).

Two checkpoints scored on the same records are compared by their **paired difference**: both are
recomputed on the same drawn clusters, and the interval is that of the difference (correct, and
narrower than comparing two intervals, since the records' difficulty cancels).

Why not ``scipy.stats.bootstrap``: it resamples observations, so the cluster bookkeeping would live
in the statistic anyway, and one resample whose statistic is undefined (an F1 with no positive drawn)
makes its whole interval NaN. Here such resamples are left out and counted (``undefined``).
Same data, cluster unit, resamples and seed -> the same interval.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLUSTER_UNITS = ("study", "patient", "record")
CLUSTER_FIELD = {"study": "study_id", "patient": "patient_id", "record": "id"}


@dataclass
class Statistic:
    """One metric's per-record rows: ``value = FINISH[finish](rows.sum(0)) + offset``.

    ``index`` holds the positions of the rows' records in the scored record list (a metric of one
    task covers only that task's records). ``offset`` shifts a score whose corpus value is not a
    function of per-record rows (METEOR's jar aggregates its own statistics): the resampled
    per-record mean, moved onto the corpus score.
    """

    rows: np.ndarray
    index: np.ndarray
    finish: str = "ratio"
    offset: float = 0.0

    def __post_init__(self):
        self.rows = np.asarray(self.rows, dtype=float).reshape(len(self.index), -1)
        self.index = np.asarray(self.index, dtype=int)
        if self.finish not in FINISH:
            raise ValueError(f"unknown statistic '{self.finish}' (expected one of {', '.join(FINISH)})")

    @property
    def n(self) -> int:
        return len(self.index)

    def value(self) -> float | None:
        v = FINISH[self.finish](self.rows.sum(axis=0, keepdims=True))[0] + self.offset
        return None if np.isnan(v) else float(v)


def mean_of(values: Sequence[float], index: Sequence[int]) -> Statistic:
    """The mean of per-record values as a Statistic (rows [x, 1])."""
    values = np.asarray(values, dtype=float)
    return Statistic(np.stack([values, np.ones_like(values)], axis=1), np.asarray(index), "ratio")


# ----------------------------------------------------------------------------- finishing functions
# Each takes column sums, shape (resamples, columns), and returns (resamples,), NaN where undefined.


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1), np.nan)


def _ratio(s):
    return _div(s[:, 0], s[:, 1])


def _f1(tp, fp, fn):
    return _div(2 * tp, 2 * tp + fp + fn)


def _labels(s):
    """[tp(L), fp(L), fn(L), extra_fp] -> (tp, fp, fn) per label, and extra_fp."""
    n_lab = (s.shape[1] - 1) // 3
    return s[:, :n_lab], s[:, n_lab : 2 * n_lab], s[:, 2 * n_lab : 3 * n_lab], s[:, -1]


def _micro_f1(s):
    tp, fp, fn, extra = _labels(s)
    return _f1(tp.sum(1), fp.sum(1) + extra, fn.sum(1))


def _macro_f1(s):
    tp, fp, fn, _ = _labels(s)
    f1 = _f1(tp, fp, fn)
    f1 = np.where(tp + fn > 0, f1, np.nan)  # labels with ground truth in this resample
    with np.errstate(invalid="ignore"):
        counted = (tp + fn > 0).sum(1)
        return np.where(counted > 0, np.nansum(f1, axis=1) / np.maximum(counted, 1), np.nan)


def _map(s):
    """Single-point AP per class (precision x recall) from [tp(C), n_pred(C), n_gt(C)], averaged
    over the classes with ground truth."""
    c = s.shape[1] // 3
    tp, npred, ngt = s[:, :c], s[:, c : 2 * c], s[:, 2 * c :]
    ap = np.nan_to_num(_div(tp, npred)) * np.nan_to_num(_div(tp, ngt))
    present = ngt > 0
    counted = present.sum(1)
    return np.where(counted > 0, (ap * present).sum(1) / np.maximum(counted, 1), np.nan)


def _bleu(k: int):
    """Corpus BLEU-k from summed [testlen, reflen, guess_1..4, correct_1..4] (pycocoevalcap's
    smoothing constants, as evaluation.nlg.corpus_bleu)."""

    def finish(s):
        tiny, small = 1e-15, 1e-9
        testlen, reflen = s[:, 0], s[:, 1]
        log_p = sum(np.log((s[:, 6 + j] + tiny) / (s[:, 2 + j] + small)) for j in range(k))
        bleu = np.exp(log_p / k)
        ratio = (testlen + tiny) / (reflen + small)
        with np.errstate(divide="ignore", over="ignore"):
            brevity = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
        return bleu * brevity

    return finish


FINISH = {
    "ratio": _ratio,  # rows [numerator, denominator]; a mean is rows [x, 1]
    "micro_f1": _micro_f1,
    "macro_f1": _macro_f1,
    "map": _map,
    **{f"bleu{k}": _bleu(k) for k in range(1, 5)},
}


# ----------------------------------------------------------------------------- resampling


def cluster_codes(records: Sequence[dict], unit: str = "study") -> np.ndarray:
    """One integer per record naming its cluster (its study, patient, or itself)."""
    if unit not in CLUSTER_FIELD:
        raise ValueError(f"unknown cluster unit '{unit}' (expected one of {', '.join(CLUSTER_UNITS)})")
    field = CLUSTER_FIELD[unit]
    keys = [str(r.get(field) if r.get(field) not in (None, "") else r["id"]) for r in records]
    _, codes = np.unique(np.asarray(keys, dtype=object), return_inverse=True)
    return codes.astype(int)


def draw_clusters(n_clusters: int, n_resamples: int, seed: int) -> np.ndarray:
    """(resamples, clusters): how often each cluster is drawn when drawing n_clusters with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_resamples)


def _resampled(stat: Statistic, row_clusters: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """The statistic on every resample: (resamples,), NaN where undefined. ``row_clusters`` numbers
    each row's cluster among the drawn ones (columns of ``draws``)."""
    sums = np.zeros((draws.shape[1], stat.rows.shape[1]))
    np.add.at(sums, row_clusters, stat.rows)
    return FINISH[stat.finish](draws @ sums) + stat.offset


def _percentiles(values: np.ndarray, alpha: float) -> tuple[float | None, float | None]:
    values = values[~np.isnan(values)]
    if not len(values):
        return None, None
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _draws(stats: Sequence[Statistic], codes: np.ndarray, n_resamples: int, seed: int):
    """Draw the clusters that hold these statistics' records; each statistic's rows' cluster numbers."""
    own = np.unique(np.concatenate([codes[s.index] for s in stats]))
    draws = draw_clusters(len(own), n_resamples, seed)
    return draws, [np.searchsorted(own, codes[s.index]) for s in stats]


def interval(
    stat: Statistic, codes: np.ndarray, n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float | None, float | None]:
    """Percentile-bootstrap (1 - alpha) interval of one metric, resampling whole clusters.

    ``codes`` (cluster_codes) numbers the cluster of every scored record; only the clusters holding
    this metric's records are drawn (a VQA metric resamples the studies that have VQA records)."""
    if stat.n == 0 or n_resamples <= 0:
        return None, None
    draws, (rows,) = _draws([stat], codes, n_resamples, seed)
    return _percentiles(_resampled(stat, rows, draws), alpha)


def headline(stat: Statistic, codes: np.ndarray, n_resamples: int, seed: int) -> dict:
    """{value, ci_low, ci_high, n} of one headline metric."""
    lo, hi = interval(stat, codes, n_resamples, seed)
    return {"value": stat.value(), "ci_low": lo, "ci_high": hi, "n": stat.n}


def paired_difference(
    a: Statistic,
    b: Statistic,
    codes: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """a - b on the same records, with its paired cluster-bootstrap interval and a two-sided p-value.

    Both statistics are recomputed on the same drawn clusters. ``p`` is the bootstrap's two-sided
    p-value for "no difference": twice the smaller share of resampled differences on either side of
    0, at least 1 / resamples (so no p is reported as exactly 0)."""
    va, vb = a.value(), b.value()
    out = {"a": va, "b": vb, "diff": None, "ci_low": None, "ci_high": None, "p": None, "n": a.n}
    if va is None or vb is None or n_resamples <= 0 or not a.n or not b.n:
        return out
    draws, (rows_a, rows_b) = _draws([a, b], codes, n_resamples, seed)
    diffs = _resampled(a, rows_a, draws) - _resampled(b, rows_b, draws)
    diffs = diffs[~np.isnan(diffs)]
    lo, hi = _percentiles(diffs, alpha)
    p = None
    if len(diffs):
        below, above = np.mean(diffs <= 0), np.mean(diffs >= 0)
        p = float(min(1.0, max(2 * min(below, above), 1.0 / len(diffs))))
    out.update(diff=va - vb, ci_low=lo, ci_high=hi, p=p, undefined=int(n_resamples - len(diffs)))
    return out


def holm(pvalues: dict[str, float | None]) -> dict[str, float | None]:
    """Holm-adjusted p-values (family-wise error over the given metrics); None stays None."""
    known = sorted(((p, k) for k, p in pvalues.items() if p is not None), key=lambda t: t[0])
    m, running, out = len(known), 0.0, dict.fromkeys(pvalues)
    for i, (p, k) in enumerate(known):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


# ----------------------------------------------------------------------------- a sample of studies


def study_sample(records: Sequence[dict], n: int, seed: int = 0) -> list[dict]:
    """``n`` records that span the studies, stratified by task: every study gives one record before any
    gives a second (so with n >= the number of studies every study is in), and each pick takes the
    task furthest below its share of the split, so the sample's task mix mirrors the split's.
    Deterministic for a seed (a hash order, the same on every machine); returned in the records' order."""
    if n >= len(records):
        return list(records)

    def rank(*parts) -> str:
        return hashlib.sha256("\x1f".join(map(str, (seed, *parts))).encode()).hexdigest()

    studies: dict[str, dict[str, list[int]]] = {}  # study -> task -> record positions, in hash order
    for i in sorted(range(len(records)), key=lambda i: rank(records[i]["id"])):
        r = records[i]
        studies.setdefault(str(r.get("study_id") or r["id"]), {}).setdefault(r["task"], []).append(i)
    share = Counter(r["task"] for r in records)
    quota = {t: n * c / len(records) for t, c in share.items()}
    taken: Counter = Counter()
    order = sorted(studies, key=rank)
    chosen: list[int] = []
    while len(chosen) < n:
        for study in order:
            left = [t for t, rows in sorted(studies[study].items()) if rows]
            if not left or len(chosen) == n:
                continue
            task = max(left, key=lambda t: quota[t] - taken[t])
            chosen.append(studies[study][task].pop(0))
            taken[task] += 1
    return [records[i] for i in sorted(chosen)]


# ----------------------------------------------------------------------------- on disk


def save_statistics(path: str | Path, records: Sequence[dict], stats: dict[str, Statistic]) -> None:
    """The scored records' ids and clusters and every headline Statistic, for paired comparisons
    (evaluation.compare). Atomic."""
    arrays: dict[str, np.ndarray] = {
        "ids": np.array([str(r["id"]) for r in records]),
        "study": np.array([str(r.get("study_id") or r["id"]) for r in records]),
        "patient": np.array([str(r.get("patient_id") or r["id"]) for r in records]),
    }
    manifest = []
    for i, (key, stat) in enumerate(stats.items()):
        arrays[f"rows{i}"], arrays[f"index{i}"] = stat.rows, stat.index
        manifest.append({"key": key, "finish": stat.finish, "offset": stat.offset})
    arrays["manifest"] = np.array(json.dumps(manifest))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    tmp.replace(path)


def load_statistics(path: str | Path) -> tuple[list[dict], dict[str, Statistic]]:
    """(records as {id, study_id, patient_id}, {metric: Statistic}) from save_statistics' file."""
    with np.load(path, allow_pickle=False) as z:
        records = [
            {"id": i, "study_id": s, "patient_id": p}
            for i, s, p in zip(z["ids"].tolist(), z["study"].tolist(), z["patient"].tolist())
        ]
        stats = {
            m["key"]: Statistic(z[f"rows{i}"], z[f"index{i}"], m["finish"], m["offset"])
            for i, m in enumerate(json.loads(str(z["manifest"])))
        }
    return records, stats
