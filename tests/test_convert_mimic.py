"""MIMIC-CXR: the section parser on report variants, and the converter on a MIMIC-shaped tree."""

from __future__ import annotations

import csv
import gzip
import json

import pytest

from benchmarks.data import JPEG_SIZES, REPORT_VARIANTS, make_mimic_tree
from data_prep.converters import mimic_cxr
from data_prep.converters.common import main
from data_prep.converters.reports import findings_impression, normalize_section_name
from data_prep.frame import read_frame, smart_resize
from data_prep.io import read_records
from data_prep.labels import CHEXPERT_LABELS

HEAD = "                                 FINAL REPORT\n"

# (report text, expected FINDINGS, expected IMPRESSION)
TABLE = [
    (
        REPORT_VARIANTS["standard"],
        "The lungs are clear. No pleural effusion or pneumothorax.",
        "No acute cardiopulmonary process.",
    ),
    (
        REPORT_VARIANTS["conclusion"],
        "Mild cardiomegaly. Small left effusion.",
        "Small left pleural effusion.",
    ),
    (REPORT_VARIANTS["addendum_first"], "Heart size is normal. Lungs are clear.", "Normal chest."),
    (REPORT_VARIANTS["impression_only"], "", "Endotracheal tube in standard position."),
    (REPORT_VARIANTS["findings_only"], "Right PICC tip in the lower SVC. No pneumothorax.", ""),
    (REPORT_VARIANTS["findings_and_impression"], "", "Moderate pulmonary edema, improved since prior."),
    (REPORT_VARIANTS["typo_header"], "Low lung volumes. Bibasilar atelectasis.", "Bibasilar atelectasis."),
    (
        REPORT_VARIANTS["two_impressions"],
        "Stable right lower lobe opacity.",
        "Stable right lower lobe pneumonia.",
    ),
    (REPORT_VARIANTS["no_headers"], "", ""),
    (REPORT_VARIANTS["empty"], "", ""),
    ("", "", ""),
    # a header describing the whole study counts as findings
    (HEAD + " CHEST, PA AND LATERAL:  Clear lungs.\n \n IMPRESSION:  Normal.\n", "Clear lungs.", "Normal."),
    (HEAD + " PORTABLE AP VIEW OF THE CHEST:  Tube in place.\n", "Tube in place.", ""),
    # findings/impression and misspellings map to impression
    (HEAD + " FINDINGS/IMPRESSION:  No change.\n", "", "No change."),
    (HEAD + " FINDINGS:  Opacity.\n \n IMPRESION:  Pneumonia.\n", "Opacity.", "Pneumonia."),
    # an empty findings section is dropped; text spanning lines is joined with single spaces
    (HEAD + " FINDINGS: \n \n IMPRESSION:  Line one\n continues here.\n", "", "Line one continues here."),
    # a header must start a line (after its leading space); mid-line capitals are not headers
    (HEAD + " FINDINGS:  Compared with PRIOR: no change.\n", "Compared with PRIOR: no change.", ""),
    # wet read and notification sections do not leak into findings/impression
    (HEAD + " WET READ: ___ no ptx\n \n FINDINGS:  Clear.\n \n NOTIFICATION:  Called.\n", "Clear.", ""),
    # as in the dataset's parser: the search for the next header resumes after the first line
    # break following a header, so a header right below an empty one stays inside it
    (HEAD + " FINDINGS:\n IMPRESSION: No change.\n", "IMPRESSION: No change.", ""),
]


@pytest.mark.parametrize("text,findings,impression", TABLE)
def test_section_parser_table(text, findings, impression):
    assert findings_impression(text) == (findings, impression)


def test_header_normalisation():
    assert normalize_section_name("CONCLUSION") == "impression"
    assert normalize_section_name("Findings and Impression") == "impression"
    assert normalize_section_name("FINAL ADDENDUM") == "addendum"
    assert normalize_section_name("CLINICAL HISTORY") == "history"
    assert normalize_section_name("PA AND LAT") == "findings"
    assert normalize_section_name("REASON FOR EXAM") == "indication"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mimic")
    tree = make_mimic_tree(tmp / "root", 48, bad_every=20)
    ledger = main(
        mimic_cxr, ["--root", str(tmp / "root"), "--out", str(tmp / "out"), "--workers", "1", "--no_progress"]
    )
    return tmp, tree, ledger


def test_converter_records_and_ledger(converted):
    tmp, tree, ledger = converted
    recs = read_records(tmp / "out")  # validates every record
    saved = json.loads((tmp / "out" / "ledger.json").read_text())
    assert saved["read"] == 48 and saved["written"] == len(recs) == ledger.written
    # 48 studies, bad_every=20: studies 1, 21, 41 lack their image, 2, 22, 42 their report.
    assert saved["rejected_by_reason"]["missing image"] == tree["missing_images"] == 3
    assert saved["rejected_by_reason"]["missing report"] == 3
    n_no_sections = sum(1 for i in range(48) if i % 20 != 2 and i % 20 != 1 and i % 19 in (17, 18))
    assert saved["rejected_by_reason"].get("no findings/impression", 0) == n_no_sections
    rejects = [json.loads(line) for line in (tmp / "out" / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == saved["rejected"] and all(r["reason"] and r["where"] for r in rejects)
    assert read_frame(tmp / "out") == {
        "min_pixels": 3136,
        "max_pixels": 262144,
        "factor": 28,
        "family": "qwen2.5-vl",
    }

    assert {r["source"] for r in recs} == {"mimic-cxr"}
    assert {r["split"] for r in recs} <= {"train", "validation", "test"}
    assert all(r["meta"]["view"] in ("PA", "AP") for r in recs)  # frontal preferred over LATERAL
    sw, sh = JPEG_SIZES[0]  # study 0's image
    h, w = smart_resize(sh, sw, 3136, 262144)
    first = next(r for r in recs if r["study_id"] == "50000000")
    assert (first["width"], first["height"]) == (w, h) and first["meta"]["orig_size"] == [sw, sh]
    assert (tmp / "out" / first["image"]).exists() and first["image"].startswith(
        "images/p10/p10000000/s50000000/"
    )
    by_id = {r["id"]: r for r in recs}
    assert (
        by_id["mimic-cxr/s50000000/findings"]["answer"]
        == "The lungs are clear. No pleural effusion or pneumothorax."
    )
    assert by_id["mimic-cxr/s50000000/impression"]["task"] == "report_impression"


def test_labels_become_classification_and_presence(converted):
    tmp, _, _ = converted
    recs = {r["id"]: r for r in read_records(tmp / "out")}
    with gzip.open(tmp / "root" / "mimic-cxr-2.0.0-chexpert.csv.gz", "rt") as f:
        rows = {r["study_id"]: r for r in csv.DictReader(f)}
    checked = 0
    for study, row in rows.items():
        if f"mimic-cxr/s{study}/findings" not in recs and f"mimic-cxr/s{study}/impression" not in recs:
            continue
        for lab in CHEXPERT_LABELS:
            rid = f"mimic-cxr/s{study}/presence/{lab.lower().replace(' ', '_')}"
            if lab == "No Finding" or row[lab] in ("", "-1.0"):  # blank: not asked; uncertain: skipped
                assert rid not in recs
            else:
                assert recs[rid]["answer"] == ("yes" if row[lab] == "1.0" else "no")
                assert recs[rid]["meta"]["question_type"] == "presence"
                checked += 1
        cls = recs.get(f"mimic-cxr/s{study}/classification")
        positives = [lab for lab in CHEXPERT_LABELS if lab != "No Finding" and row[lab] == "1.0"]
        if positives:
            assert cls["answer"] == " | ".join(positives)
        elif row["No Finding"] == "1.0":
            assert cls["answer"] == "No Finding"
        else:
            assert cls is None
    assert checked > 50


def test_rerun_uses_the_cache(converted):
    tmp, _, first = converted
    again = main(
        mimic_cxr, ["--root", str(tmp / "root"), "--out", str(tmp / "out"), "--workers", "2", "--no_progress"]
    )
    assert again.extra["images"] == {"cached": first.extra["images"]["converted"]}
    assert again.written == first.written


def test_uncertain_policy_and_split_names(tmp_path):
    make_mimic_tree(tmp_path / "root", 12, bad_every=0)
    led = main(
        mimic_cxr,
        [
            "--root",
            str(tmp_path / "root"),
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "1",
            "--no_progress",
            "--uncertain",
            "positive",
        ],
    )
    recs = read_records(tmp_path / "o")
    assert any(
        r["answer"] == "yes" and r["meta"]["finding"] in r["meta"]["uncertain"]
        for r in recs
        if r["task"] == "vqa"
    )
    assert led.rejected.get("missing image", 0) == 0
    assert "validate" not in {r["split"] for r in recs}


def test_frontal_plus_lateral_views(converted):
    tmp, _, _ = converted
    out = tmp / "views"
    ledger = main(
        mimic_cxr,
        ["--root", str(tmp / "root"), "--out", str(out), "--workers", "1", "--no_progress", "--views",
         "frontal+lateral"],
    )  # fmt: skip
    recs = read_records(out)
    frontal = {r["id"]: r for r in read_records(tmp / "out")}
    assert {r["id"] for r in recs} == set(
        frontal
    )  # the same records, now with the lateral where there is one
    two = [r for r in recs if isinstance(r["image"], list)]
    one = [r for r in recs if isinstance(r["image"], str)]
    assert two and one
    assert all(r["meta"]["view"].endswith("+LATERAL") and len(r["image"]) == 2 for r in two)
    assert all((out / i).exists() for r in two for i in r["image"])
    for r in two:  # the frontal stays first (width/height and boxes are its), as in the frontal-only run
        assert r["image"][0] == frontal[r["id"]]["image"]
        assert (r["width"], r["height"]) == (frontal[r["id"]]["width"], frontal[r["id"]]["height"])
    studies_two = {r["study_id"] for r in two}
    studies_one = {r["study_id"] for r in one}
    assert not studies_two & studies_one
    # make_mimic_tree gives every fourth study a lateral; the others are counted (rejected ones included)
    assert ledger.extra["studies_without_lateral"] == sum(i % 4 != 0 for i in range(48))
