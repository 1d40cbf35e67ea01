"""The offline teacher: grounded reasoning for the phantom data with no API, through the same filters."""

from __future__ import annotations

import json
import re

import pytest

from data_prep import phantom
from data_prep.io import read_records
from data_prep.synthesis import coldstart
from data_prep.synthesis.offline_teacher import offline_completion, offline_reasoning, parse_unboxed
from rewards.parsing import find_boxes, format_box


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


def test_survey_reads_the_whole_study_then_answers(tmp_path):
    """Every question about a study gets the same read (all findings, each with its exact box, in
    a fixed order); a question about one finding restates it first and marks it in the read, and a
    presence question ends with whether it was seen."""
    data, out = tmp_path / "phantom", tmp_path / "coldstart"
    phantom.generate(12, data, seed=3, size=112, progress=False)
    argv = ["--data", str(data), "--out", str(out), "--teacher", "offline", "--offline_style", "survey"]
    assert coldstart.main(argv) == 0
    records = read_records(data, "train")
    kept = {r["id"]: r for r in read_records(out, "train")}
    assert set(kept) == {r["id"] for r in records}  # the filters keep every survey
    reads, marked = {}, 0
    for src in records:
        read = kept[src["id"]]["reasoning"]
        meta = src["meta"]
        findings, anatomy, qtype = meta["findings"], meta["anatomy"], meta["question_type"]
        if qtype in ("presence", "location", "grounding"):
            target = src["meta"]["target"]
            opening = f"Asked: {target}. "
            assert read.startswith(opening)
            read = read[len(opening) :]
            if qtype == "presence":
                conclusion = " So: seen." if src["answer"] == "yes" else " So: not seen."
                assert read.endswith(conclusion)
                read = read[: -len(conclusion)]
            hits = [f for f in findings if f["name"] == target]
            assert read.count(" (asked)") == len(hits) <= 1  # the asked finding, and only it, is marked
            if hits:
                title = " ".join(w.capitalize() for w in hits[0]["label"].split())
                assert f"{title} (asked) [" in read
                read = read.replace(" (asked)", "")
                marked += 1
        else:
            assert "Asked" not in read and "(asked)" not in read
        cited = find_boxes(read)
        if findings:  # each finding once, in order, with its box; nothing else cited
            assert cited == [[float(v) for v in f["box"]] for f in findings]
            for f in findings:
                assert f["label"].lower() in read.lower()
        else:  # a normal study cites the normal heart and says the lungs are clear
            assert cited == [[float(v) for v in anatomy["heart"]]]
            assert read.endswith("Clear lungs.")
        for gt in src["boxes"]:  # every ground-truth box of the question is among the cited ones
            assert [float(v) for v in gt["box"]] in cited
        reads.setdefault(src["study_id"], set()).add(read)
    assert all(len(v) == 1 for v in reads.values())  # one read per study, whatever the question
    assert marked > 0


def test_survey_falls_back_for_records_without_findings():
    rec = {
        "id": "x-vqa-0",
        "question": "Is there a nodule?",
        "answer": "yes",
        "boxes": [{"label": "nodule", "box": [10, 10, 30, 30]}],
        "meta": {},
    }
    assert offline_completion(rec, "survey") == offline_completion(rec)  # per-question style
    assert find_boxes(offline_completion(rec, "survey")) == [[10.0, 10.0, 30.0, 30.0]]
    with pytest.raises(ValueError, match="unknown offline teacher style"):
        offline_completion(rec, "essay")


def test_unboxed_findings_are_named_without_a_box_unless_asked(tmp_path):
    """--offline_unboxed: the listed findings lose their box at the given rate, per study (every
    question about a study reads the same), never when the question is about them; other findings,
    answers and the records' boxes are untouched; the ledger records the setting."""
    data, out = tmp_path / "phantom", tmp_path / "coldstart"
    phantom.generate(40, data, seed=4, size=112, progress=False)
    argv = ["--data", str(data), "--out", str(out), "--teacher", "offline", "--offline_style", "survey"]
    assert coldstart.main(argv + ["--offline_unboxed", "cardiomegaly=0.5"]) == 0
    assert json.loads((out / "ledger.json").read_text())["offline_unboxed"] == {"cardiomegaly": 0.5}
    kept = {r["id"]: r for r in read_records(out, "train")}
    per_study, asked = {}, 0
    for src in read_records(data, "train"):
        read, meta = kept[src["id"]]["reasoning"], src["meta"]
        assert kept[src["id"]]["boxes"] == src["boxes"] and kept[src["id"]]["answer"] == src["answer"]
        for f in meta["findings"]:
            boxed = (
                f"{' '.join(w.capitalize() for w in f['label'].split())}" in read
                and format_box(f["box"]) in read
            )
            if f["name"] != "cardiomegaly":
                assert boxed
            elif meta.get("target") == "cardiomegaly" and meta["question_type"] in (
                "presence",
                "location",
                "grounding",
            ):
                assert "Cardiomegaly (asked) [" in read
                asked += 1
            else:
                per_study.setdefault(src["study_id"], set()).add(boxed)
    assert asked > 0
    assert all(len(v) == 1 for v in per_study.values())  # the same choice for every question of a study
    unboxed = sum(not next(iter(v)) for v in per_study.values())
    assert 0 < unboxed < len(per_study)  # about half of the studies with cardiomegaly
    # rate 0 reads exactly as the default teacher; rate 1 never boxes an unasked cardiomegaly
    study = next(
        s
        for s in read_records(data, "train")
        if s["meta"].get("target") != "cardiomegaly"
        and any(f["name"] == "cardiomegaly" for f in s["meta"]["findings"])
    )
    assert offline_completion(study, "survey", {"cardiomegaly": 0.0}) == offline_completion(study, "survey")
    heart = format_box(next(f["box"] for f in study["meta"]["findings"] if f["name"] == "cardiomegaly"))
    assert heart in offline_completion(study, "survey")
    assert heart not in offline_completion(study, "survey", {"cardiomegaly": 1.0})


@pytest.mark.parametrize("spec", ["cardiomegaly", "cardiomegaly=1.5", "=0.5", "nodule=x"])
def test_unboxed_spec_errors_name_the_item(spec):
    with pytest.raises(ValueError, match="is not NAME=RATE"):
        parse_unboxed(spec)
    assert parse_unboxed("Cardiomegaly=0.67, pleural effusion=1") == {
        "cardiomegaly": 0.67,
        "pleural effusion": 1.0,
    }


def test_unboxed_needs_the_survey_style(tmp_path, capsys):
    argv = ["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--teacher", "offline"]
    with pytest.raises(SystemExit):
        coldstart.parse_args(argv + ["--offline_unboxed", "cardiomegaly=0.5"])
    assert "applies to the offline teacher's survey style" in capsys.readouterr().err
