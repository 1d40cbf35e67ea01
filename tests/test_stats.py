"""evaluation.stats: cluster-bootstrap intervals, paired differences, Holm, the study-spanning sample;
evaluation.compare's pairing; evaluation.curves' reward trend. Hand-checked on small tables."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from evaluation import compare as C
from evaluation import metrics as M
from evaluation import nlg
from evaluation import stats as S
from evaluation.curves import reward_trend, smooth


def recs(studies: list[int]) -> list[dict]:
    """One record per entry, in the study of that number (clusters of unequal size)."""
    return [{"id": f"r{i}", "study_id": f"s{s}", "patient_id": f"p{s}"} for i, s in enumerate(studies)]


def test_paired_clustered_interval_by_hand():
    # Two studies of unequal size: s0 has 1 record, s1 has 3. Per-record differences a - b:
    # s0: +1.0; s1: 0, 0, +0.4. Drawing 2 studies with replacement gives three outcomes:
    #   s0 s0 (p 1/4): mean diff 1.0;  s1 s1 (p 1/4): 0.4 / 3;  one of each (p 1/2): 1.4 / 4 = 0.35.
    # Both tails hold 1/4 > 2.5%, so the 95% percentile interval is exactly [0.4 / 3, 1.0].
    records = recs([0, 1, 1, 1])
    a = S.mean_of([1.0, 0.5, 0.5, 0.9], np.arange(4))
    b = S.mean_of([0.0, 0.5, 0.5, 0.5], np.arange(4))
    codes = S.cluster_codes(records, "study")
    d = S.paired_difference(a, b, codes, n_resamples=4000, seed=0)
    assert d["diff"] == pytest.approx(0.35)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((0.4 / 3, 1.0))
    assert d["p"] == pytest.approx(1 / 4000)  # no resample has a difference <= 0
    # resampling records instead treats the four as independent: a narrower interval
    by_record = S.paired_difference(a, b, S.cluster_codes(records, "record"), n_resamples=4000, seed=0)
    assert by_record["ci_low"] < 0.4 / 3 and by_record["ci_high"] < 1.0
    # same data and seed -> the same interval; another seed -> another
    assert S.paired_difference(a, b, codes, n_resamples=500, seed=3) == S.paired_difference(
        a, b, codes, n_resamples=500, seed=3
    )


def test_unpaired_interval_of_a_study_clustered_mean():
    # Study s0 (3 records, all 1) and s1 (1 record, 0): outcomes 1.0 (p 1/4), 0 (p 1/4), 3/4 (p 1/2).
    stat = S.mean_of([1, 1, 1, 0], np.arange(4))
    lo, hi = S.interval(stat, S.cluster_codes(recs([0, 0, 0, 1]), "study"), n_resamples=2000, seed=1)
    assert (lo, hi) == (0.0, 1.0)
    assert stat.value() == 0.75
    assert S.interval(stat, S.cluster_codes(recs([0, 0, 0, 1])), n_resamples=0) == (None, None)


def test_patient_clusters_join_studies():
    records = [
        {"id": "a", "study_id": "s1", "patient_id": "p1"},
        {"id": "b", "study_id": "s2", "patient_id": "p1"},
        {"id": "c", "study_id": "s3", "patient_id": "p2"},
    ]
    assert len(set(S.cluster_codes(records, "study"))) == 3
    assert len(set(S.cluster_codes(records, "patient"))) == 2
    with pytest.raises(ValueError, match="unknown cluster unit"):
        S.cluster_codes(records, "image")


def test_finishing_functions_equal_the_metric_definitions():
    rng = np.random.default_rng(0)
    n, labels = 40, 5
    counts = rng.integers(0, 2, size=(n, labels, 3)).astype(float)
    extra = rng.integers(0, 2, size=n).astype(float)
    rows = np.concatenate([counts[:, :, 0], counts[:, :, 1], counts[:, :, 2], extra[:, None]], axis=1)
    idx = np.arange(n)
    assert S.Statistic(rows, idx, "micro_f1").value() == pytest.approx(M.micro_f1_from(counts, extra))
    assert S.Statistic(rows, idx, "macro_f1").value() == pytest.approx(M.macro_f1_from(counts))
    det = np.column_stack([rng.integers(0, 3, n), rng.integers(0, 2, n), rng.integers(0, 3, n), np.ones(n)])
    wide = np.zeros((n, 9))
    for j, (c, tp, npred, ngt) in enumerate(det.astype(int)):
        wide[j, [c, 3 + c, 6 + c]] = tp, npred, ngt
    assert S.Statistic(wide, idx, "map").value() == pytest.approx(M.map_from_rows(det, 3))
    refs = ["the heart is normal", "small left effusion", "no pneumothorax seen"]
    hyps = ["the heart is enlarged", "small effusion", "no pneumothorax"]
    counts = nlg.bleu_stats(refs, hyps)
    for k in range(4):
        assert S.Statistic(counts, np.arange(3), f"bleu{k + 1}").value() == pytest.approx(
            nlg.corpus_bleu(counts)[k]
        )


def test_undefined_resamples_are_left_out_not_nan():
    # micro-F1 of one record with no positives at all is undefined; the others define it
    rows = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=float)  # [tp, fp, fn, extra]
    stat = S.Statistic(rows, np.arange(3), "micro_f1")
    lo, hi = S.interval(stat, np.arange(3), n_resamples=300, seed=0)
    assert lo is not None and 0 < lo <= hi <= 1


def test_holm_by_hand():
    adjusted = S.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert adjusted["a"] == pytest.approx(0.03) and adjusted["c"] == pytest.approx(0.06)
    assert adjusted["b"] == pytest.approx(0.06) and adjusted["d"] is None


def run_folder(tmp_path, name, records, stats, data="/d", split="test"):
    folder = tmp_path / name
    folder.mkdir()
    results = {"run": {"name": name, "data": data, "split": split}, "n": len(records), "headline": {}}
    (folder / "results.json").write_text(json.dumps(results))
    S.save_statistics(folder / "metric_rows.npz", records, stats)
    return folder


def test_pairing_aligns_ids_and_refuses_other_records(tmp_path):
    records = recs([0, 1, 1, 1])
    good = {"vqa/closed": S.mean_of([1.0, 0.5, 0.5, 0.9], np.arange(4))}
    base = {"vqa/closed": S.mean_of([0.0, 0.5, 0.5, 0.5], np.arange(4))}
    a = run_folder(tmp_path, "a", records, good)
    # the baseline's records in another order: pairing goes by id, not by position
    order = [2, 0, 3, 1]
    b = run_folder(
        tmp_path,
        "b",
        [records[i] for i in order],
        {"vqa/closed": S.mean_of([[0.0, 0.5, 0.5, 0.5][i] for i in order], np.arange(4))},
    )
    load = lambda f: (json.loads((f / "results.json").read_text()), *C.load_rows(f))  # noqa: E731
    d = C.paired(load(a), load(b), n_resamples=4000)["vqa/closed"]
    assert d["diff"] == pytest.approx(0.35) and d["ci_low"] == pytest.approx(0.4 / 3)
    assert d["verdict"] == "better"
    # another record set: refused, with the counts
    c = run_folder(tmp_path, "c", recs([0, 1, 1]), {"vqa/closed": S.mean_of([0, 1, 1], np.arange(3))})
    with pytest.raises(C.PairingError, match=r"different records \(4 vs 3 records; 1 only in the first"):
        C.paired(load(a), load(c))
    e = run_folder(tmp_path, "e", records, base, split="validation")
    with pytest.raises(C.PairingError, match="different data"):
        C.paired(load(a), load(e))
    # compare() writes the refusal instead of numbers, and pairs the good runs
    md = C.compare({"b": str(b), "a": str(a), "c": str(c)}, tmp_path / "cmp", gallery=0, n_resamples=500)
    assert "a − b" in md and "▲ better" in md
    assert "**c − b not paired:** scored on different records" in md
    out = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert out["differences"][1]["refused"].startswith("scored on different records")
    assert (tmp_path / "cmp" / "differences.png").stat().st_size > 0


def test_pairs_for_baseline_modes():
    assert C.pairs_for(["base", "sft", "grpo"], None) == [("sft", "base"), ("grpo", "base")]
    assert C.pairs_for(["base", "sft", "grpo"], "previous") == [("sft", "base"), ("grpo", "sft")]
    assert C.pairs_for(["base", "sft"], "sft") == [("base", "sft")]
    with pytest.raises(C.PairingError, match="no such run"):
        C.pairs_for(["base", "sft"], "grpo")


def test_study_sample_spans_every_study_in_task_proportion():
    rng = np.random.default_rng(0)
    records = []
    for s in range(50):  # studies of 5 to 15 records, VQA the commonest task
        tasks = ["report_findings", "classification", "grounding"] + ["vqa"] * int(rng.integers(2, 12))
        records += [{"id": f"s{s}-{j}", "study_id": f"s{s}", "task": t} for j, t in enumerate(tasks)]
    sample = S.study_sample(records, 120, seed=0)
    assert len(sample) == 120 and len({r["id"] for r in sample}) == 120
    assert {r["study_id"] for r in sample} == {f"s{s}" for s in range(50)}
    share = Counter(r["task"] for r in records)
    got = Counter(r["task"] for r in sample)
    for task, count in share.items():
        assert got[task] == pytest.approx(120 * count / len(records), abs=2)
    assert sample == S.study_sample(records, 120, seed=0)  # deterministic
    assert sample != S.study_sample(records, 120, seed=1)
    assert [r["id"] for r in sample] == [r["id"] for r in records if r in sample]  # file order kept


def test_demo_sample_holds_every_test_study_of_the_phantom_split():
    from data_prep.phantom import plan_studies, render, study_records
    from demo.pipeline import EVAL_SAMPLE

    studies = [s for s in plan_studies(2400, seed=0) if s.split == "test"]  # the demo's phantom set
    records = []
    for study in studies:
        _, study.boxes, study.anatomy = render(study.patient, study.findings, 112, study.noise_seed)
        records += study_records(study, 112, 0)
    sample = S.study_sample(records, EVAL_SAMPLE, seed=0)
    assert len(sample) == EVAL_SAMPLE
    assert {r["study_id"] for r in sample} == {s.study_id for s in studies}


def test_reward_trend_and_smoothing():
    rng = np.random.default_rng(0)
    history = [
        {"step": s, "reward": 1.0 + 0.01 * s + rng.normal(0, 0.02), "rewards/format/mean": 1.0}
        for s in range(1, 41)
    ]
    trend = reward_trend(history, seed=0)
    assert set(trend) == {"reward", "rewards/format/mean"}
    t = trend["reward"]
    assert t["steps"] == 4 and t["change"] == pytest.approx(0.36, abs=0.05)
    assert t["ci_low"] > 0.25 and t["ci_high"] < 0.45
    assert trend["rewards/format/mean"]["change"] == 0 == trend["rewards/format/mean"]["ci_low"]
    assert reward_trend(history[:3]) == {}
    assert smooth([1, 2, 3, None, 5], window=3).tolist() == pytest.approx([1.5, 2, 2.5, 4, 5])
