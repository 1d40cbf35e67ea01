"""The offline teacher: grounded reasoning for the phantom data with no API, through the same filters."""

from __future__ import annotations

import json
import re

from data_prep import coldstart, phantom
from data_prep.io import read_records
from data_prep.offline_teacher import offline_completion, offline_reasoning
from rewards.parsing import find_boxes


def test_offline_teacher_keeps_every_phantom_record(tmp_path):
    data, out = tmp_path / "phantom", tmp_path / "coldstart"
    phantom.generate(8, data, seed=1, size=112, progress=False)
    records = read_records(data, "train")
    assert coldstart.main(["--data", str(data), "--out", str(out), "--teacher", "offline"]) == 0

    kept = read_records(out, "train")
    assert [r["id"] for r in kept] == [r["id"] for r in records]  # nothing rejected
    ledger = json.loads((out / "ledger.json").read_text())
    assert (ledger["written"], ledger["rejected"], ledger["teacher"]) == (len(records), 0, "offline")
    for src, r in zip(records, kept):
        assert r["meta"]["teacher"] == "offline"
        sentences = re.split(r"(?<=\.)\s+", r["reasoning"])
        assert 1 <= len(sentences) <= 3
        assert all(len(find_boxes(s)) == 1 for s in sentences)  # one box per sentence
        cited = find_boxes(r["reasoning"])
        if src["boxes"]:  # the question's ground-truth boxes are the ones cited
            assert cited == [[float(v) for v in b["box"]] for b in src["boxes"]][:3]
        else:  # negative answers cite anatomy
            anatomy = [[float(v) for v in b] for b in src["meta"]["anatomy"].values()]
            assert all(c in anatomy for c in cited)
        if "cardiomegaly" in src["question"] and src["answer"] == "no":
            assert "heart" in r["reasoning"].lower() or "cardiac" in r["reasoning"].lower()


def test_offline_reasoning_is_deterministic_and_varied(tmp_path):
    phantom.generate(6, tmp_path, seed=2, size=112, progress=False)
    records = read_records(tmp_path)
    assert [offline_completion(r) for r in records] == [offline_completion(r) for r in records]
    openings = {offline_reasoning(r).split("[")[0] for r in records}
    assert len(openings) > 3
