"""MIMIC-CXR-VQA (JSON) and Medical-Diff-VQA (CSV) on a MIMIC-CXR-JPG-shaped image tree."""

from __future__ import annotations

import csv
import json

from PIL import Image

from data_prep.converters import medical_diff_vqa, mimic_cxr_vqa
from data_prep.converters.common import main
from data_prep.io import read_records

ARGS = ["--workers", "1", "--no_progress"]
D1, D2, D3 = ("1" * 8 + "-" + "2" * 8), ("3" * 8 + "-" + "4" * 8), ("5" * 8 + "-" + "6" * 8)


def _mimic_images(root):
    for subject, study, dicom in (
        ("10000032", "50414267", D1),
        ("10000032", "50414267", D2),
        ("11000001", "51000001", D3),
    ):
        p = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (700, 800), 60).save(p)


def test_mimic_cxr_vqa(tmp_path):
    root, mimic = tmp_path / "vqa", tmp_path / "jpg"
    _mimic_images(mimic)
    (root / "dataset").mkdir(parents=True)

    def q(idx, image, subject, study, question, answer, ctype, split, **kw):
        return {
            "split": split, "idx": idx, "image_id": image, "question": question, "content_type": ctype,
            "semantic_type": "verify", "template": "Is there ${attribute}?", "template_arguments": {"attribute": {"0": "x"}},
            "answer": answer, "subject_id": subject, "study_id": study,
            "image_path": f"p{subject[:2]}/p{subject}/s{study}/{image}.jpg", **kw,
        }  # fmt: skip

    train = [
        q(0, D1, "10000032", "50414267", "Is there pleural effusion?", ["yes"], "presence", "train"),
        q(
            1,
            D1,
            "10000032",
            "50414267",
            "List all abnormalities in the left lung.",
            ["atelectasis", "edema"],
            "abnormality",
            "train",
        ),
        q(2, D2, "10000032", "50414267", "Which anatomical findings are seen?", [], "anatomy", "train"),
        {"idx": 3, "image_id": D2, "question": "Broken?", "split": "train"},  # no answer / ids
    ]
    test = [q(0, D3, "11000001", "51000001", "What is the view of this image?", ["PA"], "plane", "test")]
    (root / "dataset" / "train.json").write_text(json.dumps(train))
    (root / "dataset" / "test.json").write_text(json.dumps(test))
    out = tmp_path / "out"
    led = main(mimic_cxr_vqa, ["--root", str(root), "--mimic_root", str(mimic), "--out", str(out), *ARGS])
    recs = {r["id"]: r for r in read_records(out)}
    assert led.read == 5 and dict(led.rejected) == {"missing field": 1}
    assert recs["mimic-cxr-vqa/1/train"]["answer"] == "atelectasis | edema"
    assert recs["mimic-cxr-vqa/1/train"]["meta"]["content_type"] == "abnormality"
    assert recs["mimic-cxr-vqa/1/train"]["meta"]["question_type"] == "abnormality"
    assert recs["mimic-cxr-vqa/2/train"]["answer"] == "none" and led.extra["notes"]
    assert (
        recs["mimic-cxr-vqa/0/test"]["split"] == "test"
        and recs["mimic-cxr-vqa/0/test"]["patient_id"] == "11000001"
    )
    assert all(r["task"] == "vqa" and r["source"] == "mimic-cxr-vqa" for r in recs.values())
    assert recs["mimic-cxr-vqa/0/train"]["image"] == f"images/p10/p10000032/s50414267/{D1}.png"


def test_medical_diff_vqa(tmp_path):
    root, mimic = tmp_path / "diff", tmp_path / "jpg"
    _mimic_images(mimic)
    root.mkdir()
    header = ["", "study_id", "subject_id", "ref_id", "question_type", "question", "answer", "split"]
    rows = [
        [0, "50414267", "10000032", "51000001", "abnormality", "what abnormalities are seen in this image?", "pleural effusion, atelectasis", "train"],
        [1, "50414267", "10000032", "51000001", "presence", "is there edema?", "no", "train"],
        [2, "50414267", "10000032", "51000001", "difference", "what has changed compared to the reference image?", "nothing", "train"],
        [3, "51000001", "11000001", "50414267", "location", "where is the pneumothorax?", "left apical area", "val"],
        [4, "59999999", "11000001", "50414267", "view", "which view is this image?", "PA", "val"],  # no image
        [5, "51000001", "11000001", "50414267", "level", "what level is the effusion?", "", "val"],
    ]  # fmt: skip
    with open(root / "mimic_pair_questions.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    with open(root / "mimic_all.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "study_id", "dicom_id", "view", "split"])
        w.writerows(
            [
                ["10000032", "50414267", D2, "lateral", "train"],
                ["10000032", "50414267", D1, "postero-anterior", "train"],
            ]
        )
        w.writerow(["11000001", "51000001", D3, "antero-posterior", "val"])
    out = tmp_path / "out"
    led = main(medical_diff_vqa, ["--root", str(root), "--mimic_root", str(mimic), "--out", str(out), *ARGS])
    recs = read_records(out)
    by_q = {r["question"]: r for r in recs}
    assert led.read == 6
    assert dict(led.rejected) == {"study without image": 1, "incomplete row": 1}
    assert led.extra["skipped"] == {"difference question (two images; --include_difference keeps it)": 1}
    assert by_q["what abnormalities are seen in this image?"]["answer"] == "pleural effusion | atelectasis"
    assert by_q["what abnormalities are seen in this image?"]["meta"]["dicom_id"] == D1  # PA over lateral
    assert by_q["where is the pneumothorax?"]["split"] == "validation"
    assert by_q["where is the pneumothorax?"]["meta"]["question_type"] == "location"
    out2 = tmp_path / "out2"
    main(
        medical_diff_vqa,
        ["--root", str(root), "--mimic_root", str(mimic), "--out", str(out2), *ARGS, "--include_difference"],
    )
    diff = [r for r in read_records(out2) if r["meta"]["question_type"] == "difference"]
    assert len(diff) == 1 and diff[0]["meta"]["ref_study_id"] == "51000001"
