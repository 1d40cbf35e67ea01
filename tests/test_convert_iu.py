"""IU X-ray / OpenI: the real NLMCXR_reports.tgz (shipped by torchxrayvision), synthetic PNGs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

from data_prep.converters import iu_xray
from data_prep.converters.common import main
from data_prep.io import read_records

TGZ = Path(importlib.util.find_spec("torchxrayvision").origin).parent / "data" / "NLMCXR_reports.tgz"
LIMIT = 25


def test_iu_xray_from_the_real_archive(tmp_path):
    root = tmp_path / "NLMCXR"
    (root / "NLMCXR_png").mkdir(parents=True)
    (root / "NLMCXR_reports.tgz").symlink_to(TGZ)
    # What the converter should see: reports in archive order, first image of each.
    reports, empty = [], 0
    for _name, xml in iu_xray.iter_xml(root):
        rep = iu_xray.parse_report(xml)
        if not rep["findings"] and not rep["impression"]:
            empty += 1
        elif rep["images"]:
            reports.append(rep)
        if len(reports) == LIMIT:
            break
    for rep in reports[1:]:  # the first report's image is missing -> a counted reject
        Image.new("L", (512, 624), 100).save(root / "NLMCXR_png" / f"{rep['images'][0]}.png")

    out = tmp_path / "out"
    led = main(
        iu_xray,
        ["--root", str(root), "--out", str(out), "--workers", "1", "--no_progress", "--limit", str(LIMIT)],
    )
    recs = read_records(out)
    assert led.rejected["missing image"] == 1
    assert led.rejected.get("empty report", 0) == empty
    expected = sum(bool(r["findings"]) + bool(r["impression"]) for r in reports[1:])
    assert len(recs) == led.written == expected
    by_id = {r["id"]: r for r in recs}
    rep = reports[1]
    uid = rep["uid"]
    if rep["findings"]:
        rec = by_id[f"iu-xray/{uid}/findings"]
        assert rec["answer"] == rep["findings"] and "  " not in rec["answer"]
        assert (
            rec["image"] == f"images/{rep['images'][0]}.png" and rec["meta"]["image_id"] == rep["images"][0]
        )
    assert all(r["patient_id"] == r["study_id"] and r["patient_id"].startswith("CXR") for r in recs)
    # no official split: deterministic by patient, all records of a patient together
    splits = {}
    for r in recs:
        assert splits.setdefault(r["patient_id"], r["split"]) == r["split"]
    assert iu_xray.hash_split("CXR1", salt="iu-xray/") == iu_xray.hash_split("CXR1", salt="iu-xray/")
    assert any("XXXX" in r["answer"] for r in recs)  # de-identification kept verbatim


def test_parse_report_sections():
    xml = b"""<?xml version="1.0"?><eCitation><uId id="CXR7"/><MedlineCitation><Article><Abstract>
    <AbstractText Label="COMPARISON">None.</AbstractText>
    <AbstractText Label="FINDINGS">Heart   size normal.
      Lungs clear.</AbstractText>
    <AbstractText Label="IMPRESSION"/></Abstract></Article></MedlineCitation>
    <MeSH><major>normal</major></MeSH>
    <parentImage id="CXR7_IM-2263-1001"/><parentImage id="CXR7_IM-2263-2001"/></eCitation>"""
    rep = iu_xray.parse_report(xml)
    assert rep["uid"] == "CXR7" and rep["findings"] == "Heart size normal. Lungs clear."
    assert rep["impression"] == "" and rep["images"] == ["CXR7_IM-2263-1001", "CXR7_IM-2263-2001"]
    assert rep["mesh"] == ["normal"]
