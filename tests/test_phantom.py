"""The phantom generator: deterministic, boxes that tell the truth, records that validate."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from functools import cache
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import phantom
from data_prep.io import iter_jsonl, read_records
from data_prep.schema import SPLITS, TASKS
from rewards.parsing import find_boxes, format_box

REPO = Path(__file__).resolve().parents[1]
SIZE = 224
RING = 6  # px: the band around a box that stands for "the surroundings"
# Contrast needed between a box and its ring, in gray levels (0-255). Pixel noise has a
# standard deviation of ~5 levels, so the mean of the >= 300 pixels of a box or ring is known
# to ~0.3 level: 8 levels is far beyond chance, and ~3% of the range is plainly visible.
MIN_CONTRAST = 8


@cache
def canonical_box(name: str, side: str | None = None, zone: str | None = None, size: int = 224) -> tuple:
    """The box of a finding drawn with no patient or finding variation: the 'where it usually is'."""
    if zone is None and name in ("pleural effusion", "pneumothorax"):
        zone = "lower" if name == "pleural effusion" else "upper"
    _, boxes, _ = phantom.render(phantom.Patient(), [phantom.Finding(name, side, zone)], size, noise_seed=0)
    return tuple(boxes[0])


def split_list(answer: str) -> list[str]:
    """The items of a list answer ("a | b | c")."""
    return [a.strip() for a in answer.split("|") if a.strip()]


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    ledger = phantom.generate(40, out, seed=0, progress=False)
    return out, ledger, read_records(out)


@pytest.fixture(scope="module")
def rendered():
    """(study, uint8 image, finding boxes) for abnormal studies, enough to hold every finding."""
    out = []
    for study in phantom.plan_studies(100, seed=3):
        if study.findings:
            img, boxes, _ = phantom.render(study.patient, study.findings, SIZE, study.noise_seed)
            out.append((study, img, boxes))
    assert {f.name for s, _, _ in out for f in s.findings} == set(phantom.FINDINGS)
    return out


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        phantom.generate(8, tmp_path / name, seed=seed, progress=False)
        files = sorted((tmp_path / name / "images").glob("*.png")) + [tmp_path / name / "records.jsonl"]
        runs[name] = {f.relative_to(tmp_path / name): f.read_bytes() for f in files}
    assert runs["a"] == runs["b"]
    assert runs["a"][Path("records.jsonl")] != runs["c"][Path("records.jsonl")]
    assert any(runs["a"][k] != runs["c"].get(k) for k in runs["a"] if k.suffix == ".png")


def test_box_differs_from_its_surroundings(rendered):
    """Pneumothorax is darker than the ring around its box; every other finding brighter."""
    seen = Counter()
    for study, img, boxes in rendered:
        img = img.astype(np.float64)
        for f, (x0, y0, x1, y1) in zip(study.findings, boxes):
            outer = img[max(0, y0 - RING) : y1 + RING, max(0, x0 - RING) : x1 + RING]
            inner = img[y0:y1, x0:x1]
            ring = (outer.sum() - inner.sum()) / (outer.size - inner.size)
            contrast = inner.mean() - ring
            if f.name == "pneumothorax":
                contrast = -contrast
            assert contrast > MIN_CONTRAST, f"{study.study_id} {f.label}: contrast {contrast:.1f}"
            seen[f.name] += 1
    assert set(seen) == set(phantom.FINDINGS)


def test_finding_is_drawn_inside_its_box_only(rendered):
    """Removing one finding from a study changes pixels only inside that finding's box, and a lot."""
    done = set()
    for study, img, boxes in rendered:
        for f, (x0, y0, x1, y1) in zip(study.findings, boxes):
            if f.name in done:
                continue
            others = [g for g in study.findings if g is not f]
            without, _, _ = phantom.render(study.patient, others, SIZE, study.noise_seed)
            diff = np.abs(img.astype(int) - without.astype(int))
            inside = diff[y0:y1, x0:x1].copy()
            diff[y0:y1, x0:x1] = 0
            assert diff.max() <= 1, f"{f.label} changes pixels outside its box {[x0, y0, x1, y1]}"
            assert np.percentile(inside, 95) >= 25, f"{f.label}: weak signal in its box"
            done.add(f.name)
    assert done == set(phantom.FINDINGS)


def test_canonical_box_is_good_enough(rendered):
    """Small jitter only: always answering the canonical box of a finding reaches IoU > 0.5."""
    for study, _, boxes in rendered:
        for f, box in zip(study.findings, boxes):
            canon = canonical_box(f.name, f.side, f.zone, SIZE)
            assert iou(box, canon) > 0.5, f"{study.study_id} {f.label}: {box} vs canonical {canon}"


def test_side_convention_patient_right_is_image_left(rendered):
    half = SIZE / 2
    for study, _, boxes in rendered:
        for f, (x0, _, x1, _) in zip(study.findings, boxes):
            if f.side == "right":
                assert x1 <= half, f"{f.label} box reaches into the image's right half"
            elif f.side == "left":
                assert x0 >= half, f"{f.label} box reaches into the image's left half"
    _, _, anatomy = phantom.render(phantom.Patient(), [], SIZE, 0)
    assert anatomy["right_lung"][2] <= half <= anatomy["left_lung"][0]
    # the heart bulges to the patient's left, the image right
    heart = anatomy["heart"]
    assert (heart[0] + heart[2]) / 2 > half


def test_nodule_box_is_learnable_size():
    x0, y0, x1, y1 = canonical_box("nodule", "right", "upper", SIZE)
    assert x1 - x0 >= 20 and y1 - y0 >= 20


def test_boxes_scale_with_size():
    for name, side, zone in (("nodule", "left", "middle"), ("pleural effusion", "right", None)):
        small = np.array(canonical_box(name, side, zone, 224))
        big = np.array(canonical_box(name, side, zone, 448))
        assert np.abs(big / 2 - small).max() <= 2


def test_studies_are_never_contradictory():
    studies = phantom.plan_studies(1000, seed=0)
    for s in studies:
        assert len(s.findings) <= 3
        for a, b in combinations(s.findings, 2):
            assert not phantom.conflicts(a, b)
            assert a.name != b.name
            assert not ({a.name, b.name} == {"pleural effusion", "pneumothorax"} and a.side == b.side)
    normal = sum(not s.findings for s in studies) / len(studies)
    assert 0.25 < normal < 0.35
    assert {f.name for s in studies for f in s.findings} == set(phantom.FINDINGS)


def test_patients_split_disjointly():
    studies = phantom.plan_studies(1500, seed=0)
    split_of: dict[str, set] = {}
    for s in studies:
        split_of.setdefault(s.patient_id, set()).add(s.split)
    assert all(len(v) == 1 for v in split_of.values())
    per_patient = Counter(s.patient_id for s in studies)
    assert set(per_patient.values()) <= set(phantom.STUDIES_PER_PATIENT)
    share = Counter(s.split for s in studies)
    assert 0.75 < share["train"] / len(studies) < 0.85
    assert 0.05 < share["validation"] / len(studies) < 0.15
    assert 0.05 < share["test"] / len(studies) < 0.15


def test_records_validate_and_cover_every_task(dataset):
    out, _, records = dataset  # read_records validated every row
    assert {r["task"] for r in records} == set(TASKS)
    assert {r["split"] for r in records} <= set(SPLITS)
    assert {r["meta"]["question_type"] for r in records if r["task"] == "vqa"} == {
        "presence",
        "location",
        "abnormality",
    }
    assert {r["meta"]["question_type"] for r in records if r["task"] == "classification"} == {
        "classification"
    }
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert r["source"] == "phantom" and r["width"] == r["height"] == SIZE
        assert r["image"] == f"images/{r['study_id']}.png"
        assert set(r["meta"]["anatomy"]) == {"heart", "right_lung", "left_lung"}
    for image in {r["image"] for r in records}:
        with Image.open(out / image) as im:
            assert im.mode == "L" and im.size == (SIZE, SIZE)


def test_answers_and_boxes_agree_with_meta(dataset):
    _, _, records = dataset
    presence = Counter()
    for r in records:
        findings = r["meta"]["findings"]
        labels = [f["label"] for f in findings]
        by_name = {f["name"]: f for f in findings}
        qtype = r["meta"]["question_type"]
        if r["task"] == "grounding":
            f = by_name[r["meta"]["target"]]
            assert r["boxes"] == [{"label": f["label"], "box": f["box"]}]
            assert r["answer"] == format_box(f["box"]) and find_boxes(r["answer"]) == [f["box"]]
        elif qtype == "presence":
            present = r["meta"]["target"] in by_name
            assert r["answer"] == ("yes" if present else "no")
            assert len(r["boxes"]) == int(present)
            presence[r["answer"]] += 1
        elif qtype == "location":
            f = by_name[r["meta"]["target"]]
            assert r["answer"] == f"{f['side']} {f['zone']} lung"
            assert r["boxes"] == [{"label": f["label"], "box": f["box"]}]
        elif qtype == "abnormality":
            assert split_list(r["answer"]) == (labels or [phantom.NO_FINDING])
        elif qtype == "classification":
            expected = [f["name"] for f in findings] or [phantom.NO_FINDING]
            assert split_list(r["answer"]) == expected
            assert all(label in r["question"] for label in phantom.CLASS_LABELS)
        if r["task"] != "grounding" and qtype not in ("presence", "location"):
            assert [b["label"] for b in r["boxes"]] == labels
        for f in findings:
            assert set(f) == {"name", "side", "zone", "label", "box"}
            if f["side"]:  # reports name the side of every sided finding
                assert r["task"] != "report_findings" or f["side"] in r["answer"]
    yes = presence["yes"] / sum(presence.values())
    assert 0.35 < yes < 0.65


def test_cli_writes_records_frame_and_a_matching_ledger(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "data_prep.phantom",
            "--n",
            "5",
            "--out",
            str(out),
            "--seed",
            "2",
            "--size",
            "112",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[phantom] read 5" in proc.stderr  # the ledger summary, logged
    frame = json.loads((out / "frame.json").read_text())
    assert frame["min_pixels"] == 56 * 56 and frame["max_pixels"] == 112 * 112
    ledger = json.loads((out / "ledger.json").read_text())
    rows = [rec for _, rec in iter_jsonl(out / "records.jsonl")]
    assert ledger["read"] == 5 == len({r["study_id"] for r in rows})
    assert ledger["written"] == len(rows) and ledger["rejected"] == 0
    assert ledger["records_per_task"] == dict(Counter(r["task"] for r in rows))
    assert ledger["records_per_split"] == dict(Counter(r["split"] for r in rows))
    assert len(list((out / "images").glob("*.png"))) == 5
    assert all(r["width"] == 112 for r in rows)


def test_bad_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of 28"):
        phantom.generate(1, tmp_path, size=200, progress=False)


def test_invalid_records_are_rejected_and_counted(tmp_path, monkeypatch):
    real = phantom.study_records

    def with_one_broken(study, size, seed):
        rows = real(study, size, seed)
        rows[0]["answer"] = " "  # the schema refuses an empty answer
        return rows

    monkeypatch.setattr(phantom, "study_records", with_one_broken)
    ledger = phantom.generate(3, tmp_path, seed=0, progress=False)
    rows = [rec for _, rec in iter_jsonl(tmp_path / "records.jsonl")]
    rejects = [rec for _, rec in iter_jsonl(tmp_path / "rejects.jsonl")]
    assert ledger["read"] == 3 and ledger["rejected"] == 3 == len(rejects)
    assert ledger["written"] == len(rows) and all(r["answer"].strip() for r in rows)
    assert rejects[0]["reason"] == "invalid record" and "answer" in rejects[0]["detail"]
